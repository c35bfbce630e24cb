"""What a bioimage.io package declares: its ``rdf.yaml`` (axes, halo, preprocessing,
weights, citations) and its ``README.md`` (the model card)."""

from __future__ import annotations

import contextlib
import datetime
import re
from typing import Any

import torch

from napari_unet import __version__
from napari_unet.core import normalise
from napari_unet.core.calibration import NGFF_UNITS
from napari_unet.core.errors import InputError
from napari_unet.core.export_architecture import (
    ARCHITECTURE_CALLABLE,
    ARCHITECTURE_FILE,
    STATE_DICT_FILE,
    TORCHSCRIPT_FILE,
    PackageGeometry,
)
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import ModelBundle, builtin_models_dir, read_description

#: What to install when bioimageio is missing.
EXTRA_HINT = "bioimage.io export needs the bioimageio extra: pip install 'napari-unet[bioimageio]'"
#: Licence of exported models unless the caller or the model card names another.
DEFAULT_LICENSE = "CC-BY-4.0"
#: Author of user models without one in their provenance.
DEFAULT_AUTHOR = "napari-unet user"
#: Authors of the built-in models (as in pyproject.toml).
BUILTIN_AUTHOR = "napari-unet developers"
#: Tensor ids in the package.
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"

UNET_PAPER_URL = "https://arxiv.org/abs/1505.04597"
UNET_CITATION: dict[str, str] = {
    "text": (
        "Ronneberger O, Fischer P, Brox T (2015). U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351: 234-241."
    ),
    "doi": "10.1007/978-3-319-24574-4_28",
    "url": UNET_PAPER_URL,
}
#: Training data of the built-in models (the sources in napari_unet/samples/README.md).
BUILTIN_EXTRAS: dict[str, dict[str, Any]] = {
    "nuclei": {
        "tags": ["nuclei", "fluorescence-light-microscopy", "dsb2018"],
        "cite": [
            {
                "text": (
                    "Caicedo JC et al. (2019). Nucleus segmentation across imaging "
                    "experiments: the 2018 Data Science Bowl. Nature Methods 16: 1247-1253."
                ),
                "doi": "10.1038/s41592-019-0612-7",
            }
        ],
    },
    "em-membranes": {
        "tags": ["electron-microscopy", "membranes", "cells", "isbi2012", "drosophila"],
        "cite": [
            {
                "text": (
                    "Cardona A et al. (2010). An integrated micro- and macroarchitectural "
                    "analysis of the Drosophila brain by computer-assisted serial section "
                    "electron microscopy. PLoS Biology 8(10): e1000502."
                ),
                "doi": "10.1371/journal.pbio.1000502",
            },
            {
                "text": (
                    "Arganda-Carreras I et al. (2015). Crowdsourcing the creation of image "
                    "segmentation algorithms for connectomics. Frontiers in Neuroanatomy 9: 142."
                ),
                "doi": "10.3389/fnana.2015.00142",
            },
        ],
    },
}


def builtin_card(bundle: ModelBundle) -> str | None:
    """The model card of ``bundle`` if it is a built-in model, else None.

    A bundle is the built-in model when it has its name and its recorded provenance (a
    fine-tuned copy has another).
    """
    folder = builtin_models_dir()
    card, weights = folder / f"{bundle.name}.md", folder / f"{bundle.name}.safetensors"
    if not (card.is_file() and weights.is_file()):
        return None
    with contextlib.suppress(Exception):
        if read_description(weights).get("provenance") == bundle.provenance:
            return card.read_text(encoding="utf-8")
    return None


def license_id_for(requested: str | None, card: str | None) -> str:
    """The SPDX licence id: given, else the card's ``Licence:`` line, else the default."""
    if requested is None and card is not None:
        found = re.search(r"^\W*Licen[cs]e\W*:?\W*([A-Za-z0-9.+-]+)", card, re.MULTILINE)
        requested = found.group(1).rstrip(".") if found else None
    license_id = requested or DEFAULT_LICENSE
    try:
        from bioimageio.spec.generic.v0_3 import DeprecatedLicenseId, LicenseId
    except ImportError:  # another layout of bioimageio.spec: the rdf's validation checks it
        return license_id
    for kind in (LicenseId, DeprecatedLicenseId):
        with contextlib.suppress(ValueError):
            kind(license_id)
            return license_id
    raise InputError(
        f"{license_id!r} is not an SPDX licence identifier; use one such as CC-BY-4.0, "
        "CC0-1.0 or MIT"
    )


def _identifier(text: str, fallback: str) -> str:
    """``text`` as a short identifier (letters, digits, ``_``) for axis channel names."""
    name = re.sub(r"\W+", "_", text, flags=re.ASCII).strip("_")[:32] or fallback
    return f"c_{name}" if name[0].isdigit() else name


def _channel_names(names: list[str], fallback: str) -> list[str]:
    result: list[str] = []
    for index, name in enumerate(names):
        candidate = _identifier(name, f"{fallback}{index}")
        if candidate in result:
            candidate = f"{candidate}_{index}"
        result.append(candidate)
    return result


def preprocessing(spec: dict[str, Any], channels: int = 1) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing of napari-unet's normalisation ``spec``.

    napari-unet normalises each plane, and each channel of a multichannel plane on its
    own (``normalise.compute_stats(per_channel=True)``): the percentiles are taken over
    y and x only when there are several channels.
    """
    spec = normalise.validate_spec(spec)
    axes = ["y", "x"] if channels > 1 else ["channel", "y", "x"]
    if spec["method"] == "fixed":
        gain = 1.0 / spec["scale"]
        return [{"id": "scale_linear", "kwargs": {"gain": gain, "offset": -spec["offset"] * gain}}]
    low, high = (spec["low"], spec["high"]) if spec["method"] == "percentile" else (0.0, 100.0)
    if high <= 1.0:
        raise InputError(
            f"percentile normalisation up to {high} cannot be described for bioimage.io "
            "(its upper percentile must be above 1); fine-tune the model with another "
            "normalisation"
        )
    return [
        {
            "id": "scale_range",
            "kwargs": {"axes": axes, "min_percentile": low, "max_percentile": high},
        }
    ]


def _authors(requested: list[str] | None, bundle: ModelBundle, card: str | None) -> list[str]:
    if requested:
        return [str(name) for name in requested]
    recorded = bundle.provenance.get("authors")
    if isinstance(recorded, str) and recorded.strip():
        return [recorded.strip()]
    if isinstance(recorded, list) and recorded and all(isinstance(n, str) for n in recorded):
        return list(recorded)
    return [BUILTIN_AUTHOR if card is not None else DEFAULT_AUTHOR]


def rdf_content(
    bundle: ModelBundle,
    geometry: PackageGeometry,
    *,
    format_version: str,
    license_id: str,
    authors: list[str] | None,
    tags: list[str] | None,
    card: str | None,
    cover: str,
    parameters: int,
) -> dict[str, Any]:
    """The rdf.yaml content (files relative to the folder they were written to)."""
    extras = BUILTIN_EXTRAS.get(bundle.name, {}) if card is not None else {}
    return {
        "type": "model",
        "format_version": format_version,
        "name": _package_name(bundle.name),
        "description": _one_line_description(bundle),
        "authors": [{"name": name} for name in _authors(authors, bundle, card)],
        "cite": [dict(UNET_CITATION), *extras.get("cite", [])],
        "license": license_id,
        "documentation": {"source": "README.md"},
        "covers": [{"source": cover}],
        "tags": _tags(bundle.config, extras, tags),
        "inputs": [_input_tensor(bundle, geometry)],
        "outputs": [_output_tensor(bundle, geometry)],
        "weights": _weights(bundle.config, geometry),
        "config": _config(bundle, parameters),
    }


def spatial_scale(bundle: ModelBundle) -> dict[str, dict[str, Any]]:
    """The ``scale`` and ``unit`` of the y and x axes of the model's tensors: the pixel
    size the model records (its training images'), ``{}`` per axis when it records none.

    bioimage.io names units as OME-NGFF does (``"micrometer"``, ``"nanometer"``...).
    """
    pixel_size = bundle.pixel_size
    if pixel_size is None:
        return {"y": {}, "x": {}}
    unit = NGFF_UNITS[pixel_size.unit]
    return {
        "y": {"scale": float(pixel_size.y), "unit": unit},
        "x": {"scale": float(pixel_size.x), "unit": unit},
    }


def _input_tensor(bundle: ModelBundle, geometry: PackageGeometry) -> dict[str, Any]:
    """The ``raw`` input: ``(batch, channel, y, x)`` float32 of sizes the network takes."""
    config = bundle.config
    size_in = {"min": geometry.min_size, "step": geometry.step}
    channels_in = (
        ["intensity"]
        if config.in_channels == 1
        else [f"channel{i}" for i in range(config.in_channels)]
    )
    scale = spatial_scale(bundle)
    return {
        "id": INPUT_ID,
        "description": "raw intensities of one plane (normalised by the preprocessing)",
        "axes": [
            {"type": "batch"},
            {"type": "channel", "channel_names": channels_in},
            *({"id": axis, "type": "space", "size": size_in, **scale[axis]} for axis in "yx"),
        ],
        "data": {"type": "float32"},
        "test_tensor": {"source": "test_input.npy"},
        "sample_tensor": {"source": "sample_input.tif"},
        "preprocessing": preprocessing(bundle.normalisation, config.in_channels),
    }


def _output_tensor(bundle: ModelBundle, geometry: PackageGeometry) -> dict[str, Any]:
    """The ``probabilities`` output: ``(batch, class, y, x)``, the input's size."""
    scale = spatial_scale(bundle)
    return {
        "id": OUTPUT_ID,
        "description": "softmax class probabilities",
        "axes": [
            {"type": "batch"},
            {
                "type": "channel",
                "channel_names": _channel_names(list(bundle.class_names), "class"),
            },
            *(
                {
                    "id": axis,
                    "type": "space",
                    "halo": geometry.halo,
                    # The same size as the input's axis.
                    "size": {"tensor_id": INPUT_ID, "axis_id": axis},
                    **scale[axis],
                }
                for axis in "yx"
            ),
        ],
        "data": {"type": "float32", "range": [0.0, 1.0]},
        "test_tensor": {"source": "test_output.npy"},
        "sample_tensor": {"source": "sample_output.tif"},
    }


def _weights(config: UNetConfig, geometry: PackageGeometry) -> dict[str, Any]:
    """The state dict (with the architecture to build) and the TorchScript weights."""
    torch_version = torch.__version__.split("+")[0]
    return {
        "pytorch_state_dict": {
            "source": STATE_DICT_FILE,
            "architecture": {
                "source": ARCHITECTURE_FILE,
                "callable": ARCHITECTURE_CALLABLE,
                "kwargs": {
                    "context": geometry.context,
                    "extra": geometry.extra,
                    **config.to_dict(),
                },
            },
            "pytorch_version": torch_version,
        },
        "torchscript": {
            "source": TORCHSCRIPT_FILE,
            "pytorch_version": torch_version,
            "parent": "pytorch_state_dict",
        },
    }


def _config(bundle: ModelBundle, parameters: int) -> dict[str, Any]:
    """The ``config`` section: the zoo's summary, and everything napari-unet needs to
    rebuild the model from ``pytorch_state_dict``."""
    config = bundle.config
    return {
        "bioimageio": {
            "architecture_type": f"U-Net ({config.padding}, depth {config.depth})",
            "model_parameter_count": parameters,
        },
        "napari_unet": {
            "version": __version__,
            "name": bundle.name,
            "config": config.to_dict(),
            "normalisation": normalise.validate_spec(bundle.normalisation),
            "class_names": list(bundle.class_names),
            "provenance": bundle.provenance,
            "weights_key_prefix": "unet.",
            "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def _package_name(name: str) -> str:
    """``napari-unet NAME`` in the characters the spec allows, at most 64 long."""
    cleaned = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", name).strip("- ") or "model"
    return f"napari-unet {cleaned}"[:64].rstrip()


def _one_line_description(bundle: ModelBundle) -> str:
    config = bundle.config
    text = bundle.description or (
        f"U-Net ({config.padding} convolutions, depth {config.depth}) segmenting "
        f"{', '.join(bundle.class_names)}; made with napari-unet"
    )
    return text if len(text) <= 500 else text[:497] + "..."


def _tags(config: UNetConfig, extras: dict[str, Any], tags: list[str] | None) -> list[str]:
    result = ["unet", "unet2d", "2d", "pytorch", "semantic-segmentation", "napari-unet"]
    result += [f"{config.in_channels}-channel" if config.in_channels > 1 else "single-channel"]
    for tag in [*extras.get("tags", []), *(tags or [])]:
        if tag not in result:
            result.append(str(tag))
    return result


def _normalisation_text(spec: dict[str, Any]) -> str:
    spec = normalise.validate_spec(spec)
    if spec["method"] == "fixed":
        return f"`(x - {spec['offset']:g}) / {spec['scale']:g}` (`scale_linear`)"
    low, high = (spec["low"], spec["high"]) if spec["method"] == "percentile" else (0, 100)
    return (
        f"the {low:g} and {high:g} percentiles of each image (all channels together) map to "
        "0 and 1 (`scale_range`)"
    )


def documentation(
    bundle: ModelBundle,
    geometry: PackageGeometry,
    card: str | None,
    test_size: int,
    format_version: str,
) -> str:
    """README.md: the model card (or one made from the provenance) and how to use it."""
    parts = [card.rstrip() if card is not None else _generated_card(bundle)]
    config = bundle.config
    classes = ", ".join(f"`{name}`" for name in bundle.class_names)
    recommended = bundle.provenance.get("postprocess")
    normalisation = _normalisation_text(bundle.normalisation)
    extras = BUILTIN_EXTRAS.get(bundle.name, {}) if card is not None else {}
    citations = extras.get("cite", [])  # the training data of a built-in model
    parts.append(
        "\n".join(
            [
                "## Using this package",
                "",
                f"Exported by napari-unet {__version__} in the bioimage.io model format "
                f"{format_version}.",
                "",
                f"- Input `{INPUT_ID}`: `(batch, channel, y, x)` float32 raw intensities, "
                f"{config.in_channels} channel{'s' if config.in_channels > 1 else ''}; each "
                "of y and x "
                f"{geometry.min_size} + {geometry.step} n pixels. The preprocessing "
                f"normalises them as napari-unet does: {normalisation}.",
                f"- Output `{OUTPUT_ID}`: softmax probabilities of the classes {classes}, the "
                "size of the input.",
                f"- Halo: {geometry.halo} pixels per side: the network's context of "
                f"{geometry.context} pixels rounded up to a multiple of {geometry.step}. Tools "
                "that tile pad each tile by the halo and crop it from the output; tiles then "
                "start on the grid of the network's 2x2 poolings, as in napari-unet, so they "
                "join without seams and give napari-unet's probabilities. Inside the package "
                f"the input is mirrored by {geometry.context} pixels before and "
                f"{geometry.context + geometry.extra} after each axis (as napari-unet does at "
                f"image borders) for the {config.padding}-padded U-Net, and the output keeps "
                "the input size.",
                "- Test tensors: a "
                f"{test_size} x {test_size} crop of a sample image and the probabilities "
                "napari-unet computes for it.",
                "- Not part of the package: napari-unet's post-processing "
                + (f"(recommended for this model: `{recommended}`), " if recommended else "")
                + "e.g. thresholding the foreground probability and labelling objects. "
                "napari-unet also replaces NaN or infinite pixels by the low normalisation "
                "level, which other tools do not.",
                "",
                HOW_TO_OPEN,
                "",
                "## Citation",
                "",
                f"- {UNET_CITATION['text']} doi:{UNET_CITATION['doi']} ({UNET_CITATION['url']})",
                *(f"- {entry['text']} doi:{entry['doi']}" for entry in citations),
            ]
        )
    )
    return "\n\n".join(parts) + "\n"


#: How to open an exported package elsewhere (also in the project README).
HOW_TO_OPEN = """\
### Opening the package elsewhere

- **deepImageJ** (Fiji): install the `.zip` with *DeepImageJ Install Model* (from a
  local file), then run it on an open image with *DeepImageJ Run*. It uses the
  `torchscript` weights.
- **ilastik**: in the *Neural Network Classification* workflow, load the `.zip` as the
  model.
- **QuPath** (0.5 or later, with the Deep Java Library and Bioimage Model Zoo
  extensions): *Extensions > Bioimage Model Zoo > Create pixel classifier (Bioimage
  Model Zoo)* and choose the package (unzipped, if it asks for its `rdf.yaml`).
- **bioimageio.core** (Python): `bioimageio test name.zip` re-runs the package's own
  test; to segment an image of any size in tiles:
  `predict(model="name.zip", inputs={"raw": Tensor(image[None, None],
  dims=("batch", "channel", "y", "x"))}, blocksize_parameter=10)` (both from
  `bioimageio.core`)."""


def _generated_card(bundle: ModelBundle) -> str:
    """A model card for a user model, from its provenance."""
    provenance = bundle.provenance
    config = bundle.config
    lines = [f"# Model card: {bundle.name}", ""]
    if bundle.description:
        lines += [bundle.description, ""]
    lines.append(
        f"- Architecture: U-Net, {config.padding} convolutions, depth {config.depth}, base "
        f"width {config.base_width}, {config.norm} normalisation, {config.in_channels} input "
        f"channel(s), classes: {', '.join(bundle.class_names)}."
    )
    labels = {
        "base": "Fine-tuned from",
        "data": "Data",
        "training_data": "Training data",
        "steps": "Steps (weights kept)",
        "trained": "Trained",
        "date": "Saved",
        "version": "napari-unet version",
        "notes": "Notes",
        "note": "Note",
        "best_validation_loss": "Best validation loss",
    }
    for key, label in labels.items():
        value = provenance.get(key)
        if value not in (None, "", [], {}):
            lines.append(f"- {label}: {value}")
    lines += ["", "## Validation", ""]
    scores = provenance.get("validation_scores")
    if isinstance(scores, dict) and scores:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [
            f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
            for name, value in scores.items()
        ]
    else:
        lines.append(
            "No validation scores are recorded with this model: check its results on "
            "annotated images it was not trained on before relying on it."
        )
    return "\n".join(lines)

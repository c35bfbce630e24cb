"""Export a model as a bioimage.io model package (spec 0.5), for deepImageJ, ilastik,
QuPath, bioimageio.core and the BioImage Model Zoo.

:func:`export_bioimageio` writes one ``.zip`` file holding ``rdf.yaml`` and:

* ``unet_bioimageio.py``: the architecture, generated from ``napari_unet/core/model.py``
  so that it needs nothing but torch, plus a small wrapper, ``UNetProbabilities``;
* ``weights.pt`` (``pytorch_state_dict``) and ``weights_torchscript.pt`` (``torchscript``);
* ``test_input.npy`` / ``test_output.npy``: a crop of a sample image and the
  probabilities napari-unet's own pipeline (:func:`napari_unet.core.segment.segment`)
  computes for it (also as ``sample_input.tif`` / ``sample_output.tif``);
* ``cover.png`` (the test input beside its foreground probability) and ``README.md``
  (the model card of a built-in model, or one made from the provenance).

What the package declares
-------------------------
Input ``raw``: ``(batch, channel, y, x)`` float32 with the raw intensities; the
preprocessing is the model's own normalisation (percentiles -> ``scale_range`` per
sample over channel, y and x; fixed offset and scale -> ``scale_linear``). Sizes are
multiples of ``2**depth`` (16 for the presets) from :attr:`PackageGeometry.min_size`.

Output ``probabilities``: ``(batch, class, y, x)`` softmax class probabilities of the
same size as the input. Inside, the wrapper mirrors the context napari-unet's tiling
keeps (the network's margin, 92 px for the presets) onto each side (numpy's
``"symmetric"`` padding, as napari-unet does at image borders), runs the unpadded
("valid") U-Net and crops what is left. The declared halo is that margin rounded up to
a multiple of ``2**depth`` (96 px): consumers that tile (bioimageio.core, and the
others that read the halo) pad each tile by the halo and crop it again, and with this
halo their tiles start on the grid of the network's 2x2 poolings, as napari-unet's do, so tiles
join without seams and reproduce napari-unet's probabilities (a max-pooling network's
output changes when its input shifts by anything else). The spec's alternative for a
valid network, an output smaller than its input by ``size.offset``, is not tiled
correctly by bioimageio.core 0.11 (it shifts the output blocks by the offset).

bioimage.io is optional: ``bioimageio.spec`` is imported inside :func:`export_bioimageio`
only, and its absence is one :class:`~napari_unet.core.errors.InputError` line.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import importlib
import inspect
import math
import os
import re
import shutil
import sys
import tempfile
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from napari_unet import __version__
from napari_unet.core import normalise
from napari_unet.core.errors import InputError
from napari_unet.core.model import UNetConfig, is_valid_input_size, margin
from napari_unet.core.modelfile import ModelBundle, builtin_models_dir, read_description
from napari_unet.core.safety import atomic_write, check_output
from napari_unet.core.segment import segment
from napari_unet.core.tiling import default_halo

#: What to install when bioimageio is missing.
EXTRA_HINT = "bioimage.io export needs the bioimageio extra: pip install 'napari-unet[bioimageio]'"
#: Suffix of the package file.
SUFFIX = ".zip"
#: Licence of exported models unless the caller or the model card names another.
DEFAULT_LICENSE = "CC-BY-4.0"
#: Author of user models without one in their provenance.
DEFAULT_AUTHOR = "napari-unet user"
#: Authors of the built-in models (as in pyproject.toml).
BUILTIN_AUTHOR = "napari-unet developers"
#: The test input is a square crop of at least this many pixels per side when possible.
DEFAULT_TEST_SIZE = 256
#: Largest difference between the package's probabilities and napari-unet's accepted
#: when exporting (float32 rounding is ~1e-6; anything larger is a bug, not noise).
TOLERANCE = 1e-4
#: Tensor ids in the package.
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
#: File names inside the package.
ARCHITECTURE_FILE = "unet_bioimageio.py"
ARCHITECTURE_CALLABLE = "UNetProbabilities"
STATE_DICT_FILE = "weights.pt"
TORCHSCRIPT_FILE = "weights_torchscript.pt"

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

# Appended to the network's source in the package: the callable bioimageio.core builds.
_WRAPPER_SOURCE = '''

class UNetProbabilities(nn.Module):
    """Softmax class probabilities of a :class:`UNet`, the size of the input.

    ``context`` pixels are mirrored onto the top and left of the input and
    ``context + extra`` onto the bottom and right (numpy's "symmetric" padding, as
    napari-unet does at image borders), the U-Net runs, and what it did not trim itself
    is cropped, so ``(B, C, H, W)`` gives ``(B, num_classes, H, W)``. ``extra`` makes
    the network's input a valid size; mirroring it at the far end keeps the 2x2
    poolings on the grid napari-unet uses. Added by napari-unet's bioimage.io export.

    Parameters
    ----------
    context : int
        Pixels mirrored before each spatial axis; at least the network's margin and
        less than H and W.
    extra : int
        Further pixels mirrored after each spatial axis.
    **config
        The fields of :class:`UNetConfig`.
    """

    def __init__(self, context: int = 0, extra: int = 0, **config) -> None:
        super().__init__()
        self.unet = UNet(UNetConfig(**config))
        self.before = int(context)
        self.after = int(context) + int(extra)
        self.crop = self.before - margin(self.unet.config)
        if self.crop < 0 or extra < 0:
            raise ValueError(
                f"context {context} must be at least the network's margin "
                f"{margin(self.unet.config)} and extra {extra} at least 0"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.before, self.after
        if a > 0:
            x = torch.cat([x[..., :a].flip(-1), x], dim=-1)
            x = torch.cat([x[..., :a, :].flip(-2), x], dim=-2)
        if b > 0:
            x = torch.cat([x, x[..., -b:].flip(-1)], dim=-1)
            x = torch.cat([x, x[..., -b:, :].flip(-2)], dim=-2)
        logits = self.unet(x)
        start, end = self.crop, self.crop + b - a
        if start > 0 or end > 0:
            stop = -end if end > 0 else None
            logits = logits[..., start:stop, start:stop]
        return torch.softmax(logits, dim=1)
'''


@dataclass(frozen=True)
class PackageGeometry:
    """Sizes a package declares for a network.

    Attributes
    ----------
    min_size, step : int
        Valid input sizes per spatial axis: ``min_size + n * step``, all multiples of
        ``step = 2**depth``.
    halo : int
        Output pixels per side that consumers crop from each tile, and pad its input by:
        the ``context`` rounded up to a multiple of ``step``. Tiles then start on the
        grid of the network's 2x2 poolings (a max-pooling network's output changes when
        its input is shifted by anything else), on the same grid as napari-unet's own
        tiles, so they join without seams and reproduce napari-unet's probabilities.
    context : int
        Pixels the wrapper mirrors before each spatial axis: the context napari-unet's
        own tiling keeps (the margin of a ``valid`` network).
    extra : int
        Further pixels it mirrors after each spatial axis, so that the network's input
        is a valid size.
    """

    min_size: int
    step: int
    halo: int
    context: int
    extra: int


def package_geometry(config: UNetConfig) -> PackageGeometry:
    """Input sizes, halo and mirrored borders of the package of a ``config`` network.

    Declared sizes are multiples of ``step``; the wrapper's network sees
    ``size + 2 * context + extra`` pixels, a valid input size
    (:func:`~napari_unet.core.model.is_valid_input_size`). The spec needs
    ``min_size - 2 * halo >= 1``.
    """
    step = 2**config.depth
    context = margin(config) if config.padding == "valid" else default_halo(config)
    # Valid input sizes repeat with period `step`, so one offset fits every multiple.
    extra = next(e for e in range(step) if is_valid_input_size(config, 2 * context + e + 64 * step))
    halo = math.ceil(context / step) * step
    size = 2 * halo + step
    while not is_valid_input_size(config, size + 2 * context + extra):
        size += step  # only when the network's smallest input is larger still
    return PackageGeometry(min_size=size, step=step, halo=halo, context=context, extra=extra)


def architecture_source() -> str:
    """Standalone Python source of the package's architecture (needs only torch).

    ``napari_unet/core/model.py`` with the napari-unet modules it imports inlined before
    it (e.g. ``config.py``), their imports of napari-unet's error classes replaced by
    plain ``ValueError`` subclasses of the same names, then the wrapper
    ``UNetProbabilities``.

    Raises
    ------
    RuntimeError
        If those modules import anything but the standard library, torch, napari-unet's
        errors and names from each other (the file would not load without napari-unet).
    """
    modules: list[str] = []
    errors: list[str] = []
    _collect_modules("napari_unet.core.model", modules, errors)
    parts = [
        f"# Generated by napari-unet {__version__} from {', '.join(modules)}\n"
        "# for a bioimage.io model package; needs only torch.\n"
        "from __future__ import annotations\n\n\n",
        *(
            f'class {name}(ValueError):\n    """napari-unet\'s {name}, standalone."""\n\n\n'
            for name in errors
        ),
    ]
    for name in modules:
        source = inspect.getsource(importlib.import_module(name))
        lines = source.splitlines(keepends=True)
        for node in reversed(ast.parse(source).body):
            is_future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
            if is_future or _inlined_import(node) is not None:
                lines[node.lineno - 1 : node.end_lineno] = []
        parts.append(f"# ---- {name}\n" + "".join(lines).strip() + "\n\n\n")
    return "".join(parts).rstrip() + "\n" + _WRAPPER_SOURCE


#: napari-unet's module of error classes, replaced by stand-ins in the architecture file.
_ERRORS_MODULE = "napari_unet.core.errors"


def _collect_modules(name: str, modules: list[str], errors: list[str]) -> None:
    """Append ``name`` to ``modules`` after the napari-unet modules it imports."""
    if name in modules:
        return
    source = inspect.getsource(importlib.import_module(name))
    for node in ast.parse(source).body:
        imported = _inlined_import(node)
        if imported is None:
            _check_standalone_import(node, name)
            continue
        module, names = imported
        if module == _ERRORS_MODULE:
            errors.extend(n for n in names if n not in errors)
        else:
            _collect_modules(module, modules, errors)
    modules.append(name)


def _inlined_import(node: ast.stmt) -> tuple[str, list[str]] | None:
    """``(module, names)`` of a ``from napari_unet.X import names`` statement, else None.

    Raises
    ------
    RuntimeError
        For other forms of napari-unet imports (whole modules, aliases, ``*``), which
        inlining cannot reproduce.
    """
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "napari_unet":
        names = [alias.name for alias in node.names]
        renamed = any(alias.asname not in (None, alias.name) for alias in node.names)
        if renamed or "*" in names:
            raise RuntimeError(
                f"cannot inline 'from {node.module} import ...' with aliases or *: "
                "update napari_unet.core.export.architecture_source"
            )
        return str(node.module), names
    if isinstance(node, ast.Import) and any(
        alias.name.split(".")[0] == "napari_unet" for alias in node.names
    ):
        raise RuntimeError(
            "cannot inline 'import napari_unet...': import names from the module instead"
        )
    return None


def _check_standalone_import(node: ast.stmt, module: str) -> None:
    """Refuse a top-level import a bioimage.io consumer may lack (not stdlib or torch)."""
    if isinstance(node, ast.Import):
        roots = [alias.name.split(".")[0] for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        roots = [(node.module or "").split(".")[0]]
    else:
        return
    stdlib = getattr(sys, "stdlib_module_names", None)  # Python >= 3.10
    if stdlib is None:
        return
    foreign = [root for root in roots if root not in stdlib and root != "torch"]
    if foreign:
        raise RuntimeError(
            f"{module} imports {', '.join(foreign)}; the bioimage.io architecture file must "
            "need only torch: update napari_unet.core.export.architecture_source"
        )


def export_bioimageio(
    bundle: ModelBundle,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    test_image: np.ndarray | None = None,
    cover: str | os.PathLike | np.ndarray | None = None,
    license: str | None = None,
    authors: list[str] | None = None,
    tags: list[str] | None = None,
) -> Path:
    """Write ``bundle`` as a bioimage.io model package (a ``.zip`` file).

    Parameters
    ----------
    bundle : ModelBundle
        The model (e.g. ``load_model(resolve_model("nuclei"))``).
    path : path-like
        The package file; it must end in ``.zip``. Written atomically.
    overwrite : bool
        Whether an existing file at ``path`` may be replaced.
    test_image : (H, W) or (C, H, W) array, optional
        Raw image (C = the model's input channels) whose centre crop becomes the test
        input; default: the bundled nuclei sample (repeated over channels if needed).
        At least :attr:`PackageGeometry.min_size` pixels per side.
    cover : path-like or array, optional
        A cover image file (``.png``, ``.jpg``, ``.gif``, ``.svg``) or an ``(H, W)`` /
        ``(H, W, 3|4)`` uint8 array; default: the test input beside its foreground
        probability.
    license : str, optional
        SPDX licence id of the weights; default the model card's ``Licence:`` line for
        a built-in model, else :data:`DEFAULT_LICENSE`.
    authors : list of str, optional
        Default ``provenance["authors"]``, else :data:`BUILTIN_AUTHOR` for built-in
        models and :data:`DEFAULT_AUTHOR` for others.
    tags : list of str, optional
        Extra tags, beside ``unet``, ``segmentation``, ``pytorch``, ``napari-unet`` ...

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If bioimageio is not installed, ``path`` does not end in ``.zip``, the test image
        is too small, has the wrong shape or non-finite pixels, or the cover or licence
        is unusable.
    OutputError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    """
    path = Path(path)
    if path.suffix.lower() != SUFFIX:
        raise InputError(
            f"bioimage.io packages are .zip files, got {path.name!r}; name it NAME.zip"
        )
    check_output(path, overwrite=overwrite, what="bioimage.io package")
    spec = _import_bioimageio()
    geometry = package_geometry(bundle.config)
    test_input = _test_input(bundle.config, geometry, test_image)
    card = _builtin_card(bundle)
    license_id = _license(license, card)
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as folder:
        folder = Path(folder)
        wrapper = _write_weights(bundle, geometry, folder)
        test_output = _write_test_tensors(bundle, wrapper, test_input, folder)
        cover_name = _write_cover(cover, bundle, test_input, test_output, folder)
        readme = _documentation(bundle, geometry, card, test_input.shape[-1], spec.format_version)
        (folder / "README.md").write_text(readme, encoding="utf-8")
        content = _rdf(
            bundle,
            geometry,
            format_version=spec.format_version,
            license_id=license_id,
            authors=authors,
            tags=tags,
            card=card,
            cover=cover_name,
            parameters=sum(p.numel() for p in wrapper.parameters()),
        )
        # The citation's URL is known good: no request for it (exports work offline).
        known = {UNET_PAPER_URL: None}
        context = spec.ValidationContext(root=folder, file_name="rdf.yaml", known_files=known)
        with context:
            description = _checked(spec, spec.build_description(content, context=context))
        with atomic_write(path) as temporary:
            with open(temporary, "wb") as stream:
                spec.save_bioimageio_package_to_stream(description, output_stream=stream)
            # What consumers will read: the package itself must validate.
            _checked(
                spec, spec.load_description(temporary, perform_io_checks=True, known_files=known)
            )
    return path


def _import_bioimageio() -> types.SimpleNamespace:
    """The bioimageio.spec functions the export uses; InputError when not installed."""
    try:
        spec = importlib.import_module("bioimageio.spec")
        model = importlib.import_module("bioimageio.spec.model.v0_5")
    except ImportError:
        raise InputError(EXTRA_HINT) from None
    return types.SimpleNamespace(
        ValidationContext=spec.ValidationContext,
        InvalidDescr=spec.InvalidDescr,
        build_description=spec.build_description,
        save_bioimageio_package_to_stream=spec.save_bioimageio_package_to_stream,
        load_description=spec.load_description,
        format_version=model.ModelDescr.implemented_format_version,
    )


def _checked(spec: types.SimpleNamespace, description: Any) -> Any:
    """``description`` if bioimageio.spec accepted it; else raise, saying why."""
    if not isinstance(description, spec.InvalidDescr):
        return description
    summary = description.validation_summary.format()
    _check_compatible(summary)
    raise RuntimeError(
        f"napari-unet built an invalid bioimage.io description (a bug; please report it):\n"
        f"{summary}"
    )


def _check_compatible(message: str) -> None:
    """Raise InputError when ``message`` is the known bioimageio.spec/pydantic clash.

    bioimageio.spec up to 0.5.12 (which bioimageio.core 0.11 requires) passes pydantic's
    serialization info where pydantic 2.14 expects an index and refuses it.
    """
    if "index_key" not in message:
        return
    from importlib.metadata import version

    raise InputError(
        f"bioimageio.spec {version('bioimageio.spec')} does not work with pydantic "
        f"{version('pydantic')}; install an older pydantic: pip install 'pydantic<2.14'"
    )


# ---------------------------------------------------------------- test tensors


def sample_crop_size(config: UNetConfig, height: int, width: int) -> int:
    """Side of the square test crop of an ``height`` x ``width`` image.

    The smallest declared input size of at least :data:`DEFAULT_TEST_SIZE`, or the
    largest that fits.

    Raises
    ------
    InputError
        If the image is smaller than the package's minimum input size.
    """
    geometry = package_geometry(config)
    largest = min(height, width)
    if largest < geometry.min_size:
        raise InputError(
            f"the test image is {height} x {width} pixels; this model's package needs at "
            f"least {geometry.min_size} x {geometry.min_size}: pass a larger test image"
        )
    fitting = geometry.min_size + (largest - geometry.min_size) // geometry.step * geometry.step
    wanted = (
        geometry.min_size
        + max(0, math.ceil((DEFAULT_TEST_SIZE - geometry.min_size) / geometry.step)) * geometry.step
    )
    return min(wanted, fitting)


def _test_input(
    config: UNetConfig, geometry: PackageGeometry, image: np.ndarray | None
) -> np.ndarray:
    """The raw test input ``(1, C, s, s)`` float32: a centre crop of ``image``."""
    if image is None:
        from napari_unet._sample_data import nuclei_image

        image = nuclei_image()
    image = np.asarray(image)
    channels = config.in_channels
    if image.ndim == 2:
        image = np.repeat(image[None], channels, axis=0)
    if image.ndim != 3 or image.shape[0] != channels:
        expected = "(H, W)" if channels == 1 else f"({channels}, H, W) or (H, W)"
        raise InputError(
            f"the test image has shape {image.shape}; this model needs {expected}: pass "
            "one plane of an image it segments"
        )
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise InputError(
            f"the test image has dtype {image.dtype}; pass an integer or floating-point image"
        )
    size = sample_crop_size(config, *image.shape[-2:])
    top = (image.shape[-2] - size) // 2
    left = (image.shape[-1] - size) // 2
    crop = image[:, top : top + size, left : left + size].astype(np.float32)
    if not np.isfinite(crop).all():
        raise InputError(
            "the test image has NaN or infinite pixels in its centre; pass a finite image"
        )
    return crop[None]


def _write_test_tensors(
    bundle: ModelBundle, wrapper: torch.nn.Module, test_input: np.ndarray, folder: Path
) -> np.ndarray:
    """Save the test tensors; the output is napari-unet's own segmentation pipeline's.

    Also checks the package's network against it, so a package that would fail its own
    test is never written.
    """
    raw = test_input[0]
    plane = raw[0] if bundle.config.in_channels == 1 else raw
    # The package's network sees the test input as it is: segmented at the model's own
    # scale (a recorded object diameter would otherwise let ``auto`` resample it).
    own_scale = {"diameter": bundle.object_diameter} if bundle.object_diameter else {}
    probabilities = segment(bundle, plane, output="probabilities", device="cpu", **own_scale)
    test_output = np.asarray(probabilities, dtype=np.float32)[None]
    # as segment() does: a multichannel plane is normalised channel by channel
    multichannel = bundle.config.in_channels > 1
    stats = normalise.compute_stats(raw, bundle.normalisation, per_channel=multichannel)
    normalised = normalise.apply(raw, stats)[None]
    with torch.inference_mode():
        packaged = wrapper(torch.from_numpy(normalised)).numpy()
    difference = float(np.abs(packaged - test_output).max())
    if packaged.shape != test_output.shape or not difference <= TOLERANCE:
        raise RuntimeError(
            "the packaged network does not reproduce napari-unet's probabilities "
            f"(shapes {packaged.shape} and {test_output.shape}, largest difference "
            f"{difference:.3g}); nothing was written: please report this bug"
        )
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output)
    # The same as TIFF images ("sample tensors"), for people and tools that show them.
    tifffile.imwrite(folder / "sample_input.tif", test_input[0])
    tifffile.imwrite(folder / "sample_output.tif", test_output[0])
    return test_output


# --------------------------------------------------------------------- weights


def _write_weights(bundle: ModelBundle, geometry: PackageGeometry, folder: Path) -> torch.nn.Module:
    """Write the architecture, state dict and TorchScript files; return the wrapper."""
    source = architecture_source()
    (folder / ARCHITECTURE_FILE).write_text(source, encoding="utf-8")
    wrapper = _build_wrapper(source, bundle, geometry)
    torch.save(wrapper.state_dict(), folder / STATE_DICT_FILE)
    size = geometry.min_size
    example = torch.zeros(1, bundle.config.in_channels, size, size)
    with warnings.catch_warnings():
        # Shape checks in UNet.forward turn sizes into Python numbers: harmless (the
        # traced graph keeps the sizes symbolic, checked at another size in the tests),
        # and torch.jit's deprecation notice is not the user's business.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        torch.jit.save(traced, str(folder / TORCHSCRIPT_FILE))
    return wrapper


def _build_wrapper(source: str, bundle: ModelBundle, geometry: PackageGeometry) -> torch.nn.Module:
    """``UNetProbabilities`` from the packaged source itself, with the bundle's weights."""
    name = "_napari_unet_bioimageio_architecture"
    module = types.ModuleType(name)
    module.__file__ = ARCHITECTURE_FILE
    # dataclasses look the module up while the file runs.
    sys.modules[name] = module
    try:
        exec(compile(source, ARCHITECTURE_FILE, "exec"), module.__dict__)
    finally:
        sys.modules.pop(name, None)
    # Laid out on the meta device: no random initialisation (nor draws from torch's
    # global generator) for weights that are replaced at once.
    with torch.device("meta"):
        wrapper = getattr(module, ARCHITECTURE_CALLABLE)(
            context=geometry.context, extra=geometry.extra, **bundle.config.to_dict()
        )
    weights = {key: value.detach().clone() for key, value in bundle.state_dict.items()}
    wrapper.unet.load_state_dict(weights, assign=True)
    return wrapper.eval()


# ----------------------------------------------------------------------- cover


def _write_cover(
    cover: str | os.PathLike | np.ndarray | None,
    bundle: ModelBundle,
    test_input: np.ndarray,
    test_output: np.ndarray,
    folder: Path,
) -> str:
    """Write ``cover.EXT`` in ``folder`` (the given file or array, or one made from the
    test tensors) and return its name."""
    if cover is not None and not isinstance(cover, np.ndarray):
        source = Path(cover)
        suffix = source.suffix.lower()
        if suffix not in (".png", ".jpg", ".jpeg", ".gif", ".svg"):
            raise InputError(
                f"cover {source.name!r} is not a .png, .jpg, .gif or .svg image; pass one"
            )
        if not source.is_file():
            raise InputError(f"cover image {source} not found; pass an existing image file")
        shutil.copyfile(source, folder / f"cover{suffix}")
        return f"cover{suffix}"
    pixels = _cover_pixels(bundle, test_input, test_output) if cover is None else cover
    _save_png(np.asarray(pixels), folder / "cover.png")
    return "cover.png"


def _cover_pixels(
    bundle: ModelBundle, test_input: np.ndarray, test_output: np.ndarray
) -> np.ndarray:
    """``(h, 2 h, 3)`` uint8: the normalised test input beside its foreground probability.

    The right half tints the input by the probability of not being background (class 0);
    the whole is enlarged to at least 256 px high (covers are shown at that size).
    """
    raw = test_input[0]
    stats = normalise.compute_stats(raw, bundle.normalisation)
    gray = np.clip(normalise.apply(raw[0], stats), 0.0, 1.0)
    foreground = 1.0 - test_output[0, 0]
    tint = np.array([1.0, 0.35, 0.1], np.float32)  # orange: visible on gray
    left = np.repeat(gray[..., None], 3, axis=-1)
    right = left * (1.0 - 0.7 * foreground[..., None]) + 0.7 * foreground[..., None] * tint
    image = np.concatenate([left, right], axis=1)
    factor = max(1, math.ceil(256 / image.shape[0]))
    image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return np.round(image * 255).astype(np.uint8)


def _save_png(pixels: np.ndarray, target: Path) -> None:
    from PIL import Image

    if pixels.dtype != np.uint8 or not (
        pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[-1] in (3, 4))
    ):
        raise InputError(
            f"a cover array must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4), got "
            f"{pixels.dtype} {pixels.shape}; pass such an array or an image file"
        )
    Image.fromarray(pixels).save(target)


# ----------------------------------------------------------------- description


def _builtin_card(bundle: ModelBundle) -> str | None:
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


def _license(requested: str | None, card: str | None) -> str:
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


def _preprocessing(spec: dict[str, Any], channels: int = 1) -> list[dict[str, Any]]:
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


def _rdf(
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
    config = bundle.config
    extras = BUILTIN_EXTRAS.get(bundle.name, {}) if card is not None else {}
    size_in = {"min": geometry.min_size, "step": geometry.step}
    channels_in = (
        ["intensity"]
        if config.in_channels == 1
        else [f"channel{i}" for i in range(config.in_channels)]
    )
    torch_version = torch.__version__.split("+")[0]
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
        "tags": _tags(config, extras, tags),
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "raw intensities of one plane (normalised by the preprocessing)",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": channels_in},
                    {"id": "y", "type": "space", "size": size_in},
                    {"id": "x", "type": "space", "size": size_in},
                ],
                "data": {"type": "float32"},
                "test_tensor": {"source": "test_input.npy"},
                "sample_tensor": {"source": "sample_input.tif"},
                "preprocessing": _preprocessing(bundle.normalisation, bundle.config.in_channels),
            }
        ],
        "outputs": [
            {
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
                        }
                        for axis in ("y", "x")
                    ),
                ],
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "test_tensor": {"source": "test_output.npy"},
                "sample_tensor": {"source": "sample_output.tif"},
            }
        ],
        "weights": {
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
        },
        "config": {
            "bioimageio": {
                "architecture_type": f"U-Net ({config.padding}, depth {config.depth})",
                "model_parameter_count": parameters,
            },
            # Everything napari-unet needs to rebuild the model from pytorch_state_dict.
            "napari_unet": {
                "version": __version__,
                "name": bundle.name,
                "config": config.to_dict(),
                "normalisation": normalise.validate_spec(bundle.normalisation),
                "class_names": list(bundle.class_names),
                "provenance": bundle.provenance,
                "weights_key_prefix": "unet.",
                "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"
                ),
            },
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


def _documentation(
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


__all__ = [
    "DEFAULT_LICENSE",
    "EXTRA_HINT",
    "HOW_TO_OPEN",
    "PackageGeometry",
    "architecture_source",
    "export_bioimageio",
    "package_geometry",
    "sample_crop_size",
]

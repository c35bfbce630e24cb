"""A model file's JSON description: read from the safetensors header and checked.

A model file (see :mod:`napari_unet.core.modelfile`) is a safetensors file whose header
metadata holds, under :data:`METADATA_KEY`, the architecture, the normalisation, the class
names and the provenance as JSON. This module reads that header by hand (no torch) and
checks every field before anything is built: types, bounds on depth, width, classes and
channels, the normalisation, the recommended post-processing, the scale. A refusal is one
:class:`~napari_unet.core.errors.ModelFileError` line naming the file and the field.

The optional ``"scale"`` field says at which scale the model was trained::

    "scale": {"pixel_size": [y, x] | null, "unit": "nm" | null, "object_diameter": 22.5 | null}

``pixel_size`` is the (y, x) size of one pixel of the training images in ``unit`` (known
when the images carried one); ``object_diameter`` the median equivalent diameter of the
training annotations' objects, in pixels of those images
(:func:`~napari_unet.core.metrics.median_object_diameter`). A file without the field, as
written before it existed, has an unknown scale.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_unet.core import normalise
from napari_unet.core.calibration import UNITS, PixelSize, canonical_unit
from napari_unet.core.config import UNetConfig, config_field_problem
from napari_unet.core.description_fields import (
    FieldProblem,
    clipped,
    is_count,
    is_finite_number,
    is_probability,
    is_text,
    is_unit_interval,
    one_line,
    printable,
    require,
    shown,
)
from napari_unet.core.errors import InputError, ModelFileError

#: Key of the JSON description in the safetensors header metadata.
METADATA_KEY = "napari_unet"
#: Version of the JSON description; bumped on incompatible changes.
FORMAT_VERSION = 1
#: File extension of model files.
SUFFIX = ".safetensors"
# A safetensors file starts with the 8-byte little-endian length of its JSON header.
_MAX_HEADER_BYTES = 100_000_000
#: Largest object diameter (pixels) a model may record: far beyond any U-Net's field of view.
MAX_OBJECT_DIAMETER = 10_000.0
_SMALLEST_PIXEL_M, _LARGEST_PIXEL_M = 1e-12, 1e3


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "foreground"]`` for 2 classes, ``background, class_1, ...`` otherwise."""
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, num_classes)]


def checked_description(path: str | os.PathLike) -> ParsedDescription:
    """Read and check a model file's description: what a model needs besides its weights.

    Raises
    ------
    ModelFileError
        Naming the file and the first invalid field.
    """
    path = Path(path)
    return _parse_file_description(path, _read_json_description(path))


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a model file, checked, without reading its weights.

    Raises
    ------
    ModelFileError
        As :func:`load_model`, except for problems with the weights themselves.
    """
    path = Path(path)
    description = _read_json_description(path)
    _parse_file_description(path, description)
    return description


def _read_json_description(path: Path) -> dict[str, Any]:
    """The description as stored, with a known format version (fields not yet checked)."""
    _check_looks_like_safetensors(path)
    metadata = _header_metadata(path)
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model (no {METADATA_KEY!r} "
            "metadata); save models with napari-unet"
        )
    try:
        description = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise ModelFileError(
            f"{path} has unreadable model metadata ({one_line(error)}); re-download or "
            "re-save the model"
        ) from None
    if not isinstance(description, dict):
        raise ModelFileError(
            f"{path} has unreadable model metadata (not a JSON object); re-download or "
            "re-save the model"
        )
    version = description.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {shown(version)}, this napari-unet reads "
            f"version {FORMAT_VERSION}; update napari-unet or re-save the model with this "
            "version"
        )
    return description


def _check_looks_like_safetensors(path: Path) -> None:
    """Refuse missing files and pickles before any parser sees them."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError as error:
        raise ModelFileError(
            f"cannot read model file {path} ({error.strerror or type(error).__name__}); "
            "check that you may read it"
        ) from None
    if len(head) < 9:
        raise ModelFileError(f"{path} is too short to be a model file (truncated or empty)")
    (header_length,) = struct.unpack("<Q", head[:8])
    if header_length <= min(_MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
        return
    # torch.save writes a zip archive ("PK..."); plain pickles start with protocol 0x80.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise ModelFileError(
            f"{path} looks like a pickled PyTorch checkpoint (torch.save); napari-unet never "
            "loads pickles because they can run arbitrary code. Load it yourself in a trusted "
            "session and save it with napari_unet.core.modelfile.save_model"
        )
    raise ModelFileError(
        f"{path} is not a safetensors model file (corrupt, truncated or another format); "
        f"napari-unet models are {SUFFIX} files saved by napari-unet"
    )


def _header_metadata(path: Path) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors header, parsed here so no torch is needed.

    :func:`_check_looks_like_safetensors` has bounded the header length by the file size,
    so reading it allocates no more than the file holds.
    """
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            raw = handle.read(length)
        if len(raw) < length:
            raise ValueError("the header is cut short")
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        _check_data_covered(header, path.stat().st_size - 8 - length)
    except OSError as error:
        raise ModelFileError(
            f"cannot read model file {path} ({error.strerror or type(error).__name__}); "
            "check that you may read it"
        ) from None
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ModelFileError(
            f"{path} is corrupt or truncated ({one_line(error)}); re-download or re-save the model"
        ) from None
    metadata = header.get("__metadata__")
    return metadata if isinstance(metadata, dict) else {}


def _check_data_covered(header: dict[str, Any], data_bytes: int) -> None:
    """Refuse a header whose tensors do not end exactly where the file does.

    The check safetensors makes when it opens a file, made here without torch, so a
    truncated file is called truncated before its description is looked at.
    """
    ends = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ValueError(f"tensor {clipped(key, 40)!r} has no data offsets")
        ends.append(offsets[1])
    if not all(type(end) is int for end in ends) or max(ends, default=0) != data_bytes:
        raise ValueError("the tensors listed in the header do not fit the file")


@dataclass(frozen=True)
class ParsedDescription:
    """A checked description: what :class:`ModelBundle` needs besides the weights."""

    name: str | None
    config: UNetConfig
    normalisation: dict[str, Any]
    class_names: list[str]
    provenance: dict[str, Any]
    pixel_size: PixelSize | None = None
    object_diameter: float | None = None


def _parse_file_description(path: Path, description: dict[str, Any]) -> ParsedDescription:
    try:
        return parse_description(description)
    except FieldProblem as problem:
        raise ModelFileError(
            f"model file {path}: {problem}; re-save the model with napari-unet, or get an "
            "intact copy of the file"
        ) from None


def parse_description(description: dict[str, Any]) -> ParsedDescription:
    """Check every field :func:`load_model` and its users read, before anything is built.

    Raises
    ------
    FieldProblem
        Naming the first invalid field and what it must be.
    """
    name = description.get("name")
    require(name is None or is_text(name), "name", "must be a text", name)
    config = _parse_config(description.get("config"))
    normalisation = _parse_normalisation(description.get("normalisation"))
    class_names = _parse_class_names(description.get("class_names"), config.num_classes)
    provenance = description.get("provenance")
    if provenance is None:
        provenance = {}
    require(isinstance(provenance, dict), "provenance", "must be a mapping", provenance)
    _parse_postprocess(provenance.get("postprocess"))
    pixel_size, object_diameter = parse_scale(description.get("scale"))
    return ParsedDescription(
        name or None,
        config,
        normalisation,
        class_names,
        dict(provenance),
        pixel_size,
        object_diameter,
    )


_SCALE_KEYS = ("pixel_size", "unit", "object_diameter")


def parse_scale(scale: Any) -> tuple[PixelSize | None, float | None]:
    """The checked ``"scale"`` field: ``(pixel size or None, object diameter or None)``.

    Absent (``None``) means unknown, as in files written before the field existed.

    Raises
    ------
    FieldProblem
        Naming ``scale`` or the invalid ``scale.*`` entry.
    """
    if scale is None:
        return None, None
    require(isinstance(scale, dict), "scale", "must be a mapping", scale)
    for key in scale:
        if key not in _SCALE_KEYS:
            raise FieldProblem(
                f"scale.{clipped(key, 40)}",
                f"is not a scale setting (known: {', '.join(_SCALE_KEYS)})",
            )
    diameter = scale.get("object_diameter")
    require(
        diameter is None or (is_finite_number(diameter) and 0.0 < diameter <= MAX_OBJECT_DIAMETER),
        "scale.object_diameter",
        f"must be a number of pixels above 0 and at most {MAX_OBJECT_DIAMETER:g}, or null",
        diameter,
    )
    return _parse_pixel_size(scale.get("pixel_size"), scale.get("unit")), (
        None if diameter is None else float(diameter)
    )


def _parse_pixel_size(sizes: Any, unit: Any) -> PixelSize | None:
    unit_name = _known_unit(unit)
    require(
        unit is None or unit_name is not None,
        "scale.unit",
        f"must be a length unit ({', '.join(UNITS)}) or null",
        unit,
    )
    if sizes is None:
        return None
    require(
        isinstance(sizes, list)
        and len(sizes) == 2
        and all(is_finite_number(size) and size > 0 for size in sizes),
        "scale.pixel_size",
        "must be [y, x], two positive finite numbers, or null",
        sizes,
    )
    require(unit_name is not None, "scale.unit", "must name the pixel size's unit", unit)
    # Far outside any microscope's range, a size would only make the resampling factors
    # overflow or vanish.
    metres = [size * UNITS[unit_name] for size in sizes]
    require(
        all(_SMALLEST_PIXEL_M <= size <= _LARGEST_PIXEL_M for size in metres),
        "scale.pixel_size",
        "must lie between 1 pm and 1 km per pixel",
        sizes,
    )
    return PixelSize(float(sizes[0]), float(sizes[1]), unit_name)


def _known_unit(unit: Any) -> str | None:
    """The canonical spelling of ``unit``, or None when it is not a known length unit."""
    if not is_text(unit):
        return None
    try:
        return canonical_unit(unit)
    except InputError:
        return None


def scale_json(
    pixel_size: PixelSize | None, object_diameter: float | None
) -> dict[str, Any] | None:
    """The ``"scale"`` field for a model file; None when nothing is known (field left out)."""
    if pixel_size is None and object_diameter is None:
        return None
    return {
        "pixel_size": None if pixel_size is None else [pixel_size.y, pixel_size.x],
        "unit": None if pixel_size is None else pixel_size.unit,
        "object_diameter": object_diameter,
    }


def scale_summary(pixel_size: PixelSize | None, object_diameter: float | None) -> str:
    """A few words for listings: ``"4 nm/px, objects ~22 px"``; "" when nothing is known."""
    parts = []
    if pixel_size is not None:
        parts.append(f"{pixel_size}/px")
    if object_diameter is not None:
        parts.append(f"objects ~{object_diameter:.0f} px")
    return ", ".join(parts)


def _parse_config(config: Any) -> UNetConfig:
    require(isinstance(config, dict), "config", "must be a mapping of U-Net settings", config)
    known = UNetConfig.__dataclass_fields__
    for key, value in config.items():
        if key not in known:
            raise FieldProblem(
                f"config.{clipped(key, 40)}",
                f"is not a U-Net setting (known: {', '.join(known)})",
            )
        problem = config_field_problem(key, value)
        if problem is not None:
            raise FieldProblem(f"config.{key}", f"{problem}, got {shown(value)}")
    try:
        return UNetConfig.from_dict(config)
    except InputError as error:  # cannot happen after the checks above; kept as a guard
        raise FieldProblem("config", f"is invalid ({error})") from None


def _parse_normalisation(spec: Any) -> dict[str, Any]:
    if spec is None:
        return normalise.validate_spec(None)
    require(isinstance(spec, dict), "normalisation", "must be a mapping", spec)
    method = spec.get("method")
    methods = ("percentile", "minmax", "fixed")
    require(
        method in methods,
        "normalisation.method",
        "must be one of " + ", ".join(f'"{m}"' for m in methods),
        method,
    )
    for key in ("low", "high", "offset", "scale"):
        if key in spec:
            require(
                is_finite_number(spec[key]),
                f"normalisation.{key}",
                "must be a finite number",
                spec[key],
            )
    try:
        return normalise.validate_spec(spec)
    except InputError as error:
        raise FieldProblem("normalisation", f"is invalid: {error}") from None


def _parse_class_names(names: Any, num_classes: int) -> list[str]:
    if names is None or names == []:
        return default_class_names(num_classes)
    requirement = f"must be a list of {num_classes} names, one per class (config.num_classes)"
    require(
        isinstance(names, list) and len(names) == num_classes, "class_names", requirement, names
    )
    for index, item in enumerate(names):
        require(is_text(item), f"class_names[{index}]", "must be a text", item)
    return list(names)


#: Post-processing a model may recommend (``provenance["postprocess"]``, the keys of
#: ``segment._RECOMMENDABLE``): a test keeps the two in step.
_RECOMMENDATION_CHECKS: dict[str, tuple[Any, str]] = {
    "threshold": (is_probability, "must be a number between 0 and 1"),
    "min_size": (is_count, "must be a whole number of pixels >= 0"),
    "split_touching": (lambda value: isinstance(value, bool), "must be true or false"),
    "fill_boundaries": (lambda value: isinstance(value, bool), "must be true or false"),
    "merge_boundaries": (is_unit_interval, "must be a number from 0 to 1"),
}


def _parse_postprocess(postprocess: Any) -> None:
    """Check the recommended post-processing, so a bad value is blamed on the file."""
    if postprocess is None:
        return
    field_name = "provenance.postprocess"
    require(isinstance(postprocess, dict), field_name, "must be a mapping", postprocess)
    _check_recommendations(postprocess, field_name)
    per_output = postprocess.get("per_output")
    if per_output is None:
        return
    field_name += ".per_output"
    require(
        isinstance(per_output, dict),
        field_name,
        'must map output kinds ("labels", "mask", "probabilities") to settings',
        per_output,
    )
    for output, settings in per_output.items():
        inner = f"{field_name}.{clipped(output, 40)}"
        require(isinstance(settings, dict), inner, "must be a mapping", settings)
        _check_recommendations(settings, inner)


def _check_recommendations(settings: dict[str, Any], field_name: str) -> None:
    for key, (is_valid, requirement) in _RECOMMENDATION_CHECKS.items():
        if key in settings:
            require(is_valid(settings[key]), f"{field_name}.{key}", requirement, settings[key])


def short_description(provenance: dict[str, Any]) -> str:
    """One line for listings: the provenance's description or notes (printable)."""
    text = printable(str(provenance.get("description") or provenance.get("notes") or ""))
    return text.splitlines()[0] if text else ""


__all__ = [
    "FORMAT_VERSION",
    "MAX_OBJECT_DIAMETER",
    "METADATA_KEY",
    "SUFFIX",
    "ParsedDescription",
    "checked_description",
    "default_class_names",
    "parse_description",
    "parse_scale",
    "read_description",
    "scale_json",
    "scale_summary",
    "short_description",
]

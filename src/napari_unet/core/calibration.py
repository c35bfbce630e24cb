"""Physical calibration of images: pixel sizes, units, and reading/writing them.

A U-Net sees pixels, but objects have a physical size: to segment an image at the scale a
model was trained at, the image's pixel size must be known, and results must keep it so
they overlay their image. This module is the one place that knows about units and about
where files record their calibration. It imports neither torch nor napari.

Public API
----------
- :data:`UNITS`: canonical length unit -> metres.
- :func:`canonical_unit` ``(unit) -> str``: ``"um"``, ``"micron"``... -> ``"µm"``.
- :class:`PixelSize` ``(y, x, unit)`` and :func:`parse_pixel_size` ``(text, unit=None)``.
- :class:`Calibration` ``(axes, scale, translate, units, source)``: per-axis calibration,
  with ``pixel_size``, ``for_result(channel_axis, classes=None)``, ``for_ndim(ndim)``...
- :func:`read_calibration` ``(path) -> Calibration | None``: TIFF (OME, ImageJ, resolution
  tags) and OME-Zarr.
- :func:`tiff_calibration_kwargs` ``(calibration, *, shape, dtype, info) -> dict`` for
  ``tifffile.imwrite``; :func:`ngff_transformations` ``(calibration, ndim)`` for OME-Zarr.

The module reads calibrations (:func:`read_calibration`) and is the front door of the
calibration layer: units live in :mod:`~napari_unet.core.units`, :class:`Calibration` in
:mod:`~napari_unet.core.calibration_axes`, writing in
:mod:`~napari_unet.core.calibration_write`; their public names are importable from here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from napari_unet.core.calibration_axes import SOURCES, Calibration, default_axes
from napari_unet.core.calibration_write import (
    NGFF_UNITS,
    ngff_transformations,
    tiff_calibration_kwargs,
)
from napari_unet.core.formats import TiffLog, is_zarr_path
from napari_unet.core.units import (
    DEFAULT_UNIT,
    UNIT_ALIASES,
    UNITS,
    PixelSize,
    _known_unit,
    canonical_unit,
    parse_pixel_size,
    unit_factor,
)

#: Length units files use that are converted to micrometres when read: TIFF resolution
#: tags and ImageJ may count pixels per inch, OME allows "in".
_INCH_MICROMETRES = 25400.0


_INCH_NAMES = ("in", "inch", "inches")


def _tidy(value: float) -> float:
    """``value`` to 12 significant digits: TIFF stores resolutions as fractions, whose
    inverse is 0.32500000000000001 rather than 0.325."""
    return float(f"{value:.12g}")


def _length_unit(unit: Any) -> tuple[float, str] | None:
    """A unit read from a file as ``(multiplier, canonical unit)``, ``None`` if not a length.

    The multiplier is 1 except for inches (read as micrometres).
    """
    if isinstance(unit, str) and unit.strip().lower() in _INCH_NAMES:
        return _INCH_MICROMETRES, "µm"
    canonical = _known_unit(unit)
    return (1.0, canonical) if canonical is not None else None


def _physical(value: Any, unit: Any) -> tuple[float, str] | None:
    """A positive length read from a file as ``(value, canonical unit)``, or ``None``."""
    number = _finite(value, math.nan)
    known = _length_unit(unit)
    if known is None or not number > 0:  # NaN too
        return None
    return _tidy(number * known[0]), known[1]


def _finite(value: Any, default: float = 0.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


class _AxesBuilder:
    """Collects per-axis values read from a file into a :class:`Calibration`."""

    def __init__(self, axes: str) -> None:
        self.axes = axes.lower()
        self.scale = [1.0] * len(self.axes)
        self.translate = [0.0] * len(self.axes)
        self.units: list[str | None] = [None] * len(self.axes)

    def set(self, letter: str, size: tuple[float, str] | None, origin: float = 0.0) -> None:
        """Axis ``letter`` (if the image has it) is ``size`` long, starting at ``origin``
        (in ``size``'s unit)."""
        if size is None or letter not in self.axes:
            return
        index = self.axes.index(letter)
        self.scale[index], self.units[index] = size
        self.translate[index] = _finite(origin)

    def build(self, source: str) -> Calibration | None:
        calibration = Calibration(
            self.axes, tuple(self.scale), tuple(self.translate), tuple(self.units), source
        )
        return calibration if calibration.is_known else None


def read_calibration(path: Any) -> Calibration | None:
    """The calibration a TIFF or OME-Zarr file records, ``None`` when it records none.

    TIFF (through tifffile), first series: OME-XML first (``PhysicalSizeX/Y/Z`` with
    their units, µm by default as the OME schema says; the first plane's
    ``PositionX/Y``), then ImageJ (``XResolution``/``YResolution`` are pixels per
    ``unit``, ``spacing`` the z step, ``xorigin``... the origin in pixels), then the
    resolution tags of other TIFFs when their ``ResolutionUnit`` is a length (not the
    meaningless default of 1 pixel per no unit, nor a whole-number print resolution
    such as 72 dpi, which image editors write without meaning a pixel size).

    OME-Zarr (NGFF 0.4 and 0.5): the first multiscale's axis units and the scale and
    translation of its full-resolution level (composed with the multiscale's own
    transformations); a level array's path gives that level's.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` file or ``.zarr`` store.

    Returns
    -------
    Calibration or None
        Axes as the reader names them (tifffile's series axes, NGFF axis names),
        lower case. ``None`` for other files, files recording nothing, and files that
        cannot be read (reading the image says why, in one line).
    """

    path = Path(path)
    try:
        if is_zarr_path(path):
            return _zarr_calibration(path)
        if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
            return _tiff_calibration(path)
    except Exception:  # damaged files: the image reader reports them in one line
        return None
    return None


def _tiff_calibration(path: Any) -> Calibration | None:
    import tifffile

    with TiffLog(), tifffile.TiffFile(path) as tiff:
        if not tiff.series:
            return None
        series = tiff.series[0]
        axes, page = str(series.axes), series.keyframe
        if tiff.is_ome:
            calibration = _ome_calibration(tiff.ome_metadata, axes)
            if calibration is not None:
                return calibration
        if tiff.is_imagej:
            return _imagej_calibration(tiff.imagej_metadata or {}, page, axes)
        return _resolution_calibration(page, axes)


def _pixels_per_unit(page: Any) -> tuple[float | None, float | None]:
    """``(x, y)`` resolution of a TIFF page in pixels per unit, ``None`` where unusable."""
    values = []
    for name in ("XResolution", "YResolution"):
        tag = page.tags.get(name)
        try:
            numerator, denominator = (float(v) for v in tag.value)
            value = numerator / denominator
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            value = None
        values.append(value if value is not None and math.isfinite(value) and value > 0 else None)
    return values[0], values[1]


def _imagej_calibration(meta: dict[str, Any], page: Any, axes: str) -> Calibration | None:
    """ImageJ: X/YResolution in pixels per ``unit`` (``yunit``...), ``spacing`` for z."""
    unit = meta.get("unit")
    units = {"x": unit, "y": meta.get("yunit", unit), "z": meta.get("zunit", unit)}
    resolution_x, resolution_y = _pixels_per_unit(page)
    builder = _AxesBuilder(axes)
    sizes = {
        "x": _physical(1 / resolution_x, units["x"]) if resolution_x else None,
        "y": _physical(1 / resolution_y, units["y"]) if resolution_y else None,
        "z": _physical(meta.get("spacing"), units["z"]),
    }
    for letter, size in sizes.items():
        # ImageJ's origin is in pixels: pixel i is at (i - origin) * size
        origin = -_finite(meta.get(f"{letter}origin")) * size[0] if size else 0.0
        builder.set(letter, size, origin)
    return builder.build("ImageJ")


#: TIFF ResolutionUnit values that are lengths (2 inch, 3 cm; 4 mm and 5 µm in TIFF/EP).
_RESOLUTION_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "µm"}


#: Whole-number resolutions up to this many dots per inch are print settings (72, 96,
#: 300 dpi) that editors and screenshots write by default, not a microscope's pixel size
#: (1200 dpi is a 21 µm pixel).
_PRINT_DPI = 1200


def _resolution_calibration(page: Any, axes: str) -> Calibration | None:
    """A TIFF without ImageJ or OME metadata: its resolution tags, when they mean a length
    (read in µm)."""
    unit = _RESOLUTION_UNITS.get(int(getattr(page, "resolutionunit", 1) or 1))
    if unit is None:
        return None
    builder = _AxesBuilder(axes)
    for letter, resolution in zip("xy", _pixels_per_unit(page), strict=True):
        if resolution is None:
            continue
        if unit == "inch" and resolution == round(resolution) and resolution <= _PRINT_DPI:
            return None
        size = _physical(1 / resolution, unit)
        if size is not None and size[1] != "µm":  # microscopy's unit, not "0.00005 cm"
            size = _tidy(size[0] * unit_factor(size[1], "µm")), "µm"
        builder.set(letter, size)
    return builder.build("TIFF")


def _ome_calibration(xml: str | None, axes: str) -> Calibration | None:
    """OME-XML of the first image: PhysicalSizeX/Y/Z (µm unless a unit is given), and
    the first plane's PositionX/Y as the translation."""
    from xml.etree import ElementTree

    if not xml:
        return None
    pixels = next(
        (element for element in ElementTree.fromstring(xml).iter() if _local(element) == "Pixels"),
        None,
    )
    if pixels is None:
        return None
    plane = next((child for child in pixels if _local(child) == "Plane"), None)
    builder = _AxesBuilder(axes)
    for letter in "xyz":
        name = f"PhysicalSize{letter.upper()}"
        size = _physical(pixels.get(name), pixels.get(f"{name}Unit", "µm"))
        builder.set(letter, size, _ome_position(plane, letter, size))
    return builder.build("OME")


def _local(element: Any) -> str:
    """An XML element's name without its namespace."""
    return str(element.tag).rsplit("}", 1)[-1]


def _ome_position(plane: Any, letter: str, size: tuple[float, str] | None) -> float:
    """A plane's ``Position<L>`` in ``size``'s unit (0 without one, or without a length unit:
    OME's default unit is the stage's "reference frame")."""
    if plane is None or size is None or letter == "z":
        return 0.0  # a plane's z position is that plane's, not the stack's origin
    name = f"Position{letter.upper()}"
    known = _length_unit(plane.get(f"{name}Unit"))
    if known is None:
        return 0.0
    return _finite(plane.get(name)) * known[0] * unit_factor(known[1], size[1])


# OME-Zarr is read from its NGFF JSON through zarr itself, not through ome-zarr-py:
# ome-zarr-py 0.18 reads zarr 3.1 stores, but it gives the same raw JSON dicts back and
# installing it would downgrade pydantic (its ome-zarr-models pins pydantic<2.13, below
# what bioimageio.spec uses here) and python-dateutil, and pull in s3fs, botocore and
# aiohttp, for the few fields read here. largeimage.py opens the pixels the same way.
def _zarr_calibration(path: Any) -> Calibration | None:
    import zarr

    node = zarr.open(str(path), mode="r")
    level = None
    if isinstance(node, zarr.Array):  # a level of an OME-Zarr image, or a plain array
        if not is_zarr_path(path.parent):
            return None
        level, node = path.name, zarr.open_group(str(path.parent), mode="r")
    multiscale = _first_multiscale(dict(node.attrs))
    if multiscale is None:
        return None
    datasets = multiscale.get("datasets") or []
    dataset = next(
        (d for d in datasets if level is None or d.get("path") == level),
        None,
    )
    axes = multiscale.get("axes")
    if dataset is None or not isinstance(axes, list) or not axes:
        return None
    transformations = [
        *(dataset.get("coordinateTransformations") or []),
        *(multiscale.get("coordinateTransformations") or []),  # applied after the level's
    ]
    scale, translate = _compose(transformations, len(axes))
    builder = _AxesBuilder("".join(_ngff_letter(entry) for entry in axes))
    for index, entry in enumerate(axes):
        if not (math.isfinite(scale[index]) and scale[index] > 0):
            continue  # a malformed scale: this axis stays unknown
        known = _length_unit(entry.get("unit") if isinstance(entry, dict) else None)
        multiplier, unit = known if known is not None else (1.0, None)
        builder.scale[index] = _tidy(scale[index] * multiplier)
        builder.translate[index] = translate[index] * multiplier
        builder.units[index] = unit
    return builder.build("OME-Zarr")


def _first_multiscale(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The first multiscale of NGFF 0.4 (top level) or 0.5 (under ``"ome"``) attributes."""
    ome = attrs.get("ome")
    multiscales = attrs.get("multiscales") or (
        ome.get("multiscales") if isinstance(ome, dict) else None
    )
    if not isinstance(multiscales, list) or not multiscales:
        return None
    return multiscales[0] if isinstance(multiscales[0], dict) else None


def _ngff_letter(entry: Any) -> str:
    """An NGFF axis as a calibration letter (as :func:`napari_unet.core.io.read_axes`)."""
    name, kind = (entry, None) if isinstance(entry, str) else (entry.get("name"), entry.get("type"))
    if kind == "channel":
        return "c"
    if kind == "time":
        return "t"
    return name.lower() if isinstance(name, str) and len(name) == 1 else "q"


def _compose(transformations: list[Any], ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of NGFF ``scale``/``translation`` transformations in order."""
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for transformation in transformations:
        if not isinstance(transformation, dict):
            continue
        kind = transformation.get("type")
        values = transformation.get(kind) if kind in ("scale", "translation") else None
        if not isinstance(values, list) or len(values) != ndim:
            continue  # "identity", a binary "path", or malformed: nothing usable
        values = [_finite(value, math.nan) for value in values]
        if kind == "scale":
            scale = [s * v for s, v in zip(scale, values, strict=True)]
            translate = [t * v for t, v in zip(translate, values, strict=True)]
        else:
            translate = [t + v for t, v in zip(translate, values, strict=True)]
    translate = [t if math.isfinite(t) else 0.0 for t in translate]
    return scale, translate


__all__ = [
    "DEFAULT_UNIT",
    "NGFF_UNITS",
    "SOURCES",
    "UNITS",
    "UNIT_ALIASES",
    "Calibration",
    "PixelSize",
    "canonical_unit",
    "default_axes",
    "ngff_transformations",
    "parse_pixel_size",
    "read_calibration",
    "tiff_calibration_kwargs",
    "unit_factor",
]

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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.formats import TiffLog, is_zarr_path

#: Canonical length units and their size in metres. "µm" uses the micro sign (U+00B5), as
#: OME-XML and ImageJ do.
UNITS: dict[str, float] = {
    "pm": 1e-12,
    "Å": 1e-10,
    "nm": 1e-9,
    "µm": 1e-6,
    "mm": 1e-3,
    "cm": 1e-2,
    "m": 1.0,
}

#: Other spellings of the canonical units, lower case: what users type, what ImageJ,
#: OME-XML and OME-NGFF write (NGFF uses the UDUNITS names, "micrometer"...).
UNIT_ALIASES: dict[str, str] = {
    **{name: "pm" for name in ("picometer", "picometers", "picometre", "picometres")},
    **{name: "Å" for name in ("å", "\u212b", "angstrom", "angstroms", "ångström")},
    **{name: "nm" for name in ("nanometer", "nanometers", "nanometre", "nanometres")},
    **{
        name: "µm"
        for name in (
            "um",
            "μm",  # Greek mu (U+03BC), which keyboards often give instead of the micro sign
            "\\u00b5m",  # ImageJ escapes non-ASCII characters in its TIFF description
            "micron",
            "microns",
            "micrometer",
            "micrometers",
            "micrometre",
            "micrometres",
        )
    },
    **{name: "mm" for name in ("millimeter", "millimeters", "millimetre", "millimetres")},
    **{name: "cm" for name in ("centimeter", "centimeters", "centimetre", "centimetres")},
    **{name: "m" for name in ("meter", "meters", "metre", "metres")},
}

#: The default unit of a pixel size given without one (microscopy's usual unit).
DEFAULT_UNIT = "µm"

#: What the one-line errors suggest.
_EXAMPLE = "give e.g. --pixel-size 0.325um"


def _accepted_units() -> str:
    return "pm, Å (angstrom), nm, µm (um, micron), mm, cm, m"


def canonical_unit(unit: str) -> str:
    """The canonical spelling of a length unit: ``"um"``, ``"micron"``, ``"μm"`` -> ``"µm"``.

    Parameters
    ----------
    unit : str
        A unit name or symbol (case-insensitive for names; surrounding spaces ignored).

    Returns
    -------
    str
        A key of :data:`UNITS`.

    Raises
    ------
    InputError
        For an unknown unit, in one line listing the accepted ones.
    """
    text = str(unit).strip()
    if text in UNITS:
        return text
    lowered = text.lower()
    if lowered in UNITS:  # "NM", "Um"...: symbols typed in the wrong case
        return lowered
    if lowered in UNIT_ALIASES:
        return UNIT_ALIASES[lowered]
    if not text:
        raise InputError(f"the unit is empty: use one of {_accepted_units()}")
    raise InputError(f"unknown unit {text!r}: use one of {_accepted_units()}")


def unit_factor(source: str, target: str) -> float:
    """What a length in ``source`` units is multiplied by to be in ``target`` units.

    Exact powers of ten (``UNITS[source] / UNITS[target]`` would give 999.9999999999999
    for µm -> nm).
    """
    exponent = round(math.log10(UNITS[canonical_unit(source)] / UNITS[canonical_unit(target)]))
    return 10.0**exponent


def _known_unit(unit: Any) -> str | None:
    """:func:`canonical_unit` of a unit read from a file, ``None`` when unknown or absent."""
    if not isinstance(unit, str):
        return None
    try:
        return canonical_unit(unit)
    except InputError:
        return None


def _check_size(value: Any, what: str = "pixel size", hint: str = _EXAMPLE) -> float:
    """``value`` as a positive finite float, or a one-line :class:`InputError`."""
    if isinstance(value, bool):  # True is 1 to float(), never a size
        raise InputError(f"{what} must be a positive number, got {value}: {hint}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a positive number, got {value!r}: {hint}") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{what} must be a positive number, got {value}: {hint}")
    return number


def _format_number(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class PixelSize:
    """The physical size of one pixel along y and x.

    Parameters
    ----------
    y, x : float
        Positive, finite sizes (rows, columns).
    unit : str
        A length unit; stored canonically (``"um"`` becomes ``"µm"``).

    Raises
    ------
    InputError
        For a size that is zero, negative, NaN or infinite, or an unknown unit.
    """

    y: float
    x: float
    unit: str = DEFAULT_UNIT

    def __post_init__(self) -> None:
        # frozen: set the validated, canonical values through object.__setattr__
        object.__setattr__(self, "y", _check_size(self.y))
        object.__setattr__(self, "x", _check_size(self.x))
        object.__setattr__(self, "unit", canonical_unit(self.unit))

    def to(self, unit: str) -> PixelSize:
        """The same pixel size in ``unit``."""
        unit = canonical_unit(unit)
        factor = unit_factor(self.unit, unit)
        return PixelSize(self.y * factor, self.x * factor, unit)

    def ratio_to(self, other: PixelSize) -> tuple[float, float]:
        """``(self.y / other.y, self.x / other.x)``, both in the same unit.

        The factor that resamples an image of this pixel size to ``other``'s grid: 0.5
        when this pixel is half ``other``'s (the image is then downsampled 2x).
        """
        other = other.to(self.unit)
        return self.y / other.y, self.x / other.x

    @property
    def isotropic(self) -> bool:
        """Whether y and x sizes are equal (to a relative 1e-9)."""
        return math.isclose(self.y, self.x, rel_tol=1e-9)

    def __str__(self) -> str:
        if self.isotropic:
            return f"{_format_number(self.x)} {self.unit}"
        return f"{_format_number(self.y)} x {_format_number(self.x)} {self.unit}"


#: A number, as users type it ("0.325", ".5", "3e-1").
#: (a letter may not follow "nan"/"inf": "4 nanometer" is 4 nm, not 4 by NaN "ometer").
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|[-+]?(?:infinity|inf|nan)(?![a-zµμå])"
_PIXEL_SIZE = re.compile(
    rf"^\s*(?P<y>{_NUMBER})\s*(?:(?P<separator>,|x|\*|×|\s)\s*(?P<x>{_NUMBER}))?"
    r"\s*(?P<unit>[^\d\s].*?)?\s*$",
    re.IGNORECASE,
)


def parse_pixel_size(text: str | float | tuple[float, float], unit: str | None = None) -> PixelSize:
    """Read a pixel size as users write it.

    Parameters
    ----------
    text : str, float or (float, float)
        ``"0.325"``, ``"0.325um"``, ``"4 nm"``, ``"0.5,0.325 µm"`` or ``"0.5 x 0.325 µm"``
        (two numbers: y then x, as :class:`PixelSize` prints them), or a number or a
        ``(y, x)`` pair.
    unit : str, optional
        The unit when ``text`` names none (default µm); a unit in ``text`` wins.

    Returns
    -------
    PixelSize

    Raises
    ------
    InputError
        One line, for an empty text, a size that is zero, negative, NaN or infinite,
        text that is not a number, or an unknown unit.
    """
    default = canonical_unit(unit) if unit is not None else DEFAULT_UNIT
    if isinstance(text, PixelSize):
        return text if unit is None else text.to(default)
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise InputError(f"a pixel size has one or two (y, x) values, got {text!r}: {_EXAMPLE}")
        return PixelSize(text[0], text[1], default)
    if not isinstance(text, str):
        return PixelSize(text, text, default)
    if not text.strip():
        raise InputError(f"the pixel size is empty: {_EXAMPLE}")
    match = _PIXEL_SIZE.match(text)
    if match is None:
        raise InputError(f"cannot read the pixel size {text.strip()!r}: {_EXAMPLE}")
    y = match["y"]
    x = match["x"] if match["x"] is not None else y
    if match["separator"] == "," and "." not in y + x:
        # "1,5" is 1.5 with a decimal comma to half of the world: never guess
        raise InputError(
            f"ambiguous pixel size {text.strip()!r}: write decimals with a point (1.5) and "
            f"a y, x pair as '{y} x {x}'"
        )
    return PixelSize(y, x, match["unit"] or default)


# ------------------------------------------------------------------ calibration of axes

#: Where a calibration came from (:attr:`Calibration.source`); results of OME inputs are
#: written with OME metadata, every other with ImageJ metadata.
SOURCES = ("ImageJ", "OME", "OME-Zarr", "TIFF", "napari layer", "user", "unknown")
_OME_SOURCES = ("OME", "OME-Zarr")

#: Axis letters of an image with ``ndim`` axes when nothing names them (NGFF order).
_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tzcyx"}

_SCALE_HINT = "check the image's calibration (pixel size and spacing)"


def default_axes(ndim: int) -> str:
    """Axis letters for ``ndim`` unnamed axes: ``"yx"``, ``"zyx"``, ``"tzyx"``..."""
    if ndim in _DEFAULT_AXES:
        return _DEFAULT_AXES[ndim]
    raise InputError(f"cannot name the axes of a {ndim}-D image: give it 2 to 5 axes")


@dataclass(frozen=True)
class Calibration:
    """The physical calibration of an image's axes (what napari calls scale and translate).

    The physical position of pixel ``i`` along an axis is ``translate + i * scale``, in
    that axis' unit.

    Parameters
    ----------
    axes : str
        One lower-case letter per image axis: ``t``, ``c``, ``z``, ``y``, ``x``, ``s``
        (RGB samples), others (``q``: unknown) as tifffile names them. ``y`` and ``x``
        at most once each.
    scale : tuple of float
        Positive size of one pixel along each axis; 1.0 where unknown (channel axes).
    translate : tuple of float
        Physical position of the first pixel along each axis.
    units : tuple of str or None
        Canonical length unit of each axis (see :data:`UNITS`), ``None`` where unknown
        and for time, channel and sample axes.
    source : str
        Where it was read from: one of :data:`SOURCES` ("ImageJ", "OME", "OME-Zarr",
        "TIFF", "napari layer", "user", "unknown").

    Raises
    ------
    InputError
        For lengths that differ from ``axes``, a scale that is not a positive number, a
        translation that is not finite, or an unknown unit.
    """

    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]
    source: str = "unknown"

    def __post_init__(self) -> None:
        axes = str(self.axes).lower()
        lengths = {len(self.scale), len(self.translate), len(self.units)}
        if lengths != {len(axes)}:
            raise InputError(
                f"a calibration needs one scale, translation and unit per axis of {axes!r}"
            )
        if axes.count("y") > 1 or axes.count("x") > 1:
            raise InputError(f"calibration axes {axes!r} name y or x twice")
        scale = tuple(
            _check_size(value, f"the scale of axis {letter}", _SCALE_HINT)
            for letter, value in zip(axes, self.scale, strict=True)
        )
        translate = tuple(float(value) + 0.0 for value in self.translate)  # + 0.0: no -0.0
        if not all(math.isfinite(value) for value in translate):
            raise InputError(f"a translation must be finite, got {self.translate}: {_SCALE_HINT}")
        units = tuple(None if unit is None else canonical_unit(unit) for unit in self.units)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "translate", translate)
        object.__setattr__(self, "units", units)

    @classmethod
    def identity(cls, ndim: int, *, axes: str | None = None) -> Calibration:
        """Scale 1, translation 0 and no unit on every axis (axes named by ``ndim``)."""
        axes = axes if axes is not None else default_axes(ndim)
        return cls(axes, (1.0,) * len(axes), (0.0,) * len(axes), (None,) * len(axes))

    @classmethod
    def from_pixel_size(
        cls, pixel_size: PixelSize, axes: str = "yx", *, source: str = "user"
    ) -> Calibration:
        """A calibration where only y and x are known, e.g. from ``--pixel-size``."""
        return cls.identity(len(axes), axes=axes).with_pixel_size(pixel_size, source=source)

    @classmethod
    def from_scale(
        cls,
        scale: Any,
        translate: Any = None,
        units: Any = None,
        *,
        axes: str | None = None,
        source: str = "napari layer",
    ) -> Calibration:
        """A calibration from napari-style ``scale``, ``translate`` and ``units``.

        Units may be strings or pint units (napari's ``layer.units``); ``"pixel"`` and
        other non-lengths become ``None``. ``axes`` defaults to :func:`default_axes`.
        """
        scale = tuple(float(value) for value in scale)
        ndim = len(scale)
        translate = (0.0,) * ndim if translate is None else tuple(translate)
        units = (None,) * ndim if units is None else tuple(units)
        units = tuple(_known_unit(None if unit is None else str(unit)) for unit in units)
        return cls(axes or default_axes(ndim), scale, translate, units, source)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.axes)

    @property
    def pixel_size(self) -> PixelSize | None:
        """The y and x scale as a :class:`PixelSize`, ``None`` when either unit is unknown."""
        if "y" not in self.axes or "x" not in self.axes:
            return None
        y, x = self.axes.index("y"), self.axes.index("x")
        unit_y, unit_x = self.units[y], self.units[x]
        if unit_y is None or unit_x is None:
            return None
        return PixelSize(self.scale[y], self.scale[x] * unit_factor(unit_x, unit_y), unit_y)

    @property
    def is_known(self) -> bool:
        """Whether it records anything: a unit, a scale other than 1 or a translation."""
        return (
            any(unit is not None for unit in self.units)
            or any(value != 1.0 for value in self.scale)
            or any(value != 0.0 for value in self.translate)
        )

    def with_pixel_size(self, pixel_size: PixelSize, *, source: str | None = None) -> Calibration:
        """This calibration with y and x set to ``pixel_size`` (e.g. a size the user typed)."""
        scale, units = list(self.scale), list(self.units)
        for letter, value in (("y", pixel_size.y), ("x", pixel_size.x)):
            if letter in self.axes:
                scale[self.axes.index(letter)] = value
                units[self.axes.index(letter)] = pixel_size.unit
        return Calibration(
            self.axes, tuple(scale), self.translate, tuple(units), source or self.source
        )

    def for_ndim(self, ndim: int) -> Calibration:
        """This calibration for an array of ``ndim`` axes (itself when it has as many).

        The axes are named by :func:`default_axes` and take this calibration's value of
        the same letter (y, x, z...), unknown otherwise: a result that lost or gained an
        axis keeps its pixel size and z spacing.
        """
        if ndim == self.ndim:
            return self
        axes = default_axes(ndim)
        known = [self.axes.find(letter) for letter in axes]
        return Calibration(
            axes,
            tuple(self.scale[i] if i >= 0 else 1.0 for i in known),
            tuple(self.translate[i] if i >= 0 else 0.0 for i in known),
            tuple(self.units[i] if i >= 0 else None for i in known),
            self.source,
        )

    def for_result(self, channel_axis: int | None, classes: int | None = None) -> Calibration:
        """The calibration of a segmentation result of the image calibrated by ``self``.

        Parameters
        ----------
        channel_axis : int or None
            The image's channel axis (an index into :attr:`axes`, negative allowed),
            which results do not have. RGB sample axes (``s``) are dropped too.
        classes : int, optional
            For probabilities: a ``c`` axis (scale 1, no unit) of that many classes is
            inserted before ``y``, as results ``(..., K, H, W)`` are laid out.

        Returns
        -------
        Calibration
            Same source, scale, translation and units on the remaining axes.

        Raises
        ------
        InputError
            For a channel axis out of range, ``classes`` < 1, or a class axis asked for
            while the image's channel axis is kept.
        """
        drop = {i for i, letter in enumerate(self.axes) if letter == "s"}
        if channel_axis is not None:
            if not -self.ndim <= channel_axis < self.ndim:
                raise InputError(
                    f"channel axis {channel_axis} is out of range for the axes {self.axes!r}"
                )
            drop.add(channel_axis % self.ndim)
        keep = [i for i in range(self.ndim) if i not in drop]
        axes = "".join(self.axes[i] for i in keep)
        scale = [self.scale[i] for i in keep]
        translate = [self.translate[i] for i in keep]
        units = [self.units[i] for i in keep]
        if classes is not None:
            if int(classes) < 1:
                raise InputError(f"a probability result has at least one class, got {classes}")
            if "c" in axes:
                raise InputError(
                    f"the axes {self.axes!r} keep their channel axis: give channel_axis"
                )
            at = axes.index("y") if "y" in axes else max(0, len(axes) - 2)
            axes = axes[:at] + "c" + axes[at:]
            scale.insert(at, 1.0)
            translate.insert(at, 0.0)
            units.insert(at, None)
        return Calibration(axes, tuple(scale), tuple(translate), tuple(units), self.source)


# ------------------------------------------------------------------ reading


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


# ------------------------------------------------------------------ writing

#: How ImageJ spells the canonical units (its TIFF description is ASCII: "micron" is
#: what ImageJ itself writes for µm).
_IMAGEJ_UNITS = {"µm": "micron", "Å": "angstrom"}
#: OME-NGFF's unit names (UDUNITS-2).
NGFF_UNITS = {
    "pm": "picometer",
    "Å": "angstrom",
    "nm": "nanometer",
    "µm": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}
#: Data types an ImageJ hyperstack holds (tifffile's rule): others are written as OME-TIFF.
_IMAGEJ_DTYPES = "BHhf"


def tiff_calibration_kwargs(
    calibration: Calibration | None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    info: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tifffile.imwrite`` that record ``calibration``.

    ImageJ hyperstack metadata (``imagej=True``, ``resolution`` in pixels per unit,
    ``unit``, ``spacing`` for z, origins, axes) for calibrations from ImageJ, plain
    TIFF, napari, the user or unknown; OME metadata (``ome=True``, PhysicalSizeX/Y/Z
    and units, plane positions, plus the resolution tags in pixels per centimetre for
    readers that ignore OME) for calibrations from OME-TIFF or OME-Zarr, and for data
    ImageJ cannot hold (int32, float64... or axes outside its TZCYXS order).

    Parameters
    ----------
    calibration : Calibration or None
        The result's calibration; ``None`` writes none.
    shape : tuple of int, optional
        The array's shape: the calibration is fitted to its number of axes
        (:meth:`Calibration.for_ndim`) and OME plane positions are counted from it.
    dtype : dtype, optional
        The array's data type (decides whether ImageJ can hold it).
    info : str, optional
        Text stored with the image: ImageJ's ``Info`` property, the OME image
        ``Description``.

    Returns
    -------
    dict
        Empty when there is neither a calibration nor ``info``.
    """
    if calibration is None and info is None:
        return {}
    ndim = len(shape) if shape is not None else calibration.ndim if calibration else 2
    calibration = (calibration or Calibration.identity(ndim)).for_ndim(ndim)
    if calibration.source not in _OME_SOURCES and _imagej_can_hold(calibration.axes, dtype):
        return _imagej_kwargs(calibration, info)
    return _ome_kwargs(calibration, shape, info)


def _imagej_can_hold(axes: str, dtype: Any) -> bool:
    if dtype is not None and np.dtype(dtype).char not in _IMAGEJ_DTYPES:
        return False
    order = [("tzcyxs".find(letter)) for letter in axes]
    return (
        min(order, default=-1) >= 0
        and order == sorted(set(order))
        and axes.rstrip("s").endswith("yx")
    )


def _imagej_kwargs(calibration: Calibration, info: str | None) -> dict[str, Any]:
    axes = calibration.axes
    metadata: dict[str, Any] = {"axes": axes.upper()}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": metadata}
    x, y = axes.index("x"), axes.index("y")
    unit = calibration.units[x]
    if unit is not None and calibration.units[y] is not None:
        size_y = calibration.scale[y] * unit_factor(calibration.units[y], unit)
        kwargs["resolution"] = (1 / calibration.scale[x], 1 / size_y)  # tifffile: (x, y)
        metadata["unit"] = _IMAGEJ_UNITS.get(unit, unit)
        z = axes.find("z")
        if z >= 0 and calibration.units[z] is not None:
            metadata["spacing"] = calibration.scale[z] * unit_factor(calibration.units[z], unit)
        for index in (x, y, z):
            if index >= 0 and calibration.translate[index] != 0.0:
                # ImageJ's origin is in pixels: the first pixel is at -origin * size
                origin = -calibration.translate[index] / calibration.scale[index]
                metadata[f"{axes[index]}origin"] = origin
    if info is not None:
        metadata["Info"] = info
    return kwargs


#: Axis letters tifffile's OME writer knows; another (tifffile's "I" of image sequences)
#: is written as "Q", OME's "other".
_OME_AXES = "TZCYXSAPRHEQ"


def _ome_kwargs(
    calibration: Calibration, shape: tuple[int, ...] | None, info: str | None
) -> dict[str, Any]:
    axes = calibration.axes
    letters = "".join(letter if letter in _OME_AXES else "Q" for letter in axes.upper())
    metadata: dict[str, Any] = {"axes": letters}
    kwargs: dict[str, Any] = {"ome": True, "metadata": metadata}
    for letter in "xyz":
        index = axes.find(letter)
        if index >= 0 and calibration.units[index] is not None:
            metadata[f"PhysicalSize{letter.upper()}"] = calibration.scale[index]
            metadata[f"PhysicalSize{letter.upper()}Unit"] = calibration.units[index]
    pixel_size = calibration.pixel_size
    if pixel_size is not None:  # for readers that ignore OME-XML (ImageJ's own opener)
        per_cm = pixel_size.to("cm")
        kwargs["resolution"] = (1 / per_cm.x, 1 / per_cm.y)
        kwargs["resolutionunit"] = "CENTIMETER"
    positions = _ome_positions(calibration, shape)
    if positions:
        metadata["Plane"] = positions
    if info is not None:
        metadata["Description"] = info
    return kwargs


def _ome_positions(calibration: Calibration, shape: tuple[int, ...] | None) -> dict[str, list]:
    """Every plane's PositionX/Y (the translation of x and y), when there is one."""
    if shape is None:
        return {}
    planes = math.prod(
        n for n, letter in zip(shape, calibration.axes, strict=True) if letter not in "yxs"
    )
    positions: dict[str, list] = {}
    for letter in "xy":
        index = calibration.axes.find(letter)
        if index < 0 or calibration.units[index] is None or calibration.translate[index] == 0:
            continue
        positions[f"Position{letter.upper()}"] = [calibration.translate[index]] * planes
        positions[f"Position{letter.upper()}Unit"] = [calibration.units[index]] * planes
    return positions


def ngff_transformations(
    calibration: Calibration | None, ndim: int
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """OME-NGFF 0.4 ``axes`` and full-resolution ``coordinateTransformations``.

    Parameters
    ----------
    calibration : Calibration or None
        The result's calibration (fitted to ``ndim`` axes, see
        :meth:`Calibration.for_ndim`); ``None``: scale 1, no units.
    ndim : int
        Number of axes of the array written.

    Returns
    -------
    axes : list of dict
        ``{"name": "y", "type": "space", "unit": "micrometer"}``...: ``t`` is time,
        ``c`` channel, ``z``/``y``/``x`` space (a ``z`` before a ``c`` gets no type:
        NGFF wants channels before space axes), units in NGFF's names when known.
    coordinateTransformations : list of dict
        A ``scale`` and, when any axis is translated, a ``translation``.
    """
    calibration = (calibration or Calibration.identity(ndim)).for_ndim(ndim)
    axes = []
    for index, letter in enumerate(calibration.axes):
        entry: dict[str, str] = {"name": letter}
        kind = {"t": "time", "c": "channel"}.get(letter)
        if letter in "zyx" and "c" not in calibration.axes[index:]:
            kind = "space"
        if kind is not None:
            entry["type"] = kind
        unit = calibration.units[index]
        if unit is not None:
            entry["unit"] = NGFF_UNITS[unit]
        axes.append(entry)
    transformations: list[dict[str, Any]] = [{"type": "scale", "scale": list(calibration.scale)}]
    if any(value != 0.0 for value in calibration.translate):
        transformations.append({"type": "translation", "translation": list(calibration.translate)})
    return axes, transformations


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

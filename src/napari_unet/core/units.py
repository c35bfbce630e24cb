"""Lengths and pixel sizes: units, :class:`PixelSize` and :func:`parse_pixel_size`.

The lowest layer of calibration: knows length units and how users write a pixel size
(``"0.325um"``, ``"0.5 x 0.4 nm"``); nothing about files or axes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from napari_unet.core.errors import InputError

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

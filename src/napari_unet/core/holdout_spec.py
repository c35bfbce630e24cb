"""The hold-out setting as users write it (``"auto"``, ``"off"``, ``"20%"``, ``"1 plane"``):
:func:`parse_holdout` reads it into a :class:`HoldoutSpec`. Light (no image code), so
the command line checks ``--holdout`` before anything heavy loads; what the setting
means is in :mod:`napari_unet.core.holdout`."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from napari_unet.core.errors import InputError

#: Default fraction of the cells held out from a single annotated plane.
DEFAULT_FRACTION = 0.2


@dataclass(frozen=True)
class HoldoutSpec:
    """What to hold out (see the module docstring); made by :func:`parse_holdout`."""

    mode: Literal["auto", "off", "objects", "planes"]
    fraction: float = DEFAULT_FRACTION
    planes: int = 1

    @property
    def text(self) -> str:
        """The canonical text: "auto", "off", "20%", "1 plane", "2 planes"."""
        if self.mode == "objects":
            return f"{self.fraction * 100:g}%"
        if self.mode == "planes":
            return f"{self.planes} plane" + ("s" if self.planes > 1 else "")
        return self.mode


def parse_holdout(value: Any) -> HoldoutSpec:
    """Read a hold-out setting.

    Parameters
    ----------
    value : str, float, int, HoldoutSpec or None
        ``"auto"``; ``"off"``, ``"none"``, ``None`` or 0: nothing; a fraction of objects
        as a float in (0, 1) or text ``"20%"``/``"0.2"``; a number of planes as an int
        >= 1 or text ``"2 planes"``.

    Returns
    -------
    HoldoutSpec

    Raises
    ------
    InputError
        For anything else, in one line.
    """
    if isinstance(value, HoldoutSpec):
        return value
    if value is None or value is False:
        return HoldoutSpec("off")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return HoldoutSpec("off") if value == 0 else _planes(int(value), value)
    if isinstance(value, float):
        return HoldoutSpec("off") if value == 0 else _fraction(value, value)
    text = str(value).strip().lower()
    if text in ("auto", "off", "none", "0", ""):
        return HoldoutSpec("auto" if text == "auto" else "off")
    planes = re.fullmatch(r"(\d+)\s*planes?", text)
    if planes:
        return _planes(int(planes.group(1)), value)
    percent = re.fullmatch(r"([\d.]+)\s*%", text)
    try:
        fraction = float(percent.group(1)) / 100 if percent else float(text)
    except ValueError:
        fraction = math.nan
    return _fraction(fraction, value)


def _planes(count: int, value: Any) -> HoldoutSpec:
    if count < 1:
        raise InputError(f"hold out: a number of planes must be at least 1, got {value!r}")
    return HoldoutSpec("planes", planes=count)


def _fraction(fraction: float, value: Any) -> HoldoutSpec:
    if not 0 < fraction < 1:
        raise InputError(
            f"hold out: use 'auto', 'off', a fraction of the cells such as '20%', or a "
            f"number of planes such as '1 plane'; got {value!r}"
        )
    return HoldoutSpec("objects", fraction=float(fraction))

"""The U-Net's architecture as data, and the sizes it accepts: no torch needed.

:class:`UNetConfig` describes a network; the functions here answer which tile sizes it
accepts and how many pixels a ``valid`` network loses per side. Model descriptions
are checked against :data:`CONFIG_BOUNDS` before anything is built. Kept apart from
:mod:`napari_unet.core.model` (which builds the torch network) so that reading and
listing model files, and the command line's argument checks, start without torch.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from napari_unet.core.errors import InputError

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "group"]


#: Inclusive bounds of the integer fields of :class:`UNetConfig`. They keep a model file
#: from describing a network that cannot be built in reasonable time or memory (depth
#: 10**6, 50,000 classes), and 255 classes is what a uint8 mask holds.
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "in_channels": (1, 8),
    "num_classes": (2, 255),
    "depth": (1, 8),
    "base_width": (1, 1024),
}
#: Allowed values of the text fields of :class:`UNetConfig`.
CONFIG_CHOICES: dict[str, tuple[str, ...]] = {
    "padding": ("valid", "same"),
    "norm": ("none", "batch", "group"),
}


def config_field_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the :class:`UNetConfig` field ``name``, if anything.

    Integers must be real integers (``4.0``, ``True`` and ``"4"`` are not), within
    :data:`CONFIG_BOUNDS`; ``dropout`` a finite number in [0, 1).

    Returns
    -------
    str or None
        The requirement, e.g. ``"must be an integer from 1 to 8"``; ``None`` when valid.
    """
    if name in CONFIG_BOUNDS:
        low, high = CONFIG_BOUNDS[name]
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not is_int or not low <= value <= high:
            return f"must be an integer from {low} to {high}"
    elif name in CONFIG_CHOICES:
        choices = CONFIG_CHOICES[name]
        if not isinstance(value, str) or value not in choices:
            return "must be one of " + ", ".join(f'"{choice}"' for choice in choices)
    elif name == "dropout":
        is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not is_number or not (math.isfinite(value) and 0.0 <= value < 1.0):
            return "must be a number from 0 to less than 1"
    return None


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`.

    Parameters
    ----------
    in_channels : int
        Channels of the input image (1 for grayscale microscopy).
    num_classes : int
        Output classes; class 0 is background by convention.
    depth : int
        Number of 2x2 poolings (4 in the paper).
    base_width : int
        Feature channels of the first level; doubled at each pooling (64 in the paper).
    padding : {"valid", "same"}
        ``"valid"`` is the paper's unpadded convolution (exact overlap-tile);
        ``"same"`` zero-pads so the output has the input size.
    norm : {"none", "batch", "group"}
        Normalisation after each convolution (the paper uses none).
    dropout : float
        Dropout probability at the end of the contracting path (the paper: 0.5).

    Raises
    ------
    InputError
        (a ``ValueError``) If a field has the wrong type or is out of bounds
        (:data:`CONFIG_BOUNDS`, :data:`CONFIG_CHOICES`), naming the field.
    """

    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_width: int = 16
    padding: Padding = "valid"
    norm: Norm = "batch"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in (item.name for item in fields(self)):
            value = getattr(self, name)
            problem = config_field_problem(name, value)
            if problem is not None:
                raise InputError(f"U-Net {name} {problem}, got {value!r}")
            # numpy integers and the like become plain Python numbers, so to_dict stays JSON.
            if name in CONFIG_BOUNDS:
                object.__setattr__(self, name, int(value))
            elif name == "dropout":
                object.__setattr__(self, name, float(value))

    def to_dict(self) -> dict:
        """Plain JSON-serialisable form, stored in model files."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped.

        Raises
        ------
        InputError
            (a ``ValueError``) If ``values`` is not a mapping, has unknown keys, or a
            field has the wrong type or is out of bounds (see :func:`config_field_problem`).
        """
        if not isinstance(values, dict):
            raise InputError(f"a U-Net config is a mapping of settings, got {values!r}")
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise InputError(
                f"unknown U-Net config keys: {sorted(map(str, unknown))}; known keys: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)

    def with_(self, **changes) -> UNetConfig:
        """Copy with some fields changed."""
        return replace(self, **changes)


#: The paper's network: 23 convolutions, 572 -> 388, about 31.0 M parameters.
PAPER = UNetConfig(depth=4, base_width=64, padding="valid", norm="none", dropout=0.5)
#: A fast CPU-friendly default: same topology at a quarter of the width (~1.9 M parameters).
SMALL = UNetConfig(depth=4, base_width=16, padding="valid", norm="batch", dropout=0.0)
PRESETS: dict[str, UNetConfig] = {"paper": PAPER, "small": SMALL}


def margin(config: UNetConfig) -> int:
    """Pixels lost on each side by a ``valid`` network (0 for ``same``)."""
    if config.padding == "same":
        return 0
    return 6 * 2**config.depth - 4


def output_size(config: UNetConfig, input_size: int) -> int:
    """Spatial output size for a valid ``input_size``.

    Raises
    ------
    ValueError
        If ``input_size`` is not valid for this network, naming the nearest valid sizes.
    """
    check_input_size(config, input_size)
    return input_size - 2 * margin(config)


def is_valid_input_size(config: UNetConfig, size: int) -> bool:
    """True when every pooling sees an even size and the output is non-empty."""
    step = 2**config.depth
    if config.padding == "same":
        return size >= step and size % step == 0
    # valid: input = step * b + 8 * step - 4 with bottom size b >= 4 (output >= 4 px)
    return size >= min_input_size(config) and (size + 4) % step == 0


def min_input_size(config: UNetConfig) -> int:
    """Smallest valid input size (a 4 px output for ``valid`` networks)."""
    step = 2**config.depth
    if config.padding == "same":
        return step
    # input = step * b + 8 * step - 4 with bottom size b; b = 4 is the smallest
    # bottom that keeps the expanding path's output positive for every depth.
    return 12 * step - 4


def nearest_valid_input_size(config: UNetConfig, size: int, *, mode: str = "nearest") -> int:
    """Round ``size`` to a valid input size.

    Parameters
    ----------
    size : int
        Requested input size in pixels.
    mode : {"nearest", "up", "down"}
        Rounding direction; never returns less than :func:`min_input_size`.
    """
    step = 2**config.depth
    offset = 0 if config.padding == "same" else -4
    low = math.floor((size - offset) / step) * step + offset
    high = low if low == size else low + step
    smallest = min_input_size(config)
    low, high = max(low, smallest), max(high, smallest)
    if mode == "up":
        return high
    if mode == "down":
        return low
    return low if size - low <= high - size else high


def check_input_size(config: UNetConfig, size: int) -> None:
    """Raise a ``ValueError`` that names the nearest valid sizes."""
    if not is_valid_input_size(config, size):
        down = nearest_valid_input_size(config, size, mode="down")
        up = nearest_valid_input_size(config, size, mode="up")
        raise ValueError(
            f"input size {size} is not valid for a {config.padding} U-Net of depth "
            f"{config.depth}; nearest valid sizes: {down}, {up}"
        )


__all__ = [
    "CONFIG_BOUNDS",
    "CONFIG_CHOICES",
    "PAPER",
    "PRESETS",
    "SMALL",
    "Norm",
    "Padding",
    "UNetConfig",
    "check_input_size",
    "config_field_problem",
    "is_valid_input_size",
    "margin",
    "min_input_size",
    "nearest_valid_input_size",
    "output_size",
]

"""The U-Net of Ronneberger, Fischer & Brox (2015), built from small blocks.

The network reads like the paper's Figure 1: a contracting path of ``TwoConv`` +
2x2 max-pooling steps, a bottom ``TwoConv``, and an expanding path of ``UpCat``
steps (2x2 up-convolution, crop-and-concatenate the skip, ``TwoConv``), then a
1x1 convolution to class scores.

Shape contract
--------------
``UNet.forward`` takes ``(B, in_channels, H, W)`` and returns class logits of shape
``(B, num_classes, H_out, W_out)``. With ``padding="same"`` the output has the input
size, which must be a multiple of ``2**depth``. With ``padding="valid"`` (the paper)
every 3x3 convolution trims one pixel on each side, so ``H_out = H - 2 * margin``
with ``margin = 6 * 2**depth - 4`` (92 for the paper's depth 4: 572 -> 388), and
every size before a pooling must be even: see :func:`is_valid_input_size`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import nn

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


def _norm_layer(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class TwoConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, in_ch: int, out_ch: int, padding: Padding, norm: Norm) -> None:
        pad = 1 if padding == "same" else 0
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=pad, bias=bias),
            _norm_layer(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=pad, bias=bias),
            _norm_layer(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max-pooling, then :class:`TwoConv` doubling the channels."""

    def __init__(self, in_ch: int, out_ch: int, padding: Padding, norm: Norm) -> None:
        super().__init__(nn.MaxPool2d(2), TwoConv(in_ch, out_ch, padding, norm))


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the spatial centre of ``x`` (..., H, W) to ``(height, width)``."""
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class UpCat(nn.Module):
    """2x2 up-convolution halving the channels, crop-and-concatenate the skip, TwoConv."""

    def __init__(self, in_ch: int, out_ch: int, padding: Padding, norm: Norm) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        self.convs = TwoConv(2 * out_ch, out_ch, padding, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        skip = center_crop(skip, x.shape[-2], x.shape[-1])
        return self.convs(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net; see the module docstring for the shape contract.

    Parameters
    ----------
    config : UNetConfig
        Architecture; :data:`PAPER` and :data:`SMALL` are presets.
    """

    def __init__(self, config: UNetConfig = SMALL) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_width * 2**level for level in range(config.depth + 1)]
        self.inc = TwoConv(config.in_channels, widths[0], config.padding, config.norm)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], config.padding, config.norm) for i in range(config.depth)
        )
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            UpCat(widths[i + 1], widths[i], config.padding, config.norm)
            for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], config.num_classes, 1)

    @property
    def margin(self) -> int:
        """Pixels a ``valid`` network trims from each side (0 for ``same``)."""
        return margin(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes, H_out, W_out)`` for ``x`` of ``(B, C, H, W)``."""
        self._check_shape(x)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected input of shape (B, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        for size in x.shape[-2:]:
            check_input_size(self.config, int(size))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_convolutions(module: nn.Module) -> int:
    """Number of (transposed) convolution layers, as the paper counts them."""
    return sum(isinstance(m, nn.Conv2d | nn.ConvTranspose2d) for m in module.modules())


def pick_device(requested: str = "auto") -> torch.device:
    """Resolve ``"auto"`` to cuda, then mps, then cpu; check an explicit request exists.

    Raises
    ------
    ValueError
        If the requested device is not available on this machine.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if requested == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(
            "device 'mps' requested but Apple MPS is not available; use 'auto' or 'cpu'"
        )
    if requested not in ("cpu", "cuda", "mps") and not requested.startswith("cuda:"):
        raise ValueError(f"unknown device {requested!r}; choose auto, cpu, cuda or mps")
    return torch.device(requested)


__all__ = [
    "CONFIG_BOUNDS",
    "CONFIG_CHOICES",
    "PAPER",
    "PRESETS",
    "SMALL",
    "UNet",
    "UNetConfig",
    "check_input_size",
    "config_field_problem",
    "count_convolutions",
    "count_parameters",
    "is_valid_input_size",
    "margin",
    "min_input_size",
    "nearest_valid_input_size",
    "output_size",
    "pick_device",
]

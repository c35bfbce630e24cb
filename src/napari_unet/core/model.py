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

import torch
from torch import nn

from napari_unet.core.config import (  # re-exported: model.py was their home
    CONFIG_BOUNDS,
    CONFIG_CHOICES,
    PAPER,
    PRESETS,
    SMALL,
    Norm,
    Padding,
    UNetConfig,
    check_input_size,
    config_field_problem,
    is_valid_input_size,
    margin,
    min_input_size,
    nearest_valid_input_size,
    output_size,
)
from napari_unet.core.errors import InputError


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
    InputError
        (a ``ValueError``) If the requested device is not available on this machine.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "device 'cuda' requested but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if requested == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise InputError(
            "device 'mps' requested but Apple MPS is not available; use 'auto' or 'cpu'"
        )
    if requested not in ("cpu", "cuda", "mps") and not requested.startswith("cuda:"):
        raise InputError(f"unknown device {requested!r}; choose auto, cpu, cuda or mps")
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

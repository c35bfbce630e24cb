"""Turn a :class:`~napari_unet.core.model.UNet` into a lean, numpy-in numpy-out predictor.

Public API
----------
- :func:`make_predictor` ``(network, device="cpu", *, channels_last=True, amp=None) -> Predictor``
- :class:`LeanForward`: the memory-lean inference forward of a given UNet's modules;
  ``LeanForward(network)(x)`` equals ``network(x)`` (eval mode) to float rounding.

Why a second forward? ``UNet.forward`` is written to read like the paper's figure and to
train. At inference we can do better without changing the model:

* eval-mode BatchNorm is an affine map per channel, so it is folded into the preceding
  convolution's weights (one pass over each feature map instead of two);
* the decoder's convolution over ``concat(skip, up)`` is computed as
  ``conv(skip, W_skip) + conv(up, W_up)``, so the concatenation (the largest tensor of
  each decoder level) is never materialised;
* each skip is released as soon as its decoder level has used it, ReLUs run in place;
* the whole U is computed top to bottom in horizontal row strips (:class:`_RowStream`):
  every feature map, skips included, only keeps the rows some consumer still needs, so
  peak memory grows with the tile *width* and the receptive field, not the tile area.

Row streaming needs every layer to be local along the rows. It is used for valid and
same networks with BatchNorm or no normalisation; GroupNorm normalises over the whole
feature map, so GroupNorm networks fall back to the whole-map lean forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.core.model import TwoConv, UNet, center_crop, check_input_size

#: ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]

#: Output rows per strip of the streamed forward; each deeper level uses half as many
#: (but at least :data:`MIN_LEVEL_ROWS`). Measured in benchmarks/bench_tiling.py.
DEFAULT_STRIP_ROWS = 64
#: Fewest rows a level computes at once, so that deep, narrow levels do not pay the
#: per-call overhead of many tiny convolutions.
MIN_LEVEL_ROWS = 8


@dataclass(frozen=True)
class _Conv:
    """A 3x3 convolution with eval-mode BatchNorm folded in (or a GroupNorm kept apart)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    padding: int
    group_norm: nn.GroupNorm | None

    def split(self, channels: int) -> tuple[_Conv, _Conv]:
        """Two convolutions over the first ``channels`` inputs and the rest; bias on the first."""
        first = _Conv(self.weight[:, :channels].contiguous(), self.bias, self.padding, None)
        rest = _Conv(self.weight[:, channels:].contiguous(), None, self.padding, None)
        return first, rest

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalisation that could not be folded, then ReLU, in place where possible."""
        if self.group_norm is not None:
            x = self.group_norm(x)
        return F.relu(x, inplace=True)


def _fold(conv: nn.Conv2d, norm: nn.Module) -> _Conv:
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    if isinstance(norm, nn.BatchNorm2d):
        # y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta  ==  conv'(x) + b'
        scale = norm.weight.detach() / torch.sqrt(norm.running_var + norm.eps)
        shift = norm.bias.detach() - norm.running_mean * scale
        if bias is not None:
            shift = shift + bias * scale
        weight, bias = weight * scale[:, None, None, None], shift
        return _Conv(weight.contiguous(), bias.contiguous(), conv.padding[0], None)
    group_norm = norm if isinstance(norm, nn.GroupNorm) else None
    return _Conv(weight, bias, conv.padding[0], group_norm)


def _fold_two_conv(block: TwoConv) -> tuple[_Conv, _Conv]:
    conv1, norm1, _, conv2, norm2, _ = block
    return _fold(conv1, norm1), _fold(conv2, norm2)


class LeanForward:
    """Inference-only forward of a :class:`UNet`, lean on time and memory.

    The weights are read (and BatchNorm folded) once, at construction: build it again
    after the network's weights change.

    Parameters
    ----------
    network : UNet
        Its modules are used as they are; the network itself is not modified.
    """

    def __init__(self, network: UNet) -> None:
        self.config = network.config
        self.inc = _fold_two_conv(network.inc)
        self.downs = [_fold_two_conv(down[1]) for down in network.downs]
        self.ups = []
        for up in network.ups:
            first, second = _fold_two_conv(up.convs)
            skip_conv, up_conv = first.split(up.up.out_channels)
            if first.group_norm is not None:
                skip_conv = _Conv(skip_conv.weight, skip_conv.bias, first.padding, first.group_norm)
            self.ups.append((up.up, skip_conv, up_conv, second))
        self.head = network.head

    def to(self, device: torch.device | str, memory_format: torch.memory_format) -> LeanForward:
        """Move the folded weights (in place) to ``device`` and ``memory_format``."""

        def move(conv: _Conv) -> _Conv:
            bias = None if conv.bias is None else conv.bias.to(device)
            weight = conv.weight.to(device).contiguous(memory_format=memory_format)
            return _Conv(weight, bias, conv.padding, conv.group_norm)

        self.inc = tuple(move(c) for c in self.inc)
        self.downs = [tuple(move(c) for c in pair) for pair in self.downs]
        self.ups = [(u, move(s), move(x), move(c)) for u, s, x, c in self.ups]
        return self

    @staticmethod
    def _two_conv(pair: tuple[_Conv, _Conv], x: torch.Tensor) -> torch.Tensor:
        first, second = pair
        x = first.finish(first(x))
        return second.finish(second(x))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, H_out, W_out)`` of ``x`` ``(B, C, H, W)``, as ``UNet.forward``."""
        for size in x.shape[-2:]:
            check_input_size(self.config, int(size))
        skips = [self._two_conv(self.inc, x)]
        for pair in self.downs:
            skips.append(self._two_conv(pair, F.max_pool2d(skips[-1], 2)))
        x = skips.pop()  # dropout is the identity at inference
        for up, skip_conv, up_conv, second in self.ups:
            x = up(x)
            skip = center_crop(skips.pop(), x.shape[-2], x.shape[-1])
            y = up_conv(x)
            del x  # the up-sampled map is no longer needed once convolved
            y += skip_conv(skip)
            del skip
            x = second.finish(second(skip_conv.finish(y)))
            del y
        return self.head(x)


def make_predictor(
    network: UNet,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = True,
    amp: bool | None = None,
) -> Predictor:
    """A numpy predictor running ``network`` in eval mode with :class:`LeanForward`.

    Parameters
    ----------
    network : UNet
        Put in eval mode (on ``device``); snapshot of its weights taken now.
    device : torch.device or str
        Where to compute; inputs and outputs stay numpy on the CPU.
    channels_last : bool
        Use the NHWC memory format (faster with oneDNN on CPU and with tensor cores).
    amp : bool, optional
        Mixed precision (float16 autocast); default on for CUDA only, never on CPU.

    Returns
    -------
    Predictor
        ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 softmax probabilities.
    """
    device = torch.device(device)
    network.eval().to(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp) and device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    forward = LeanForward(network).to(device, memory_format)

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        x = x.contiguous(memory_format=memory_format)
        with torch.inference_mode(), torch.autocast(device.type, enabled=use_amp):
            logits = forward(x)
        probabilities = torch.softmax(logits.float(), dim=1)
        return probabilities.contiguous().cpu().numpy()

    return predict


__all__ = ["LeanForward", "Predictor", "make_predictor"]

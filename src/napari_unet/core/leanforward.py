"""The memory-lean inference forward of a :class:`~napari_unet.core.model.UNet`.

:class:`LeanForward` computes what ``UNet.forward`` computes (eval mode, to float
rounding) from the same modules; :func:`~napari_unet.core.predictor.make_predictor`
wraps it into a numpy predictor.

Why a second forward? ``UNet.forward`` is written to read like the paper's figure and to
train. At inference we can do better without changing the model:

* eval-mode BatchNorm is an affine map per channel, so it is folded into the preceding
  convolution's weights (one pass over each feature map instead of two);
* the decoder's convolution over ``concat(skip, up)`` is computed as
  ``conv(skip, W_skip) + conv(up, W_up)``, so the concatenation (the largest tensor of
  each decoder level) is never materialised;
* each skip is released as soon as its decoder level has used it, ReLUs run in place;
* the whole U is computed top to bottom in horizontal row strips (:class:`RowStream`):
  every feature map, skips included, only keeps the rows some consumer still needs, so
  peak memory grows with the tile *width* and the receptive field, not the tile area.

Row streaming needs every layer to be local along the rows. It is used for valid and
same networks with BatchNorm or no normalisation; GroupNorm normalises over the whole
feature map, so GroupNorm networks fall back to the whole-map lean forward.

Separate from :mod:`~napari_unet.core.predictor` (numpy in and out, devices, the cache
of predictors per model) because it is pure torch: the network's arithmetic only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from napari_unet.core.model import TwoConv, UNet, center_crop, check_input_size

#: Input pixels per strip of the streamed forward ("auto" strip rows): a strip has
#: ``DEFAULT_STRIP_PIXELS // width`` output rows (at least ``MIN_STRIP_ROWS``), and level
#: ``l`` then computes about ``rows / 2**l`` rows per strip. Memory grows with the pixels
#: per strip, speed with the rows (fewer, larger convolutions). Measured with the SMALL
#: preset: a 2048 px image in 1212 px tiles (1 thread, output in RAM) peaked 103 MB above
#: baseline at 32 rows, 119 MB at 64 and 99 MB at 16 (410 MB with whole maps), time +7 %
#: at 32 and +18 % at 16 against 64; a 512 px image (one 696 px tile, 2 threads) took
#: 257-264 ms at 64 rows, 270-275 ms at 55 (this budget) and 284-307 ms at 32.
DEFAULT_STRIP_PIXELS = 32 * 1216


#: Fewest output rows per strip of the "auto" rule.
MIN_STRIP_ROWS = 32


#: Fewest rows per piece when a tall request (the first strip) is split, so that deep,
#: narrow levels do not pay the per-call overhead of many tiny convolutions.
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


class RowStream:
    """A feature map ``(B, C, height, W)`` computed top to bottom, a strip of rows at a time.

    Consumers ask for row ranges ``[start, stop)`` whose ``start`` never decreases; the
    stream computes missing rows on demand (at most ``chunk`` at a time) and keeps only the
    rows from the lowest ``start`` any of its consumers may still ask for.

    Parameters
    ----------
    height : int
        Rows of the whole feature map.
    compute : callable
        ``compute(start, stop)`` -> rows ``[start, stop)``, a ``(B, C, stop - start, W)`` tensor.
    chunk : int
        Most rows computed per call: a taller request (the first strip reads the whole
        receptive field) is computed in pieces. Rows are never computed ahead of a request.
    """

    def __init__(
        self, height: int, compute: Callable[[int, int], torch.Tensor], chunk: int
    ) -> None:
        self.height = height
        self._compute = compute
        self._chunk = chunk
        self._buffer: torch.Tensor | None = None
        self._start = 0  # feature-map row of the buffer's first row
        self._stop = 0  # rows before this one are computed (and possibly released)
        self._positions: list[int] = []  # per consumer: the lowest row it may still ask for

    def consumer(self, first_row: int = 0) -> int:
        """Register a consumer whose first request starts at ``first_row``; its id."""
        self._positions.append(first_row)
        return len(self._positions) - 1

    def rows(self, consumer: int, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` (``0 <= start < stop <= height``) for ``consumer``."""
        self._positions[consumer] = start
        while self._stop < stop:
            # one chunk at a time, even for a tall request (the first strip reads the whole
            # receptive field): the inputs' transient strips stay ``chunk`` rows high
            keep = min(self._positions)
            first = max(self._stop, keep)
            last = min(stop, first + self._chunk)  # computing ahead would compound upstream
            new = self._compute(first, last)
            if self._buffer is not None and keep < self._stop:
                new = torch.cat([self._buffer[:, :, keep - self._start :], new], dim=2)
            self._buffer, self._start, self._stop = new, keep, last
        return self._buffer[:, :, start - self._start : stop - self._start]

    def release(self, consumer: int, row: int) -> None:
        """``consumer`` will not ask for rows before ``row``: free those nobody needs.

        The rows still needed are copied out so that the (larger) buffer is freed now,
        not at the next computation: this keeps the first, tallest strip from lingering.
        """
        self._positions[consumer] = row
        keep = min(self._positions)
        if self._buffer is None or keep <= self._start:
            return
        if keep >= self._stop:
            self._buffer = None
        else:
            self._buffer = self._buffer[:, :, keep - self._start :].clone()
        self._start = keep


@dataclass
class _ConvInput:
    """A 3x3 convolution reading a window ``(rows top.., columns)`` of a :class:`RowStream`.

    The window is the centre crop of a skip (valid networks) or the whole map.
    """

    stream: RowStream
    conv: _Conv
    top: int
    height: int
    columns: slice

    def __post_init__(self) -> None:
        self.consumer = self.stream.consumer(self.top)

    def __call__(self, start: int, stop: int) -> torch.Tensor:
        """Convolution output rows ``[start, stop)`` (before bias-free sums and ReLU)."""
        pad = self.conv.padding
        low, high = start - pad, stop + 2 - pad  # window rows the 3x3 output rows read
        rows = self.stream.rows(
            self.consumer, self.top + max(low, 0), self.top + min(high, self.height)
        )[..., self.columns]
        if low < 0 or high > self.height:  # same padding: zero rows above / below the map
            rows = F.pad(rows, (0, 0, max(-low, 0), max(high - self.height, 0)))
        out = F.conv2d(rows, self.conv.weight, self.conv.bias, padding=(0, pad))
        del rows
        # the next output strip starts at ``stop``, so it reads from ``stop - pad``
        self.stream.release(self.consumer, self.top + max(stop - pad, 0))
        return out


def _conv_stream(inputs: Sequence[_ConvInput], chunk: int) -> RowStream:
    """ReLU of the sum of the convolutions of ``inputs`` (same output size), as a stream."""
    pad = inputs[0].conv.padding
    height = inputs[0].height + 2 * pad - 2

    def compute(start: int, stop: int) -> torch.Tensor:
        total = inputs[0](start, stop)
        for more in inputs[1:]:
            total += more(start, stop)  # conv(concat(a, b)) == conv_a(a) + conv_b(b)
        return F.relu(total, inplace=True)

    return RowStream(height, compute, chunk)


def _pool_stream(source: RowStream, chunk: int) -> RowStream:
    """2x2 max-pooling of ``source``, as a stream."""
    consumer = source.consumer()

    def compute(start: int, stop: int) -> torch.Tensor:
        pooled = F.max_pool2d(source.rows(consumer, 2 * start, 2 * stop), 2)
        source.release(consumer, 2 * stop)
        return pooled

    return RowStream(source.height // 2, compute, chunk)


def _up_stream(source: RowStream, up: nn.ConvTranspose2d, chunk: int) -> RowStream:
    """2x2 stride-2 transposed convolution of ``source``: row ``r`` comes from row ``r // 2``."""
    consumer = source.consumer()

    def compute(start: int, stop: int) -> torch.Tensor:
        first = start // 2
        upsampled = up(source.rows(consumer, first, (stop + 1) // 2))
        source.release(consumer, stop // 2)
        return upsampled[:, :, start - 2 * first : stop - 2 * first]

    return RowStream(2 * source.height, compute, chunk)


class LeanForward:
    """Inference-only forward of a :class:`UNet`, lean on time and memory.

    The weights are read (and BatchNorm folded) once, at construction: build it again
    after the network's weights change.

    Parameters
    ----------
    network : UNet
        Its modules are used as they are; the network itself is not modified.
    strip_rows : int, "auto" or None
        Output rows per strip of the row-streamed forward (see the module docstring);
        ``"auto"`` (default) sizes strips by :data:`DEFAULT_STRIP_PIXELS` per input width
        (at least :data:`MIN_STRIP_ROWS` rows); ``None`` computes whole feature maps (more
        memory, no per-strip overhead). GroupNorm networks always compute whole maps.
    """

    def __init__(self, network: UNet, *, strip_rows: int | Literal["auto"] | None = "auto") -> None:
        if strip_rows != "auto" and strip_rows is not None and strip_rows < 1:
            raise ValueError(f"strip_rows must be >= 1, 'auto' or None, got {strip_rows}")
        self.config = network.config
        self.strip_rows = None if network.config.norm == "group" else strip_rows
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

    def __call__(self, x: torch.Tensor, *, softmax: bool = False) -> torch.Tensor:
        """Class logits ``(B, K, H_out, W_out)`` of ``x`` ``(B, C, H, W)``, as ``UNet.forward``.

        With ``softmax=True``, class probabilities instead (float32, computed strip by strip).
        """
        for size in x.shape[-2:]:
            check_input_size(self.config, int(size))
        if self.strip_rows == "auto":
            rows = max(DEFAULT_STRIP_PIXELS // int(x.shape[-1]), MIN_STRIP_ROWS)
            return self._streamed(x, rows, softmax)
        if self.strip_rows is not None:
            return self._streamed(x, self.strip_rows, softmax)
        logits = self._whole_maps(x)
        return torch.softmax(logits.float(), dim=1) if softmax else logits

    def _whole_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Logits computed one whole feature map at a time."""
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

    def _streamed(self, x: torch.Tensor, strip_rows: int, softmax: bool) -> torch.Tensor:
        """Logits (or probabilities) computed in row strips through :class:`RowStream` s.

        The head pulls ``strip_rows`` output rows at a time, so level ``l`` computes about
        ``strip_rows / 2**l`` new rows per strip (tall first requests are split in pieces of
        ``max(strip_rows / 2**l, MIN_LEVEL_ROWS)``). Every row is computed once; a stream
        keeps only the rows its consumers still need, so a skip holds about the network's
        receptive field in rows rather than a whole map.
        """

        def chunk(level: int) -> int:
            return max(strip_rows >> level, MIN_LEVEL_ROWS)

        def two_conv(
            stream: RowStream, width: int, pair: tuple[_Conv, _Conv], level: int
        ) -> tuple[RowStream, int]:
            for conv in pair:
                whole = _ConvInput(stream, conv, 0, stream.height, slice(None))
                stream, width = _conv_stream([whole], chunk(level)), width + 2 * conv.padding - 2
            return stream, width

        batch, _, height, width = x.shape
        source = RowStream(height, lambda start, stop: x[:, :, start:stop], chunk(0))
        skips = [two_conv(source, width, self.inc, 0)]
        for level, pair in enumerate(self.downs, start=1):
            skip, skip_width = skips[-1]
            skips.append(two_conv(_pool_stream(skip, chunk(level)), skip_width // 2, pair, level))
        stream, width = skips.pop()  # dropout is the identity at inference
        for level, (up, skip_conv, up_conv, second) in zip(
            reversed(range(len(self.ups))), self.ups, strict=True
        ):
            stream, width = _up_stream(stream, up, chunk(level)), 2 * width
            skip, skip_width = skips.pop()
            top, left = (skip.height - stream.height) // 2, (skip_width - width) // 2
            first = _conv_stream(
                [
                    _ConvInput(stream, up_conv, 0, stream.height, slice(None)),
                    _ConvInput(skip, skip_conv, top, stream.height, slice(left, left + width)),
                ],
                chunk(level),
            )
            stream, width = two_conv(first, width + 2 * up_conv.padding - 2, (second,), level)
        consumer = stream.consumer()
        dtype = torch.float32 if softmax else self.head.weight.dtype
        out = torch.empty(
            (batch, self.head.out_channels, stream.height, width), dtype=dtype, device=x.device
        )
        for start in range(0, stream.height, strip_rows):
            stop = min(start + strip_rows, stream.height)
            logits = self.head(stream.rows(consumer, start, stop))
            stream.release(consumer, stop)
            out[:, :, start:stop] = torch.softmax(logits.float(), dim=1) if softmax else logits
        return out


__all__ = ["DEFAULT_STRIP_PIXELS", "MIN_STRIP_ROWS", "LeanForward"]

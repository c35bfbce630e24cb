"""The lean inference forward and the numpy predictor (core/leanforward.py, core/predictor.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import leanforward
from napari_unet.core.leanforward import LeanForward, RowStream
from napari_unet.core.model import SMALL, UNet, UNetConfig, nearest_valid_input_size
from napari_unet.core.predictor import make_predictor
from napari_unet.core.tiling import plan_tiles, predict_plane

TINY = UNetConfig(depth=2, base_width=4)


def randomise_norm_statistics(net: UNet) -> UNet:
    """Non-trivial BatchNorm/GroupNorm parameters so folding them is really tested."""
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
            module.weight.data = torch.rand(module.weight.shape, generator=generator) + 0.5
            module.bias.data = torch.rand(module.bias.shape, generator=generator) - 0.5
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean = torch.rand(module.running_mean.shape, generator=generator) - 0.5
            module.running_var = torch.rand(module.running_var.shape, generator=generator) + 0.5
    return net.eval()


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (SMALL, (236, 268)),
        (SMALL.with_(norm="group"), (188, 204)),
        (SMALL.with_(norm="none", padding="same"), (64, 96)),
        (TINY.with_(in_channels=3, num_classes=4), (60, 76)),
    ],
)
def test_lean_forward_equals_network(config, size):
    net = randomise_norm_statistics(UNet(config))
    x = torch.rand(2, config.in_channels, *size)
    with torch.inference_mode():
        expected = net(x)
        lean = LeanForward(net)(x)
    assert lean.shape == expected.shape
    assert (lean - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def assert_close_to_network(net: UNet, x: torch.Tensor, **lean_options) -> None:
    with torch.inference_mode():
        expected = net(x)
        lean = LeanForward(net, **lean_options)(x)
    assert lean.shape == expected.shape
    assert (lean - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


@pytest.mark.parametrize(
    ("config", "size", "strip_rows"),
    [
        # valid networks of every depth, odd (non-square) sizes, strips that do not
        # divide the output and tiny strips that split every level into many pieces
        (UNetConfig(depth=1, base_width=4), (28, 36), 3),
        (UNetConfig(depth=2, base_width=4, norm="none"), (76, 60), 5),
        (UNetConfig(depth=3, base_width=4, in_channels=2, num_classes=3), (140, 124), 7),
        (UNetConfig(depth=4, base_width=4), (252, 268), 16),
        (UNetConfig(depth=4, base_width=4, norm="none"), (204, 188), 1),
        # same padding: zero rows are added above and below the map
        (UNetConfig(depth=2, base_width=4, padding="same"), (36, 20), 3),
        (UNetConfig(depth=3, base_width=4, padding="same", norm="none"), (56, 40), 64),
    ],
)
def test_streamed_forward_equals_network(config, size, strip_rows):
    net = randomise_norm_statistics(UNet(config))
    x = torch.rand(3, config.in_channels, *size)
    assert_close_to_network(net, x, strip_rows=strip_rows)
    assert_close_to_network(net, x.contiguous(memory_format=torch.channels_last))


def test_group_norm_network_falls_back_to_whole_maps():
    net = randomise_norm_statistics(UNet(TINY.with_(norm="group")))
    forward = LeanForward(net, strip_rows=4)
    assert forward.strip_rows is None  # statistics over the whole map cannot be streamed
    assert_close_to_network(net, torch.rand(2, 1, 60, 76), strip_rows=4)


def test_auto_strips_hold_about_the_same_pixels_whatever_the_width(monkeypatch):
    forward = LeanForward(UNet(TINY))
    assert forward.strip_rows == "auto"
    chosen: list[int] = []
    real = forward._streamed
    monkeypatch.setattr(
        forward, "_streamed", lambda x, rows, softmax: chosen.append(rows) or real(x, rows, softmax)
    )
    narrow = nearest_valid_input_size(TINY, 92)
    wide = nearest_valid_input_size(
        TINY, leanforward.DEFAULT_STRIP_PIXELS // leanforward.MIN_STRIP_ROWS + 84
    )
    height = nearest_valid_input_size(TINY, 60)
    with torch.inference_mode():
        forward(torch.rand(1, 1, height, narrow))
        forward(torch.rand(1, 1, height, wide))
    assert chosen == [leanforward.DEFAULT_STRIP_PIXELS // narrow, leanforward.MIN_STRIP_ROWS]


def test_strip_rows_must_be_positive():
    with pytest.raises(ValueError, match="strip_rows must be >= 1"):
        LeanForward(UNet(TINY), strip_rows=0)


def test_softmax_output_equals_softmax_of_logits():
    net = randomise_norm_statistics(UNet(TINY.with_(num_classes=3)))
    x = torch.rand(2, 1, 60, 76)
    forward = LeanForward(net, strip_rows=3)
    with torch.inference_mode():
        expected = torch.softmax(forward(x), dim=1)
        assert (forward(x, softmax=True) - expected).abs().max().item() <= 1e-6


def counting_stream(calls: list[tuple[int, int]], height: int = 20, chunk: int = 4) -> RowStream:
    """A stream whose row ``r`` is the value ``r``, recording each computed range."""

    def compute(start: int, stop: int) -> torch.Tensor:
        calls.append((start, stop))
        return torch.arange(start, stop, dtype=torch.float32).view(1, 1, -1, 1)

    return RowStream(height, compute, chunk)


def test_row_stream_computes_each_row_once_in_chunks():
    calls = []
    stream = counting_stream(calls)
    encoder, decoder = stream.consumer(), stream.consumer(first_row=2)
    assert stream.rows(encoder, 0, 10).flatten().tolist() == list(range(10))
    assert calls == [(0, 4), (4, 8), (8, 10)]  # a tall request is computed chunk by chunk
    assert stream.rows(decoder, 2, 7).flatten().tolist() == list(range(2, 7))
    assert stream.rows(encoder, 8, 13).flatten().tolist() == list(range(8, 13))
    assert calls[3:] == [(10, 13)]  # cached rows are never recomputed


def test_row_stream_frees_rows_no_consumer_needs():
    calls = []
    stream = counting_stream(calls)
    encoder, decoder = stream.consumer(), stream.consumer(first_row=3)
    stream.rows(encoder, 0, 12)
    stream.release(encoder, 12)
    assert stream._buffer.shape[2] == 9  # rows 3..11 wait for the decoder
    stream.rows(decoder, 3, 6)
    stream.release(decoder, 6)
    assert stream._buffer.flatten().tolist() == list(range(6, 12))
    stream.release(decoder, 12)
    assert stream._buffer is None
    assert stream.rows(decoder, 12, 14).flatten().tolist() == [12.0, 13.0]
    assert calls[-1] == (12, 14)


@pytest.mark.parametrize("channels_last", [True, False])
def test_make_predictor_returns_softmax_probabilities(channels_last):
    net = randomise_norm_statistics(UNet(TINY.with_(num_classes=3)))
    x = np.random.default_rng(0).random((2, 1, 60, 64)).astype(np.float32)
    probs = make_predictor(net, channels_last=channels_last)(x)
    assert probs.dtype == np.float32 and probs.shape == (2, 3, 20, 24)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    assert np.abs(probs - expected).max() <= 1e-5


def test_make_predictor_puts_network_in_eval_mode():
    net = UNet(TINY).train()
    make_predictor(net)
    assert not net.training


def test_make_predictor_tiled_equals_plain_forward_tiled():
    net = randomise_norm_statistics(UNet(TINY))
    image = np.random.default_rng(1).random((97, 131)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY, tile_size=80)

    def plain(x):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()

    lean = predict_plane(image, make_predictor(net), grid, batch_size=2)
    assert np.abs(lean - predict_plane(image, plain, grid)).max() <= 1e-5


def test_make_predictor_rejects_invalid_tile_size():
    predictor = make_predictor(UNet(TINY))
    with pytest.raises(ValueError, match="nearest valid sizes"):
        predictor(np.zeros((1, 1, 61, 64), np.float32))

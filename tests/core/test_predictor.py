"""The lean inference forward and the numpy predictor (core/predictor.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.model import SMALL, UNet, UNetConfig
from napari_unet.core.predictor import LeanForward, make_predictor
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

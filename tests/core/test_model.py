"""The U-Net's architecture and shape contract."""

from __future__ import annotations

import pytest
import torch

from napari_unet.core.model import (
    PAPER,
    SMALL,
    UNet,
    UNetConfig,
    check_input_size,
    count_convolutions,
    count_parameters,
    is_valid_input_size,
    margin,
    min_input_size,
    nearest_valid_input_size,
    output_size,
    pick_device,
)


def test_paper_preset_matches_the_paper():
    net = UNet(PAPER)
    # Figure 1: 18 3x3 convolutions, 4 up-convolutions and the final 1x1 = 23 layers.
    assert count_convolutions(net) == 23
    assert round(count_parameters(net) / 1e6, 1) == 31.0
    assert margin(PAPER) == 92
    assert output_size(PAPER, 572) == 388


@pytest.mark.slow
def test_paper_network_maps_572_to_388():
    net = UNet(PAPER).eval()
    with torch.inference_mode():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_small_preset_is_about_two_million_parameters():
    params = count_parameters(UNet(SMALL))
    assert 1.8e6 < params < 2.2e6


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_every_valid_size_runs_and_matches_output_size(depth):
    config = UNetConfig(depth=depth, base_width=2)
    net = UNet(config).eval()
    smallest = min_input_size(config)
    for size in (smallest, smallest + 2**depth, smallest + 3 * 2**depth):
        assert is_valid_input_size(config, size)
        with torch.inference_mode():
            out = net(torch.zeros(1, 1, size, size + 2**depth))
        assert out.shape[-2:] == (output_size(config, size), output_size(config, size + 2**depth))


def test_smallest_valid_input_gives_four_pixels():
    assert min_input_size(SMALL) == 188
    assert output_size(SMALL, 188) == 4
    assert not is_valid_input_size(SMALL, 188 - 16)


@pytest.mark.parametrize("size", [571, 573, 189, 100, 1])
def test_invalid_sizes_are_rejected_with_the_nearest_valid_sizes(size):
    net = UNet(UNetConfig(depth=4, base_width=2)).eval()
    with pytest.raises(ValueError, match=r"not valid .* nearest valid sizes: \d+, \d+"):
        net(torch.zeros(1, 1, size, 572))


def test_nearest_valid_size_rounds_both_ways():
    assert nearest_valid_input_size(PAPER, 572) == 572
    assert nearest_valid_input_size(PAPER, 575) == 572
    assert nearest_valid_input_size(PAPER, 581) == 588
    assert nearest_valid_input_size(PAPER, 575, mode="up") == 588
    assert nearest_valid_input_size(PAPER, 3) == min_input_size(PAPER)


def test_same_padding_keeps_size_and_needs_multiples():
    config = UNetConfig(depth=3, base_width=2, padding="same", norm="group")
    net = UNet(config).eval()
    with torch.inference_mode():
        assert net(torch.zeros(2, 1, 40, 24)).shape == (2, 2, 40, 24)
    with pytest.raises(ValueError, match="nearest valid sizes: 32, 40"):
        check_input_size(config, 36)


def test_wrong_channel_count_is_a_clear_error():
    net = UNet(UNetConfig(depth=1, base_width=2, in_channels=2))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 2, H, W\)"):
        net(torch.zeros(1, 1, 44, 44))


def test_config_round_trip_and_validation():
    assert UNetConfig.from_dict(PAPER.to_dict()) == PAPER
    with pytest.raises(ValueError, match="unknown U-Net config keys"):
        UNetConfig.from_dict({**SMALL.to_dict(), "heads": 3})
    with pytest.raises(ValueError, match="padding"):
        UNetConfig(padding="reflect")
    with pytest.raises(ValueError, match="dropout"):
        UNetConfig(dropout=1.5)


def test_dropout_only_active_in_training():
    config = UNetConfig(depth=1, base_width=4, dropout=0.5, norm="none")
    net = UNet(config)
    x = torch.randn(1, 1, 60, 60)
    net.eval()
    with torch.inference_mode():
        assert torch.equal(net(x), net(x))
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))


def test_device_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")

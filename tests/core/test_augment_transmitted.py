"""Transmitted-light options of core.augment: random blur, contrast inversion, and the
shading direction of DIC-like relief under flips and rotations."""

from __future__ import annotations

import math

import pytest
import torch
from test_augment import seeded, smooth_batch

from napari_unet.core.augment import (
    AugmentConfig,
    augment_batch,
    crop_grid,
    interpolate_displacement,
    random_coarse_displacement,
    random_dihedral,
    sampling_grid,
    warp,
    warp_targets,
)
from napari_unet.core.augment_intensity import random_blur, random_intensity, random_invert
from napari_unet.core.errors import InputError
from napari_unet.core.train import TrainConfig
from napari_unet.core.train_config import jsonable_config


def blobs(batch: int = 4, size: tuple[int, int] = (64, 64)):
    """test_augment's smooth batch, larger: image (B, 1, H, W), labels, weights."""
    return smooth_batch(batch, size)


def augment_as_before(image, labels, weights, config, generator, crop):
    """``augment_batch`` as it was before blur and invert existed, from its public parts."""
    batch, _, height, width = image.shape
    dihedral = random_dihedral(batch, config, square=height == width, generator=generator)
    coarse = random_coarse_displacement(
        batch, config.grid, config.elastic_sigma, generator=generator
    )
    grid = sampling_grid(interpolate_displacement(coarse, (height, width)), dihedral)
    image = warp(image, grid, config.image_interpolation)
    labels, weights = warp_targets(labels, weights, crop_grid(grid, crop), -1)
    image = random_intensity(image, config.intensity, config.gamma, generator=generator)
    return image, labels, weights


def test_defaults_leave_the_transmitted_light_options_off():
    assert AugmentConfig().blur == 0.0 and AugmentConfig().invert == 0.0


def test_default_config_gives_bitwise_the_results_and_draws_of_before():
    image, labels, weights = blobs(batch=3, size=(60, 60))
    ours, before = seeded(11), seeded(11)
    out = augment_batch(image, labels, weights, AugmentConfig(), ours, crop_targets_to=(40, 40))
    expected = augment_as_before(image, labels, weights, AugmentConfig(), before, (40, 40))
    for a, b in zip(out, expected, strict=True):
        assert torch.equal(a, b)
    # No extra draws: the trainer's random stream continues exactly as before.
    assert torch.equal(torch.rand(5, generator=ours), torch.rand(5, generator=before))


def test_blur_changes_only_the_image_and_not_the_other_draws():
    image, labels, weights = blobs()
    plain = augment_batch(image, labels, weights, AugmentConfig(), seeded(3))
    blurred = augment_batch(image, labels, weights, AugmentConfig(blur=3.0), seeded(3))
    assert torch.equal(blurred[1], plain[1]) and torch.equal(blurred[2], plain[2])
    assert not torch.equal(blurred[0], plain[0])
    # Same geometry and lighting, only smoothed: close to the unblurred image.
    assert (blurred[0] - plain[0]).abs().mean() < 0.05


def test_blur_keeps_constants_and_the_mean():
    flat = torch.full((2, 1, 30, 40), 0.7)
    torch.testing.assert_close(random_blur(flat, 4.0, generator=seeded()), flat)
    noise = torch.rand(6, 2, 50, 50, generator=seeded(1))
    out = random_blur(noise, 3.0, generator=seeded())
    assert out.shape == noise.shape
    torch.testing.assert_close(out.mean(dim=(2, 3)), noise.mean(dim=(2, 3)), atol=0.01, rtol=0)


def _variance_ratio(sigma: float, radius: int) -> float:
    """Variance of white noise blurred by the discrete 2D Gaussian of ``sigma`` / before."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    return float(kernel.pow(2).sum() ** 2)


def test_blur_sigma_is_uniform_in_zero_to_blur():
    """White noise loses variance by the squared kernel norm: the per-sample ratios span
    from no blur (1) to the strongest allowed blur, and never beyond it."""
    max_sigma, samples = 2.0, 400
    noise = torch.rand(samples, 1, 96, 96, generator=seeded(2), dtype=torch.float64)
    out = random_blur(noise, max_sigma, generator=seeded())
    inner = (..., slice(10, -10), slice(10, -10))  # away from the mirrored borders
    ratio = out[inner].var(dim=(1, 2, 3)) / noise[inner].var(dim=(1, 2, 3))
    strongest = _variance_ratio(max_sigma, math.ceil(3 * max_sigma))
    assert ratio.min() > 0.9 * strongest  # no sample blurred more than max_sigma
    assert ratio.min() < 1.3 * strongest  # and the strongest is reached
    assert ratio.max() > 0.9  # nearly unblurred samples too
    # Uniform sigma: about half the samples have sigma below max_sigma / 2.
    half = _variance_ratio(max_sigma / 2, math.ceil(3 * max_sigma))
    assert 0.4 < (ratio > half).float().mean() < 0.6


def test_invert_negates_contrast_about_the_mean():
    image = torch.rand(2, 2, 16, 16, generator=seeded())
    always = random_invert(image, 1.0, generator=seeded())
    mean = image.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(always, 2 * mean - image)
    torch.testing.assert_close(always.mean(dim=(2, 3)), image.mean(dim=(2, 3)))
    assert torch.equal(random_invert(image, 0.0, generator=seeded()), image)


def test_invert_probability_is_respected_and_targets_untouched():
    image, labels, weights = blobs(batch=200, size=(16, 16))
    config = AugmentConfig(
        elastic_sigma=0.0, flips=False, rot90=False, intensity=0.0, gamma=0.0, invert=0.3
    )
    out_image, out_labels, out_weights = augment_batch(image, labels, weights, config, seeded())
    assert torch.equal(out_labels, labels) and torch.equal(out_weights, weights)
    inverted = ~torch.isclose(out_image, image).flatten(1).all(dim=1)
    assert 0.2 < inverted.float().mean() < 0.4
    # An inverted sample is anti-correlated with its input, exactly.
    for before, after in zip(image[inverted], out_image[inverted], strict=True):
        correlation = torch.corrcoef(torch.stack([before.flatten(), after.flatten()]))[0, 1]
        assert correlation == pytest.approx(-1.0, abs=1e-5)


def _shading_direction(image: torch.Tensor) -> tuple[int, int]:
    """Sign of the (row, column) first moment of a zero-mean relief image (1, H, W)."""
    height, width = image.shape[-2:]
    rows = torch.arange(height, dtype=image.dtype).view(-1, 1) - (height - 1) / 2
    cols = torch.arange(width, dtype=image.dtype).view(1, -1) - (width - 1) / 2
    moment = torch.stack([(image * rows).sum(), (image * cols).sum()])
    return tuple(int(v) for v in torch.sign(moment.round(decimals=3)))


def test_flips_and_rotations_turn_the_dic_shading_direction():
    """A DIC-like cell (derivative of a bump along a diagonal shear) seen in all four
    diagonal shading directions after flips and quarter turns of the image."""
    size = 41
    rows, cols = torch.meshgrid(*(torch.arange(size, dtype=torch.float32) - 20,) * 2, indexing="ij")
    bump = torch.exp(-(rows**2 + cols**2) / 50)
    relief = -(rows + cols) * bump  # bright towards the top left, dark towards bottom right
    image = relief.expand(64, 1, size, size).contiguous()
    labels = torch.zeros(64, size, size, dtype=torch.long)
    config = AugmentConfig(elastic_sigma=0.0, intensity=0.0, gamma=0.0)
    out, _, _ = augment_batch(image, labels, torch.ones(64, size, size), config, seeded())
    directions = {_shading_direction(sample) for sample in out}
    assert directions == {(-1, -1), (-1, 1), (1, -1), (1, 1)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"blur": -1.0}, r"blur must be in \[0, 20.0\] pixels, got -1.0"),
        ({"blur": float("nan")}, r"blur must be in \[0, 20.0\] pixels"),
        ({"blur": 50.0}, r"blur must be in \[0, 20.0\] pixels"),
        ({"invert": -0.1}, r"invert must be a probability in \[0, 1\], got -0.1"),
        ({"invert": 1.5}, r"invert must be a probability in \[0, 1\]"),
    ],
)
def test_bad_transmitted_light_options_raise_one_line_errors(kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        AugmentConfig(**kwargs)
    assert "\n" not in str(error.value)


def test_options_are_recorded_in_the_training_config():
    config = TrainConfig(augment=AugmentConfig(blur=1.5, invert=0.5))
    recorded = jsonable_config(config)["augment"]
    assert (recorded["blur"], recorded["invert"]) == (1.5, 0.5)
    # A record written before the options existed still describes a valid configuration.
    old = {k: v for k, v in recorded.items() if k not in ("blur", "invert")}
    assert AugmentConfig(**old) == AugmentConfig()

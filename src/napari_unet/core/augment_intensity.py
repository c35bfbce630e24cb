"""Intensity augmentations of a training batch: brightness, contrast and gamma, and for
transmitted light a random blur and contrast inversion. One random draw per sample;
inputs are never modified. Used by :func:`napari_unet.core.augment.augment_batch`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_intensity(
    image: torch.Tensor,
    intensity: float,
    gamma: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample random gamma, gain and offset of the image.

    Parameters
    ----------
    image : (B, C, H, W) float tensor
    intensity : float
        Gain in ``[1 - intensity, 1 + intensity]``, offset in ``[-intensity, intensity]``.
    gamma : float
        Gamma in ``[exp(-gamma), exp(gamma)]``, applied to each sample rescaled to [0, 1]
        and mapped back to its own range, so the range is kept and negatives are fine.

    Returns
    -------
    (B, C, H, W) tensor
    """
    device = generator.device if generator is not None else None
    draws = torch.rand(3, image.shape[0], 1, 1, 1, generator=generator, device=device)
    draws = (2 * draws - 1).to(image)  # uniform in [-1, 1]
    if gamma > 0:
        low = image.amin(dim=(1, 2, 3), keepdim=True)
        span = (image.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-8)
        unit = ((image - low) / span).clamp(0.0, 1.0)
        image = low + span * unit.pow(torch.exp(gamma * draws[0]))
    return image * (1 + intensity * draws[1]) + intensity * draws[2]


def random_blur(
    image: torch.Tensor,
    max_sigma: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-sample Gaussian blur with a standard deviation uniform in ``[0, max_sigma]``.

    Separable, with the image mirrored at its borders (as the geometric transforms are).
    The kernels are normalised, so a constant image stays constant.

    Parameters
    ----------
    image : (B, C, H, W) float tensor
    max_sigma : float
        Largest standard deviation in pixels (> 0).

    Returns
    -------
    (B, C, H, W) tensor
    """
    batch, channels, height, width = image.shape
    device = generator.device if generator is not None else None
    sigmas = max_sigma * torch.rand(batch, generator=generator, device=device)
    # Three sigmas hold 99.7 % of the kernel; reflection padding needs radius < size.
    radius = max(1, min(math.ceil(3 * max_sigma), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    spread = sigmas.to(image).clamp_min(1e-3).view(batch, 1)  # ~0: a unit impulse
    kernels = torch.exp(-0.5 * (offsets / spread) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    size = kernels.shape[1]
    # One grouped convolution blurs every (sample, channel) plane with its own kernel.
    planes = image.reshape(1, batch * channels, height, width)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    groups = batch * channels
    planes = F.conv2d(planes, kernels.view(groups, 1, size, 1), groups=groups)
    planes = F.conv2d(planes, kernels.view(groups, 1, 1, size), groups=groups)
    return planes.reshape(batch, channels, height, width)


def random_invert(
    image: torch.Tensor,
    probability: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Negate each sample's contrast about its per-channel mean with ``probability``.

    Parameters
    ----------
    image : (B, C, H, W) float tensor
    probability : float
        Chance in [0, 1] that a sample is inverted.

    Returns
    -------
    (B, C, H, W) tensor
        ``2 * mean - image`` for the inverted samples (mean and contrast kept), the
        others unchanged.
    """
    device = generator.device if generator is not None else None
    flip = torch.rand(image.shape[0], generator=generator, device=device) < probability
    mean = image.mean(dim=(2, 3), keepdim=True)
    return torch.where(flip.to(image.device).view(-1, 1, 1, 1), 2 * mean - image, image)

"""Data augmentation of the U-Net paper (section 3.1), batched in torch on the training device.

The paper's key augmentation is a smooth elastic deformation: random displacement
vectors on a coarse 3x3 grid, drawn from a normal distribution with a standard
deviation of 10 pixels, interpolated bicubically to a displacement for every pixel.
We add random flips, 90-degree rotations and mild intensity changes, and for transmitted
light (DIC, phase contrast) two image-only options that are off by default: a random
Gaussian blur (focus) and a random contrast inversion (the opposite DIC shear or phase halo).

How one sample is transformed
-----------------------------
Everything geometric is folded into a single sampling grid, so the image, labels and
weights are each resampled exactly once and stay aligned by construction. With ``p``
an output pixel (normalised coordinates), ``D`` a random flip/rotation matrix and
``u`` the dense displacement (backward mapping)::

    output(p) = input(D p + u(p))

- image: bicubic (or bilinear) interpolation;
- labels: nearest neighbour, so no label value is ever created (ignore stays ignore);
- weights: bilinear, then set to 0 wherever the deformed label is the ignore value.

The flips and rotations act on the image too, so they also turn the direction of DIC's
relief shading: a DIC image is about the derivative of the optical path length along the
shear direction, and a half turn or a flip of the image is the image of the turned or
flipped cells under a reversed (or mirrored) shear. Inverting the contrast adds the one
pairing geometry cannot give: the same cells under the opposite shear.

Random draws
------------
Each option draws from the generator only when it is on, and the options added later draw
after the earlier ones, so the draws (and results) of a configuration without blur or
inversion are those of the versions before these options existed.

Samples that fall outside the image are mirrored (``padding_mode="reflection"``), the
paper's treatment of borders, identically for all three tensors.

Cropping for the valid U-Net
----------------------------
A valid-convolution U-Net predicts only the centre of its input. Pass
``crop_targets_to=(h, w)`` to get labels and weights already cut to the network output:
only the central part of the sampling grid is evaluated, so cropping costs nothing.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .augment_intensity import random_blur, random_intensity, random_invert
from .errors import InputError
from .model import center_crop

ImageInterpolation = Literal["bilinear", "bicubic"]

#: Label values stay exact through a float32 nearest-neighbour resampling below this.
_MAX_EXACT_LABEL = 2**24

#: Largest blur sigma in pixels: more would wipe out cells of any size the network sees.
_MAX_BLUR = 20.0


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations to apply, and how strongly.

    Parameters
    ----------
    enabled : bool
        Master switch; when False, :func:`augment_batch` only crops the targets.
    elastic_sigma : float
        Standard deviation, in pixels, of the coarse displacement vectors (paper: 10).
        0 turns the elastic deformation off.
    grid : int
        Control points per side of the coarse displacement grid (paper: 3).
    flips : bool
        Random horizontal and vertical flips, each with probability 1/2.
    rot90 : bool
        Random rotation by a multiple of 90 degrees. Non-square images only get
        0 or 180 degrees, because a quarter turn would change their shape.
    intensity : float
        Image-only gain in ``[1 - intensity, 1 + intensity]`` and offset in
        ``[-intensity, intensity]`` (absolute, for images normalised to about [0, 1]).
    gamma : float
        Image-only gamma ``exp(U(-gamma, gamma))``, applied within each sample's
        intensity range so negative values are fine.
    image_interpolation : {"bicubic", "bilinear"}
        Resampling of the image; bicubic keeps thin membranes sharper.
    blur : float
        Image-only Gaussian blur with a standard deviation drawn uniformly in
        ``[0, blur]`` pixels for each sample (out-of-focus transmitted light). 0: off.
    invert : float
        Probability, per sample, of negating the image's contrast about its mean
        (``2 * mean - image``, per channel): DIC relief under the opposite shear, or the
        opposite phase-contrast halo. 0: off.
    """

    enabled: bool = True
    elastic_sigma: float = 10.0
    grid: int = 3
    flips: bool = True
    rot90: bool = True
    intensity: float = 0.1
    gamma: float = 0.1
    image_interpolation: ImageInterpolation = "bicubic"
    blur: float = 0.0
    invert: float = 0.0

    def __post_init__(self) -> None:
        if self.elastic_sigma < 0:
            raise InputError(f"elastic_sigma must be >= 0 pixels, got {self.elastic_sigma}")
        if self.grid < 2:
            raise InputError(f"grid must have at least 2 control points per side, got {self.grid}")
        if not 0 <= self.intensity < 1:
            raise InputError(f"intensity must be in [0, 1), got {self.intensity}")
        if self.gamma < 0:
            raise InputError(f"gamma must be >= 0, got {self.gamma}")
        if not 0 <= self.blur <= _MAX_BLUR:  # NaN fails too
            raise InputError(f"blur must be in [0, {_MAX_BLUR}] pixels, got {self.blur}")
        if not 0 <= self.invert <= 1:
            raise InputError(f"invert must be a probability in [0, 1], got {self.invert}")
        if self.image_interpolation not in ("bilinear", "bicubic"):
            raise InputError(
                f"image_interpolation must be 'bilinear' or 'bicubic', "
                f"got {self.image_interpolation!r}"
            )

    @property
    def is_geometric(self) -> bool:
        """True when the sampling grid differs from the identity for some draws."""
        return self.elastic_sigma > 0 or self.flips or self.rot90


#: Everything off: :func:`augment_batch` returns its inputs (targets cropped if asked).
NO_AUGMENTATION = AugmentConfig(enabled=False)


def augment_batch(
    image: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    config: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
    *,
    crop_targets_to: tuple[int, int] | None = None,
    ignore_index: int = -1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Randomly deform, flip, rotate and re-light a batch; one random draw per sample.

    Inputs are never modified.

    Parameters
    ----------
    image : (B, C, H, W) float tensor
        Images, normalised to about [0, 1] (the intensity ranges assume so).
    labels : (B, H, W) integer tensor
        Class per pixel; ``ignore_index`` marks unannotated pixels.
    weights : (B, H, W) float tensor
        Per-pixel loss weight (0 where unannotated).
    config : AugmentConfig
        Which augmentations, and how strong.
    generator : torch.Generator, optional
        Source of randomness, for reproducible draws; the global RNG when omitted.
    crop_targets_to : (h, w), optional
        Return labels and weights cut to their central ``h x w`` pixels, the output of
        a valid U-Net. The image keeps its full size.
    ignore_index : int
        Label value of unannotated pixels; their deformed weight is forced to 0.

    Returns
    -------
    image : (B, C, H, W) tensor
    labels : (B, h, w) tensor, same dtype as the input labels
    weights : (B, h, w) tensor
        ``(h, w)`` is ``crop_targets_to``, or ``(H, W)`` when it is not given.

    Raises
    ------
    InputError
        If the shapes or dtypes do not match, or the crop is larger than the image.
    """
    _check_batch(image, labels, weights, crop_targets_to)
    crop = crop_targets_to or tuple(image.shape[-2:])
    if not config.enabled:
        return image, center_crop(labels, *crop), center_crop(weights, *crop)

    if config.is_geometric:
        image, labels, weights = _deform(
            image, labels, weights, config, generator, crop, ignore_index
        )
    else:
        labels, weights = center_crop(labels, *crop), center_crop(weights, *crop)
    return _relight(image, config, generator), labels, weights


def _deform(image, labels, weights, config, generator, crop, ignore_index):
    """One elastic deformation and dihedral transform per sample, applied to the image
    (``config.image_interpolation``) and to the targets cut to ``crop``."""
    batch, _, height, width = image.shape
    dihedral = random_dihedral(batch, config, square=height == width, generator=generator)
    coarse = random_coarse_displacement(
        batch, config.grid, config.elastic_sigma, generator=generator
    )
    displacement = interpolate_displacement(coarse.to(image), (height, width))
    grid = sampling_grid(displacement, dihedral.to(image))
    image = warp(image, grid, config.image_interpolation)
    labels, weights = warp_targets(labels, weights, crop_grid(grid, crop), ignore_index)
    return image, labels, weights


def _relight(image: torch.Tensor, config: AugmentConfig, generator) -> torch.Tensor:
    """Intensity and gamma changes, then (transmitted light) blur and inversion."""
    if config.intensity > 0 or config.gamma > 0:
        image = random_intensity(image, config.intensity, config.gamma, generator=generator)
    # Drawn after the options above, so turning these on leaves the others' draws alone.
    if config.blur > 0:
        image = random_blur(image, config.blur, generator=generator)
    if config.invert > 0:
        image = random_invert(image, config.invert, generator=generator)
    return image


def random_coarse_displacement(
    batch: int,
    grid: int,
    sigma: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Displacement vectors of the coarse control grid, in pixels.

    Returns
    -------
    (B, 2, grid, grid) tensor
        Channel 0 moves along rows, channel 1 along columns; i.i.d. ``N(0, sigma**2)``.
        On the generator's device (CPU without a generator).
    """
    device = generator.device if generator is not None else None
    return sigma * torch.randn(batch, 2, grid, grid, generator=generator, device=device)


def interpolate_displacement(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic interpolation of the coarse grid to one displacement per pixel.

    The result is that of ``F.interpolate(coarse, size, mode="bicubic",
    align_corners=True)``: the control points sit at evenly spaced pixels including both
    corners, where the dense field equals the coarse values.

    Parameters
    ----------
    coarse : (B, 2, g, g) tensor
        From :func:`random_coarse_displacement`.
    size : (H, W)
        Image size.

    Returns
    -------
    (B, 2, H, W) tensor
        Displacement of every pixel in pixels, (rows, columns).
    """
    grid = coarse.shape[-1]
    along_rows = _cubic_interpolation_matrix(size[0], grid, coarse.dtype, coarse.device)
    along_cols = _cubic_interpolation_matrix(size[1], grid, coarse.dtype, coarse.device)
    # Bicubic interpolation is separable: two small matrix products are several times
    # faster than F.interpolate on the CPU and give the same numbers.
    return torch.einsum("hi,bcij,wj->bchw", along_rows, coarse, along_cols)


@functools.lru_cache(maxsize=16)
def _cubic_interpolation_matrix(
    size: int, grid: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """(size, grid) matrix whose product with a vector is its 1D bicubic interpolation."""
    # Interpolating each basis vector with torch's own kernel gives the exact weights.
    basis = torch.eye(grid, dtype=dtype, device=device).view(grid, 1, grid, 1)
    columns = F.interpolate(basis, size=(size, 1), mode="bicubic", align_corners=True)
    return columns[:, 0, :, 0].T.contiguous()


def random_dihedral(
    batch: int,
    config: AugmentConfig,
    *,
    square: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random flip/rotation matrices acting on normalised (row, column) coordinates.

    Parameters
    ----------
    square : bool
        Quarter turns are only drawn for square images (they would change the shape).

    Returns
    -------
    (B, 2, 2) tensor
        Each one of the 8 symmetries of the square (or fewer, as configured).
    """
    device = generator.device if generator is not None else None
    # Always draw, so enabling one option does not change the draws of the others.
    draws = torch.randint(0, 4, (batch, 3), generator=generator, device=device).cpu()
    quarter_turns = draws[:, 0] if square else 2 * (draws[:, 0] % 2)
    if not config.rot90:
        quarter_turns = torch.zeros_like(quarter_turns)
    flip_signs = 1 - 2 * (draws[:, 1:] % 2) if config.flips else torch.ones(batch, 2, dtype=int)
    turn = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    matrices = [
        torch.diag(signs.float()) @ torch.linalg.matrix_power(turn, int(k))
        for k, signs in zip(quarter_turns, flip_signs, strict=True)
    ]
    return torch.stack(matrices)


def sampling_grid(displacement: torch.Tensor, dihedral: torch.Tensor | None = None) -> torch.Tensor:
    """Where each output pixel samples its input, in ``grid_sample`` convention.

    Parameters
    ----------
    displacement : (B, 2, H, W) tensor
        Per-pixel displacement in pixels, (rows, columns).
    dihedral : (B, 2, 2) tensor, optional
        Flip/rotation of the normalised (row, column) output coordinates, applied
        before displacing them.

    Returns
    -------
    (B, H, W, 2) tensor
        Normalised (x, y) = (column, row) sample positions for ``align_corners=True``,
        where -1 and 1 are the centres of the first and last pixels.
    """
    batch, _, height, width = displacement.shape
    options = {"dtype": displacement.dtype, "device": displacement.device}
    rows = torch.linspace(-1.0, 1.0, height, **options).view(1, height, 1)
    cols = torch.linspace(-1.0, 1.0, width, **options).view(1, 1, width)
    if dihedral is None:
        dihedral = torch.eye(2, **options).expand(batch, 2, 2)
    matrix = dihedral.to(**options).view(batch, 2, 2, 1, 1)
    # Per-channel broadcasting instead of a (B, H*W, 2) matrix product: a 2x2 product on
    # interleaved coordinates is an order of magnitude slower on the CPU.
    source_rows = matrix[:, 0, 0] * rows + matrix[:, 0, 1] * cols
    source_cols = matrix[:, 1, 0] * rows + matrix[:, 1, 1] * cols
    # One pixel is 2 / (size - 1) normalised units with align_corners=True.
    source_rows = source_rows.add(displacement[:, 0], alpha=2.0 / max(height - 1, 1))
    source_cols = source_cols.add(displacement[:, 1], alpha=2.0 / max(width - 1, 1))
    return torch.stack([source_cols, source_rows], dim=-1)  # grid_sample wants (x, y)


def crop_grid(grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Central ``(h, w)`` part of a sampling grid (B, H, W, 2), cut like :func:`center_crop`."""
    return center_crop(grid.permute(0, 3, 1, 2), *size).permute(0, 2, 3, 1)


def warp(tensor: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """Resample ``tensor`` (B, C, H, W) at ``grid`` (B, h, w, 2), mirroring at the borders."""
    return F.grid_sample(tensor, grid, mode=mode, padding_mode="reflection", align_corners=True)


def warp_targets(
    labels: torch.Tensor, weights: torch.Tensor, grid: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample labels (nearest) and weights (bilinear) at ``grid``, keeping them consistent.

    Parameters
    ----------
    labels, weights : (B, H, W) tensors
    grid : (B, h, w, 2) tensor
        From :func:`sampling_grid`, possibly centre-cropped.

    Returns
    -------
    labels : (B, h, w) tensor, input dtype
        Every value is a value of the input (nearest neighbour).
    weights : (B, h, w) tensor
        Bilinear, and exactly 0 where the deformed label is ``ignore_index``: an
        unannotated pixel must never contribute to the loss, even next to painted ones.
        (Painted pixels bordering unpainted ones get a slightly reduced weight, a
        harmless softening of the annotation's edge.)
    """
    # float32 represents every label below 2**24 exactly, so nearest sampling is lossless.
    as_float = labels.to(grid.dtype).unsqueeze(1)
    new_labels = warp(as_float, grid, "nearest").squeeze(1).to(labels.dtype)
    new_weights = warp(weights.unsqueeze(1).to(grid.dtype), grid, "bilinear").squeeze(1)
    new_weights = new_weights.masked_fill(new_labels == ignore_index, 0.0).to(weights.dtype)
    return new_labels, new_weights


def _check_batch(
    image: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    crop: tuple[int, int] | None,
) -> None:
    """Raise :class:`InputError` naming the first shape or dtype problem."""
    if image.ndim != 4 or not image.is_floating_point():
        raise InputError(
            f"image must be a float tensor of shape (B, C, H, W), got {image.dtype} "
            f"of shape {tuple(image.shape)}"
        )
    expected = (image.shape[0], *image.shape[-2:])
    for name, tensor in (("labels", labels), ("weights", weights)):
        if tuple(tensor.shape) != expected:
            raise InputError(
                f"{name} must have shape (B, H, W) = {expected} to match the image "
                f"{tuple(image.shape)}, got {tuple(tensor.shape)}"
            )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got {labels.dtype}")
    if not weights.is_floating_point():
        raise InputError(f"weights must be a float tensor, got {weights.dtype}")
    if labels.numel() and labels.abs().max() >= _MAX_EXACT_LABEL:
        raise InputError(
            f"label values must be below {_MAX_EXACT_LABEL} in magnitude to be resampled "
            "exactly; use class indices, not instance ids"
        )
    if crop is not None:
        height, width = image.shape[-2:]
        if len(crop) != 2 or not (0 < crop[0] <= height and 0 < crop[1] <= width):
            raise InputError(
                f"crop_targets_to must be (h, w) with 0 < h <= {height} and 0 < w <= {width}, "
                f"got {crop}"
            )


__all__ = [
    "NO_AUGMENTATION",
    "AugmentConfig",
    "augment_batch",
    "crop_grid",
    "interpolate_displacement",
    "random_blur",
    "random_coarse_displacement",
    "random_dihedral",
    "random_intensity",
    "random_invert",
    "sampling_grid",
    "warp",
    "warp_targets",
]

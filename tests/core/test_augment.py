"""Elastic deformation, flips, rotations and intensity changes of core.augment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.augment import (
    AugmentConfig,
    augment_batch,
    interpolate_displacement,
    random_coarse_displacement,
    random_dihedral,
    sampling_grid,
    warp,
)
from napari_unet.core.augment_intensity import random_intensity
from napari_unet.core.errors import InputError
from napari_unet.core.model import center_crop

GEOMETRY_ONLY = AugmentConfig(intensity=0.0, gamma=0.0)
NOTHING = AugmentConfig(elastic_sigma=0.0, flips=False, rot90=False, intensity=0.0, gamma=0.0)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_batch(batch: int = 2, size: tuple[int, int] = (48, 48)):
    """Smooth blobs in [0, 1]; labels and weights are functions of the intensity.

    Returns image (B, 1, H, W), labels (B, H, W) with -1 where the image is darkest,
    and weights (B, H, W) = 1 + image (0 where ignored).
    """
    noise = torch.rand(batch, 1, 6, 6, generator=seeded(123))
    image = F.interpolate(noise, size=size, mode="bicubic", align_corners=True).clamp(0, 1)
    labels = (image[:, 0] > 0.5).long()
    labels[image[:, 0] < 0.15] = -1
    weights = torch.where(labels == -1, 0.0, 1.0 + image[:, 0])
    return image, labels, weights


def test_everything_off_is_the_identity():
    image, labels, weights = smooth_batch()
    out = augment_batch(image, labels, weights, NOTHING, seeded())
    for before, after in zip((image, labels, weights), out, strict=True):
        assert torch.equal(before, after)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest"])
def test_zero_displacement_grid_samples_every_pixel_at_its_centre(mode):
    image = torch.rand(2, 3, 17, 12, generator=seeded())
    grid = sampling_grid(torch.zeros(2, 2, 17, 12))
    torch.testing.assert_close(warp(image, grid, mode), image, atol=1e-5, rtol=0)


def test_constant_displacement_samples_from_displaced_pixel():
    """Backward mapping: output(r, c) = input(r + dr, c + dc)."""
    image = torch.rand(1, 1, 20, 24, generator=seeded())
    displacement = torch.zeros(1, 2, 20, 24)
    displacement[:, 0], displacement[:, 1] = 2.0, -3.0
    shifted = warp(image, sampling_grid(displacement), "bilinear")
    torch.testing.assert_close(shifted[..., :-2, 3:], image[..., 2:, :-3], atol=1e-5, rtol=0)
    # Beyond the border the image is mirrored about the edge pixels' centres.
    torch.testing.assert_close(shifted[..., -1, 3:], image[..., -3, :-3], atol=1e-5, rtol=0)


def test_coarse_displacements_are_normal_with_the_requested_sigma():
    coarse = random_coarse_displacement(4000, 3, 10.0, generator=seeded())
    assert coarse.shape == (4000, 2, 3, 3)
    assert coarse.mean().item() == pytest.approx(0.0, abs=0.1)
    assert coarse.std().item() == pytest.approx(10.0, rel=0.02)
    # Every control point and both directions are independent of each other.
    per_point = coarse.flatten(1).T  # (18, draws)
    correlation = torch.corrcoef(per_point) - torch.eye(18)
    assert correlation.abs().max().item() < 0.06


def test_dense_field_passes_through_the_control_points():
    coarse = random_coarse_displacement(3, 3, 10.0, generator=seeded())
    dense = interpolate_displacement(coarse, (65, 33))  # control points at rows 0/32/64
    nodes = dense[:, :, ::32, ::16]
    torch.testing.assert_close(nodes, coarse, atol=1e-4, rtol=0)
    reference = F.interpolate(coarse, size=(65, 33), mode="bicubic", align_corners=True)
    torch.testing.assert_close(dense, reference, atol=1e-5, rtol=0)


def test_dihedral_matrices_are_the_flips_and_quarter_turns():
    image = torch.arange(36.0).view(1, 1, 6, 6)
    expected = {
        torch.flip(torch.rot90(image, k, dims=(2, 3)), dims=flip).flatten().tolist().__repr__()
        for k in range(4)
        for flip in ((), (2,))
    }
    matrices = random_dihedral(200, AugmentConfig(), square=True, generator=seeded())
    seen = set()
    for matrix in matrices:
        grid = sampling_grid(torch.zeros(1, 2, 6, 6), matrix[None])
        seen.add(warp(image, grid, "nearest").flatten().tolist().__repr__())
    assert seen == expected  # all 8 symmetries of the square, and nothing else


def test_dihedral_matrices_act_on_row_column_coordinates():
    """output(p) = input(D p): D maps (row, column) to where the output pixel samples."""
    square = torch.arange(36.0).view(1, 1, 6, 6)
    quarter_turn = torch.tensor([[[0.0, -1.0], [1.0, 0.0]]])  # (r, c) -> (-c, r)
    grid = sampling_grid(torch.zeros(1, 2, 6, 6), quarter_turn)
    assert torch.equal(warp(square, grid, "nearest"), torch.rot90(square, -1, dims=(2, 3)))
    tall = torch.arange(24.0).view(1, 1, 6, 4)
    flip_rows = torch.tensor([[[-1.0, 0.0], [0.0, 1.0]]])
    grid = sampling_grid(torch.zeros(1, 2, 6, 4), flip_rows)
    assert torch.equal(warp(tall, grid, "nearest"), torch.flip(tall, dims=(2,)))


def test_non_square_images_only_flip_or_half_turn():
    matrices = random_dihedral(100, AugmentConfig(), square=False, generator=seeded())
    assert torch.all(matrices[:, 0, 1] == 0) and torch.all(matrices[:, 1, 0] == 0)
    assert set(matrices[:, 0, 0].tolist()) == {-1.0, 1.0}


def test_flips_off_and_rot90_off_give_identity_matrices():
    config = AugmentConfig(flips=False, rot90=False)
    matrices = random_dihedral(20, config, square=True, generator=seeded())
    assert torch.equal(matrices, torch.eye(2).expand(20, 2, 2))


def test_flips_and_rotations_keep_image_labels_and_weights_aligned():
    image, labels, weights = smooth_batch(batch=8)
    config = AugmentConfig(elastic_sigma=0.0, intensity=0.0, gamma=0.0)
    out_image, out_labels, out_weights = augment_batch(image, labels, weights, config, seeded())
    assert not torch.equal(out_image, image)  # something moved
    derived = (out_image[:, 0] > 0.5).long()
    derived[out_image[:, 0] < 0.15] = -1
    assert torch.equal(out_labels, derived)
    expected_weights = torch.where(out_labels == -1, 0.0, 1.0 + out_image[:, 0])
    torch.testing.assert_close(out_weights, expected_weights, atol=1e-5, rtol=0)


def test_elastic_deformation_keeps_targets_aligned_with_the_image():
    image, labels, weights = smooth_batch(batch=4, size=(64, 64))
    out_image, out_labels, out_weights = augment_batch(
        image, labels, weights, GEOMETRY_ONLY, seeded()
    )
    assert (out_image - image).abs().mean() > 0.02  # really deformed
    derived = (out_image[:, 0] > 0.5).long()
    derived[out_image[:, 0] < 0.15] = -1
    # Only pixels straddling a threshold may disagree (interpolation vs nearest).
    assert (out_labels == derived).float().mean() > 0.97
    annotated = out_labels != -1
    close = (out_weights - (1.0 + out_image[:, 0])).abs() < 0.05
    assert close[annotated].float().mean() > 0.97


def test_strong_deformation_creates_no_new_label_values():
    labels = torch.randint(-1, 4, (3, 40, 40), generator=seeded())
    labels[:, :10] = 7  # a rare value, next to ignored pixels
    image = torch.rand(3, 1, 40, 40, generator=seeded(1))
    weights = torch.rand(3, 40, 40, generator=seeded(2)) + 0.5
    weights[labels == -1] = 0.0
    config = AugmentConfig(elastic_sigma=40.0)
    _, out_labels, out_weights = augment_batch(image, labels, weights, config, seeded())
    assert set(out_labels.unique().tolist()) <= set(labels.unique().tolist())
    assert out_labels.dtype == labels.dtype
    # Unannotated stays unannotated: zero weight wherever the label says ignore.
    assert torch.all(out_weights[out_labels == -1] == 0)
    assert torch.all(out_weights[out_labels != -1] > 0)


def test_ignore_index_zero_is_honoured():
    labels = torch.randint(0, 3, (2, 30, 30), generator=seeded())
    weights = torch.ones(2, 30, 30)
    image = torch.rand(2, 1, 30, 30)
    _, out_labels, out_weights = augment_batch(
        image, labels, weights, AugmentConfig(elastic_sigma=20.0), seeded(), ignore_index=0
    )
    assert torch.all(out_weights[out_labels == 0] == 0)
    assert torch.all(out_weights[out_labels != 0] > 0)


def test_cropped_targets_are_the_centre_of_the_full_size_targets():
    image, labels, weights = smooth_batch(batch=3, size=(60, 60))
    full = augment_batch(image, labels, weights, AugmentConfig(), seeded(5))
    cropped = augment_batch(
        image, labels, weights, AugmentConfig(), seeded(5), crop_targets_to=(20, 28)
    )
    torch.testing.assert_close(cropped[0], full[0])
    assert cropped[1].shape == (3, 20, 28) and cropped[2].shape == (3, 20, 28)
    assert torch.equal(cropped[1], center_crop(full[1], 20, 28))
    torch.testing.assert_close(cropped[2], center_crop(full[2], 20, 28))


def test_disabled_only_crops_the_targets():
    image, labels, weights = smooth_batch()
    off = AugmentConfig(enabled=False)
    out = augment_batch(image, labels, weights, off, crop_targets_to=(10, 12))
    assert out[0] is image
    assert torch.equal(out[1], center_crop(labels, 10, 12))
    assert torch.equal(out[2], center_crop(weights, 10, 12))


def test_seeded_generator_reproduces_and_different_seeds_differ():
    image, labels, weights = smooth_batch()
    first = augment_batch(image, labels, weights, AugmentConfig(), seeded(7))
    again = augment_batch(image, labels, weights, AugmentConfig(), seeded(7))
    other = augment_batch(image, labels, weights, AugmentConfig(), seeded(8))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], other[0])


def test_each_sample_gets_its_own_deformation():
    image, labels, weights = smooth_batch(batch=1)
    twice = image.expand(2, -1, -1, -1)
    out, _, _ = augment_batch(twice, labels.expand(2, -1, -1), weights.expand(2, -1, -1))
    assert not torch.equal(out[0], out[1])


def test_inputs_are_not_modified():
    image, labels, weights = smooth_batch()
    copies = [t.clone() for t in (image, labels, weights)]
    augment_batch(image, labels, weights, AugmentConfig(), seeded())
    for before, after in zip(copies, (image, labels, weights), strict=True):
        assert torch.equal(before, after)


def test_intensity_is_a_mild_affine_change_of_the_image_only():
    image, labels, weights = smooth_batch(batch=6)
    config = AugmentConfig(elastic_sigma=0.0, flips=False, rot90=False, intensity=0.1, gamma=0.0)
    out_image, out_labels, out_weights = augment_batch(image, labels, weights, config, seeded())
    assert torch.equal(out_labels, labels) and torch.equal(out_weights, weights)
    for before, after in zip(image.flatten(1), out_image.flatten(1), strict=True):
        gain, offset = np.polyfit(before.numpy(), after.numpy(), 1)
        assert 0.9 - 1e-4 <= gain <= 1.1 + 1e-4 and abs(offset) <= 0.1 + 1e-4
    assert not torch.allclose(out_image, image)


def test_gamma_keeps_each_samples_range_and_order():
    image = torch.rand(4, 1, 16, 16, generator=seeded()) * 3 - 1  # negatives are fine
    out = random_intensity(image, 0.0, 0.3, generator=seeded())
    torch.testing.assert_close(out.amin(dim=(1, 2, 3)), image.amin(dim=(1, 2, 3)))
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), image.amax(dim=(1, 2, 3)))
    order = image.flatten(1).argsort(dim=1)
    assert torch.all(out.flatten(1).gather(1, order).diff(dim=1) >= -1e-6)  # monotone


@pytest.mark.parametrize(
    ("shapes", "kwargs", "message"),
    [
        (((2, 8, 8), (2, 8, 8), (2, 8, 8)), {}, r"image must be a float tensor of shape \(B, C"),
        (((2, 1, 8, 8), (2, 8, 9), (2, 8, 8)), {}, r"labels must have shape \(B, H, W\)"),
        (((2, 1, 8, 8), (2, 8, 8), (1, 8, 8)), {}, r"weights must have shape \(B, H, W\)"),
        (
            ((2, 1, 8, 8), (2, 8, 8), (2, 8, 8)),
            {"crop_targets_to": (9, 4)},
            r"crop_targets_to must be \(h, w\) with 0 < h <= 8",
        ),
    ],
)
def test_bad_shapes_raise_clear_errors(shapes, kwargs, message):
    image, labels, weights = shapes
    with pytest.raises(InputError, match=message):
        augment_batch(
            torch.zeros(image),
            torch.zeros(labels, dtype=torch.long),
            torch.zeros(weights),
            **kwargs,
        )


def test_bad_dtypes_and_config_raise_clear_errors():
    image = torch.zeros(1, 1, 8, 8)
    with pytest.raises(InputError, match="labels must be an integer tensor"):
        augment_batch(image, torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(InputError, match="weights must be a float tensor"):
        augment_batch(image, torch.zeros(1, 8, 8, dtype=torch.long), torch.zeros(1, 8, 8).long())
    with pytest.raises(InputError, match="use class indices, not instance ids"):
        big = torch.full((1, 8, 8), 2**25)
        augment_batch(image, big, torch.zeros(1, 8, 8))
    with pytest.raises(InputError, match="elastic_sigma must be >= 0"):
        AugmentConfig(elastic_sigma=-1.0)
    with pytest.raises(InputError, match="at least 2 control points"):
        AugmentConfig(grid=1)
    with pytest.raises(InputError, match="image_interpolation must be 'bilinear' or 'bicubic'"):
        AugmentConfig(image_interpolation="nearest")


def test_same_displacement_magnitude_as_elasticdeform():
    """Given the same coarse grid, our dense field matches the reference package's.

    ``elasticdeform.deform_random_grid(sigma, points)`` is ``deform_grid`` with
    ``randn(2, points, points) * sigma``; we pass that grid to both implementations and
    read the displacement off deformed coordinate ramps, away from the borders.
    """
    elasticdeform = pytest.importorskip(
        "elasticdeform",
        reason="elasticdeform not installed (pip install --no-binary elasticdeform "
        "--no-build-isolation elasticdeform)",
    )
    size = 97
    rows, cols = np.meshgrid(*(np.arange(size, dtype=np.float32),) * 2, indexing="ij")
    ramps = np.stack([rows, cols])
    inner = (slice(None), slice(20, -20), slice(20, -20))
    rng = np.random.default_rng(0)
    ours, theirs = [], []
    for _ in range(8):
        coarse = rng.normal(0.0, 10.0, size=(2, 3, 3))
        warped = elasticdeform.deform_grid(list(ramps), coarse, order=1, mode="mirror")
        theirs.append((np.stack(warped) - ramps)[inner])
        grid = sampling_grid(interpolate_displacement(torch.tensor(coarse[None]).float(), (97, 97)))
        ours.append(
            (warp(torch.from_numpy(ramps)[None], grid, "bilinear")[0].numpy() - ramps)[inner]
        )
    ours_mean, theirs_mean = np.abs(ours).mean(), np.abs(theirs).mean()
    assert 1 / 1.5 < ours_mean / theirs_mean < 1.5
    # Same direction too (both map backwards: output(p) = input(p + u(p))).
    assert np.corrcoef(np.ravel(ours), np.ravel(theirs))[0, 1] > 0.95

"""The paper's weight map (eq. 2): hand-worked cases, fast == reference, error bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile

from napari_unet.core.annotations import targets_from_annotation
from napari_unet.core.errors import InputError
from napari_unet.core.weights import (
    border_reach,
    border_term,
    class_balance_weights,
    two_nearest_cell_distances,
    weight_map,
)
from oracles import weight_map_reference

W0, SIGMA = 10.0, 5.0
#: float32 rounding of weights up to ~20.
FLOAT32_SLACK = 1e-5


def two_squares(gap: int) -> np.ndarray:
    """(20, 40 + gap) image: two 10x10 cells side by side, ``gap`` background columns apart."""
    instances = np.zeros((20, 30 + gap), dtype=np.int32)
    instances[5:15, 5:15] = 1
    instances[5:15, 15 + gap : 25 + gap] = 2
    return instances


def random_touching_disks(rng, shape=(128, 128), n=40, radii=(4, 10)) -> np.ndarray:
    """Random overlapping disks; later disks only fill free pixels, so many touch."""
    instances = np.zeros(shape, dtype=np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radius = rng.uniform(*radii)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        instances[disk & (instances == 0)] = k
    return instances


def test_gap_centre_weight_matches_hand_computation():
    gap = 5
    instances = two_squares(gap)

    weights = weight_map(instances, class_weights=None)

    # Centre of the gap: 3 pixels from each cell's last column, so d1 + d2 = gap + 1.
    row, col = 9, 15 + gap // 2
    assert weights[row, col] == pytest.approx(1 + W0 * math.exp(-((gap + 1) ** 2) / (2 * SIGMA**2)))
    # Cell pixels get no border term.
    assert weights[9, 10] == 1.0


def test_balanced_class_weights_by_hand():
    instances = two_squares(gap=5)
    n_total, n_cells = instances.size, 200
    w_background = n_total / (2 * (n_total - n_cells))
    w_cell = n_total / (2 * n_cells)

    weights = weight_map(instances)

    assert weights[9, 10] == pytest.approx(w_cell)
    # Far corner: d1 + d2 > 27, a border term below 1e-5.
    assert weights[0, 0] == pytest.approx(w_background, abs=1e-5)
    assert weights[9, 17] == pytest.approx(w_background + W0 * math.exp(-36 / 50))


def test_balanced_weights_average_one_over_annotated_pixels(rng):
    classes = rng.choice([-1, 0, 1], size=(30, 30), p=[0.5, 0.4, 0.1])

    weights = class_balance_weights(classes, "balanced")

    annotated = classes != -1
    assert weights[annotated].mean() == pytest.approx(1.0)
    assert (weights[~annotated] == 0).all()
    n_background, n_cells = (classes == 0).sum(), (classes == 1).sum()
    assert weights[classes == 0][0] / weights[classes == 1][0] == pytest.approx(
        n_cells / n_background
    )


def test_explicit_and_missing_class_weights():
    classes = np.array([[0, 1, -1]])
    np.testing.assert_array_equal(class_balance_weights(classes, {0: 0.5, 1: 3.0}), [[0.5, 3, 0]])
    np.testing.assert_array_equal(class_balance_weights(classes, None), [[1, 1, 0]])
    with pytest.raises(InputError, match=r"no weight for class\(es\) \[1\]"):
        class_balance_weights(classes, {0: 1.0})
    with pytest.raises(InputError, match="'balanced' or a mapping"):
        class_balance_weights(classes, "inverse")


def test_single_cell_has_no_second_cell_so_no_border_term():
    instances = np.zeros((30, 30), dtype=np.int32)
    instances[10:15, 10:15] = 3

    d1, d2 = two_nearest_cell_distances(instances)
    weights = weight_map(instances, class_weights=None)

    assert np.isinf(d2).all()
    assert d1[12, 20] == 6.0  # columns 10..14 hold the cell
    np.testing.assert_array_equal(weights, 1.0)


def test_no_cell_gives_class_weights_only():
    instances = np.zeros((16, 16), dtype=np.int32)
    d1, _ = two_nearest_cell_distances(instances)
    assert np.isinf(d1).all()
    np.testing.assert_array_equal(weight_map(instances), 1.0)


def test_unannotated_pixels_get_zero_weight_and_annotated_gap_keeps_its_term():
    instances = two_squares(gap=5)
    classes = (instances > 0).astype(np.int64)
    classes[:, :3] = -1

    weights = weight_map(instances, classes=classes, class_weights=None)

    assert (weights[:, :3] == 0).all()
    assert weights[9, 17] == pytest.approx(1 + W0 * math.exp(-36 / 50))


def test_border_term_is_exactly_tolerance_at_the_reach():
    reach = border_reach(W0, SIGMA, 1e-5)
    assert border_term(np.array(reach / 2), np.array(reach / 2), W0, SIGMA) == pytest.approx(1e-5)
    assert border_reach(W0, SIGMA, 0.0) == math.inf
    assert border_reach(1e-6, SIGMA, 1e-5) == 0.0


def test_fast_matches_reference_on_random_touching_disks(rng):
    instances = random_touching_disks(rng)
    classes = (instances > 0).astype(np.int64)
    classes[rng.random(classes.shape) < 0.2] = -1  # some unannotated pixels

    fast = weight_map(instances, classes=classes)
    reference = weight_map_reference(instances, classes=classes)

    assert np.abs(fast - reference).max() <= 1e-5 + FLOAT32_SLACK
    assert reference.max() > 5  # the case really has close cells


def test_error_bound_holds_and_is_reached_with_a_large_tolerance():
    # Tolerance 0.5: reach R = 5 sqrt(2 ln 20) ~ 12.2. A 12-pixel gap puts d1 + d2 = 13 > R
    # on the line across it, where the true term 10 exp(-169 / 50) ~ 0.34 may be dropped.
    tolerance = 0.5
    instances = two_squares(gap=12)

    fast = weight_map(instances, class_weights=None, tolerance=tolerance)
    reference = weight_map_reference(instances, class_weights=None)

    error = reference - fast
    assert error.max() <= tolerance + FLOAT32_SLACK
    assert error.max() > 0.1  # the truncation really happens...
    assert error.min() >= -FLOAT32_SLACK  # ...and never overestimates the term


@pytest.mark.parametrize("reach", [6.0, 12.5, 26.3])
def test_two_nearest_distances_are_exact_within_reach_and_never_too_small(rng, reach):
    instances = random_touching_disks(rng, shape=(96, 96), n=25)
    exact_d1, exact_d2 = two_nearest_cell_distances(instances)

    d1, d2 = two_nearest_cell_distances(instances, reach=reach)

    promised = (instances == 0) & (exact_d1 + exact_d2 <= reach)
    assert promised.sum() > 50
    np.testing.assert_allclose(d1[promised], exact_d1[promised], rtol=1e-12)
    np.testing.assert_allclose(d2[promised], exact_d2[promised], rtol=1e-12)
    assert (d1 >= exact_d1 - 1e-12).all()
    assert (d2 >= exact_d2 - 1e-12).all()
    assert (d2 > exact_d2).any()  # the reach really cut something


def test_zero_tolerance_is_exact(rng):
    instances = random_touching_disks(rng, shape=(64, 64), n=12)
    exact = weight_map(instances, tolerance=0.0)
    np.testing.assert_allclose(exact, weight_map_reference(instances), atol=FLOAT32_SLACK)


def test_huge_non_consecutive_ids_give_the_same_map():
    instances = two_squares(gap=4).astype(np.int64)
    renamed = np.select([instances == 1, instances == 2], [10**12, 7], 0)

    np.testing.assert_array_equal(weight_map(renamed), weight_map(instances))


def test_stack_is_weighted_plane_by_plane(rng):
    planes = [random_touching_disks(rng, shape=(48, 48), n=8) for _ in range(2)]

    stacked = weight_map(np.stack(planes), class_weights=None)

    for i, plane in enumerate(planes):
        np.testing.assert_array_equal(stacked[i], weight_map(plane, class_weights=None))


def test_bad_inputs_get_clear_errors():
    instances = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(InputError, match="integer label image, got dtype float64"):
        weight_map(instances.astype(float))
    with pytest.raises(InputError, match=">= 0"):
        weight_map(instances - 1)
    with pytest.raises(InputError, match=r"classes has shape \(4, 3\)"):
        weight_map(instances, classes=np.zeros((4, 3), dtype=int))
    with pytest.raises(InputError, match="sigma must be positive"):
        weight_map(instances, sigma=0)
    with pytest.raises(InputError, match="pass instance labels as `instances`"):
        weight_map(instances, classes=np.full((4, 4), 1000))


def test_input_is_not_modified(rng):
    instances = random_touching_disks(rng, shape=(32, 32), n=5)
    original = instances.copy()
    instances.flags.writeable = False
    weight_map(instances)
    np.testing.assert_array_equal(instances, original)


DSB_IMAGES = [
    ("1a75e9f15481d110", (slice(None), slice(None))),  # 256x256, a few nuclei
    ("61a15ccbfebb9d2f", (slice(None), slice(None))),  # 256x256, ~40 nuclei, some touching
    ("0ea221716cf13710", (slice(0, 256), slice(0, 256))),  # crop of ~370 crowded nuclei
]


@pytest.mark.data
@pytest.mark.parametrize(("name", "crop"), DSB_IMAGES, ids=[n for n, _ in DSB_IMAGES])
def test_fast_matches_reference_on_real_nuclei(shared_data, name, crop):
    instances = tifffile.imread(shared_data / "nuclei-dsb2018" / "labels" / f"{name}.tif")[crop]

    fast = weight_map(instances)
    reference = weight_map_reference(instances)

    assert np.abs(fast - reference).max() <= 1e-5 + FLOAT32_SLACK


@pytest.mark.data
def test_real_touching_nuclei_get_heavy_weights_on_their_separating_lines(shared_data):
    mask = tifffile.imread(shared_data / "nuclei-dsb2018" / "labels" / "0ea221716cf13710.tif")
    targets = targets_from_annotation(mask[:256, :256], "dense")
    separating = (mask[:256, :256] > 0) & (targets.classes == 0)

    weights = weight_map(targets.instances, classes=targets.classes, class_weights=None)

    assert separating.sum() > 100
    # One pixel from each of two cells: d1 + d2 <= 1 + 2 sqrt(2), so the term is > 8.6.
    assert weights[separating].min() > 1 + W0 * math.exp(-((1 + 2 * math.sqrt(2)) ** 2) / 50)

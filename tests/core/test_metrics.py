"""Segmentation scores on hand-worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.metrics import (
    dsb_average_precision,
    em_labels_rand_error,
    em_rand_error,
    f1_score,
    iou_matrix,
    match_counts,
    median_object_diameter,
    pixel_error,
)


def _two_squares() -> np.ndarray:
    labels = np.zeros((10, 10), int)
    labels[0:4, 0:4] = 1  # 16 px
    labels[6:10, 6:10] = 2  # 16 px
    return labels


def test_iou_matrix_by_hand():
    truth = _two_squares()
    prediction = np.zeros_like(truth)
    prediction[0:4, 0:2] = 7  # half of object 1: IoU 8/16
    prediction[6:10, 6:10] = 3  # object 2 exactly
    iou = iou_matrix(truth, prediction)
    # columns follow sorted prediction ids: 3 then 7
    np.testing.assert_allclose(iou, [[0.0, 0.5], [1.0, 0.0]])


def test_f1_and_ap_count_matches_at_thresholds():
    truth = _two_squares()
    prediction = np.zeros_like(truth)
    prediction[0:4, 0:3] = 1  # IoU 12/16 = 0.75
    prediction[6:10, 6:10] = 2  # IoU 1
    prediction[0, 9] = 3  # a false positive
    assert f1_score(truth, prediction, 0.5) == pytest.approx(2 * 2 / (2 * 2 + 1))
    # thresholds 0.5..0.75 (6 of them): tp 2, fp 1 -> 2/3; 0.8..0.95 (4): tp 1, fp 2, fn 1 -> 1/4
    assert dsb_average_precision(truth, prediction) == pytest.approx((6 * 2 / 3 + 4 * 0.25) / 10)


def test_empty_cases():
    empty = np.zeros((5, 5), int)
    assert f1_score(empty, empty) == 1.0
    assert f1_score(_two_squares(), np.zeros((10, 10), int)) == 0.0
    assert match_counts(np.zeros((0, 3)), 0.5) == (0, 3, 0)


def test_pixel_error_and_rand_error():
    truth = np.zeros((10, 10), bool)
    truth[:, :4] = True
    truth[:, 5:] = True  # two cells separated by a membrane column
    assert pixel_error(truth, truth) == 0.0
    assert em_rand_error(truth, truth) == pytest.approx(0.0)
    merged = truth.copy()
    merged[:, 4] = True  # the membrane is missed: the two cells merge
    assert pixel_error(truth, merged) == pytest.approx(0.1)
    assert em_rand_error(truth, merged) > 0.3


def test_rand_error_of_labels_that_fill_the_membranes():
    truth = np.zeros((10, 10), bool)
    truth[:, :4] = True
    truth[:, 5:] = True
    grown = np.where(np.arange(10) < 5, 1, 2)[None, :].repeat(10, axis=0)
    assert em_labels_rand_error(truth, grown) == pytest.approx(0.0)  # membrane ignored
    assert em_labels_rand_error(truth, np.ones((10, 10), int)) > 0.3  # one merged cell


def _discs(shape: tuple[int, int], centres_radii: list[tuple[int, int, float]]) -> np.ndarray:
    """Instance labels of discs (ids 1, 2, ...) at (row, column) centres with radii."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for index, (row, col, radius) in enumerate(centres_radii, start=1):
        labels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = index
    return labels


def test_median_object_diameter_of_discs_is_close_to_twice_their_radius():
    labels = _discs((100, 100), [(20, 20, 8), (20, 70, 10), (70, 45, 12)])
    diameter = median_object_diameter(labels)
    # rasterised discs have about the disc's area: the median (radius 10) gives ~20 px
    assert diameter == pytest.approx(20.0, abs=0.5)
    area = np.sum(labels == 2)
    assert diameter == pytest.approx(2 * np.sqrt(area / np.pi))


def test_median_object_diameter_counts_each_plane_and_handles_no_objects():
    small = _discs((60, 60), [(30, 30, 5)])
    large = _discs((60, 60), [(15, 15, 10), (40, 40, 10)])
    # same id 1 in both planes: 3 objects in total, median radius 10
    assert median_object_diameter(np.stack([small, large])) == pytest.approx(20.0, abs=0.5)
    assert median_object_diameter(np.zeros((2, 8, 8), np.uint16)) is None
    mask = np.zeros((30, 30), bool)
    mask[5:15, 5:15] = True  # a boolean mask is one object per plane
    assert median_object_diameter(mask) == pytest.approx(2 * np.sqrt(100 / np.pi))


def test_median_object_diameter_can_exclude_objects_cut_by_the_border():
    # two discs cut in half by the border and one whole disc
    labels = _discs((80, 80), [(0, 40, 10), (40, 0, 10), (50, 50, 10)])
    assert median_object_diameter(labels) < 18.0  # the halves dominate the median
    assert median_object_diameter(labels, exclude_border=True) == pytest.approx(20.0, abs=0.5)
    # when every object touches the border they are all kept rather than none
    only_cut = _discs((80, 80), [(0, 40, 10)])
    assert median_object_diameter(only_cut, exclude_border=True) == pytest.approx(
        median_object_diameter(only_cut)
    )


def test_median_object_diameter_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        median_object_diameter(np.zeros(5, int))
    with pytest.raises(ValueError, match="integer"):
        median_object_diameter(np.zeros((5, 5), np.float32))


def test_median_object_diameter_of_several_labellings_pools_their_objects():
    small = _discs((40, 40), [(20, 20, 5)])
    large = _discs((90, 70), [(20, 20, 12), (60, 40, 12)])
    pooled = median_object_diameter([small, large])
    assert pooled == pytest.approx(median_object_diameter(large))  # 2 of the 3 are large
    assert median_object_diameter((small,)) == pytest.approx(median_object_diameter(small))
    assert median_object_diameter([]) is None
    # border exclusion over the whole set: the cut disc of one image is dropped
    cut = _discs((40, 40), [(0, 20, 12)])
    assert median_object_diameter([cut, small], exclude_border=True) == pytest.approx(
        median_object_diameter(small)
    )

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

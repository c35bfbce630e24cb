"""Segmentation scores used for the model cards and benchmarks.

- Instance matching by intersection over union (IoU): F1 at an IoU threshold and the
  Data Science Bowl 2018 average precision ``TP / (TP + FP + FN)`` averaged over IoU
  thresholds 0.5:0.05:0.95.
- EM scores of the ISBI 2012 challenge: pixel error, and the adapted Rand error of
  connected cell regions (via :func:`skimage.metrics.adapted_rand_error`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.metrics import adapted_rand_error

#: IoU thresholds of the DSB 2018 metric.
DSB_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


def iou_matrix(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU between every true and every predicted object.

    Parameters
    ----------
    truth, prediction : (H, W) ndarray of int
        Instance labels, 0 = background.

    Returns
    -------
    iou : (N_true, N_pred) ndarray of float64
        Rows follow the sorted non-zero ids of ``truth``, columns those of ``prediction``.
    """
    if truth.shape != prediction.shape:
        raise ValueError(f"shapes differ: {truth.shape} vs {prediction.shape}")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(prediction, return_inverse=True)
    t, p = t.reshape(truth.shape), p.reshape(prediction.shape)
    # index 0 is the background when present; shift so that ids are dense from 0
    t_has_bg, p_has_bg = (truth == 0).any(), (prediction == 0).any()
    n_t, n_p = t.max() + 1, p.max() + 1
    overlap = np.bincount((t * n_p + p).ravel(), minlength=n_t * n_p).reshape(n_t, n_p)
    area_t, area_p = overlap.sum(1), overlap.sum(0)
    union = area_t[:, None] + area_p[None, :] - overlap
    iou = overlap / np.maximum(union, 1)
    return iou[int(t_has_bg) :, int(p_has_bg) :]


def match_counts(iou: np.ndarray, threshold: float) -> tuple[int, int, int]:
    """True positives, false positives and false negatives at an IoU threshold.

    Uses an optimal one-to-one assignment; for thresholds >= 0.5 it equals greedy matching.
    """
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return 0, n_pred, n_true
    rows, cols = linear_sum_assignment(-iou)
    tp = int(np.sum(iou[rows, cols] >= threshold))
    return tp, n_pred - tp, n_true - tp


def f1_score(truth: np.ndarray, prediction: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of instance detection at an IoU threshold (1.0 when both are empty)."""
    tp, fp, fn = match_counts(iou_matrix(truth, prediction), threshold)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def dsb_average_precision(
    truth: np.ndarray, prediction: np.ndarray, thresholds: np.ndarray = DSB_THRESHOLDS
) -> float:
    """Mean over IoU thresholds of ``TP / (TP + FP + FN)`` (the DSB 2018 score)."""
    iou = iou_matrix(truth, prediction)
    scores = []
    for threshold in thresholds:
        tp, fp, fn = match_counts(iou, threshold)
        scores.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return float(np.mean(scores))


def pixel_error(truth_mask: np.ndarray, predicted_mask: np.ndarray) -> float:
    """Fraction of pixels whose binary class differs."""
    return float(np.mean(truth_mask.astype(bool) != predicted_mask.astype(bool)))


def em_rand_error(truth_mask: np.ndarray, predicted_mask: np.ndarray) -> float:
    """Adapted Rand error of the connected cell regions of two binary interior masks.

    Regions are 4-connected components of the interior (foreground) pixels, as in the
    ISBI 2012 challenge; membrane pixels are background (id 0) and ignored by
    skimage's adapted Rand error on the ground-truth side.
    """
    truth_regions, _ = ndi.label(truth_mask.astype(bool))
    predicted_regions, _ = ndi.label(predicted_mask.astype(bool))
    error, _, _ = adapted_rand_error(truth_regions, predicted_regions)
    return float(error)


def em_labels_rand_error(truth_mask: np.ndarray, predicted_labels: np.ndarray) -> float:
    """Adapted Rand error of predicted cell labels against the truth's connected cells.

    Use this when the prediction is already an instance labelling (e.g. cells grown over
    the membranes with ``fill_boundaries``); :func:`em_rand_error` labels a binary mask
    first. Membrane pixels of the truth are ignored, as in :func:`em_rand_error`.
    """
    truth_regions, _ = ndi.label(truth_mask.astype(bool))
    error, _, _ = adapted_rand_error(truth_regions, np.asarray(predicted_labels))
    return float(error)


def median_object_diameter(
    labels: np.ndarray | Sequence[np.ndarray], *, exclude_border: bool = False
) -> float | None:
    """Median equivalent diameter of the objects of an instance labelling, in pixels.

    The equivalent diameter of an object is that of the disc of the same area,
    ``2 * sqrt(area / pi)``. Each plane is measured on its own: an id that appears in two
    planes counts as two objects.

    Parameters
    ----------
    labels : (H, W) or (N, H, W) ndarray of int or bool, or a list or tuple of them
        Instance ids, 0 = background (a boolean mask is one object per plane). A list or
        tuple holds several labellings (e.g. of images of different sizes): the median
        is over all their objects.
    exclude_border : bool
        Ignore objects touching the border of their plane (they are cut, so they look
        smaller); used on crops. When every object touches the border they are all kept,
        since a biased measurement beats none.

    Returns
    -------
    diameter : float or None
        The median over all objects, or None when there is no object.
    """
    stacks = list(labels) if isinstance(labels, list | tuple) else [labels]
    measured = [_object_areas(stack) for stack in stacks]
    area = np.concatenate([areas for areas, _ in measured] + [np.zeros(0)])
    if area.size == 0:
        return None
    if exclude_border:
        inner = ~np.concatenate([touching for _, touching in measured] + [np.zeros(0, bool)])
        if inner.any():
            area = area[inner]
    return float(np.median(2.0 * np.sqrt(area / np.pi)))


def _object_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count of every object of every plane, and whether it touches its plane's border.

    Parameters
    ----------
    labels : (H, W) or (N, H, W) ndarray of int or bool

    Returns
    -------
    areas : (M,) ndarray of int64
    touching : (M,) ndarray of bool
    """
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (N, H, W), got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must hold integer ids, got dtype {labels.dtype}")
    areas, touching = [np.zeros(0, np.int64)], [np.zeros(0, bool)]
    for plane in labels[None] if labels.ndim == 2 else labels:
        ids, counts = np.unique(plane[plane != 0], return_counts=True)
        edge = np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]])
        areas.append(counts.astype(np.int64))
        touching.append(np.isin(ids, edge))
    return np.concatenate(areas), np.concatenate(touching)

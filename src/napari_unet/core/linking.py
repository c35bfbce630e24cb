"""Link per-plane instance labels through a stack (z-stitching, frame-to-frame tracking).

A segmentation model labels each 2-D plane on its own, so ids restart in every plane: one
nucleus has a different id in each slice and unrelated objects share ids across slices.
:func:`link_planes` gives each object of plane ``k`` the id of the object of plane ``k - 1``
it overlaps with the highest intersection over union (IoU), if that IoU is at least
``min_iou``, else a new id, as Cellpose's ``stitch3D`` does. Matching is greedy, best IoU
first, and one-to-one: an object of plane ``k - 1`` passes its id to at most one object of
plane ``k``. On a time axis the same rule is frame-to-frame overlap tracking; it does not
handle divisions, gaps (an object missing from a frame), merges or motion larger than
about an object's radius (see docs/linking.md).

Cost per plane: two passes of :func:`numpy.bincount` over the pixels (the current plane's
ids, then the pairs of ids; a sort instead for ids far above the pixel count or for
thousands of objects) and a Python loop over the candidate matches only: about 3 ms for a
512 x 512 plane with 500 objects (benchmarks/bench_linking.py).
"""

from __future__ import annotations

import numbers

import numpy as np

from napari_unet.core.errors import InputError

#: The overlap matrix, (previous objects + 1) x (current objects + 1), is counted densely by
#: one bincount while it has at most this many cells per pixel of the plane; larger ones
#: (over ~500 objects in a 512 x 512 plane) are counted sparsely, by sorting the pixels where
#: objects overlap, which is then faster (measured: 2000 objects, 15 ms dense, 3 ms sparse).
DENSE_CELLS_PER_PIXEL = 1.0


def link_planes(labels: np.ndarray, *, min_iou: float = 0.25) -> np.ndarray:
    """Give objects that overlap across consecutive planes the same id.

    Parameters
    ----------
    labels : (N, H, W) ndarray of int
        Instance labels of each plane, 0 = background; ids of different planes are
        unrelated. Not modified.
    min_iou : float, optional
        Smallest IoU, in (0, 1], for an object to take the id of an object of the previous
        plane. Two equal discs of radius ``r`` moved by ``d`` have IoU 0.25 at ``d`` close to
        ``r``.

    Returns
    -------
    linked : (N, H, W) ndarray of int32
        Same partition of every plane, with ids 1..M: each object takes the id of the
        previous plane's object with the highest IoU >= ``min_iou`` not already taken by a
        better match (best IoU first), else the next new id. New ids are given in plane
        order, then in the order of the input ids. Background stays 0.

    Raises
    ------
    InputError
        If ``labels`` is not a 3-D integer array with ids >= 0, or ``min_iou`` is not in
        (0, 1].
    """
    labels = _checked_labels(labels)
    min_iou = _checked_min_iou(min_iou)
    linked = np.zeros(labels.shape, dtype=np.int32)
    previous = None  # (compact ids of plane k - 1, their global ids, their areas)
    next_id = 1
    for k in range(labels.shape[0]):
        compact, areas = _compact_ids(labels[k])
        global_ids = np.zeros(areas.size, dtype=np.int64)
        if previous is not None:
            prev_compact, prev_global, prev_areas = previous
            rows, cols = _matches(prev_compact, prev_areas, compact, areas, min_iou)
            global_ids[cols] = prev_global[rows]
        new = np.flatnonzero(global_ids == 0)[1:]  # [1:]: index 0 is the background
        global_ids[new] = np.arange(next_id, next_id + new.size)
        next_id += new.size
        if next_id - 1 > np.iinfo(np.int32).max:
            raise InputError(
                f"linking gives more than {np.iinfo(np.int32).max} objects; "
                "link fewer planes at a time"
            )
        linked[k] = global_ids[compact]
        previous = (compact, global_ids, areas)
    return linked


def link_stack(labels: np.ndarray, *, axis: int = -3, min_iou: float = 0.25) -> np.ndarray:
    """Link instance labels along one axis, separately for each position of the others.

    Parameters
    ----------
    labels : (..., H, W) ndarray of int
        Per-plane instance labels with at least 3 axes, e.g. (T, Z, H, W); not modified.
    axis : int, optional
        The axis to link along (default -3: the axis before (H, W), z in (T, Z, H, W));
        it may not be one of the last two.
    min_iou : float, optional
        As in :func:`link_planes`.

    Returns
    -------
    linked : ndarray of int32, same shape as ``labels``
        Every position of the other leading axes linked by :func:`link_planes`, its ids
        shifted past those of the positions before it (row-major), so that ids are 1..M
        and unique over the whole result.

    Raises
    ------
    InputError
        As :func:`link_planes`, or if ``axis`` is out of range or one of the last two.
    """
    labels = np.asarray(labels)
    if labels.ndim < 3:
        raise InputError(
            f"labels to link need at least 3 axes (..., N, H, W), got shape {labels.shape}; "
            "a single plane has nothing to link"
        )
    ndim = labels.ndim
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise InputError(f"the axis to link along must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim or axis % ndim >= ndim - 2:
        raise InputError(
            f"cannot link along axis {axis} of labels with shape {labels.shape}; "
            f"choose one of axes {-ndim}..{-3} (the last two are the plane's y, x)"
        )
    planes_view = np.moveaxis(labels, axis, -3)
    linked = np.zeros(labels.shape, dtype=np.int32)
    linked_view = np.moveaxis(linked, axis, -3)
    offset = 0
    for position in np.ndindex(planes_view.shape[:-3]):
        part = link_planes(planes_view[position], min_iou=min_iou)
        top = int(part.max()) if part.size else 0
        if offset + top > np.iinfo(np.int32).max:
            raise InputError(
                f"linking gives more than {np.iinfo(np.int32).max} objects; "
                "link fewer planes at a time"
            )
        linked_view[position] = np.where(part > 0, part + offset, 0)
        offset += top
    return linked


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(
            f"labels to link must be a stack of planes (N, H, W), got shape {labels.shape}; "
            "stack the per-plane labels along axis 0"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"labels to link must have an integer dtype, got {labels.dtype}; "
            "pass instance labels (0 = background, 1, 2, ... = objects)"
        )
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise InputError(
            f"labels to link contain negative ids (smallest {labels.min()}); "
            "use 0 for background and positive ids for objects"
        )
    return labels


def _checked_min_iou(min_iou: float) -> float:
    if isinstance(min_iou, bool) or not isinstance(min_iou, numbers.Real):
        raise InputError(f"min_iou must be a number in (0, 1], got {min_iou!r}; e.g. 0.25")
    value = float(min_iou)
    if not 0.0 < value <= 1.0:  # also refuses NaN
        raise InputError(f"min_iou must be in (0, 1], got {min_iou!r}; e.g. 0.25")
    return value


def _compact_ids(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber a plane's ids to 0..n (0 = background), keeping their order.

    Returns
    -------
    compact : (H, W) ndarray of intp
        Index of each pixel's object; 0 for the background.
    areas : (n + 1,) ndarray of int64
        Pixel count of each index (index 0: the background).
    """
    flat = plane.ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= max(4 * flat.size, 1 << 16):
        # ids small enough for a lookup table: two linear passes, no sort
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=1)
        present = counts > 0
        present[0] = True
        lut = np.cumsum(present) - 1
        return lut[flat].reshape(plane.shape), counts[present].astype(np.int64)
    # huge ids (e.g. hashed or offset ones): sort the distinct object ids, then look every
    # pixel up among them (faster than np.unique's return_inverse, which sorts all pixels)
    ids = np.unique(flat[flat != 0])
    ids = np.concatenate([np.zeros(1, dtype=ids.dtype), ids])
    compact = np.searchsorted(ids, flat).astype(np.intp, copy=False)
    areas = np.bincount(compact, minlength=ids.size).astype(np.int64)
    return compact.reshape(plane.shape), areas


def _matches(
    prev: np.ndarray,
    prev_areas: np.ndarray,
    cur: np.ndarray,
    cur_areas: np.ndarray,
    min_iou: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of two planes' objects, best IoU first.

    Parameters
    ----------
    prev, cur : (H, W) ndarray of intp
        Compact ids (0 = background) of the previous and the current plane.
    prev_areas, cur_areas : (n_prev + 1,), (n_cur + 1,) ndarray of int64
        Their areas.
    min_iou : float
        Smallest IoU of a match.

    Returns
    -------
    rows, cols : (n_matches,) ndarray of intp
        Compact ids of matched previous and current objects (never 0).
    """
    n_cur = cur_areas.size
    if prev_areas.size < 2 or n_cur < 2:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    rows, cols, overlap = _overlaps(prev, prev_areas.size, cur, n_cur)
    iou = overlap / (prev_areas[rows] + cur_areas[cols] - overlap)
    keep = iou >= min_iou
    rows, cols, iou = rows[keep], cols[keep], iou[keep]
    # best IoU first; ties broken by the ids so the result never depends on the sort
    order = np.lexsort((cols, rows, -iou))
    prev_taken = np.zeros(prev_areas.size, dtype=bool)
    cur_taken = np.zeros(n_cur, dtype=bool)
    matched_rows, matched_cols = [], []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if prev_taken[r] or cur_taken[c]:
            continue
        prev_taken[r] = cur_taken[c] = True
        matched_rows.append(r)
        matched_cols.append(c)
    return np.asarray(matched_rows, dtype=np.intp), np.asarray(matched_cols, dtype=np.intp)


def _overlaps(
    prev: np.ndarray, n_prev: int, cur: np.ndarray, n_cur: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every pair of overlapping objects (background pairs left out).

    Returns
    -------
    rows, cols : (n_pairs,) ndarray of intp
        Compact ids (>= 1) of the previous and the current object of each pair.
    overlap : (n_pairs,) ndarray of int64
        Their overlap in pixels (> 0).
    """
    if n_prev * n_cur <= DENSE_CELLS_PER_PIXEL * prev.size:
        counts = np.bincount((prev * n_cur + cur).ravel(), minlength=n_prev * n_cur)
        matrix = counts.reshape(n_prev, n_cur)
        matrix[0, :] = 0
        matrix[:, 0] = 0
        rows, cols = np.nonzero(matrix)
        return rows, cols, matrix[rows, cols].astype(np.int64)
    both = (prev > 0) & (cur > 0)
    codes, overlap = np.unique(prev[both] * n_cur + cur[both], return_counts=True)
    return codes // n_cur, codes % n_cur, overlap.astype(np.int64)

"""Fill one block of a labelled plane exactly, reading only windows of the plane.

The whole-plane fill (:func:`~napari_unet.core.postprocess.instance_labels` with
``fill_boundaries``) gives every background pixel the object of its nearest labelled
pixel, however far away it is. :func:`fill_core` gives the same answer for one core
(block) of a plane stored block-wise, without holding the plane:

- **Dense window** (objects close by, e.g. EM cells): a Euclidean distance transform of
  the core plus a margin, the margin doubled until every core pixel's nearest object in
  the window is strictly closer than the window's open edges (the plane's own borders
  are no edges). Nothing outside can then be as close, so the window's answer is the
  plane's.
- **Object edges** (sparse objects, e.g. nuclei in large empty areas), once the window
  would pass :data:`DENSE_FILL_MAX_PIXELS`: a distance transform would need ~25 bytes per
  window pixel, up to a whole plane. Instead the window is read in chunks of
  :data:`EDGE_CHUNK` pixels, keeping only the coordinates and ids of object pixels on an
  object's edge (a nearest object pixel always is one), and each background pixel of the
  core is given its nearest edge point (a k-d tree), with the same stopping rule.

Both give every pixel an object at the smallest distance. Where two objects are exactly
equally near, the dense window's distance transform and the k-d tree may pick
different ones (a pixel on the bisector).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

#: Largest window (pixels) filled with a dense distance transform (~25 bytes a pixel:
#: ~160 MB); beyond it the object edges are gathered chunk by chunk instead. A default
#: 2048 px block may grow its margin to 256 px before that.
DENSE_FILL_MAX_PIXELS = 2560 * 2560
#: Edge of the chunks read while gathering object edges (int32: 16 MB a chunk).
EDGE_CHUNK = 2048

Bounds = tuple[int, int, int, int]  # (top, bottom, left, right)


def fill_core(
    labels: Any, core: tuple[int, ...], shape: tuple[int, int], margin: int
) -> np.ndarray:
    """A core of ``labels`` with every background pixel given its nearest object.

    Parameters
    ----------
    labels : (H, W) integer array-like
        The plane's objects before filling (numpy, zarr, a plane view); read by windows.
    core : (r0, r1, c0, c1)
        The block to fill.
    shape : (H, W)
        The plane's shape.
    margin : int
        The first window's margin around the core (>= 1); doubled as needed.

    Returns
    -------
    (r1 - r0, c1 - c0) int32
        The filled core.
    """
    while True:
        bounds = _window(core, margin, shape)
        if (bounds[1] - bounds[0]) * (bounds[3] - bounds[2]) > DENSE_FILL_MAX_PIXELS:
            return _fill_from_edges(labels, core, shape, margin)
        filled = _dense_fill(labels, core, shape, bounds)
        if filled is not None:
            return filled
        margin *= 2


def _window(core: tuple[int, ...], margin: int, shape: tuple[int, int]) -> Bounds:
    """The core grown by ``margin``, clipped to the plane."""
    r0, r1, c0, c1 = core
    return (
        max(0, r0 - margin),
        min(shape[0], r1 + margin),
        max(0, c0 - margin),
        min(shape[1], c1 + margin),
    )


def _dense_fill(
    labels: Any, core: tuple[int, ...], shape: tuple[int, int], bounds: Bounds
) -> np.ndarray | None:
    """The filled core from a distance transform of the window ``bounds``, or None when
    some core pixel's nearest object may lie outside it."""
    r0, r1, c0, c1 = core
    top, bottom, left, right = bounds
    window = np.asarray(labels[top:bottom, left:right])
    inside = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
    edge = edge_distance(core, bounds, shape)
    if not (window.any() or np.isinf(edge).all()):
        return None
    distance, nearest = ndimage.distance_transform_edt(window == 0, return_indices=True)
    if not (distance[inside] < edge).all():
        return None
    return window[tuple(index[inside] for index in nearest)].astype(np.int32)


def _fill_from_edges(
    labels: Any, core: tuple[int, ...], shape: tuple[int, int], margin: int
) -> np.ndarray:
    """The filled core from the object edges of growing windows (bounded memory)."""
    r0, r1, c0, c1 = core
    filled = np.asarray(labels[r0:r1, c0:c1]).astype(np.int32)
    background = filled == 0
    if not background.any():
        return filled
    queries = np.argwhere(background) + np.array([r0, c0])
    while True:
        bounds = _window(core, margin, shape)
        points, ids = object_edges(labels, bounds)
        edge = edge_distance(core, bounds, shape)[background]
        if ids.size:
            distance, nearest = cKDTree(points).query(queries)
            if (distance < edge).all():
                filled[background] = ids[nearest]
                return filled
        elif np.isinf(edge).all():
            return filled  # no object in the whole plane: nothing to fill from
        margin *= 2


def object_edges(labels: Any, bounds: Bounds) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates and ids of the object pixels in ``bounds`` that may be some background
    pixel's nearest object pixel, read :data:`EDGE_CHUNK` pixels square at a time.

    Returns
    -------
    points : (n, 2) int64
        Plane coordinates (row, col).
    ids : (n,) int32
        Their objects.
    """
    top, bottom, left, right = bounds
    points, ids = [np.empty((0, 2), np.int64)], [np.empty(0, np.int32)]
    for row in range(top, bottom, EDGE_CHUNK):
        for col in range(left, right, EDGE_CHUNK):
            chunk = np.asarray(
                labels[row : min(row + EDGE_CHUNK, bottom), col : min(col + EDGE_CHUNK, right)]
            )
            rows, cols = np.nonzero(_edge_pixels(chunk))
            points.append(np.column_stack([rows + row, cols + col]))
            ids.append(chunk[rows, cols].astype(np.int32))
    return np.concatenate(points), np.concatenate(ids)


def _edge_pixels(chunk: np.ndarray) -> np.ndarray:
    """Object pixels with a background 4-neighbour, and those on the chunk's border
    (their outer neighbours are unknown): a superset of the edges, which is enough.

    Why edges suffice: if all four neighbours of an object pixel are object pixels, the
    one a step towards any background pixel is strictly closer to it.
    """
    objects = chunk != 0
    interior = objects.copy()
    interior[1:, :] &= objects[:-1, :]
    interior[:-1, :] &= objects[1:, :]
    interior[:, 1:] &= objects[:, :-1]
    interior[:, :-1] &= objects[:, 1:]
    interior[[0, -1], :] = False
    interior[:, [0, -1]] = False
    return objects & ~interior


def edge_distance(core: tuple[int, ...], bounds: Bounds, shape: tuple[int, int]) -> np.ndarray:
    """``(h, w)`` distance from each core pixel to the nearest pixel outside the window
    ``bounds`` = ``(top, bottom, left, right)``; ``inf`` where only the plane's borders
    bound it. For a rectangle this is the nearest open side's perpendicular distance."""
    r0, r1, c0, c1 = core
    top, bottom, left, right = bounds
    rows = np.arange(r0, r1, dtype=np.float64)[:, None]
    cols = np.arange(c0, c1, dtype=np.float64)[None, :]
    edge = np.full((r1 - r0, c1 - c0), np.inf)
    if top > 0:
        edge = np.minimum(edge, rows - top + 1)
    if bottom < shape[0]:
        edge = np.minimum(edge, bottom - rows)
    if left > 0:
        edge = np.minimum(edge, cols - left + 1)
    if right < shape[1]:
        edge = np.minimum(edge, right - cols)
    return edge


__all__ = ["DENSE_FILL_MAX_PIXELS", "EDGE_CHUNK", "edge_distance", "fill_core", "object_edges"]

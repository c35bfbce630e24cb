"""Test oracles: plain, obviously correct versions of fast core functions.

They live with the tests, not in ``src/``: nothing in napari-unet calls them. Imported by
the tests as ``import oracles`` (``tests/`` is on ``sys.path`` under pytest) and by the
benchmarks after adding ``tests/`` to ``sys.path``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.weights import BACKGROUND, border_term, class_balance_weights

#: Cells whose distance transforms are sorted together (bounds the memory per batch).
_BATCH = 32


def weight_map_reference(
    instances: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: str | dict | None = "balanced",
) -> np.ndarray:
    """The paper's weight map (eq. 2) as :func:`napari_unet.core.weights.weight_map`
    computes it (same parameters), the slow and obvious way.

    One Euclidean distance transform per cell over the whole image, then a per-pixel
    sort to find the two smallest distances: ``O(cells x pixels)``. The border term is
    added on annotated background pixels only.

    Parameters
    ----------
    instances : (H, W) or (N, H, W) int array
        0 = no cell, k > 0 = cell k.
    classes : array of the same shape, optional
        Class of each pixel (-1 unannotated); default ``instances > 0``.

    Returns
    -------
    ndarray of instances' shape, float32
    """
    instances = np.asarray(instances)
    classes = instances > 0 if classes is None else np.asarray(classes)
    weights = class_balance_weights(classes, class_weights)
    planes = zip(
        weights.reshape((-1, *weights.shape[-2:])),
        instances.reshape((-1, *instances.shape[-2:])),
        classes.reshape((-1, *classes.shape[-2:])),
        strict=True,
    )
    for plane_weights, plane_instances, plane_classes in planes:
        d1, d2 = two_nearest_reference(plane_instances)
        on_background = plane_classes == BACKGROUND
        plane_weights += np.where(on_background, border_term(d1, d2, w0, sigma), 0.0)
    return weights.astype(np.float32)


def two_nearest_reference(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances ``d1``, ``d2`` of every pixel of an ``(H, W)`` plane to its
    nearest and second-nearest cell (inf where there are fewer cells)."""
    smallest_two = np.full((2, *instances.shape), np.inf)
    ids = [k for k in np.unique(instances).tolist() if k != 0]
    for start in range(0, len(ids), _BATCH):
        batch = [ndi.distance_transform_edt(instances != k) for k in ids[start : start + _BATCH]]
        candidates = np.concatenate([smallest_two, np.stack(batch)])
        smallest_two = np.sort(candidates, axis=0)[:2]
    return smallest_two[0], smallest_two[1]

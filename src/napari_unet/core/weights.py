"""The weight map of the U-Net paper (Ronneberger et al. 2015, eq. 2).

.. math::

    w(x) = w_c(x) + w_0 \\exp\\left(-\\frac{(d_1(x) + d_2(x))^2}{2\\sigma^2}\\right)

Definitions used here
---------------------
Class balance ``w_c``
    Computed over *annotated* pixels only. With ``n_c`` annotated pixels of class ``c``,
    ``N = sum_c n_c`` and ``K`` the number of classes present, ``"balanced"`` gives
    ``w_c = N / (K * n_c)``: each class weighs in inversely to its frequency, and the
    mean of ``w_c`` over the annotated pixels is exactly 1. A mapping ``{class: weight}``
    sets the weights directly; ``None`` means 1 for every class.
Distances ``d1``, ``d2``
    Euclidean distances (pixel centre to pixel centre, as the Euclidean distance
    transform measures them) to the nearest and second-nearest *cell* (instance). Two
    cells whose facing edges are separated by a gap of ``g`` background pixels therefore
    give ``d1 + d2 = g + 1`` anywhere on the straight line across the gap. With fewer
    than two cells ``d2`` is infinite (and ``d1`` too with no cell): the border term is 0.
Border term
    Added on annotated *background* pixels only, as in the paper's Fig. 3d, where the
    narrow background gaps separating touching cells get high weight. On a cell pixel
    ``d1 = 0`` and the term would instead inflate the weight of cell edges.
Unannotated pixels
    Weight 0 (the loss ignores them).

Speed, and the exact error bound of :func:`weight_map`
------------------------------------------------------
The obvious way (the test oracle ``weight_map_reference`` in ``tests/oracles.py``)
computes one distance transform per cell over the whole image and sorts per pixel:
``O(cells x pixels)``. :func:`weight_map` uses that the term
is at most ``tolerance`` once ``d1 + d2 >= R``, with the *reach*
``R = sigma * sqrt(2 ln(w0 / tolerance))`` (26.3 px for the defaults). On a background
pixel ``d1 >= 1``, so a term above ``tolerance`` needs ``d2 <= R - 1``, i.e. both nearest
cells within ``R - 1``. Hence each cell's distance transform is computed only inside its
bounding box grown by ``floor(R - 1)`` pixels (clipped to the image; exact there, as the
whole cell is inside), a running smallest-two is kept per pixel, and cells with no other
cell within ``R`` are skipped (they cannot be one of a pair with ``d1 + d2 <= R``).

Every computed distance is exact or larger than the true one, so the computed pair is
never below the true ``(d1, d2)`` and the computed term never above the true term; where
the true term exceeds ``tolerance`` both distances are exact. So at every pixel, before
rounding to float32::

    0 <= exact weight map - weight_map(...) <= tolerance

Usage with :mod:`napari_unet.core.annotations`::

    targets = targets_from_annotation(painting, "sparse")
    weights = weight_map(targets.instances, classes=targets.classes)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.errors import InputError

ClassWeights = None | Literal["balanced"] | Mapping[int, float]

#: Classes in ``classes`` arrays (same values as :mod:`napari_unet.core.annotations`).
IGNORE = -1
BACKGROUND = 0

#: Largest class index accepted in ``classes`` (a guard against passing instance ids).
_MAX_CLASS = 255

#: Default bound on the error of the fast border term.
DEFAULT_TOLERANCE = 1e-5

#: Number of per-cell distance transforms stacked before each per-pixel sort of the


def border_reach(w0: float, sigma: float, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Sum of distances ``R`` beyond which the border term is below ``tolerance``.

    Parameters
    ----------
    w0, sigma : float
        Parameters of the border term.
    tolerance : float
        Largest border term that may be dropped; 0 means never drop (``R`` infinite).

    Returns
    -------
    float
        ``sigma * sqrt(2 ln(w0 / tolerance))``, 0 when ``w0 <= tolerance``.
    """
    if tolerance <= 0:
        return math.inf
    if w0 <= tolerance:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tolerance))


def weight_map(
    instances: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """Pixel weights of the paper's eq. 2, fast (see the module docstring for the bound).

    Parameters
    ----------
    instances : (H, W) or (N, H, W) ndarray of int
        0 = background or not annotated, ``k > 0`` = cell ``k``. Stacks are weighted
        plane by plane (the class balance is computed over the whole stack).
    classes : ndarray of int, same shape, optional
        0 = background, 1 = foreground, -1 = not annotated (weight 0), as in
        :class:`napari_unet.core.annotations.Targets`. Default: ``instances > 0``,
        every pixel annotated.
    w0 : float
        Height of the border term (10 in the paper).
    sigma : float
        Width of the border term in pixels (5 in the paper).
    class_weights : None, "balanced" or mapping of int to float
        ``w_c``; see the module docstring.
    tolerance : float
        Largest error allowed on the border term; 0 makes the result exact (and slow).

    Returns
    -------
    ndarray of float32, same shape as ``instances``
    """
    instances, classes = _checked(instances, classes, sigma)
    reach = border_reach(w0, sigma, tolerance)
    weights = class_balance_weights(classes, class_weights).astype(np.float32)
    for plane_weights, plane_instances, plane_classes in _planes(weights, instances, classes):
        nearest_sq, second_sq = _two_nearest_squared(plane_instances, reach)
        _add_border_term(plane_weights, nearest_sq, second_sq, plane_classes, w0, sigma)
    return weights


def class_balance_weights(
    classes: np.ndarray, class_weights: ClassWeights = "balanced"
) -> np.ndarray:
    """The class term ``w_c`` of each pixel, 0 on unannotated pixels.

    Parameters
    ----------
    classes : ndarray of int
        Class of each pixel, ``IGNORE`` (-1) = not annotated.
    class_weights : None, "balanced" or mapping of int to float
        See the module docstring.

    Returns
    -------
    ndarray of float64, same shape as ``classes``
    """
    classes = np.asarray(classes)
    if classes.size and classes.min() < IGNORE:
        raise InputError(f"classes must be -1 (not annotated), 0, 1, ...; found {classes.min()}.")
    if classes.size and classes.max() > _MAX_CLASS:
        raise InputError(
            f"classes holds class indices (0 = background, 1 = cell), found {classes.max()}: "
            "pass instance labels as `instances`, not as `classes`."
        )
    # One boolean mask per class (classes are few): no image-sized integer temporaries.
    masks = {c: classes == c for c in range(int(classes.max(initial=0)) + 1)}
    counts = {c: np.count_nonzero(mask) for c, mask in masks.items()}
    present = [c for c, n in counts.items() if n]
    if class_weights is None:
        per_class = dict.fromkeys(present, 1.0)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise InputError(
                f"class_weights must be None, 'balanced' or a mapping {{class: weight}}, "
                f"got {class_weights!r}."
            )
        total = sum(counts.values())
        per_class = {c: total / (len(present) * counts[c]) for c in present}
    else:
        missing = set(present) - set(class_weights)
        if missing:
            raise InputError(
                f"class_weights has no weight for class(es) {sorted(missing)}; give one for "
                f"each of {present}."
            )
        per_class = {c: float(class_weights[c]) for c in present}
    weights = np.zeros(classes.shape, dtype=np.float64)
    for c, weight in per_class.items():
        np.copyto(weights, weight, where=masks[c])
    return weights


def border_term(d1: np.ndarray, d2: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``; 0 where a distance is infinite.

    Parameters
    ----------
    d1, d2 : ndarray of float
        Distances to the nearest and second-nearest cell.

    Returns
    -------
    ndarray of float64, same shape
    """
    return w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))


def two_nearest_cell_distances(
    instances: np.ndarray, *, reach: float = math.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1 <= d2`` of every pixel to its nearest and second-nearest cell.

    Parameters
    ----------
    instances : (H, W) ndarray of int
        0 = no cell, ``k > 0`` = cell ``k``.
    reach : float
        Both distances are exact on every pixel outside the cells where the true
        ``d1 + d2 <= reach``. Elsewhere each returned distance is at least the true
        one (possibly infinite), so a border term computed from them is never too
        large. Infinite reach gives exact values everywhere.

    Returns
    -------
    d1, d2 : (H, W) ndarray of float64
        Infinite where there is no (second) cell, or none within reach.
    """
    instances = np.asarray(instances)
    _check_instances(instances)
    if instances.ndim != 2:
        raise InputError(f"Expected one (H, W) image of instances, got shape {instances.shape}.")
    nearest_sq, second_sq = _two_nearest_squared(instances, reach)
    return _distances(nearest_sq), _distances(second_sq)


def _two_nearest_squared(instances: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """Running smallest-two of per-cell distance transforms, each in a small window.

    Why the result is exact where promised (a background pixel ``p`` with nearest cells
    ``k1``, ``k2`` and ``d1 + d2 <= reach``): ``d1 >= 1`` outside the cells, so
    ``d2 <= reach - 1``. A pixel outside a cell's bounding box grown by
    ``floor(reach - 1)`` is at least ``floor(reach - 1) + 1 > reach - 1`` rows or columns
    from the cell, so ``p`` lies in the windows of ``k1`` and ``k2``, where the distance
    transform is exact because the whole cell is inside. And ``k1``, ``k2`` are within
    ``d1 + d2 <= reach`` of each other, so neither is skipped as isolated.
    """
    # Squared distances are whole numbers: keep them as integers (exact, and half the
    # memory traffic of float64 for int32) and take square roots once at the end.
    squared_type = _squared_distance_type(instances.shape)
    no_cell = _no_cell(squared_type)
    nearest_sq = np.full(instances.shape, no_cell, dtype=squared_type)
    second_sq = np.full(instances.shape, no_cell, dtype=squared_type)
    cells = _relabelled_if_sparse(instances)
    ids_and_boxes = [(k, box) for k, box in enumerate(ndi.find_objects(cells), 1) if box]
    if not math.isfinite(reach):
        margin = max(instances.shape)
    else:
        margin = max(math.floor(reach - 1), 0)
        ids_and_boxes = _without_isolated(ids_and_boxes, math.floor(reach))
    for cell_id, box in ids_and_boxes:
        window = _grown(box, margin, instances.shape)
        squared = _squared_distances_to(cells[window] == cell_id, squared_type)
        nearest, second = nearest_sq[window], second_sq[window]
        np.minimum(second, np.maximum(nearest, squared), out=second)
        np.minimum(nearest, squared, out=nearest)
    return nearest_sq, second_sq


def _squared_distance_type(shape: tuple[int, ...]) -> type[np.signedinteger]:
    """int32 when every squared distance in the image fits, int64 otherwise."""
    return np.int32 if sum(n * n for n in shape) < np.iinfo(np.int32).max else np.int64


def _squared_distances_to(cell: np.ndarray, dtype: type[np.signedinteger]) -> np.ndarray:
    """Squared Euclidean distance of every pixel to the nearest ``True`` pixel of ``cell``.

    Parameters
    ----------
    cell : (h, w) ndarray of bool
        Must contain at least one ``True``.

    Returns
    -------
    (h, w) ndarray of ``dtype``
    """
    # The feature transform (coordinates of the nearest cell pixel) without scipy's
    # float64 distance post-processing, which costs as much as the transform on small
    # windows.
    nearest = np.empty((2, *cell.shape), dtype=np.int32)
    ndi.distance_transform_edt(~cell, return_distances=False, return_indices=True, indices=nearest)
    nearest = nearest.astype(dtype, copy=False)
    nearest[0] -= np.arange(cell.shape[0], dtype=dtype)[:, None]
    nearest[1] -= np.arange(cell.shape[1], dtype=dtype)[None, :]
    np.square(nearest, out=nearest)
    return np.add(nearest[0], nearest[1])


def _no_cell(squared_type: type[np.signedinteger]) -> int:
    """Sentinel squared distance meaning "no cell (within reach)"."""
    return int(np.iinfo(squared_type).max)


def _distances(squared: np.ndarray) -> np.ndarray:
    """Square roots as float64, infinite where the value is the "no cell" sentinel."""
    distances = np.sqrt(squared, dtype=np.float64)
    distances[squared == _no_cell(squared.dtype.type)] = np.inf
    return distances


def _without_isolated(
    ids_and_boxes: list[tuple[int, tuple[slice, slice]]], margin: int
) -> list[tuple[int, tuple[slice, slice]]]:
    """Drop cells whose box grown by ``margin`` meets no other cell's box.

    Such a cell is more than ``margin`` pixels from every other cell, so no pixel has it
    and another cell both within a sum of distances ``<= margin``.
    """
    if len(ids_and_boxes) < 2:
        return []
    starts = np.array([[s.start for s in box] for _, box in ids_and_boxes])
    stops = np.array([[s.stop for s in box] for _, box in ids_and_boxes])
    # overlap[i, j]: box j meets box i grown by margin, along both axes.
    overlap = np.all(
        (starts[None, :, :] < stops[:, None, :] + margin)
        & (stops[None, :, :] > starts[:, None, :] - margin),
        axis=2,
    )
    np.fill_diagonal(overlap, False)
    keep = overlap.any(axis=1)
    return [item for item, kept in zip(ids_and_boxes, keep, strict=True) if kept]


def _checked(
    instances: np.ndarray, classes: np.ndarray | None, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``instances`` and ``classes`` (default: ``instances > 0``)."""
    instances = np.asarray(instances)
    _check_instances(instances)
    classes = instances > 0 if classes is None else np.asarray(classes)
    if classes.shape != instances.shape:
        raise InputError(
            f"classes has shape {classes.shape} but instances has shape {instances.shape}; "
            "they must describe the same pixels."
        )
    if sigma <= 0:
        raise InputError(f"sigma must be positive (pixels), got {sigma}.")
    return instances, classes


def _planes(*arrays: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Iterate ``(H, W)`` planes of same-shaped ``(H, W)`` or ``(N, H, W)`` arrays (views)."""
    return zip(*(a.reshape((-1, *a.shape[-2:])) for a in arrays), strict=True)


def _add_border_term(
    weights: np.ndarray,
    nearest_sq: np.ndarray,
    second_sq: np.ndarray,
    classes: np.ndarray,
    w0: float,
    sigma: float,
) -> None:
    """``weights += border_term(d1, d2)`` on background pixels that have a second cell.

    Same values as :func:`border_term`, from squared distances, with as few image-sized
    temporaries as possible (fresh allocations cost page faults) and the exponential,
    the costly part, only evaluated where it is added.
    """
    gets_term = (classes == BACKGROUND) & (second_sq != _no_cell(second_sq.dtype.type))
    exponent = np.sqrt(nearest_sq, dtype=np.float64)
    exponent += np.sqrt(second_sq, dtype=np.float64)
    np.square(exponent, out=exponent)
    exponent *= -1.0 / (2.0 * sigma**2)
    np.exp(exponent, out=exponent, where=gets_term)
    exponent *= w0
    np.add(weights, exponent, out=weights, where=gets_term, casting="same_kind")


def _check_instances(instances: np.ndarray) -> None:
    if not np.issubdtype(instances.dtype, np.integer) and instances.dtype != bool:
        raise InputError(f"instances must be an integer label image, got dtype {instances.dtype}.")
    if instances.ndim not in (2, 3):
        raise InputError(
            f"instances must be (H, W) or (N, H, W), got {instances.ndim} dimensions "
            f"with shape {instances.shape}."
        )
    if instances.size and instances.min() < 0:
        raise InputError(f"instances must be >= 0 (0 = no cell), found {instances.min()}.")


def _relabelled_if_sparse(instances: np.ndarray) -> np.ndarray:
    """Integer instances with ids small enough for ``find_objects`` to list cheaply."""
    if instances.dtype == bool:
        return instances.astype(np.uint8)
    if int(instances.max(initial=0)) <= max(2**16, instances.size):
        return instances
    values, consecutive = np.unique(instances, return_inverse=True)
    if values[0] != 0:  # keep 0 for "no cell"
        consecutive += 1
    return consecutive.reshape(instances.shape).astype(np.intp)


def _grown(box: tuple[slice, ...], margin: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(box, shape, strict=True)
    )

"""A result's instance labels read for correction: checked, its planes, ids and boundaries.

:func:`~napari_unet.core.annotations.annotations_from_labels` turns a segmentation
result (or labels loaded from disk) into a sparse annotation of chosen planes. This
module holds what it reads the labels with: the refusal of labels it cannot convert
(:func:`check_result_labels`), the plane positions asked for, checked against the
labels' leading axes (:func:`chosen_planes`), the object ids present
(:func:`object_ids`), and the pixels near object boundaries a corrected result leaves
unannotated (:func:`boundary_pixels`).

Separate from :mod:`~napari_unet.core.annotations` (the label conventions and the
training targets, and the conversion itself, where the README documents it) so that
module stays about annotations; these checks know nothing of the conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from napari_unet.core.errors import AnnotationError, InputError

#: Axes a labels array may have in front of ``(H, W)``: e.g. ``(Z, H, W)`` or ``(T, Z, H, W)``.
MAX_LEADING_AXES = 2


def object_ids(planes: list[np.ndarray]) -> np.ndarray:
    """The sorted values of ``planes`` (background 0 first when present); refuses
    negative labels."""
    ids = np.unique(np.concatenate([np.unique(plane) for plane in planes]))
    if ids[0] < 0:
        raise AnnotationError(
            f"Labels must be 0 or more (0 = background, 1 or more = one id per object); "
            f"found {ids[0]}."
        )
    return ids


def boundary_pixels(labels: np.ndarray, width: int) -> np.ndarray:
    """``(H, W)`` bool: pixels within ``width`` px (>= 1) of a boundary of the objects of
    the ``(H, W)`` instance ``labels``, on either side (between touching objects too)."""
    edges = find_boundaries(labels, mode="inner") | find_boundaries(labels, mode="outer")
    if width > 1:
        edges = ndimage.binary_dilation(edges, iterations=width - 1)
    return edges


def check_result_labels(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Raise :class:`AnnotationError` unless labels of this dtype and shape can be converted."""
    if dtype.kind != "b" and not np.issubdtype(dtype, np.integer):
        raise AnnotationError(
            f"Labels to correct must be integers (0 = background, 1 or more = objects), got "
            f"dtype {dtype}; convert a mask of whole numbers with .astype(int)."
        )
    if not 2 <= len(shape) <= 2 + MAX_LEADING_AXES:
        raise AnnotationError(
            f"Labels to correct must be (H, W), (Z, H, W) or (T, Z, H, W); got "
            f"{len(shape)} dimensions with shape {shape}."
        )
    if math.prod(shape) == 0:
        raise AnnotationError(f"Nothing to convert: the labels are empty (shape {shape}).")


def chosen_planes(
    planes: Sequence[Sequence[int]] | None, leading: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """The distinct plane positions ``planes`` lists (every plane for ``None``), checked."""
    if planes is None:
        return list(np.ndindex(leading))
    chosen: dict[tuple[int, ...], None] = {}
    for plane in planes:
        position = _plane_position(plane, leading)
        chosen[position] = None
    if not chosen:
        raise InputError("Nothing to convert: no plane was chosen (planes=None means all).")
    return list(chosen)


def _plane_position(plane: Any, leading: tuple[int, ...]) -> tuple[int, ...]:
    """``plane`` (a tuple of ints; an int for one leading axis) as a checked position."""
    raw = (plane,) if isinstance(plane, int | np.integer) else tuple(plane)
    if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in raw):
        raise InputError(f"Plane {plane!r} must be a tuple of whole numbers, e.g. (3,).")
    position = tuple(int(i) for i in raw)
    if len(position) != len(leading):
        if not leading:
            raise InputError(
                f"Plane {position} was given but 2-D labels are one plane: use None or [()]."
            )
        raise InputError(
            f"Plane {position} has {len(position)} index(es) but the labels have "
            f"{len(leading)} leading axis(es) {leading}: give one index per axis."
        )
    if not all(0 <= i < n for i, n in zip(position, leading, strict=True)):
        raise InputError(
            f"Plane {position} is out of range: the labels have planes "
            f"{' x '.join(f'0..{n - 1}' for n in leading)}."
        )
    return position


__all__ = ["MAX_LEADING_AXES", "boundary_pixels"]

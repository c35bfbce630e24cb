"""Turn what the user painted (or loaded) into training targets for the U-Net.

Three label conventions are understood:

``"sparse"``
    What the napari widget creates: ``0`` = not annotated (ignored by the loss),
    ``1`` = background, ``2, 3, ...`` = one id per cell. Only painted pixels count.
``"dense"``
    A complete instance mask: ``0`` = background, ``1..N`` = one id per object. Every
    pixel is annotated.
``"binary"``
    A semantic mask with at most one non-zero value, e.g. ``{0, 1}`` or ``{0, 255}``:
    zero = background, non-zero = foreground (the cell interior; the ISBI 2012 EM labels
    have 1 = cell interior, 0 = membrane). Every pixel is annotated; instances are the
    4-connected components of the foreground, so a one-pixel membrane drawn diagonally
    still separates two cells.
``"auto"``
    ``"binary"`` when the array is boolean or its values are a subset of ``{0, 1}`` or of
    ``{0, 255}``; ``"sparse"`` otherwise. A dense instance mask and a sparse painting can
    hold exactly the same values, so ``"auto"`` never guesses ``"dense"``: ask for it.
    The widget should pass ``"sparse"`` explicitly (a painting with only background
    strokes, values ``{0, 1}``, would otherwise read as a binary mask).

With ids (sparse and dense), two more rules apply, both so that the two-class U-Net of
the paper can learn to *separate* cells:

- each connected piece (8-connectivity) of one id is its own instance, since painting
  several cells with the same label is a common slip and the border weights need
  distinct cells;
- where two different ids touch, the pixel with the lower id becomes background
  (``separate_touching=True``). This leaves a one-pixel background line between touching
  cells, which the weight map (:mod:`napari_unet.core.weights`) then weights heavily,
  as in the paper's Fig. 3.

Stacks ``(N, H, W)`` are handled here, plane by plane: instances are 2D connected
components numbered ``1..n`` within each plane, and the checks (something annotated,
some foreground, some background) apply to the stack as a whole, because annotating a
few planes of a stack is normal.

**Correcting a result.** :func:`annotations_from_labels` turns any instance labels (a
segmentation result, or labels loaded from disk; ``0`` = background) into a sparse
annotation of chosen planes: background ``1``, each object ``2, 3, ...``, every other
plane ``0`` (not annotated). The user then fixes the mistakes with a labels editor and
trains on it; :func:`~napari_unet.core.plane_text.planes_from_text` reads a plane list
such as ``"3,5"`` or ``"0:3"`` for the command line. The labels are checked, and their
planes and boundaries found, by :mod:`~napari_unet.core.result_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from skimage.measure import label as connected_components

from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.result_labels import (
    boundary_pixels,
    check_result_labels,
    chosen_planes,
    object_ids,
)

Convention = Literal["sparse", "dense", "binary", "auto"]
CONVENTIONS: tuple[str, ...] = ("sparse", "dense", "binary", "auto")

#: Value of ``Targets.classes`` on pixels the loss must ignore (not annotated).
IGNORE = -1
BACKGROUND = 0
FOREGROUND = 1

#: Label values of the sparse (painting) convention.
SPARSE_UNANNOTATED = 0
SPARSE_BACKGROUND = 1
SPARSE_FIRST_CELL = 2


@dataclass(frozen=True)
class Targets:
    """Training targets derived from one annotation.

    Attributes
    ----------
    classes : (H, W) or (N, H, W) ndarray of int64
        ``0`` = background, ``1`` = foreground (cell), ``IGNORE`` (-1) = not annotated.
    instances : (H, W) or (N, H, W) ndarray of int32
        ``0`` = background or not annotated, ``1..n`` = one id per cell (per plane
        for stacks). Non-zero exactly where ``classes == 1``.
    """

    classes: np.ndarray
    instances: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        """(H, W) or (N, H, W) bool: pixels that the loss should use."""
        return self.classes != IGNORE


def check_annotation_matches(
    image_shape: tuple[int, ...],
    annotation_shape: tuple[int, ...],
    *,
    without_channels: bool = False,
) -> None:
    """Raise :class:`AnnotationError` unless the annotation covers the image pixel for pixel.

    Parameters
    ----------
    image_shape : tuple of int
        Shape of the image, ``(H, W)``, ``(N, H, W)``, ``(T, Z, H, W)``...; for a
        multichannel image, its shape without the channel axis.
    annotation_shape : tuple of int
        Shape of the labels painted on it.
    without_channels : bool
        Whether ``image_shape`` left out a channel axis (the message says so).
    """
    if tuple(image_shape) != tuple(annotation_shape):
        where = " without its channel axis" if without_channels else ""
        raise AnnotationError(
            f"The annotation has shape {tuple(annotation_shape)} but the image has shape "
            f"{tuple(image_shape)}{where}. Paint in a labels layer with the same shape as the "
            "image (create it from the image you want to train on)."
        )


def targets_from_annotation(
    annotation: np.ndarray,
    convention: Convention = "auto",
    *,
    separate_touching: bool = True,
    require_both_classes: bool = True,
) -> Targets:
    """Convert an annotation to :class:`Targets`; the input is never modified.

    Parameters
    ----------
    annotation : (H, W) or (N, H, W) ndarray of int or bool
        The labels, in the given convention (see the module docstring).
    convention : {"sparse", "dense", "binary", "auto"}
        How to read the labels.
    separate_touching : bool
        For sparse and dense labels: turn the lower-id pixel of every pair of touching
        different ids into background, so touching cells are split by a background line.
    require_both_classes : bool
        Sparse labels: require a painted cell and painted background in this array.
        Callers combining several images pass False and check the whole set with
        :func:`check_both_classes` (one image may show only background strokes).

    Returns
    -------
    Targets

    Raises
    ------
    AnnotationError
        For float (NaN and infinity named as such), negative or non-2D/3D labels, an
        unknown convention, nothing annotated, no cell annotated, or (sparse) no
        background annotated.
    """
    labels = _validated_labels(annotation)
    if convention not in CONVENTIONS:
        raise AnnotationError(
            f"Unknown annotation convention {convention!r}; use one of {', '.join(CONVENTIONS)}."
        )
    if convention == "auto":
        convention = detect_convention(labels)
    if convention == "binary":
        return _binary_targets(labels)
    if convention == "dense":
        return _dense_targets(labels, separate_touching)
    return _sparse_targets(labels, separate_touching, require_both_classes)


def check_both_classes(targets: list[Targets]) -> None:
    """Raise :class:`AnnotationError` unless the targets together hold both classes.

    Parameters
    ----------
    targets : list of Targets
        Targets of every annotated image of a training set.
    """
    if not any((t.classes == FOREGROUND).any() for t in targets):
        raise AnnotationError(_NO_CELL)
    if not any((t.classes == BACKGROUND).any() for t in targets):
        raise AnnotationError(_NO_BACKGROUND)


def detect_convention(annotation: np.ndarray) -> Literal["sparse", "binary"]:
    """The convention ``"auto"`` resolves to (see the module docstring for the rule).

    Parameters
    ----------
    annotation : (H, W) or (N, H, W) ndarray of int or bool
        Validated labels.

    Returns
    -------
    {"sparse", "binary"}
    """
    if annotation.dtype == bool:
        return "binary"
    if not annotation.any():
        raise AnnotationError(_NOTHING_ANNOTATED)
    values = set(np.unique(annotation).tolist())
    if values <= {0, 1} or values <= {0, 255}:
        return "binary"
    return "sparse"


_NOTHING_ANNOTATED = (
    "Nothing is annotated: paint some background with label 1 and at least one cell "
    "with label 2 or higher."
)


def _validated_labels(annotation: np.ndarray) -> np.ndarray:
    """Check dtype, values and dimensions; return the annotation as an ndarray (no copy)."""
    labels = np.asarray(annotation)
    if np.issubdtype(labels.dtype, np.inexact) and labels.size:
        # Said first: converting NaN or infinity to integers would invent labels.
        bad = int(np.count_nonzero(~np.isfinite(labels)))
        if bad:
            raise AnnotationError(
                f"The annotation holds {bad} NaN or infinite values; labels must be whole "
                "numbers (0 = not annotated, 1 = background, 2 or higher = cells): repaint "
                "or fix those pixels and save the labels as integers."
            )
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise AnnotationError(
            f"Annotation labels must be integers, got dtype {labels.dtype}. Use a labels "
            "layer (or convert a mask of whole numbers with .astype(int))."
        )
    if labels.ndim not in (2, 3):
        raise AnnotationError(
            f"The annotation must be one image (H, W) or a stack (N, H, W); got "
            f"{labels.ndim} dimensions with shape {labels.shape}."
        )
    if labels.dtype != bool and labels.size and labels.min() < 0:
        raise AnnotationError(
            f"Annotation labels must be 0 or more (0 = not annotated, 1 = background, "
            f"2 or higher = cells); found {labels.min()}."
        )
    return labels


_NO_CELL = (
    "No cell is annotated: paint at least one cell with label 2 or higher (one label per cell)."
)
_NO_BACKGROUND = (
    "No background is annotated: paint some background with label 1 (a few strokes "
    "between and around the cells are enough)."
)


def _sparse_targets(labels: np.ndarray, separate_touching: bool, require_both: bool) -> Targets:
    if not labels.any():
        raise AnnotationError(_NOTHING_ANNOTATED)
    cell_ids = np.where(labels >= SPARSE_FIRST_CELL, labels, 0)
    if require_both and not cell_ids.any():
        raise AnnotationError(_NO_CELL)
    if require_both and not (labels == SPARSE_BACKGROUND).any():
        raise AnnotationError(_NO_BACKGROUND)
    if separate_touching:
        cell_ids = _separate_touching(cell_ids)
    instances = _instances_per_plane(cell_ids, connectivity=2)
    classes = np.full(labels.shape, IGNORE, dtype=np.int64)
    classes[labels != SPARSE_UNANNOTATED] = BACKGROUND
    classes[instances > 0] = FOREGROUND
    return Targets(classes=classes, instances=instances)


def _dense_targets(labels: np.ndarray, separate_touching: bool) -> Targets:
    if not labels.any():
        raise AnnotationError(
            "The instance mask has no object: label at least one cell with 1 or higher "
            "(0 is background)."
        )
    cell_ids = _separate_touching(labels) if separate_touching else labels
    instances = _instances_per_plane(cell_ids, connectivity=2)
    return Targets(classes=(instances > 0).astype(np.int64), instances=instances)


def _binary_targets(labels: np.ndarray) -> Targets:
    foreground_values = np.unique(labels[labels != 0]) if labels.dtype != bool else [True]
    if len(foreground_values) > 1:
        raise AnnotationError(
            f"A binary mask has one foreground value, but this one has "
            f"{len(foreground_values)} (e.g. {foreground_values[:3].tolist()}). For one "
            "label per cell use convention='dense' (0 = background) or 'sparse' "
            "(0 = not annotated, 1 = background)."
        )
    foreground = labels != 0
    if not foreground.any():
        raise AnnotationError(
            "The binary mask has no foreground: mark the cells (cell interior) with 1 or "
            "255 and the background with 0."
        )
    # 4-connectivity: a one-pixel membrane drawn diagonally must still separate cells.
    instances = _instances_per_plane(foreground, connectivity=1)
    return Targets(classes=foreground.astype(np.int64), instances=instances)


def _instances_per_plane(cell_ids: np.ndarray, connectivity: int) -> np.ndarray:
    """Connected pieces of equal non-zero value, numbered 1..n within each 2D plane.

    Parameters
    ----------
    cell_ids : (H, W) or (N, H, W) ndarray of int or bool
        0 = no cell.
    connectivity : {1, 2}
        1 = 4-neighbours, 2 = 8-neighbours.

    Returns
    -------
    (H, W) or (N, H, W) ndarray of int32
    """
    planes = cell_ids.reshape((-1, *cell_ids.shape[-2:]))
    instances = np.stack(
        [connected_components(p, background=0, connectivity=connectivity) for p in planes]
    )
    return instances.astype(np.int32).reshape(cell_ids.shape)


def _separate_touching(cell_ids: np.ndarray) -> np.ndarray:
    """Copy of ``cell_ids`` with 0 on every pixel that touches a higher different id.

    For each pair of 8-adjacent pixels with different non-zero ids, the lower id is
    erased, so afterwards no two different ids are 8-adjacent, at the cost of one pixel
    line instead of two (small nuclei would lose too much otherwise).

    Parameters
    ----------
    cell_ids : (H, W) or (N, H, W) ndarray of int
        0 = no cell.

    Returns
    -------
    ndarray of the same shape and dtype
    """
    padded = np.pad(cell_ids, [(0, 0)] * (cell_ids.ndim - 2) + [(1, 1), (1, 1)])
    height, width = cell_ids.shape[-2:]
    erase = np.zeros(cell_ids.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            neighbour = padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            erase |= (neighbour > cell_ids) & (cell_ids > 0)
    return np.where(erase, 0, cell_ids)


# ------------------------------------------------------------------ correcting a result

#: Default ``boundary_band`` of the front ends (the Fine-tune dock's *Correct a result*,
#: ``train --annotation result``): pixels within 2 px of a result's object boundaries are
#: left unannotated. Chosen with benchmarks/bench_human_loop.py on the 6 nuclei
#: validation images it uses: a corrected result trained as converted teaches the
#: network the result's own boundary placement; leaving 2 px unannotated raised the
#: fine-tuned F1 after the same fixes (docs/benchmarks.md).
RESULT_BOUNDARY_BAND = 2


def annotations_from_labels(
    labels: Any, planes: Sequence[Sequence[int]] | None = None, *, boundary_band: int = 0
) -> np.ndarray:
    """Sparse annotations of ``planes`` of an instance labels array, to correct and train on.

    In each listed plane, background (``0``) becomes :data:`SPARSE_BACKGROUND` and each
    object id a cell id ``2, 3, ...``: distinct ids stay distinct and are numbered
    consecutively in the order of their values (one numbering per call, so an id found
    in two planes gets the same cell id in both). Every other plane is
    :data:`SPARSE_UNANNOTATED`. A listed plane without objects becomes all background,
    a valid "no cells here" annotation. Only the listed planes of ``labels`` are read,
    so a lazy (dask, zarr) stack is not loaded whole; ``labels`` is never modified.

    Parameters
    ----------
    labels : (H, W), (N, H, W) or (T, Z, H, W) array-like of int
        Instance labels: ``0`` = background, every other value one object.
    planes : sequence of tuple of int, optional
        Positions on the leading axes of the planes to annotate, e.g. ``[(3,)]`` for
        plane 3 of a ``(Z, H, W)`` stack or ``[(0, 5)]`` for ``(T, Z, H, W)``; ``None``
        (the default) for every plane; ``None`` or ``[()]`` for 2-D labels.
    boundary_band : int
        Leave the pixels within this many px of an object's boundary (inside or out)
        unannotated: where a segmentation is least sure, so that training does not learn
        its boundary placement. 0 (the default) converts every pixel;
        :data:`RESULT_BOUNDARY_BAND` is what the dock and the CLI use.

    Returns
    -------
    ndarray of uint16 (uint32 when more than 65534 objects), shape of ``labels``
        The sparse annotation: ``0`` not annotated, ``1`` background, ``2, 3, ...`` cells.

    Raises
    ------
    AnnotationError
        For labels that are not integers, are negative, have fewer than 2 or more than
        4 dimensions, or are empty.
    InputError
        For a plane position of the wrong length or outside the labels, or no plane.
    """
    if not all(hasattr(labels, name) for name in ("shape", "dtype", "__getitem__")):
        labels = np.asarray(labels)
    shape = tuple(int(n) for n in labels.shape)
    check_result_labels(np.dtype(labels.dtype), shape)
    chosen = chosen_planes(planes, shape[:-2])
    # Only the chosen planes are read (a lazy stack stays on disk otherwise).
    read = [np.asarray(labels[position]) for position in chosen]
    if read[0].dtype.kind == "b":
        read = [plane.view(np.uint8) for plane in read]
    ids = object_ids(read)
    if boundary_band < 0:
        raise InputError(f"the boundary band must be 0 px or more, got {boundary_band}")
    has_background = bool(ids[0] == 0)
    objects = len(ids) - has_background
    dtype = np.uint16 if objects + SPARSE_BACKGROUND <= np.iinfo(np.uint16).max else np.uint32
    annotations = np.full(shape, SPARSE_UNANNOTATED, dtype=dtype)
    # Rank of each value among the ids: background 0 -> 1, the k-th object -> k + 1.
    offset = SPARSE_BACKGROUND if has_background else SPARSE_FIRST_CELL
    for position, plane in zip(chosen, read, strict=True):
        converted = np.searchsorted(ids, plane) + offset
        if boundary_band:
            converted[boundary_pixels(plane, boundary_band)] = SPARSE_UNANNOTATED
        annotations[position] = converted
    return annotations

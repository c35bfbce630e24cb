"""Whole-plane instance labels computed block by block, with overlapping windows.

Grow-and-merge, splitting touching objects and filling the boundaries look beyond a
pixel's neighbours, so labelling blocks independently and joining ids that touch across
a seam (enough for plain connected components) cuts and mislabels objects. Here each block
is labelled on a *window*: its core plus a margin of the plane around it. Only the core's
labels are kept, so every kept pixel was labelled with at least ``margin`` pixels of
context on each side. Across each seam between two cores, an object of one core is joined
with an object of the other when *both* windows label the two pixels either side of the
seam as one object (two-sided agreement). Ids are then numbered 1..N as a whole-plane
labelling numbers them: by class, then by first pixel in raster order.

The result equals the whole-plane labelling (up to a renumbering; for connected
components exactly) whenever the labelling of a pixel depends on nothing further away
than the margin; docs/blockwise-postprocessing.md says when that fails and by how much.

Memory: one window of the mask (and of the foreground probability) at a time, the output
(numpy or zarr, written block by block; a plane of a stack is given as a
:class:`~napari_unet.core.planeview.PlaneView`), and tables with a few numbers per object and
the labels along the seams.

Public API
----------
- :func:`block_cores` ``(shape, block_shape) -> list of (rows, cols) slices``
- :func:`default_margin` ``(labeller, *, object_diameter=None) -> int``
- :func:`label_plane_in_blocks` ``(mask, cores, out, *, labeller, margin, foreground=None,
  min_size=0, unfilled=None)``: generator of :class:`~napari_unet.core.events.Progress`,
  returns the number of objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.events import Progress
from napari_unet.core.postprocess import PlaneLabeller
from napari_unet.core.seam_fill import fill_core
from napari_unet.core.seam_merge import CoreEdges, Fragments, joined_across, seams_between

Region = tuple[slice, slice]
#: ``(mask_window, foreground_window_or_None) -> (h, w)`` integer labels, 0 = background.
WindowLabeller = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]

#: Smallest margin for labellings that look beyond a pixel's neighbours.
MIN_MARGIN = 32
#: Margin for such labellings, in object diameters (see default_margin).
MARGIN_DIAMETERS = 4.0
_SIDES = ("top", "bottom", "left", "right")


def block_cores(shape: tuple[int, int], block_shape: tuple[int, int]) -> list[Region]:
    """Cores of a regular grid of blocks tiling a plane, in raster order.

    Parameters
    ----------
    shape : (H, W)
        The plane.
    block_shape : (h, w)
        Block size; the last row and column of blocks may be smaller.

    Returns
    -------
    list of (rows, cols) slices
    """
    if len(shape) != 2 or len(block_shape) != 2 or min(block_shape) < 1:
        raise InputError(f"expected (H, W) and a positive (h, w) block, got {shape}, {block_shape}")
    return [
        (slice(r, min(r + block_shape[0], shape[0])), slice(c, min(c + block_shape[1], shape[1])))
        for r in range(0, shape[0], block_shape[0])
        for c in range(0, shape[1], block_shape[1])
    ]


def default_margin(labeller: PlaneLabeller, *, object_diameter: float | None = None) -> int:
    """A margin that makes :func:`label_plane_in_blocks` reproduce ``labeller``'s labels.

    - Connected components (no split, fill or grow-and-merge): ``max(1, min_size)``. Seams
      are then merged exactly; an object that reaches a core and leaves its window has at
      least ``margin + 1`` pixels in the window, so ``min_size`` never drops it wrongly.
    - Fill: the margin of the labelling without fill (the fill pass is exact on its own).
    - Otherwise ``max(MIN_MARGIN, ceil(MARGIN_DIAMETERS * object_diameter), min_size)``
      (32 and 4; 64 without a diameter): a window should hold the whole of the objects
      and borders its core's seams cut, and the largest are several diameters long.
      On the 20 ISBI 2012 slices grow-and-merge (``em-membranes``, diameter 26.4 px)
      needed 96 px; 106 is exact on all (docs/blockwise-postprocessing.md). The model's
      ``object_diameter`` (in pixels of the grid labelled) sets the scale.

    Parameters
    ----------
    labeller : PlaneLabeller
        The plane labelling to reproduce.
    object_diameter : float, optional
        Typical object diameter in pixels, e.g. the model's ``object_diameter``.

    Returns
    -------
    int
        Margin in pixels, >= 1.
    """
    if labeller.fills:  # the fill pass grows its own windows (see label_plane_in_blocks)
        labeller = replace(labeller, fill_boundaries=False)
    if labeller.connectivity_only:
        return max(1, labeller.min_size)
    if object_diameter is None or not math.isfinite(object_diameter) or object_diameter <= 0:
        reach = 2 * MIN_MARGIN
    else:
        reach = math.ceil(MARGIN_DIAMETERS * object_diameter)
    return max(MIN_MARGIN, reach, labeller.min_size)


def label_plane_in_blocks(
    mask: Any,
    cores: Sequence[Region],
    out: Any,
    *,
    labeller: WindowLabeller,
    margin: int,
    foreground: Any = None,
    min_size: int = 0,
    unfilled: Any = None,
) -> Generator[Progress, None, int]:
    """Instance labels of a whole plane, computed one window of it at a time.

    A :class:`~napari_unet.core.postprocess.PlaneLabeller` that fills the boundaries is
    run in two passes, both exact: the objects without fill (into ``unfilled``), then
    each core filled on a window grown until every core pixel's nearest object lies
    closer than the window's edge (:func:`~napari_unet.core.seam_fill.fill_core`; sparse
    objects are filled from their edges, gathered chunk by chunk: memory stays bounded).

    Parameters
    ----------
    mask : (H, W) uint8 array-like
        Class per pixel (numpy, zarr, or anything sliceable to a numpy array).
    cores : sequence of (rows, cols) slices
        Blocks tiling the plane without overlap (e.g. :func:`block_cores`).
    out : (H, W) writable integer array-like
        Receives the labels (e.g. int32 numpy or zarr array); written block by block,
        first with provisional ids, then with the final ones.
    labeller : callable
        ``(mask_window, foreground_window_or_None) -> labels`` of a window, the labelling
        the in-memory path applies to the whole plane (e.g. a
        :class:`~napari_unet.core.postprocess.PlaneLabeller`).
    margin : int
        Context in pixels around each core (>= 1); see :func:`default_margin`.
    foreground : (H, W) float32 array-like, optional
        Foreground probability, passed to ``labeller`` window by window when given.
    min_size : int
        Objects with fewer pixels after merging are removed. For a labeller of connected
        components, give its ``min_size`` here and label windows with ``min_size=0``:
        exact with any margin.
    unfilled : (H, W) int32 array-like, optional
        With a filling labeller: receives the objects before filling (default a numpy
        array; give a zarr array to keep memory bounded and the step rerunnable).

    Yields
    ------
    Progress
        One per block labelled, then one per block renumbered (``total`` = 2 x blocks);
        with fill, then one per block filled (``total`` = blocks).

    Returns
    -------
    int
        The number of objects, labelled 1..N in ``out``.
    """
    shape = _plane_shape(mask, foreground, out)
    cores = _checked_cores(cores, shape)
    if margin < 1 and len(cores) > 1:
        raise InputError(f"the margin around blocks must be at least 1 pixel, got {margin}")
    if min_size < 0:
        raise InputError(f"min_size must be >= 0, got {min_size}")
    if not (isinstance(labeller, PlaneLabeller) and labeller.fills):
        return _label_plane(mask, foreground, cores, out, labeller, margin, min_size)
    return _label_and_fill(mask, foreground, cores, out, labeller, margin, min_size, unfilled)


# ------------------------------------------------------------------ checks


def _plane_shape(mask: Any, foreground: Any, out: Any) -> tuple[int, int]:
    shape = tuple(mask.shape)
    if len(shape) != 2:
        raise InputError(f"expected a 2D mask (H, W), got shape {shape}")
    if foreground is not None and tuple(foreground.shape) != shape:
        raise InputError(
            f"the foreground probability {tuple(foreground.shape)} and the mask {shape} "
            "must have the same shape"
        )
    if tuple(out.shape) != shape:
        raise OutputError(f"the output has shape {tuple(out.shape)}, the plane {shape}")
    if not np.can_cast(np.int32, np.dtype(out.dtype)):
        raise OutputError(f"labels need an int32 (or wider) output, got {np.dtype(out.dtype)}")
    return shape  # type: ignore[return-value]


def _checked_cores(cores: Sequence[Region], shape: tuple[int, int]) -> list[tuple[int, ...]]:
    """Cores as ``(r0, r1, c0, c1)``, checked to tile the plane exactly once."""
    bounds = []
    for core in cores:
        rows, cols = (s.indices(n) for s, n in zip(core, shape, strict=True))
        if rows[2] != 1 or cols[2] != 1 or rows[0] >= rows[1] or cols[0] >= cols[1]:
            raise InputError(f"block {core} is empty or strided")
        bounds.append((rows[0], rows[1], cols[0], cols[1]))
    problem = f"the blocks must cover the {shape[0]} x {shape[1]} plane exactly once"
    if not bounds:
        raise InputError(problem)
    row_edges = np.unique([b for r0, r1, _, _ in bounds for b in (r0, r1)])
    col_edges = np.unique([b for _, _, c0, c1 in bounds for b in (c0, c1)])
    cover = np.zeros((len(row_edges) - 1, len(col_edges) - 1), np.int64)
    for r0, r1, c0, c1 in bounds:
        cover[
            slice(*np.searchsorted(row_edges, (r0, r1))),
            slice(*np.searchsorted(col_edges, (c0, c1))),
        ] += 1
    spans = (row_edges[0], row_edges[-1], col_edges[0], col_edges[-1])
    if spans != (0, shape[0], 0, shape[1]) or not (cover == 1).all():
        raise InputError(problem)
    return bounds


# ----------------------------------------------------------------- blocks


def _label_plane(
    mask: Any,
    foreground: Any,
    cores: list[tuple[int, ...]],
    out: Any,
    labeller: WindowLabeller,
    margin: int,
    min_size: int,
) -> Generator[Progress, None, int]:
    shape = tuple(mask.shape)
    seams_of: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for seam in seams_between(cores):
        for block in seam[:2]:
            seams_of.setdefault(block, []).append(seam)
    waiting = {block: len(seams) for block, seams in seams_of.items()}
    fragments, edges, total = Fragments(), {}, 2 * len(cores)
    for index, core in enumerate(cores):
        edges[index] = _label_block(mask, foreground, core, shape, margin, labeller, out, fragments)
        for seam in seams_of.get(index, []):
            if seam[0] in edges and seam[1] in edges:
                fragments.pairs.append(joined_across(seam, cores, edges))
                for block in seam[:2]:
                    waiting[block] -= 1
                    if waiting[block] == 0:
                        del edges[block]  # compared with every neighbour: free its lines
        yield Progress(index + 1, total, "labelling blocks")
    table, count = fragments.final_ids(min_size)
    for index, (r0, r1, c0, c1) in enumerate(cores):
        region = (slice(r0, r1), slice(c0, c1))
        out[region] = table[np.asarray(out[region])].astype(np.int32)
        yield Progress(len(cores) + index + 1, total, "numbering labels")
    return count


def _label_and_fill(
    mask: Any,
    foreground: Any,
    cores: list[tuple[int, ...]],
    out: Any,
    labeller: PlaneLabeller,
    margin: int,
    min_size: int,
    unfilled: Any,
) -> Generator[Progress, None, int]:
    """The objects without fill into ``unfilled``, then every core filled from them."""
    shape = tuple(mask.shape)
    if unfilled is None:
        unfilled = np.zeros(shape, np.int32)
    elif tuple(unfilled.shape) != shape:
        raise OutputError(f"the unfilled labels have shape {tuple(unfilled.shape)}, not {shape}")
    objects = replace(labeller, fill_boundaries=False)
    count = yield from _label_plane(mask, foreground, cores, unfilled, objects, margin, min_size)
    for index, core in enumerate(cores):
        r0, r1, c0, c1 = core
        out[r0:r1, c0:c1] = fill_core(unfilled, core, shape, max(margin, MIN_MARGIN))
        yield Progress(index + 1, len(cores), "filling the boundaries")
    return count


def _label_block(
    mask: Any,
    foreground: Any,
    core: tuple[int, ...],
    shape: tuple[int, int],
    margin: int,
    labeller: WindowLabeller,
    out: Any,
    fragments: Fragments,
) -> CoreEdges:
    """Label a block's window, write its core with provisional ids, keep its edges."""
    r0, r1, c0, c1 = core
    top, left = max(0, r0 - margin), max(0, c0 - margin)
    window = (slice(top, min(shape[0], r1 + margin)), slice(left, min(shape[1], c1 + margin)))
    mask_window = np.asarray(mask[window])
    foreground_window = None if foreground is None else np.asarray(foreground[window])
    labels = _compact(np.asarray(labeller(mask_window, foreground_window)), mask_window.shape)
    count = int(labels.max())
    inside = (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))
    offset = fragments.add_block(labels[inside], mask_window[inside], count, (r0, c0), shape[1])
    out[r0:r1, c0:c1] = np.where(labels[inside] > 0, labels[inside] + offset, 0).astype(np.int32)
    lines = {}
    i0, i1, j0, j1 = r0 - top, r1 - top, c0 - left, c1 - left
    if r0 > 0:
        lines["top"] = (labels[i0, j0:j1], labels[i0 - 1, j0:j1])
    if r1 < shape[0]:
        lines["bottom"] = (labels[i1 - 1, j0:j1], labels[i1, j0:j1])
    if c0 > 0:
        lines["left"] = (labels[i0:i1, j0], labels[i0:i1, j0 - 1])
    if c1 < shape[1]:
        lines["right"] = (labels[i0:i1, j1 - 1], labels[i0:i1, j1])
    return CoreEdges(offset, {side: (a.copy(), b.copy()) for side, (a, b) in lines.items()})


def _compact(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels as consecutive ids 0..n (0 stays background), whatever ids the labeller used."""
    if labels.shape != shape:
        raise InputError(f"the labeller returned shape {labels.shape} for a {shape} window")
    if labels.dtype.kind not in "iub":
        raise InputError(f"the labeller must return integer labels, got {labels.dtype}")
    if labels.dtype.kind == "b":
        labels = labels.astype(np.int64)
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise InputError("the labeller returned negative labels")
    if high <= 4 * labels.size:  # the usual case: a lookup table, no sort
        present = np.bincount(labels.ravel(), minlength=high + 1) > 0
        present[0] = False
        table = np.cumsum(present)
        table[0] = 0
        return table.astype(np.int32 if table[-1] < 2**31 else np.int64)[labels]
    ids, compact = np.unique(labels, return_inverse=True)
    return (compact.reshape(shape) + (ids[0] != 0)).astype(np.int64)


__all__ = [
    "MARGIN_DIAMETERS",
    "MIN_MARGIN",
    "block_cores",
    "default_margin",
    "label_plane_in_blocks",
]

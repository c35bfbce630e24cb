"""Joining the objects of neighbouring blocks across their seams, and numbering them.

:func:`~napari_unet.core.seams.label_plane_in_blocks` labels each block on a window and
keeps its core. This module holds what it does with those cores: the table of
provisional ids (:class:`Fragments`: pixel count, first pixel, class per block object),
the labels each window saw along its core's sides (:class:`CoreEdges`), the seams between
cores (:func:`seams_between`), the two-sided agreement that joins two objects across a seam
(:func:`joined_across`), and the final numbering 1..N by class, then first pixel in
raster order, as a whole-plane labelling numbers them (:meth:`Fragments.final_ids`).

Separate from :mod:`~napari_unet.core.seams` (windows, margins, the passes and the
checks of its public API) because it is pure bookkeeping on small tables: no window is
read or labelled here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_unet.core.errors import OutputError

#: Raster index meaning "no pixel": larger than any, so a minimum skips it.
_NO_PIXEL = np.iinfo(np.int64).max


@dataclass
class Fragments:
    """Per provisional id (a block's object within its core): pixel count, first pixel
    (global raster index), class; and the pairs of ids joined across seams."""

    sizes: list[np.ndarray] = field(default_factory=lambda: [np.zeros(1, np.int64)])
    first: list[np.ndarray] = field(default_factory=lambda: [np.full(1, _NO_PIXEL)])
    classes: list[np.ndarray] = field(default_factory=lambda: [np.zeros(1, np.int64)])
    pairs: list[np.ndarray] = field(default_factory=lambda: [np.empty((0, 2), np.int64)])
    total: int = 0

    def add_block(
        self, core_labels: np.ndarray, core_mask: np.ndarray, count: int, origin: tuple, width: int
    ) -> int:
        """Record a block's ``count`` local ids; return the offset making them provisional."""
        offset = self.total
        self.total += count
        if self.total >= np.iinfo(np.int32).max:
            raise OutputError("too many objects for int32 labels; use larger blocks")
        flat = core_labels.ravel()
        self.sizes.append(np.bincount(flat, minlength=count + 1)[1:].astype(np.int64))
        # The first pixel in raster order lies in the top row of the object's box: cheaper
        # (in time and memory) than a minimum over every pixel's raster index.
        first = np.full(count, _NO_PIXEL)
        for index, box in enumerate(ndimage.find_objects(core_labels, max_label=count)):
            if box is not None:
                row = box[0].start
                col = box[1].start + int(np.argmax(core_labels[row, box[1]] == index + 1))
                first[index] = (row + origin[0]) * width + col + origin[1]
        self.first.append(first)
        classes = np.zeros(count, np.int64)
        for value in np.unique(core_mask[core_mask > 0]):  # ascending: the largest class wins
            classes[np.unique(core_labels[(core_mask == value) & (core_labels > 0)]) - 1] = value
        self.classes.append(classes)
        return offset

    def final_ids(self, min_size: int) -> tuple[np.ndarray, int]:
        """``table[provisional] = final id`` (0: removed), and the number of objects."""
        sizes, first = np.concatenate(self.sizes), np.concatenate(self.first)
        classes, pairs = np.concatenate(self.classes), np.concatenate(self.pairs)
        size = self.total + 1
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(size, size))
        count, root = connected_components(graph, directed=False)
        object_size = np.bincount(root, weights=sizes, minlength=count)
        object_first = np.full(count, _NO_PIXEL)
        np.minimum.at(object_first, root, first)
        object_class = np.zeros(count, np.int64)
        np.maximum.at(object_class, root, classes)
        kept = np.flatnonzero(object_size >= max(min_size, 1))
        kept = kept[kept != root[0]]  # provisional id 0 is the background
        order = kept[np.lexsort((object_first[kept], object_class[kept]))]
        final = np.zeros(count, np.int64)
        final[order] = np.arange(1, len(order) + 1)
        table = final[root]
        table[0] = 0
        return table, len(order)


@dataclass
class CoreEdges:
    """Local labels of one window along its core's sides: the core's outermost line
    (``inner``) and the line just outside it (``outer``), per side with a neighbour."""

    offset: int
    lines: dict[str, tuple[np.ndarray, np.ndarray]]


def seams_between(cores: list[tuple[int, ...]]) -> list[tuple[int, int, int, int, int]]:
    """``(first, second, axis, lo, hi)`` for cores sharing a border: ``first`` above
    (axis 0) or left of (axis 1) ``second``, along rows/columns ``lo:hi``."""
    starts: dict[tuple[int, int], list[int]] = {}
    for index, (r0, _, c0, _) in enumerate(cores):
        starts.setdefault((0, r0), []).append(index)
        starts.setdefault((1, c0), []).append(index)
    seams = []
    for index, (r0, r1, c0, c1) in enumerate(cores):
        for other in starts.get((0, r1), []):
            lo, hi = max(c0, cores[other][2]), min(c1, cores[other][3])
            if lo < hi:
                seams.append((index, other, 0, lo, hi))
        for other in starts.get((1, c1), []):
            lo, hi = max(r0, cores[other][0]), min(r1, cores[other][1])
            if lo < hi:
                seams.append((index, other, 1, lo, hi))
    return seams


def joined_across(
    seam: tuple[int, int, int, int, int], cores: list[tuple[int, ...]], edges: dict[int, CoreEdges]
) -> np.ndarray:
    """Provisional id pairs joined across one seam (two-sided agreement).

    With ``p`` the first core's pixel at the seam and ``q`` its neighbour in the second
    core, the objects ``first(p)`` and ``second(q)`` are joined when the first window
    labels ``q`` as ``p`` and the second window labels ``p`` as ``q``.
    """
    first, second, axis, lo, hi = seam
    start = 2 if axis == 0 else 0  # a seam runs along columns (axis 0) or rows (axis 1)
    near, far = ("bottom", "top") if axis == 0 else ("right", "left")
    a_inner, a_outer = (
        line[lo - cores[first][start] : hi - cores[first][start]]
        for line in edges[first].lines[near]
    )
    b_inner, b_outer = (
        line[lo - cores[second][start] : hi - cores[second][start]]
        for line in edges[second].lines[far]
    )
    joined = (a_inner > 0) & (b_inner > 0) & (a_inner == a_outer) & (b_inner == b_outer)
    return np.stack(
        [a_inner[joined] + edges[first].offset, b_inner[joined] + edges[second].offset], axis=1
    )

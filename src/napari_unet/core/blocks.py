"""One block of a block-wise run, and the steps after all blocks.

:func:`iter_block` segments one block (its tiles of the global grid), writes it into the
:class:`~napari_unet.core.blockstore.BlockStore` and marks it done; :func:`finish_labels`
makes instance ids consistent across blocks (a union-find over the ids touching across
block borders, :func:`label_table`); :func:`map_back` maps a model-grid result of a
resampled run onto the image's grid. Every step after the blocks can be run again.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from napari_unet.core.blockplan import Block, BlockPlan
from napari_unet.core.blockstore import BlockStore
from napari_unet.core.events import Progress, TileDone
from napari_unet.core.options import SegmentOptions
from napari_unet.core.planerun import iter_tile_results
from napari_unet.core.planes import plane_position
from napari_unet.core.postprocess import instance_labels
from napari_unet.core.predictor import Predictor
from napari_unet.core.resample import to_input_grid


def iter_block(
    image: Any,
    predictor: Predictor,
    plan: BlockPlan,
    block: Block,
    stats: dict[str, float],
    options: SegmentOptions,
    store: BlockStore,
    *,
    leading: tuple[int, ...],
    num_classes: int,
) -> Generator[TileDone, None, dict[str, Any]]:
    """Segment one block, write it into ``store`` and mark it done.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        The block's whole plane (read lazily; only the block's tile windows are read).
    predictor : callable
        ``(B, C, h, w) -> (B, K, h', w')`` probabilities.
    plan, block : BlockPlan, Block
    stats : dict
        The plane's normalisation stats (computed once for the whole plane).
    options : SegmentOptions
    store : BlockStore
    leading : tuple of int
        Shape of the result's leading axes (``()`` for a single plane); ``block.plane`` is
        the flat index over them.
    num_classes : int
        Classes the network predicts (the channels of a probabilities result).

    Yields
    ------
    TileDone
        Per tile, numbered in the plane's global grid.

    Returns
    -------
    dict
        The block record (also written into the store).
    """
    grid = plan.grid
    height = block.rows.stop - block.rows.start
    width = block.cols.stop - block.cols.start
    if options.output == "probabilities":
        result = np.zeros((num_classes, height, width), np.float32)
    else:
        result = np.zeros((height, width), np.uint8)
    for _, done in iter_tile_results(
        image, predictor, grid, stats, options, plane=block.plane, tiles=block.tiles
    ):
        result[(..., *_in_block(done.region, block))] = done.data
        yield done
    record: dict[str, Any] = {"rows": [block.rows.start, block.rows.stop]}
    target = plane_position(leading, block.plane)
    target += (slice(None),) * (result.ndim - 2) + (block.rows, block.cols)
    if options.output == "labels":
        labels = instance_labels(result)
        record.update(_label_record(labels, result, block, grid.shape[1]))
        store.raw()[target] = labels
        result = labels
    store.target()[target] = result
    store.mark_done(block, record)
    return record


def _in_block(region: tuple[slice, slice], block: Block) -> tuple[slice, slice]:
    """``region`` (plane pixels) in the coordinates of ``block``."""
    rows, cols = region
    return (
        slice(rows.start - block.rows.start, rows.stop - block.rows.start),
        slice(cols.start - block.cols.start, cols.stop - block.cols.start),
    )


def _label_record(
    labels: np.ndarray, mask: np.ndarray, block: Block, plane_width: int
) -> dict[str, Any]:
    """Per local id: class, pixel count, first pixel (global raster index); and the edges.

    The first pixel in raster order decides the id order of
    :func:`~napari_unet.core.postprocess.instance_labels` (per class), so the merged
    labels can be numbered exactly as a whole-plane labelling would.
    """
    # instance_labels numbers 1..n without gaps; the first pixel of an object lies in
    # the top row of its bounding box (cheaper than np.unique's argsort of the block).
    boxes = ndimage.find_objects(labels)
    ids = np.arange(1, len(boxes) + 1)
    first_rows = np.array([box[0].start for box in boxes], dtype=np.int64)
    first_cols = np.array(
        [
            box[1].start + int(np.argmax(labels[box[0].start, box[1]] == label))
            for label, box in zip(ids, boxes, strict=True)
        ],
        dtype=np.int64,
    )
    global_first = (first_rows + block.rows.start) * plane_width + first_cols + block.cols.start
    sizes = np.bincount(labels.ravel(), minlength=len(ids) + 1)[1:]
    return {
        "count": len(ids),
        "classes": mask[first_rows, first_cols].tolist(),
        "first": global_first.tolist(),
        "sizes": sizes.tolist(),
        "edges": {
            "top": labels[0].tolist(),
            "bottom": labels[-1].tolist(),
            "left": labels[:, 0].tolist(),
            "right": labels[:, -1].tolist(),
        },
    }


def label_table(
    plan: BlockPlan, records: dict[str, dict[str, Any]], plane: int, *, min_size: int = 0
) -> tuple[dict[str, int], np.ndarray]:
    """Map block-local ids of one plane to final ids, as a whole-plane labelling numbers them.

    Ids of neighbouring blocks that touch across a border (4-connectivity, same class)
    are joined (union-find via connected components), objects below ``min_size`` pixels
    dropped, and the rest numbered 1..N by (class, first pixel in raster order).

    Returns
    -------
    offsets : dict of str to int
        Per block key, the offset turning its local ids into rows of ``table``.
    table : (M + 1,) int32
        ``final = table[offset + local]`` for local ids > 0; ``table[0] = 0``.
    """
    blocks = {(b.row, b.col): b for b in plan.blocks if b.plane == plane}
    offsets, total = {}, 0
    for key in sorted(blocks):
        offsets[blocks[key].key] = total
        total += records[blocks[key].key]["count"]
    classes = np.zeros(total + 1, np.int64)
    first = np.zeros(total + 1, np.int64)
    sizes = np.zeros(total + 1, np.int64)
    for block in blocks.values():
        record, start = records[block.key], offsets[block.key] + 1
        stop = start + record["count"]
        classes[start:stop] = record["classes"]
        first[start:stop] = record["first"]
        sizes[start:stop] = record["sizes"]
    pairs = [np.empty((0, 2), np.int64)]
    for (i, j), block in blocks.items():
        for neighbour, mine, theirs in (
            ((i + 1, j), "bottom", "top"),
            ((i, j + 1), "right", "left"),
        ):
            if neighbour not in blocks:
                continue
            other = blocks[neighbour]
            a = np.asarray(records[block.key]["edges"][mine], np.int64)
            b = np.asarray(records[other.key]["edges"][theirs], np.int64)
            touching = (a > 0) & (b > 0)
            pair = np.stack(
                [a[touching] + offsets[block.key], b[touching] + offsets[other.key]], axis=1
            )
            pairs.append(pair[classes[pair[:, 0]] == classes[pair[:, 1]]])
    pairs = np.concatenate(pairs)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(total + 1,) * 2)
    _, root = connected_components(graph, directed=False)
    objects = np.unique(root[1:]) if total else np.empty(0, np.int64)
    object_first = np.full(root.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(object_first, root[1:], first[1:])
    object_size = np.bincount(root[1:], weights=sizes[1:], minlength=root.max() + 1)
    object_class = np.zeros(root.max() + 1, np.int64)
    object_class[root[1:]] = classes[1:]
    kept = objects[object_size[objects] >= max(min_size, 1)]
    order = kept[np.lexsort((object_first[kept], object_class[kept]))]
    final = np.zeros(root.max() + 1, np.int32)
    final[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    table = final[root]
    table[0] = 0
    return offsets, table


def finish_labels(store: BlockStore, plan: BlockPlan, *, min_size: int = 0) -> Iterator[Progress]:
    """Rewrite the result with ids consistent across blocks; idempotent.

    Reads the block-local labels from the scratch array (never the result, which it
    overwrites), so an interrupted merge can simply be run again. Yields one
    :class:`~napari_unet.core.events.Progress` per relabelled block.
    """
    records = store.done()
    raw, result = store.raw(mode="r"), store.target()
    leading = tuple(result.shape[:-2])  # labels: (*leading, H, W)
    for plane in range(plan.planes):
        offsets, table = label_table(plan, records, plane, min_size=min_size)
        blocks = [b for b in plan.blocks if b.plane == plane]
        for count, block in enumerate(blocks, start=1):
            target = (*plane_position(leading, plane), block.rows, block.cols)
            local = np.asarray(raw[target])
            shifted = np.where(local > 0, local.astype(np.int64) + offsets[block.key], 0)
            result[target] = table[shifted]
            yield Progress(count, len(blocks), f"merging labels of plane {plane}")


def finish(store: BlockStore, plan: BlockPlan, options: SegmentOptions) -> Iterator[Progress]:
    """The steps after all blocks: merge labels, map a model-grid result back onto the
    image's grid, mark the store complete. Every step can be run again."""
    record = store.run_record() or {}
    if not record.get("complete"):
        if options.output == "labels":
            yield from finish_labels(store, plan, min_size=options.min_size)
        if store.model_grid:
            yield from map_back(store, options.output)
        store.set_complete(True)


def map_back(store: BlockStore, output: str) -> Iterator[Progress]:
    """Map the model-grid result of a resampled run onto the result, chunk by chunk.

    Labels and masks by nearest neighbour (ids kept), probabilities by the linear
    operator (see :func:`~napari_unet.core.resample.to_input_grid`); each chunk reads
    only the model-grid window under it, so memory stays bounded. Idempotent. Yields
    one :class:`~napari_unet.core.events.Progress` per chunk.
    """
    model, result = store.target(mode="r"), store.result()
    input_size = tuple(result.shape[-2:])
    axes = 3 if output == "probabilities" else 2
    leading = tuple(result.shape[:-axes])
    chunk_rows, chunk_cols = result.chunks[-2:]
    regions = [
        (slice(r, min(r + chunk_rows, input_size[0])), slice(c, min(c + chunk_cols, input_size[1])))
        for r in range(0, input_size[0], chunk_rows)
        for c in range(0, input_size[1], chunk_cols)
    ]
    planes = math.prod(leading)
    total = planes * len(regions)
    for p in range(planes):
        at = plane_position(leading, p)
        plane = _Prefixed(model, at)
        for count, region in enumerate(regions, start=1 + p * len(regions)):
            data = to_input_grid(plane, input_size, kind=output, region=region)
            result[(*at, ..., *region)] = data
            yield Progress(count, total, "mapping back to the image's scale")


class _Prefixed:
    """``array[(*prefix, *key)]`` as a lazy array: one plane of a stored result."""

    def __init__(self, array: Any, prefix: tuple[int, ...]) -> None:
        self.array, self.prefix = array, prefix
        self.shape = tuple(array.shape[len(prefix) :])
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(*self.prefix, *key)])

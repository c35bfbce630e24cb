"""One block of a block-wise run, and the steps after all blocks.

:func:`iter_block` segments one block (its tiles of the global grid), writes it into the
:class:`~napari_unet.core.blockstore.BlockStore` and marks it done. For labels it keeps
what the plane's labelling needs (the class mask, and for grow-and-merge the foreground
probability) in scratch arrays, and writes block-local connected components as a
preview. After all blocks, :func:`finish_labels` labels each plane (:func:`label_plane`,
the unit a cluster's worker runs) from the scratch arrays with the labelling the
in-memory run applies (:class:`~napari_unet.core.postprocess.PlaneLabeller`), window by window
(:func:`~napari_unet.core.seams.label_plane_in_blocks`); :func:`map_back` maps a
model-grid result of a resampled run onto the image's grid. Every step after the blocks
reads only scratch arrays, so it can be run again (resume).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from napari_unet.core.blockplan import Block, BlockPlan
from napari_unet.core.blockstore import BlockStore
from napari_unet.core.events import Progress, TileDone
from napari_unet.core.options import SegmentOptions
from napari_unet.core.planerun import iter_tile_results
from napari_unet.core.planes import plane_position
from napari_unet.core.planeview import PlaneView
from napari_unet.core.postprocess import PlaneLabeller, foreground_probability, instance_labels
from napari_unet.core.predictor import Predictor
from napari_unet.core.resample_back import to_input_grid
from napari_unet.core.seams import label_plane_in_blocks


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
    height = block.rows.stop - block.rows.start
    width = block.cols.stop - block.cols.start
    if options.output == "probabilities":
        result = np.zeros((num_classes, height, width), np.float32)
    else:
        result = np.zeros((height, width), np.uint8)
    merging = options.output == "labels" and options.merge_boundaries > 0
    foreground = np.zeros((height, width), np.float32) if merging else None
    for probabilities, done in iter_tile_results(
        image, predictor, plan.grid, stats, options, plane=block.plane, tiles=block.tiles
    ):
        inside = _in_block(done.region, block)
        result[(..., *inside)] = done.data
        if foreground is not None:
            foreground[inside] = foreground_probability(probabilities)
        yield done
    target = plane_position(leading, block.plane)
    target += (slice(None),) * (result.ndim - 2) + (block.rows, block.cols)
    if options.output == "labels":
        store.mask()[target] = result
        if foreground is not None:
            store.foreground()[target] = foreground
        # a preview until finish_labels: the block's own connected components
        result = instance_labels(result)
    store.target()[target] = result
    record: dict[str, Any] = {"rows": [block.rows.start, block.rows.stop]}
    store.mark_done(block, record)
    return record


def _in_block(region: tuple[slice, slice], block: Block) -> tuple[slice, slice]:
    """``region`` (plane pixels) in the coordinates of ``block``."""
    rows, cols = region
    return (
        slice(rows.start - block.rows.start, rows.stop - block.rows.start),
        slice(cols.start - block.cols.start, cols.stop - block.cols.start),
    )


def finish_labels(store: BlockStore, plan: BlockPlan) -> Iterator[Progress]:
    """Label every plane from the stored mask (and foreground), as in memory; idempotent.

    The labelling and its margin are the run record's (``postprocess``, see
    :func:`~napari_unet.core.runrecord.run_record`). Each plane is labelled window by
    window (:func:`label_plane`); planes are independent, so a cluster labels them in
    parallel (:mod:`~napari_unet.core.distributed`).

    Yields
    ------
    Progress
        Per block and step, with a message naming the labelling and the plane, e.g.
        ``"grow-and-merge (seeds above 0.9, merge below 0.55) of plane 0: labelling
        blocks"``.
    """
    for plane in range(plan.planes):
        yield from label_plane(store, plan, plane)


def label_plane(store: BlockStore, plan: BlockPlan, plane: int) -> Iterator[Progress]:
    """Label plane ``plane`` of the store's result from its scratch arrays; idempotent.

    The plane is labelled window by window
    (:func:`~napari_unet.core.seams.label_plane_in_blocks`, the plane's blocks as cores).
    It reads only the scratch arrays (never the result, which it overwrites), so an
    interrupted step can simply be run again, in this process or on a worker.

    Yields
    ------
    Progress
        Per block and step, the message naming the labelling and the plane.
    """
    record = store.run_record() or {}
    labeller = labeller_of(record)
    margin = int(record["postprocess"]["margin"])
    window_labeller, min_size = labeller, labeller.min_size
    if labeller.connectivity_only:
        # exact with any margin: sizes are counted after joining across the seams
        window_labeller = PlaneLabeller(threshold=labeller.threshold)
    target, mask = store.target(), store.mask(mode="r")
    foreground = store.foreground(mode="r") if labeller.needs_foreground else None
    unfilled = store.raw() if labeller.fills else None
    at = plane_position(tuple(target.shape[:-2]), plane)  # labels: (*leading, H, W)
    cores = [(b.rows, b.cols) for b in plan.blocks if b.plane == plane]
    what = f"{labeller.describe()} of plane {plane}"
    for event in label_plane_in_blocks(
        PlaneView.at(mask, at),
        cores,
        PlaneView.at(target, at),
        labeller=window_labeller,
        margin=margin,
        foreground=None if foreground is None else PlaneView.at(foreground, at),
        min_size=min_size,
        unfilled=None if unfilled is None else PlaneView.at(unfilled, at),
    ):
        yield Progress(event.done, event.total, f"{what}: {event.message}")


def labeller_of(record: dict[str, Any]) -> PlaneLabeller:
    """The :class:`PlaneLabeller` a labels run record describes (its ``threshold``,
    ``min_size`` and ``postprocess``, see
    :func:`~napari_unet.core.runrecord.postprocess_record`)."""
    post = record["postprocess"]
    return PlaneLabeller(
        threshold=float(record["threshold"]),
        min_size=int(record["min_size"]),
        split_touching=bool(post["split_touching"]),
        fill_boundaries=bool(post["fill_boundaries"]),
        merge_boundaries=float(post["merge_boundaries"]),
    )


def finish(
    store: BlockStore,
    plan: BlockPlan,
    options: SegmentOptions,
    *,
    labels: Iterator[Progress] | None = None,
) -> Iterator[Progress]:
    """The steps after all blocks: label the planes, map a model-grid result back onto
    the image's grid, mark the store complete. Every step can be run again.

    ``labels`` replaces this process's plane labelling (:func:`finish_labels`) with
    another run of it, e.g. the planes labelled on a cluster's workers.
    """
    record = store.run_record() or {}
    if not record.get("complete"):
        if options.output == "labels":
            yield from finish_labels(store, plan) if labels is None else labels
        if store.model_grid:
            yield from map_back(store, options.output)
        store.set_complete(True)


def map_back(store: BlockStore, output: str) -> Iterator[Progress]:
    """Map the model-grid result of a resampled run onto the result, chunk by chunk.

    Labels and masks by nearest neighbour (ids kept), probabilities by the linear
    operator (see :func:`~napari_unet.core.resample_back.to_input_grid`); each chunk reads
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

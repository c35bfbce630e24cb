"""The block-wise run: a large image segmented block by block into a resumable zarr store.

The block-wise path of :func:`napari_unet.core.pipeline.run`. An image too big for
memory is segmented *block by block* into a zarr store on disk. A block
(:mod:`~napari_unet.core.blockplan`) is a rectangle of whole overlap-tiles of the
**global** tile grid (:func:`~napari_unet.core.tiling.plan_tiles` of the full plane), and
:func:`~napari_unet.core.blocks.iter_block` runs its tiles through the same tile loop as
the in-memory run (:func:`~napari_unet.core.planerun.iter_tile_results`), normalised with
the whole plane's statistics: the results are identical, whoever computes the block
(this process or a dask worker, see :mod:`napari_unet.core.distributed`).

Data path: image (:mod:`~napari_unet.core.sources`) -> planes (:func:`planes_of`) ->
scale (:mod:`~napari_unet.core.scalechoice`) -> blocks of tiles -> per block: tiles ->
predictor -> stitch -> block mask (+ foreground) + record (:mod:`~napari_unet.core.blocks`)
-> after all blocks: plane labelling, map back (:func:`~napari_unet.core.blocks.finish`) -> store
(:mod:`~napari_unet.core.blockstore`).

Each finished block is written chunk-aligned (one zarr chunk per block) and then marked
done by a small JSON file, so an interrupted run leaves a readable store and a rerun
with ``resume=True`` skips the finished blocks. For instance labels a block keeps its
class mask (and for grow-and-merge its foreground probability) in scratch arrays and
writes its own connected components as a preview; after all blocks,
:func:`~napari_unet.core.blocks.finish_labels` labels each plane exactly as the in-memory
run does (split, fill, grow-and-merge, min size), window by window with the blocks as
cores (:func:`~napari_unet.core.seams.label_plane_in_blocks`,
docs/blockwise-postprocessing.md), and says so in its progress messages. That step reads
only the scratch arrays, so it can be rerun after an interruption.

At another scale (a pixel size or object diameter that differs from the model's, see
:mod:`napari_unet.core.scaling`) the blocks tile a lazy
:class:`~napari_unet.core.resample.Resampled` view of the image at the model's scale and
are written into a model-grid scratch array (``_napari_unet/model``); once the planes
are labelled there, :func:`~napari_unet.core.blocks.map_back` fills the result at the
image's grid chunk by chunk.
The run record's ``scale`` says which factor was used and why; a store is resumed only
at the same factor.

Store layout (OME-NGFF 0.4, zarr format 2)::

    labels.zarr/            group; attrs: multiscales (one level), napari_unet (run record,
                            written with the group: it marks the store as ours)
      0/                    the result, chunks = blocks
      _napari_unet/         group: block records p<P>_r<I>_c<J>.json; for labels mask/
                            (class mask), foreground/ (grow-and-merge), raw/ (labels before
                            fill); model/ (the blocks' result at the model's scale, when
                            resampled)

Public API
----------
- :func:`prepare` checks everything, chooses the scale, plans blocks, computes the
  planes' statistics and opens the store (also used by the distributed path).
- :func:`run_blockwise` runs the blocks in this process (the public front door is
  :func:`~napari_unet.core.largeimage.segment_blocks_iter`).

Your data is safe
-----------------
A store output never replaces what is not a napari-unet result: before anything is
read or computed, :func:`~napari_unet.core.blockstore.check_store_output` refuses an
output that is, contains or
lies inside an input; a file or a folder that is not a napari-unet store (every store
we create carries the ``"napari_unet"`` attribute from its first write); a store of
ours holding other files; and an existing store unless ``overwrite`` (replace it) or
``resume`` (continue it) is given. ``resume`` on a damaged store says what is damaged
instead of starting again.

zarr (and dask, when given dask arrays) are imported lazily: they are optional."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from napari_unet.core import normalise
from napari_unet.core.blockplan import DEFAULT_BLOCK_SIZE, BlockPlan, plan_blocks
from napari_unet.core.blocks import finish, iter_block
from napari_unet.core.blockstore import BlockStore, check_store_output, prepare_store
from napari_unet.core.calibration_axes import Calibration
from napari_unet.core.events import Progress, ScaleChosen, TileDone
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions, check_blockwise
from napari_unet.core.outputs import result_shape
from napari_unet.core.planes import as_planes
from napari_unet.core.predictor import Predictor, get_predictor, normalisation_of
from napari_unet.core.resample import Resampled
from napari_unet.core.resample_back import tile_to_input_grid
from napari_unet.core.runrecord import run_record
from napari_unet.core.scalechoice import choose_plane_scale, scale_matters
from napari_unet.core.scaling import ScaleChoice, check_resampled_size
from napari_unet.core.sources import plane_of, readable, source_paths

#: Side (model pixels) of the wider central crop ``auto`` measures when the first crop
#: holds too few objects (in memory the whole plane is measured instead).
AUTO_FALLBACK_CROP = 2048


@dataclass(frozen=True)
class Prepared:
    """Everything a block-wise run needs, computed once in the calling process.

    ``stack`` holds the planes the network reads: the image's, or with a resampling
    ``choice`` a lazy :class:`~napari_unet.core.resample.Resampled` view of them at the
    model's scale, which ``plan`` tiles; ``input_size`` is the image's ``(H, W)``.
    """

    stack: Any
    plane_ndim: int
    plan: BlockPlan
    stats: list[dict[str, Any]]
    store: BlockStore
    leading: tuple[int, ...]
    choice: ScaleChoice
    input_size: tuple[int, int]

    @property
    def model_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the model grid when the image is resampled, else ``None``."""
        return self.plan.grid.shape if self.choice.resamples else None


def prepare(
    model: ModelBundle | UNet,
    image: Any,
    path: str | os.PathLike,
    options: SegmentOptions,
    *,
    block_size: int,
    resume: bool,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    predictor: Predictor | None = None,
    calibration: Calibration | None = None,
) -> Prepared:
    """Check the image, options and output, choose the scale, plan blocks, compute global
    stats, open the store.

    Every check that can refuse the run (including the output: see
    :func:`check_store_output`) comes before the image is read; ``auto``'s measuring
    pass then reads a central crop only
    (:func:`~napari_unet.core.segment.choose_plane_scale`).

    Parameters
    ----------
    inputs : iterable of path-like
        Files and stores the run reads, which the output may not overwrite; the store
        or TIFF a zarr ``image`` was opened from is added (see :func:`source_paths`).
    predictor : callable, optional
        For ``auto``'s measuring pass (built when needed).
    calibration : Calibration, optional
        The result's physical calibration, written into a new store's multiscales.
    """
    check_blockwise(options)
    config = model.config
    sources = [*inputs, *source_paths(image)]
    stack, leading = planes_of(readable(image), config, options)  # checks; reads nothing
    planes = int(stack.shape[0])
    plane_shape = tuple(int(s) for s in stack.shape[1:])
    plane_ndim = len(plane_shape)
    plan = plan_blocks(
        plane_shape, config, planes=planes, tile_size=options.tile_size, block_size=block_size
    )
    input_size = plane_shape[-2:]
    final_shape = result_shape(options.output, config.num_classes, leading, input_size)
    resuming = check_store_output(path, inputs=sources, overwrite=overwrite, resume=resume)
    choice = choose_plane_scale(
        model,
        lambda: plane_of(stack, planes // 2, plane_ndim),
        options,
        predictor=predictor,
        fallback_size=AUTO_FALLBACK_CROP,
    )
    scratch_shape = None
    if choice.resamples:
        model_size = check_resampled_size(input_size, choice)
        stack = Resampled(stack, size=model_size)
        plan = plan_blocks(
            (*plane_shape[:-2], *model_size),
            config,
            planes=planes,
            tile_size=options.tile_size,
            block_size=block_size,
        )
        scratch_shape = result_shape(options.output, config.num_classes, leading, model_size)
    if resuming:
        BlockStore(path, model_grid=choice.resamples).check_resumable(
            plan, run_record(model, plan, options, [], choice), final_shape, scratch_shape
        )
    spec = normalisation_of(model)
    # Normalisation is global: each block of a plane uses the whole plane's stats.
    stats = [
        normalise.compute_stats(
            plane_of(stack, p, plane_ndim),
            spec,
            where=f"plane {p}",
            per_channel=plane_ndim == 3,
        )
        for p in range(planes)
    ]
    run = run_record(model, plan, options, stats, choice)
    store = prepare_store(
        path,
        plan,
        run,
        final_shape,
        resume=resuming,
        overwrite=overwrite,
        scratch_shape=scratch_shape,
        calibration=calibration,
    )
    return Prepared(stack, plane_ndim, plan, stats, store, leading, choice, input_size)


def planes_of(
    image: Any, config: UNetConfig, options: SegmentOptions
) -> tuple[Any, tuple[int, ...]]:
    """``(N, [C,] H, W)`` lazy planes of ``image`` and the shape of its leading axes.

    :func:`~napari_unet.core.io.as_planes` with the options' channel axis and channels:
    checks the image (one-line errors), reads no pixel.
    """
    stack, restore = as_planes(
        image,
        in_channels=config.in_channels,
        channel_axis=options.channel_axis,
        channels=options.channels,
    )
    return stack, restore.leading


def run_blockwise(
    model: ModelBundle | UNet,
    image: Any,
    path: str | os.PathLike,
    *,
    options: SegmentOptions | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    predictor: Predictor | None = None,
    calibration: Calibration | None = None,
) -> Generator[ScaleChosen | TileDone | Progress, None, Any]:
    """Segment an image block by block into a zarr store at ``path``, in this process.

    The block-wise run of :func:`~napari_unet.core.pipeline.run`; parameters, events and
    result as in :func:`~napari_unet.core.largeimage.segment_blocks_iter`.
    """
    options = options or SegmentOptions()
    prepared = prepare(
        model,
        image,
        path,
        options,
        block_size=block_size,
        resume=resume,
        overwrite=overwrite,
        inputs=inputs,
        predictor=predictor,
        calibration=calibration,
    )
    if scale_matters(model, options):
        yield ScaleChosen(prepared.choice)
    predictor = predictor or get_predictor(model, options.device)
    plan, store = prepared.plan, prepared.store
    finished = set(store.done())
    pending = [block for block in plan.blocks if block.key not in finished]
    done = len(plan.blocks) - len(pending)
    for block in pending:
        plane = plane_of(prepared.stack, block.plane, prepared.plane_ndim)
        tiles = iter_block(
            plane,
            predictor,
            plan,
            block,
            prepared.stats[block.plane],
            options,
            store,
            leading=prepared.leading,
            num_classes=model.config.num_classes,
        )
        if prepared.model_size is None:
            yield from tiles
        else:
            yield from _on_input_grid(tiles, prepared, options.output)
        done += 1
        yield Progress(done, len(plan.blocks), "blocks")
    yield from finish(store, plan, options)
    return store.result()


def _on_input_grid(
    tiles: Generator[TileDone, None, Any], prepared: Prepared, output: str
) -> Iterator[TileDone]:
    """``tiles`` of the model grid reported on the input grid (see
    :func:`~napari_unet.core.resample_back.tile_to_input_grid`)."""
    try:
        for done in tiles:
            region, data = tile_to_input_grid(
                done.data, done.region, prepared.model_size, prepared.input_size, kind=output
            )
            yield TileDone(done.plane, done.index, done.total, region, data)
    finally:
        tiles.close()


__all__ = ["AUTO_FALLBACK_CROP", "Prepared", "planes_of", "prepare", "run_blockwise"]

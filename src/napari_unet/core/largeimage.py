"""Large images: the public front door of block-wise segmentation into a zarr store.

:func:`segment_blocks_iter` and :func:`segment_to_zarr` run
:func:`napari_unet.core.pipeline.run` with a
:class:`~napari_unet.core.pipeline.StoreTarget`.

The work is done by the modules below this one (see :mod:`napari_unet.core.blockwise`
for the store layout and how a run goes); their public names are importable from here:

- :mod:`~napari_unet.core.sources`: lazy inputs (:func:`open_image`, :func:`readable`,
  :func:`full_resolution`, :func:`source_paths`, :func:`plane_of`);
- :mod:`~napari_unet.core.stores`: creating a marked output store
  (:func:`open_output_store`, :func:`default_axes`);
- :mod:`~napari_unet.core.blockstore`: the store of a block-wise run
  (:class:`BlockStore`, :func:`check_store_output`, :func:`prepare_store`);
- :mod:`~napari_unet.core.blockplan`: block geometry (:func:`plan_blocks`, :class:`Block`,
  :class:`BlockPlan`);
- :mod:`~napari_unet.core.blocks`: one block and the steps after all blocks
  (:func:`iter_block`, :func:`finish_labels`, :func:`map_back`);
- :mod:`~napari_unet.core.blockwise`: the run (:func:`prepare`,
  :func:`segment_blocks_iter`, :func:`segment_to_zarr`).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from typing import Any

from napari_unet.core.blockplan import DEFAULT_BLOCK_SIZE, Block, BlockPlan, plan_blocks
from napari_unet.core.blocks import finish, finish_labels, iter_block, map_back
from napari_unet.core.blockstore import BlockStore, check_store_output, prepare_store
from napari_unet.core.blockwise import AUTO_FALLBACK_CROP, Prepared, planes_of, prepare
from napari_unet.core.calibration_axes import Calibration
from napari_unet.core.events import Progress, ScaleChosen, TileDone, drain
from napari_unet.core.formats import is_zarr_path
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions, check_blockwise
from napari_unet.core.pipeline import StoreTarget, run
from napari_unet.core.predictor import Predictor
from napari_unet.core.runrecord import run_record
from napari_unet.core.sources import (
    full_resolution,
    open_image,
    plane_of,
    readable,
    source_paths,
)
from napari_unet.core.stores import STORE_FORMAT, WORK_GROUP, default_axes, open_output_store


def segment_blocks_iter(
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
    """Segment a large image block by block into a zarr store, in this process.

    Parameters
    ----------
    model : ModelBundle or UNet
    image : array-like
        numpy, zarr, dask (use :func:`full_resolution` for multiscale data); read one
        tile window at a time, never whole. ``(H, W)``, up to two leading axes
        (``(Z, H, W)``, ``(T, Z, H, W)``) and a channel axis (``options.channel_axis``,
        ``options.channels``: see :func:`~napari_unet.core.io.as_planes`).
    path : path-like
        The output ``.zarr`` (OME-Zarr, see :mod:`~napari_unet.core.blockwise`).
    options : SegmentOptions, optional
        Labels are post-processed as in memory (split, fill, grow-and-merge, min size:
        each plane after its blocks, see docs/blockwise-postprocessing.md); ``link``
        needs the whole result and is refused block-wise. ``pixel_size`` and
        ``diameter`` are honoured as in memory (``auto`` measures a central crop, or a
        wider one of :data:`AUTO_FALLBACK_CROP` px when it holds too few objects).
    block_size : int
        Block (and chunk) edge in pixels, rounded to whole tiles.
    resume : bool
        Continue a store written by an interrupted run with the same settings: its
        finished blocks are kept and skipped. A damaged store is refused (``OutputError``),
        never silently started again; a missing one is created.
    overwrite : bool
        Replace an existing napari-unet store at ``path``. Without it (or ``resume``) an
        existing store is refused; a file, a folder that is not a napari-unet store, or
        a store holding other files is never replaced.
    inputs : iterable of path-like
        Files and stores the run reads (the output may not be, contain or lie in one);
        the store or TIFF ``image`` was opened from is found by itself when it is a
        zarr array (:func:`source_paths`).
    predictor : callable, optional
        Prebuilt predictor for ``model``.
    calibration : Calibration, optional
        The result's calibration (the image's, fitted with
        :meth:`~napari_unet.core.calibration.Calibration.for_result`): the OME-Zarr
        result records its axes' units and scale (not on resume: the store keeps its
        own). Default: scale 1, no units.

    Yields
    ------
    ScaleChosen
        First, when the model records a scale or ``options`` give one (as
        :func:`~napari_unet.core.segment.segment_iter`).
    TileDone
        Per tile (``index``/``total`` in the plane's tile grid of the model's scale;
        ``region`` and ``data`` on the image's grid).
    Progress
        Per finished block (message ``"blocks"``), then per relabelled block (labels
        only), then, when resampled, per chunk mapped back to the image's grid.

    Returns
    -------
    zarr.Array
        The result array ``"0"`` of the store, ``(*leading, H, W)`` or
        ``(*leading, K, H, W)`` (probabilities).

    Raises
    ------
    OutputError
        Before any block runs, when the output may not be written (see
        :func:`check_store_output`) or a store to resume is damaged.
    InputError
        For an image, options or a store to resume that do not fit.
    """
    target = StoreTarget(
        path,
        block_size=block_size,
        resume=resume,
        overwrite=overwrite,
        calibration=calibration,
        inputs=tuple(inputs),
    )
    return (yield from run(model, image, options=options, out=target, predictor=predictor))


def segment_to_zarr(
    model: ModelBundle | UNet, image: Any, path: str | os.PathLike, **kwargs: Any
) -> Any:
    """Drain :func:`segment_blocks_iter` (same keywords: ``overwrite``, ``resume``,
    ``inputs``...); return the result ``zarr.Array``."""
    return drain(segment_blocks_iter(model, image, path, **kwargs))


__all__ = [
    "AUTO_FALLBACK_CROP",
    "DEFAULT_BLOCK_SIZE",
    "STORE_FORMAT",
    "WORK_GROUP",
    "Block",
    "BlockPlan",
    "BlockStore",
    "Prepared",
    "check_blockwise",
    "check_store_output",
    "default_axes",
    "finish",
    "finish_labels",
    "full_resolution",
    "is_zarr_path",
    "iter_block",
    "map_back",
    "open_image",
    "open_output_store",
    "plan_blocks",
    "plane_of",
    "planes_of",
    "prepare",
    "prepare_store",
    "readable",
    "run_record",
    "segment_blocks_iter",
    "segment_to_zarr",
    "source_paths",
]

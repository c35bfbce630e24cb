"""The one inference pipeline: any image, any size, any source, into any sink.

Every front end (CLI, both widgets, the dask.distributed path, the public
:func:`~napari_unet.core.segment.segment_iter` and
:func:`~napari_unet.core.largeimage.segment_blocks_iter`) runs images through
:func:`run`. The data path, and the module that owns each step::

    image (numpy, dask, lazy TIFF or zarr)     sources, planes, channels
      -> planes (N, [C,] H, W), checked         planes.as_planes
      -> scale (resampled to the model's?)      scalechoice, scaling, resample
      -> tiles of the global tile grid          tiling.plan_tiles (+ blockplan: blocks)
      -> normalise + predictor per tile         planerun.iter_tile_results, predictor
      -> stitch (each tile's kept centre)       planerun.PlaneRun | blocks.iter_block
      -> post-process (labels, mask, probs)     outputs, postprocess, blocks.finish_labels
      -> sink: numpy array (in memory)          inmemory.run_in_memory
               zarr / OME-Zarr store            blockwise.run_blockwise, blockstore
               events (TileDone, PlaneDone...)  events: a widget fills its layer from them

:func:`run` chooses the path by the sink (:func:`run_kind`): a :class:`StoreTarget` is
segmented block by block (memory bounded by a block, resumable); anything else in
memory, where a result too large for the memory available is refused in one line that
names the ``.zarr`` alternative, before any work.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from napari_unet.core.blockplan import DEFAULT_BLOCK_SIZE
from napari_unet.core.blockwise import run_blockwise
from napari_unet.core.calibration_axes import Calibration
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, Progress, ScaleChosen, TileDone
from napari_unet.core.inmemory import run_in_memory
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions
from napari_unet.core.predictor import Predictor

#: What :func:`run` yields.
Event = ScaleChosen | TileDone | PlaneDone | Progress


@dataclass(frozen=True)
class StoreTarget:
    """A zarr / OME-Zarr store to segment into, block by block.

    Attributes
    ----------
    path : Path
        The ``.zarr`` folder (created; an existing one only with ``resume`` or
        ``overwrite``, and only when it is a napari-unet store).
    block_size : int
        Block (and chunk) edge in pixels, rounded to whole tiles.
    resume : bool
        Continue an interrupted run with the same settings, skipping finished blocks.
    overwrite : bool
        Replace an existing napari-unet store.
    calibration : Calibration, optional
        The result's calibration, recorded in the store's multiscales.
    inputs : tuple of Path
        Files and stores the run reads: the store may not be, contain or lie in one.
    """

    path: Path
    block_size: int = DEFAULT_BLOCK_SIZE
    resume: bool = False
    overwrite: bool = False
    calibration: Calibration | None = None
    inputs: tuple[Path, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "inputs", tuple(Path(p) for p in self.inputs))


def run_kind(out: Any) -> Literal["in memory", "block-wise"]:
    """How :func:`run` segments into ``out``: block-wise into a store, else in memory."""
    return "block-wise" if isinstance(out, StoreTarget) else "in memory"


def run(
    model: ModelBundle | UNet,
    image: Any,
    *,
    options: SegmentOptions | None = None,
    out: StoreTarget | Any | None = None,
    planes: Iterable[int] | None = None,
    predictor: Predictor | None = None,
) -> Generator[Event, None, Any]:
    """Segment ``image`` with ``model`` into ``out``, yielding progress events.

    Parameters
    ----------
    model : ModelBundle or UNet
        A loaded model.
    image : array-like
        numpy, dask, zarr or a lazily opened TIFF (:func:`~napari_unet.core.sources.open_image`);
        read one tile window at a time. ``(H, W)``, up to two leading axes
        (``(Z, H, W)``, ``(T, Z, H, W)``) and a channel axis (``options.channel_axis``,
        ``options.channels``).
    options : SegmentOptions, optional
        Default ``SegmentOptions()``. Block-wise, whole-plane post-processing (split,
        fill, grow-and-merge, min size) gives the in-memory labels (see
        :mod:`~napari_unet.core.seams`); only linking through z, which needs the whole
        result, is refused (:func:`~napari_unet.core.options.check_blockwise`).
    out : StoreTarget, array or None
        The sink. A :class:`StoreTarget`: the store is written block by block and its
        result ``zarr.Array`` returned. An array: results are written into it as tiles
        finish (see :func:`~napari_unet.core.segment.segment_iter` for its layouts).
        ``None``: a numpy result is allocated, after checking it fits in memory.
    planes : iterable of int, optional
        Flat indices of the planes to segment (in memory only); default all.
    predictor : callable, optional
        A prebuilt predictor for ``model``; default the cached one
        (:func:`~napari_unet.core.predictor.get_predictor`).

    Yields
    ------
    ScaleChosen
        First, when a scale is involved.
    TileDone
        Per tile, on the image's grid: what a widget paints into its layer.
    PlaneDone
        In memory, per plane once post-processed.
    Progress
        Block-wise, per finished block, then per step after the blocks.

    Returns
    -------
    ndarray or zarr.Array
        The result (``out`` itself when it is an array).

    Raises
    ------
    InputError
        For an image or options that cannot be segmented; for a numpy result larger
        than the memory available (naming the ``.zarr`` alternative); for ``planes``
        with a store.
    OutputError
        Before any work, when a store may not be written.
    """
    options = options or SegmentOptions()
    if run_kind(out) == "block-wise":
        if planes is not None:
            raise InputError(
                "a .zarr output holds every plane: segment all planes into it, or choose "
                "planes for an in-memory (or .tif) result"
            )
        return (
            yield from run_blockwise(
                model,
                image,
                out.path,
                options=options,
                block_size=out.block_size,
                resume=out.resume,
                overwrite=out.overwrite,
                inputs=out.inputs,
                predictor=predictor,
                calibration=out.calibration,
            )
        )
    return (
        yield from run_in_memory(
            model, image, options=options, planes=planes, out=out, predictor=predictor
        )
    )


__all__ = ["Event", "StoreTarget", "run", "run_kind"]

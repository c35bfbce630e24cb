"""Batch segmentation of large images on a dask.distributed cluster.

The work is the block-wise pipeline of :mod:`napari_unet.core.largeimage`, with each
block a task: a worker reads the block's tile windows (plus the exact overlap-tile
context, mirrored at the true image border) straight from the input, predicts them with
the same global tile grid as a single-process run, writes the block chunk-aligned into
the output zarr store and records it as done. The results are therefore *identical* to
:func:`~napari_unet.core.segment.segment` in one process.

Done once, in the calling process: the block plan, the normalisation stats of each
whole plane, the store, and the final label merge (a small relabel table, then one
relabel pass per block). The model travels to each worker once (``Client.scatter`` with
``broadcast=True``), where its predictor is built once and cached.

Public API
----------
- :func:`local_client` ``(workers, *, processes=True) -> Client`` (context manager)
- :func:`connect` ``(scheduler) -> Client``
- :func:`segment_distributed_iter` ``(model, source, path, *, client, options=None,
  block_size=..., resume=False, overwrite=False, inputs=(), torch_threads=1)``:
  generator of Progress, returns the result ``zarr.Array``.

``distributed`` is an optional dependency, imported only when these functions run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from napari_unet.core.blockplan import DEFAULT_BLOCK_SIZE, Block, BlockPlan
from napari_unet.core.blocks import finish, iter_block
from napari_unet.core.blockstore import BlockStore
from napari_unet.core.blockwise import planes_of, prepare
from napari_unet.core.calibration import Calibration
from napari_unet.core.errors import InputError
from napari_unet.core.events import Progress, ScaleChosen, drain
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions
from napari_unet.core.predictor import get_predictor
from napari_unet.core.resample import Resampled
from napari_unet.core.scalechoice import scale_matters
from napari_unet.core.sources import open_image, plane_of, readable


def _import_distributed() -> Any:
    """The ``distributed`` module, or an error that says how to install it."""
    try:
        import distributed
    except ImportError as error:
        raise InputError(
            "dask.distributed is not installed; install it with "
            "pip install 'napari-unet[large]' to use --workers or --scheduler"
        ) from error
    return distributed


@contextlib.contextmanager
def local_client(workers: int, *, processes: bool = True) -> Iterator[Any]:
    """A ``distributed.Client`` on a new local cluster of ``workers`` single-thread workers.

    Parameters
    ----------
    workers : int
        Number of workers (each runs torch with one thread: give one per CPU core).
    processes : bool
        Workers in separate processes (default) or as threads of this process.
    """
    distributed = _import_distributed()
    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def connect(scheduler: str, *, timeout: str = "10s") -> Any:
    """A ``distributed.Client`` connected to the scheduler at ``scheduler`` (e.g. tcp://host:8786).

    Raises
    ------
    InputError
        When no scheduler answers at that address.
    """
    distributed = _import_distributed()

    try:
        return distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as error:
        raise InputError(
            f"cannot connect to a dask scheduler at {scheduler}: {error}; start one with "
            "'dask scheduler' (and workers with 'dask worker ADDRESS') or use --workers N"
        ) from error


class ImageSource:
    """What workers open to read the input: a file path (preferred) or a picklable array.

    A path is opened once per worker process (zarr, OME-Zarr, TIFF via its zarr
    interface), so nothing but the path travels with the tasks.
    """

    def __init__(self, image_or_path: Any) -> None:
        if isinstance(image_or_path, (str, os.PathLike)):
            self.path: str | None = str(Path(image_or_path).resolve())
            self.array = None
        else:
            self.path, self.array = None, image_or_path

    def open(self) -> Any:
        """The image, as a lazy array-like."""
        return _open_cached(self.path) if self.path is not None else self.array


@functools.lru_cache(maxsize=8)
def _open_cached(path: str) -> Any:
    return open_image(path)


def segment_distributed_iter(
    model: ModelBundle | UNet,
    source: Any,
    path: str | os.PathLike,
    *,
    client: Any,
    options: Any | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    torch_threads: int = 1,
    calibration: Calibration | None = None,
) -> Generator[ScaleChosen | Progress, None, Any]:
    """Segment a large image on a dask cluster, block by block, into a zarr store.

    Parameters
    ----------
    model : ModelBundle or UNet
    source : path-like or array-like
        The input: a path the workers can open (zarr, OME-Zarr, TIFF), or a picklable
        array-like (numpy, zarr, dask), sent with every task.
    path : path-like
        The output ``.zarr``; it must be on storage every worker can write to.
    client : distributed.Client
    options : SegmentOptions, optional
        As block-wise in one process: whole-plane post-processing is applied after the
        blocks (in this process), ``link`` is refused; the channel axis and channels, the pixel size and diameter are honoured as in memory
        (the workers read the image resampled to the model's scale; this process maps
        the result back).
    block_size : int
        Block edge in pixels (rounded to whole tiles); one task and one chunk per block.
    resume : bool
        Skip the blocks an interrupted run with the same settings finished; a damaged
        store is refused (``OutputError``), never silently started again.
    overwrite : bool
        Replace an existing napari-unet store at ``path`` (never anything else: see
        :func:`~napari_unet.core.largeimage.segment_blocks_iter`).
    inputs : iterable of path-like
        Further files the run reads, which the output may not overwrite; a path
        ``source`` is always checked.
    torch_threads : int
        Torch threads per task (one per worker thread is right for CPU workers).
    calibration : Calibration, optional
        The result's calibration, recorded in the OME-Zarr result (see
        :func:`~napari_unet.core.largeimage.segment_blocks_iter`).

    Yields
    ------
    ScaleChosen
        First, when the model records a scale or the options give one.
    Progress
        Per finished block (message ``"blocks"``), then per relabelled block (and per
        chunk mapped back from the model's scale).

    Returns
    -------
    zarr.Array
        The result array of the store.

    Raises
    ------
    OutputError
        Before any task is sent, when the output may not be written or a store to
        resume is damaged.
    """
    as_completed = _import_distributed().as_completed

    options = options or SegmentOptions()
    source = ImageSource(source)
    sources = [*inputs, *([source.path] if source.path is not None else [])]
    prepared = prepare(
        model,
        source.open(),
        path,
        options,
        block_size=block_size,
        resume=resume,
        overwrite=overwrite,
        inputs=sources,
        calibration=calibration,
    )
    plan, store = prepared.plan, prepared.store
    if scale_matters(model, options):
        yield ScaleChosen(prepared.choice)
    if isinstance(model, UNet):
        model = ModelBundle.from_network(
            model, name="network", normalisation=getattr(model, "normalisation", None)
        )
    finished = set(store.done())
    pending = [block for block in plan.blocks if block.key not in finished]
    done = len(plan.blocks) - len(pending)
    if pending:
        model_on_workers = client.scatter(model, broadcast=True, hash=False)
        futures = [
            client.submit(
                run_block,
                model_on_workers,
                source,
                str(store.path),
                plan,
                block,
                prepared.stats[block.plane],
                options,
                prepared.leading,
                torch_threads,
                prepared.model_size,
                key=f"napari-unet-{block.key}-{os.getpid()}-{id(store)}",
                pure=False,
            )
            for block in pending
        ]
        try:
            for future in as_completed(futures):
                future.result()  # re-raises a task's error here
                done += 1
                yield Progress(done, len(plan.blocks), "blocks")
        finally:
            # Ctrl+C or Cancel: stop queued blocks; finished ones stay recorded.
            client.cancel([future for future in futures if not future.done()])
    yield from finish(store, plan, options)
    return store.result()


def run_block(
    model: ModelBundle,
    source: ImageSource,
    store_path: str,
    plan: BlockPlan,
    block: Block,
    stats: dict[str, float],
    options: Any,
    leading: tuple[int, ...],
    torch_threads: int,
    model_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One task: segment ``block`` and write it into the store; returns its record.

    With ``model_size`` the image is read resampled to that ``(h, w)`` (the model's
    scale), which ``plan`` tiles, and the block goes into the store's model-grid scratch.
    """
    import torch

    torch.set_num_threads(torch_threads)
    stack, _ = planes_of(readable(source.open()), model.config, options)
    if model_size is not None:
        stack = Resampled(stack, size=model_size)
    generator = iter_block(
        plane_of(stack, block.plane, stack.ndim - 1),
        get_predictor(model, options.device),
        plan,
        block,
        stats,
        options,
        BlockStore(store_path, model_grid=model_size is not None),
        leading=leading,
        num_classes=model.config.num_classes,
    )
    return drain(generator)


__all__ = [
    "ImageSource",
    "connect",
    "local_client",
    "run_block",
    "segment_distributed_iter",
]

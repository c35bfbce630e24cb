"""Batch segmentation of large images on a dask.distributed cluster.

The work is the block-wise pipeline of :mod:`napari_unet.core.largeimage`, with each
block a task: a worker reads the block's tile windows (plus the exact overlap-tile
context, mirrored at the true image border) straight from the input, predicts them with
the same global tile grid as a single-process run, writes the block chunk-aligned into
the output zarr store and records it as done. The results are therefore *identical* to
:func:`~napari_unet.core.segment.segment` in one process.

Done once, in the calling process: the block plan, the normalisation stats of each
whole plane, the store, and mapping a resampled result back. The planes' labelling
(window by window, merged across the block seams, see :mod:`~napari_unet.core.seams`)
runs on the workers too, a task per plane. The model travels to each worker once
(``Client.scatter`` with ``broadcast=True``), where its predictor is built once and cached.

Speed: each worker process runs one task at a time with ``cores // workers`` torch
threads (:func:`worker_environment`), imports torch while it starts (in the background,
while this process reads the image's statistics), and computes with glibc's malloc
thresholds fixed (:func:`set_up_worker`): dask's default ``MALLOC_TRIM_THRESHOLD_``
and the worker's compute thread otherwise fault every feature map in afresh, which
doubled the CPU time of a block. See ``benchmarks/bench_large.py``.

Public API
----------
- :func:`local_client` ``(workers, *, processes=True) -> Client`` (context manager)
- :func:`connect` ``(scheduler) -> Client``
- :func:`wait_for_workers` ``(client, *, timeout=...)``
- :func:`segment_distributed_iter` ``(model, source, path, *, client, options=None,
  block_size=..., resume=False, overwrite=False, inputs=(), torch_threads=None)``:
  generator of Progress, returns the result ``zarr.Array``.
- :func:`run_block`, :func:`label_plane_task`, :func:`set_up_worker`: what a task runs.
- :func:`worker_environment` ``(threads) -> dict``, :func:`usable_cores` ``() -> int``.

``distributed`` is an optional dependency, imported only when these functions run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

from napari_unet.core.blockplan import DEFAULT_BLOCK_SIZE, Block, BlockPlan
from napari_unet.core.blocks import finish, iter_block, label_plane
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

#: Seconds to wait for the cluster's workers before giving up.
WORKER_START_TIMEOUT = 120.0


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

    The worker processes start with the environment of :func:`worker_environment`: the
    CPU cores shared out between them, and glibc's own malloc tuning.

    Parameters
    ----------
    workers : int
        Number of workers (one per CPU core is fastest: each runs one task at a time,
        with ``cores // workers`` torch threads).
    processes : bool
        Workers in separate processes (default) or as threads of this process.
    """
    distributed = _import_distributed()
    import dask

    Client, LocalCluster = distributed.Client, distributed.LocalCluster

    if workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    threads = max(1, usable_cores() // workers)
    settings = {
        # Each nanny reads it when it is created: in the background, below.
        "distributed.nanny.pre-spawn-environ": worker_environment(threads),
        # The statistical profiler samples the compute thread every 10 ms (about 2 % of
        # a worker's CPU time) for a dashboard this cluster does not serve.
        "distributed.worker.profile.enabled": False,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=0,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            preload=[__name__],  # torch and this package: imported as a worker starts
        )
        client = Client(cluster)  # at once: a client waits for the workers it starts with
        # Start the workers in the background: they import torch while this process
        # opens the image and computes its statistics (see wait_for_workers).
        cluster.scale(workers)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


def wait_for_workers(client: Any, *, timeout: float = WORKER_START_TIMEOUT) -> None:
    """Wait until the workers of ``client``'s local cluster run (at least one elsewhere).

    Raises
    ------
    InputError
        When none (or not all local ones) joined within ``timeout`` seconds.
    """
    expected = max(1, len(getattr(getattr(client, "cluster", None), "worker_spec", ())))
    try:
        client.wait_for_workers(expected, timeout=timeout)
    except (TimeoutError, OSError) as error:
        raise InputError(
            f"{expected} dask worker(s) did not start within {timeout:.0f} s; start workers "
            "with 'dask worker ADDRESS', or check the machine's memory and load"
        ) from error


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_environment(threads: int) -> dict[str, str]:
    """Environment for a local worker process that runs ``threads`` compute threads.

    dask's default (``distributed.nanny.pre-spawn-environ``) also sets
    ``MALLOC_TRIM_THRESHOLD_=65536``, which turns off glibc's adaptive mmap threshold:
    every feature map above 128 KiB is then a fresh ``mmap`` whose pages fault in one by
    one, which doubled the CPU time of a forward pass (2.4 M page faults for three
    1212 px tiles, against 20 k). It is left out here, and :func:`set_up_worker` fixes
    the thresholds in every worker (started here or by ``dask worker``).
    """
    return {name: str(threads) for name in _THREAD_VARIABLES}


#: Thread-pool sizes of the numerical libraries a worker may load.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


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
    torch_threads: int | None = None,
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
        blocks (a task per plane), ``link`` is refused; the channel axis and channels,
        the pixel size and diameter are honoured as in memory (the workers read the
        image resampled to the model's scale; this process maps the result back).
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
    torch_threads : int, optional
        Torch threads per task; by default as many as the worker process started with
        (its ``OMP_NUM_THREADS``: ``cores // workers`` on a :func:`local_client`
        cluster, 1 on workers started by ``dask worker``).
    calibration : Calibration, optional
        The result's calibration, recorded in the OME-Zarr result (see
        :func:`~napari_unet.core.largeimage.segment_blocks_iter`).

    Yields
    ------
    ScaleChosen
        First, when the model records a scale or the options give one.
    Progress
        Per finished block (message ``"blocks"``), then for labels per labelled plane
        (message ``"labelling N plane(s) on the workers"``), then per chunk mapped back
        from the model's scale.

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
        wait_for_workers(client)
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
    labels = _label_planes_on_workers(client, store, plan) if options.output == "labels" else None
    yield from finish(store, plan, options, labels=labels)
    return store.result()


def _label_planes_on_workers(client: Any, store: BlockStore, plan: BlockPlan) -> Iterator[Progress]:
    """Label the planes of the store's result on the workers, a task per plane (planes
    are independent; a plane's windows are merged across its seams in its task).

    Yields
    ------
    Progress
        Once when the tasks are sent (``done`` 0), then per labelled plane.
    """
    as_completed = _import_distributed().as_completed
    message = f"labelling {plan.planes} plane(s) on the workers"
    yield Progress(0, plan.planes, message)
    futures = [
        client.submit(
            label_plane_task,
            str(store.path),
            store.model_grid,
            plan,
            plane,
            key=f"napari-unet-labels-{plane}-{os.getpid()}-{id(store)}",
            pure=False,
        )
        for plane in range(plan.planes)
    ]
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # re-raises a task's error here
            yield Progress(done, plan.planes, message)
    finally:
        client.cancel([future for future in futures if not future.done()])


def label_plane_task(store_path: str, model_grid: bool, plan: BlockPlan, plane: int) -> int:
    """One task: label plane ``plane`` of the store from its scratch arrays (see
    :func:`~napari_unet.core.blocks.label_plane`); returns the plane's index."""
    drain(label_plane(BlockStore(store_path, model_grid=model_grid), plan, plane))
    return plane


def run_block(
    model: ModelBundle,
    source: ImageSource,
    store_path: str,
    plan: BlockPlan,
    block: Block,
    stats: dict[str, float],
    options: Any,
    leading: tuple[int, ...],
    torch_threads: int | None,
    model_size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """One task: segment ``block`` and write it into the store; returns its record.

    With ``model_size`` the image is read resampled to that ``(h, w)`` (the model's
    scale), which ``plan`` tiles, and the block goes into the store's model-grid scratch.
    """
    set_up_worker(torch_threads)
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


def set_up_worker(torch_threads: int | None = None) -> None:
    """Make this (worker) process ready to compute: its torch threads and its malloc.

    Called by every task (cheap after the first). ``None`` keeps the torch threads the
    process started with.
    """
    import torch

    if torch_threads is not None and torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    _tune_malloc()


#: ``mallopt`` parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The largest values glibc's adaptive thresholds reach by themselves on 64-bit Linux:
#: allocations below 32 MiB come from the heap and are reused; up to 64 MiB free at
#: the top of a heap are kept rather than returned to the system.
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2 * _MMAP_THRESHOLD


@functools.cache
def _tune_malloc() -> None:
    """Fix glibc's malloc thresholds at their adaptive maxima, for this process.

    A worker computes in a thread of its own, whose malloc arena hands the feature maps
    of a forward pass back to the system and faults them in again page by page: about
    250 k page faults per 2048 px block, against 2-8 k with the thresholds fixed (and
    in one process's main thread). dask's nanny makes it worse on workers it starts
    (see :func:`worker_environment`). Nothing to do elsewhere than glibc on Linux.
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    except (OSError, AttributeError):  # another C library (musl): nothing to tune
        pass


__all__ = [
    "ImageSource",
    "connect",
    "local_client",
    "run_block",
    "segment_distributed_iter",
    "set_up_worker",
    "usable_cores",
    "wait_for_workers",
    "worker_environment",
]

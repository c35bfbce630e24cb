"""Large images: lazy inputs (zarr, OME-Zarr, tiled TIFF, dask), block-wise resumable output.

An image too big for memory is segmented *block by block* into a zarr store on disk. A
block is a rectangle of whole overlap-tiles of the **global** tile grid
(:func:`~napari_unet.core.tiling.plan_tiles` of the full plane), so every tile reads
exactly the pixels (mirrored at the true image border) and runs exactly the forward
pass it would in a single-process :func:`~napari_unet.core.segment.segment` call: the
results are identical, whoever computes the block (this process or a dask worker, see
:mod:`napari_unet.core.distributed`).

Each finished block is written chunk-aligned (one zarr chunk per block) and then marked
done by a small JSON file, so an interrupted run leaves a readable store and a rerun
with ``resume=True`` skips the finished blocks. Instance labels are computed per block
and made consistent afterwards by :func:`finish_labels`: a union-find over the ids that
touch across block borders, then a relabel table applied block by block. That step
reads only the block records and a scratch copy of the block labels, so it is
idempotent and can be rerun after an interruption.

Store layout (OME-NGFF 0.4, zarr format 2)::

    labels.zarr/            group; attrs: multiscales (one level), napari_unet (run record)
      0/                    the result, chunks = blocks
      _napari_unet/         group: block records p<P>_r<I>_c<J>.json, raw/ (labels scratch)

Public API
----------
- :func:`full_resolution` ``(data, *, multiscale=None) -> array-like``
- :func:`open_image` ``(path) -> array-like`` (lazy for zarr/OME-Zarr/TIFF)
- :func:`is_zarr_path` ``(path) -> bool``
- :func:`open_output_store` ``(path, shape, dtype, chunks, *, axes=None) -> zarr.Array``
- :func:`plan_blocks` ``(image_shape, config, *, tile_size=None, block_size=...) -> BlockPlan``
- :func:`segment_blocks_iter` ``(model, image, path, *, options=None, block_size=...,
  resume=False, predictor=None)``: generator of events, returns the result ``zarr.Array``.
- :func:`segment_to_zarr` drains it.

zarr (and dask, when given dask arrays) are imported lazily: they are optional.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core import normalise
from napari_unet.core.errors import InputError
from napari_unet.core.events import Progress, TileDone, drain
from napari_unet.core.io import READ_SUFFIXES, as_planes, read_image
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.postprocess import instance_labels, semantic_mask
from napari_unet.core.tiling import TileGrid, plan_tiles, read_region

#: Default block edge in pixels (rounded to whole tiles); one block = one output chunk.
DEFAULT_BLOCK_SIZE = 2048
#: Version of the store layout written in the run record.
STORE_FORMAT = 1
#: Name of the group holding block records and the labels scratch array.
WORK_GROUP = "_napari_unet"

_OUT_DTYPES = {"labels": "int32", "mask": "uint8", "probabilities": "float32"}


# ------------------------------------------------------------------ lazy inputs


def full_resolution(data: Any, *, multiscale: bool | None = None) -> Any:
    """The full-resolution level of (possibly multiscale) image data.

    Parameters
    ----------
    data : array-like or sequence of array-likes
        A napari layer's ``data``: one array (numpy, dask, zarr), or for a multiscale
        layer a list of levels, largest first (napari's ``MultiScaleData`` included).
    multiscale : bool, optional
        The layer's ``multiscale`` flag; by default a list or tuple is taken as
        multiscale.

    Returns
    -------
    array-like
        ``data`` itself, or its level 0; never loaded into memory.
    """
    if multiscale is None:
        multiscale = isinstance(data, (list, tuple))
    if not multiscale:
        return data
    if len(data) == 0:
        raise InputError("the multiscale image has no levels")
    return data[0]


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` path or a folder with zarr metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any(
        (path / name).exists() for name in (".zarray", ".zgroup", "zarr.json")
    )


def open_image(path: str | os.PathLike) -> Any:
    """Open an image for lazy, tile-by-tile reading.

    Parameters
    ----------
    path : path-like
        A zarr array, an OME-Zarr image (level 0 of its first multiscale is used) or a
        zarr group with an array named ``"0"``; a TIFF (read through tifffile's zarr
        interface: only the tiles/strips a region needs are decoded); or a PNG (read
        whole: PNG cannot be read by parts).

    Returns
    -------
    array-like
        A read-only ``zarr.Array`` (numpy for PNG), shape ``(H, W)`` or ``(N, H, W)``.

    Raises
    ------
    InputError
        For a missing path, an unknown format, or a zarr group without an image array.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input file not found: {path}")
    if is_zarr_path(path):
        return _open_zarr_image(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _open_tiff_lazily(path)
    if suffix in READ_SUFFIXES:
        return read_image(path)
    raise InputError(
        f"cannot read {path.name}: supported formats are .zarr (OME-Zarr or plain zarr), "
        f"{', '.join(READ_SUFFIXES)}"
    )


def _open_zarr_image(path: Path) -> Any:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises several types for "not a store"
        raise InputError(f"cannot open {path} as zarr: {error}") from error
    if isinstance(node, zarr.Array):
        return node
    level = _first_level_name(dict(node.attrs))
    if level is None:
        names = sorted(name for name, _ in node.arrays())
        if not names:
            raise InputError(
                f"{path} is a zarr group without image arrays: give the path of an array "
                "or of an OME-Zarr image"
            )
        level = "0" if "0" in names else names[0]
    try:
        array = node[level]
    except KeyError:
        raise InputError(
            f"{path}: its multiscales metadata names a missing level {level!r}"
        ) from None
    if not isinstance(array, zarr.Array):
        raise InputError(f"{path}/{level} is not an array")
    return array


def _first_level_name(attrs: dict[str, Any]) -> str | None:
    """Path of the full-resolution dataset in OME-NGFF 0.4 (top-level) or 0.5 (``ome``)."""
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    try:
        return str(multiscales[0]["datasets"][0]["path"])
    except (TypeError, LookupError):
        return None


def _open_tiff_lazily(path: Path) -> Any:
    import tifffile
    import zarr

    try:
        store = tifffile.imread(path, aszarr=True)
    except (tifffile.TiffFileError, ValueError) as error:
        raise InputError(f"cannot read {path.name} as TIFF: {error}") from error
    node = zarr.open(store, mode="r")
    if not isinstance(node, zarr.Array):  # a pyramid: level 0 is the full resolution
        node = node[_first_level_name(dict(node.attrs)) or "0"]
    return node


class _SyncDask:
    """A dask array read slice by slice with the synchronous scheduler.

    Tiles are read inside worker tasks or next to a ``distributed.Client``: computing
    a small slice in the calling thread avoids sending it to (or deadlocking) a cluster.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = array.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.array[key].compute(scheduler="synchronous"))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


class _PlaneView:
    """Plane ``index`` of a stack, read lazily: ``view[key]`` is ``stack[index][key]``."""

    def __init__(self, stack: Any, index: int) -> None:
        self.stack = stack
        self.index = index
        self.shape = tuple(stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.stack[(self.index, *key)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


def readable(image: Any) -> Any:
    """``image`` wrapped so slices come back as numpy without a cluster round trip."""
    if type(image).__module__.startswith("dask"):
        return _SyncDask(image)
    return image


def plane_of(image: Any, index: int, plane_ndim: int) -> Any:
    """Plane ``index`` of ``image`` (the image itself when it has no plane axis), lazily."""
    if image.ndim == plane_ndim:
        return image
    return _PlaneView(image, index)


# ----------------------------------------------------------------- output store


def open_output_store(
    path: str | os.PathLike,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: tuple[int, ...],
    *,
    axes: list[dict[str, str]] | None = None,
    name: str = "labels",
) -> Any:
    """Create (overwriting) a single-level OME-Zarr (NGFF 0.4) image and return its array.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder to create.
    shape, dtype, chunks
        Of the full-resolution array ``"0"`` (filled with 0 until written).
    axes : list of dict, optional
        NGFF axes (``{"name": "y", "type": "space"}``...); default from the number of
        dimensions (``y, x``; ``z, y, x``; ``c, y, x`` is not guessed).
    name : str
        The multiscale's name.

    Returns
    -------
    zarr.Array
        Writable; write chunk-aligned regions so that concurrent writers never share a chunk.
    """
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = root.create_array(
        "0", shape=tuple(shape), dtype=np.dtype(dtype), chunks=tuple(chunks), fill_value=0
    )
    axes = axes or default_axes(len(shape))
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(shape)}],
                }
            ],
        }
    ]
    return array


def default_axes(ndim: int, *, channels: bool = False) -> list[dict[str, str]]:
    """NGFF 0.4 axes for ``ndim`` dimensions (the last two are ``y, x``).

    With ``channels`` the axis before ``y`` is a channel axis ``c`` and a further
    leading axis is time ``t`` (NGFF orders t, c, z, y, x); otherwise a leading axis is ``z``.
    """
    space = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    leading = {
        (2, False): [],
        (3, False): [{"name": "z", "type": "space"}],
        (3, True): [{"name": "c", "type": "channel"}],
        (4, True): [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}],
    }.get((ndim, channels))
    if leading is None:
        raise InputError(f"cannot name the axes of a {ndim}D result")
    return [*leading, *space]


# -------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Block:
    """A rectangle of whole tiles of the global grid of one plane.

    Attributes
    ----------
    plane, row, col : int
        Plane index and block position in the block grid.
    rows, cols : slice
        Image pixels the block covers.
    tiles : tuple of int
        Indices (in the plane's :class:`~napari_unet.core.tiling.TileGrid`) of its tiles.
    """

    plane: int
    row: int
    col: int
    rows: slice
    cols: slice
    tiles: tuple[int, ...]

    @property
    def key(self) -> str:
        """Name of the block's record, e.g. ``"p0_r1_c2"``."""
        return f"p{self.plane}_r{self.row}_c{self.col}"


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of every plane, sharing one tile grid.

    Attributes
    ----------
    grid : TileGrid
        The global tile grid of one plane.
    planes : int
        Number of planes.
    tiles_per_block : (int, int)
        Tiles per block along rows and columns.
    blocks : tuple of Block
        Plane-major, then row-major.
    """

    grid: TileGrid
    planes: int
    tiles_per_block: tuple[int, int]
    blocks: tuple[Block, ...]

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(h, w)`` of a full block: the output chunk shape."""
        return (
            self.grid.rows.stride * self.tiles_per_block[0],
            self.grid.cols.stride * self.tiles_per_block[1],
        )

    @property
    def seams(self) -> tuple[list[int], list[int]]:
        """Row and column positions of the block borders inside a plane."""
        height, width = self.grid.shape
        bh, bw = self.block_shape
        return list(range(bh, height, bh)), list(range(bw, width, bw))

    def describe(self) -> dict[str, Any]:
        """JSON-able facts that must match for a store to be resumed."""
        return {
            "planes": self.planes,
            "plane_shape": list(self.grid.shape),
            "tile_input": list(self.grid.input_shape),
            "tile_stride": [self.grid.rows.stride, self.grid.cols.stride],
            "tiles_per_block": list(self.tiles_per_block),
        }


def plan_blocks(
    image_shape: tuple[int, ...],
    config: UNetConfig,
    *,
    planes: int = 1,
    tile_size: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> BlockPlan:
    """Group the global overlap-tiles of a plane into blocks of about ``block_size`` pixels.

    Parameters
    ----------
    image_shape : tuple of int
        One plane: ``(H, W)`` or ``(C, H, W)``.
    config : UNetConfig
        The network.
    planes : int
        Number of planes (blocks are listed for each).
    tile_size : int, optional
        Tile input size, as in :func:`~napari_unet.core.tiling.plan_tiles`.
    block_size : int
        Wanted block edge in pixels; rounded to a whole number (>= 1) of tile strides,
        so block origins are multiples of ``2**depth`` and block-local tiling is the
        global tiling.
    """
    if block_size < 1:
        raise InputError(f"block size must be a positive number of pixels, got {block_size}")
    grid = plan_tiles(image_shape, config, tile_size=tile_size)
    per_block = (
        max(1, round(block_size / grid.rows.stride)),
        max(1, round(block_size / grid.cols.stride)),
    )
    count_r = math.ceil(grid.rows.count / per_block[0])
    count_c = math.ceil(grid.cols.count / per_block[1])
    blocks = []
    for plane in range(planes):
        for i in range(count_r):
            tile_rows = range(i * per_block[0], min((i + 1) * per_block[0], grid.rows.count))
            for j in range(count_c):
                tile_cols = range(j * per_block[1], min((j + 1) * per_block[1], grid.cols.count))
                tiles = tuple(r * grid.cols.count + c for r in tile_rows for c in tile_cols)
                first, last = grid.region(tiles[0]), grid.region(tiles[-1])
                blocks.append(
                    Block(
                        plane=plane,
                        row=i,
                        col=j,
                        rows=slice(first[0].start, last[0].stop),
                        cols=slice(first[1].start, last[1].stop),
                        tiles=tiles,
                    )
                )
    return BlockPlan(grid=grid, planes=planes, tiles_per_block=per_block, blocks=tuple(blocks))


# --------------------------------------------------------------- block store


class BlockStore:
    """The output zarr store of a block-wise run: result array, block records, scratch.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def records(self) -> Path:
        """Folder of the per-block JSON records."""
        return self.path / WORK_GROUP

    def create(self, shape: tuple[int, ...], dtype: Any, chunks: tuple[int, ...], run: dict):
        """Create a fresh store (overwriting ``path``) for ``run``; return the result array."""
        import zarr

        channels = run["output"] == "probabilities"
        array = open_output_store(
            self.path,
            shape,
            dtype,
            chunks,
            axes=default_axes(len(shape), channels=channels),
            name=run["output"],
        )
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        work = root.create_group(WORK_GROUP)
        if run["output"] == "labels":
            work.create_array("raw", shape=shape, dtype="int32", chunks=chunks, fill_value=0)
        root.attrs["napari_unet"] = {**run, "complete": False}
        return array

    def run_record(self) -> dict[str, Any] | None:
        """The run record of an existing store, or ``None`` when there is none."""
        import zarr

        if not self.path.exists():
            return None
        try:
            root = zarr.open_group(str(self.path), mode="r")
        except Exception:  # not a zarr group: nothing to resume
            return None
        return dict(root.attrs).get("napari_unet")

    def set_complete(self, complete: bool) -> None:
        """Record whether every step (blocks, label merge) has finished."""
        import zarr

        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        root.attrs["napari_unet"] = {**dict(root.attrs)["napari_unet"], "complete": complete}

    def result(self, mode: str = "r+") -> Any:
        """The result array ``"0"``."""
        import zarr

        return zarr.open_array(str(self.path / "0"), mode=mode, zarr_format=2)

    def raw(self, mode: str = "r+") -> Any:
        """Scratch array of block-local labels (labels runs only)."""
        import zarr

        return zarr.open_array(str(self.records / "raw"), mode=mode, zarr_format=2)

    def done(self) -> dict[str, dict[str, Any]]:
        """Records of the finished blocks, by block key."""
        if not self.records.is_dir():
            return {}
        return {
            path.stem: json.loads(path.read_text()) for path in sorted(self.records.glob("*.json"))
        }

    def mark_done(self, block: Block, record: dict[str, Any]) -> None:
        """Write ``block``'s record atomically (after its data), which marks it finished."""
        target = self.records / f"{block.key}.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(record, separators=(",", ":")))
        os.replace(partial, target)


def prepare_store(
    path: str | os.PathLike,
    plan: BlockPlan,
    run: dict[str, Any],
    result_shape: tuple[int, ...],
    *,
    resume: bool,
) -> BlockStore:
    """Create the store for ``run``, or with ``resume`` reopen a matching one.

    Raises
    ------
    InputError
        When resuming a store written for a different image, model or settings.
    """
    store = BlockStore(path)
    existing = store.run_record() if resume else None
    if existing is not None:
        previous = {key: value for key, value in existing.items() if key != "complete"}
        if previous != run:
            changed = sorted(k for k in set(run) | set(previous) if run.get(k) != previous.get(k))
            raise InputError(
                f"cannot resume {path}: it was written with different {', '.join(changed)}; "
                "rerun without --resume to start again"
            )
        return store
    channels = result_shape[-3] if run["output"] == "probabilities" else None
    chunks = (1,) * (len(result_shape) - 2 - (channels is not None))
    if channels is not None:
        chunks += (channels,)
    store.create(result_shape, _OUT_DTYPES[run["output"]], (*chunks, *plan.block_shape), run)
    return store


def run_record(model: ModelBundle | UNet, plan: BlockPlan, options: Any, stats: list) -> dict:
    """What a store records about its run, to refuse resuming with other settings."""
    return {
        "format": STORE_FORMAT,
        "model": getattr(model, "name", type(model).__name__),
        "config": model.config.to_dict(),
        "output": options.output,
        "threshold": options.threshold,
        "min_size": options.min_size,
        "stats": stats,
        **plan.describe(),
    }


def check_options(options: Any) -> None:
    """Reject options block-wise segmentation cannot honour exactly."""
    if options.output == "labels" and options.split_touching:
        raise InputError(
            "splitting touching objects (watershed) needs whole planes and is not available "
            "for block-wise (large image) segmentation; turn it off (--no-split-touching)"
        )
    if options.output == "labels" and options.fill_boundaries:
        raise InputError(
            "filling the boundaries between objects needs whole planes and is not available "
            "for block-wise (large image) segmentation; turn it off (--no-fill-boundaries)"
        )
    if options.output == "labels" and getattr(options, "merge_boundaries", 0.0) > 0:
        raise InputError(
            "merging cells across weak boundaries needs whole planes and is not available "
            "for block-wise (large image) segmentation; turn it off (--merge-boundaries 0)"
        )


# -------------------------------------------------------------- one block


def iter_block(
    image: Any,
    predictor: Any,
    plan: BlockPlan,
    block: Block,
    stats: dict[str, float],
    options: Any,
    store: BlockStore,
    *,
    has_plane_axis: bool,
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
    has_plane_axis : bool
        Whether the result array has a leading plane axis.
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
    for first in range(0, len(block.tiles), options.batch_size):
        indices = block.tiles[first : first + options.batch_size]
        batch = np.stack([_read_tile(image, grid, index, stats) for index in indices])
        predicted = np.asarray(predictor(batch))
        for b, index in enumerate(indices):
            kept_rows, kept_cols = grid.kept_in_output(index)
            probabilities = np.ascontiguousarray(predicted[b, :, kept_rows, kept_cols], np.float32)
            data = _tile_result(probabilities, options)
            region = grid.region(index)
            local = (
                slice(region[0].start - block.rows.start, region[0].stop - block.rows.start),
                slice(region[1].start - block.cols.start, region[1].stop - block.cols.start),
            )
            result[(..., *local)] = data
            yield TileDone(block.plane, index, grid.total, region, data)
    record: dict[str, Any] = {"rows": [block.rows.start, block.rows.stop]}
    target = (block.plane,) if has_plane_axis else ()
    target += (slice(None),) * (result.ndim - 2) + (block.rows, block.cols)
    if options.output == "labels":
        labels = instance_labels(result)
        record.update(_label_record(labels, result, block, grid.shape[1]))
        store.raw()[target] = labels
        result = labels
    store.result()[target] = result
    store.mark_done(block, record)
    return record


def _read_tile(image: Any, grid: TileGrid, index: int, stats: dict[str, float]) -> np.ndarray:
    rows, cols = grid.read_window(index)
    tile = normalise.apply(read_region(image, rows, cols), stats)
    return tile[np.newaxis] if tile.ndim == 2 else tile


def _tile_result(probabilities: np.ndarray, options: Any) -> np.ndarray:
    if options.output == "probabilities":
        return probabilities
    return semantic_mask(probabilities, threshold=options.threshold)


def _label_record(
    labels: np.ndarray, mask: np.ndarray, block: Block, plane_width: int
) -> dict[str, Any]:
    """Per local id: class, pixel count, first pixel (global raster index); and the edges.

    The first pixel in raster order decides the id order of
    :func:`~napari_unet.core.postprocess.instance_labels` (per class), so the merged
    labels can be numbered exactly as a whole-plane labelling would.
    """
    from scipy import ndimage

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


# ----------------------------------------------------------- label merging


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
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

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
    raw, result = store.raw(mode="r"), store.result()
    has_plane_axis = len(result.shape) == 3
    for plane in range(plan.planes):
        offsets, table = label_table(plan, records, plane, min_size=min_size)
        blocks = [b for b in plan.blocks if b.plane == plane]
        for count, block in enumerate(blocks, start=1):
            target = ((plane,) if has_plane_axis else ()) + (block.rows, block.cols)
            local = np.asarray(raw[target])
            shifted = np.where(local > 0, local.astype(np.int64) + offsets[block.key], 0)
            result[target] = table[shifted]
            yield Progress(count, len(blocks), f"merging labels of plane {plane}")


# --------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class Prepared:
    """Everything a block-wise run needs, computed once in the calling process."""

    stack: Any
    plane_ndim: int
    plan: BlockPlan
    stats: list[dict[str, float]]
    store: BlockStore
    has_plane_axis: bool


def prepare(
    model: ModelBundle | UNet,
    image: Any,
    path: str | os.PathLike,
    options: Any,
    *,
    block_size: int,
    resume: bool,
) -> Prepared:
    """Check the image and options, plan blocks, compute global stats, open the store."""
    from napari_unet.core.segment import _normalisation_of

    check_options(options)
    config = model.config
    image = readable(image)
    shape = tuple(int(s) for s in image.shape)
    as_planes(_ShapeOnly(shape, image.dtype), in_channels=config.in_channels)  # checks only
    plane_ndim = 2 if config.in_channels == 1 else 3
    planes = 1 if len(shape) == plane_ndim else shape[0]
    plane_shape = shape[-plane_ndim:]
    plan = plan_blocks(
        plane_shape, config, planes=planes, tile_size=options.tile_size, block_size=block_size
    )
    spec = _normalisation_of(model)
    # Normalisation is global: each block of a plane uses the whole plane's stats.
    stats = [normalise.compute_stats(plane_of(image, p, plane_ndim), spec) for p in range(planes)]
    height, width = plane_shape[-2:]
    result_shape: tuple[int, ...] = (height, width)
    if options.output == "probabilities":
        result_shape = (config.num_classes, *result_shape)
    has_plane_axis = planes > 1 or len(shape) > plane_ndim
    if has_plane_axis:
        result_shape = (planes, *result_shape)
    run = run_record(model, plan, options, stats)
    store = prepare_store(path, plan, run, result_shape, resume=resume)
    return Prepared(image, plane_ndim, plan, stats, store, has_plane_axis)


class _ShapeOnly:
    """Stands in for an image in :func:`as_planes` checks without touching its data."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)

    def __getitem__(self, key: Any) -> _ShapeOnly:
        return self

    def astype(self, dtype: Any) -> _ShapeOnly:
        return _ShapeOnly(self.shape, dtype)


def segment_blocks_iter(
    model: ModelBundle | UNet,
    image: Any,
    path: str | os.PathLike,
    *,
    options: Any | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    resume: bool = False,
    predictor: Any | None = None,
) -> Generator[TileDone | Progress, None, Any]:
    """Segment a large image block by block into a zarr store, in this process.

    Parameters
    ----------
    model : ModelBundle or UNet
    image : (H, W) or (N, H, W) array-like
        numpy, zarr, dask (use :func:`full_resolution` for multiscale data); read one
        tile window at a time, never whole.
    path : path-like
        The output ``.zarr`` (OME-Zarr, see the module docstring).
    options : SegmentOptions, optional
        ``split_touching`` is not available block-wise.
    block_size : int
        Block (and chunk) edge in pixels, rounded to whole tiles.
    resume : bool
        Continue a store written by an interrupted run with the same settings: its
        finished blocks are kept and skipped.
    predictor : callable, optional
        Prebuilt predictor for ``model``.

    Yields
    ------
    TileDone
        Per tile (``index``/``total`` in the plane's tile grid).
    Progress
        Per finished block (message ``"blocks"``), then per relabelled block (labels only).

    Returns
    -------
    zarr.Array
        The result array ``"0"`` of the store, ``(H, W)`` or with plane/class axes.
    """
    from napari_unet.core.segment import SegmentOptions, get_predictor

    options = options or SegmentOptions()
    prepared = prepare(model, image, path, options, block_size=block_size, resume=resume)
    predictor = predictor or get_predictor(model, options.device)
    plan, store = prepared.plan, prepared.store
    finished = set(store.done())
    pending = [block for block in plan.blocks if block.key not in finished]
    done = len(plan.blocks) - len(pending)
    for block in pending:
        plane = plane_of(prepared.stack, block.plane, prepared.plane_ndim)
        yield from iter_block(
            plane,
            predictor,
            plan,
            block,
            prepared.stats[block.plane],
            options,
            store,
            has_plane_axis=prepared.has_plane_axis,
            num_classes=model.config.num_classes,
        )
        done += 1
        yield Progress(done, len(plan.blocks), "blocks")
    yield from finish(store, plan, options)
    return store.result()


def finish(store: BlockStore, plan: BlockPlan, options: Any) -> Iterator[Progress]:
    """The steps after all blocks: merge labels, mark the store complete, drop the scratch."""
    record = store.run_record() or {}
    if not record.get("complete"):
        if options.output == "labels":
            yield from finish_labels(store, plan, min_size=options.min_size)
        store.set_complete(True)


def segment_to_zarr(model: ModelBundle | UNet, image: Any, path: str | os.PathLike, **kwargs):
    """Drain :func:`segment_blocks_iter`; return the result ``zarr.Array``."""
    generator = segment_blocks_iter(model, image, path, **kwargs)
    return drain(generator)


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Block",
    "BlockPlan",
    "BlockStore",
    "default_axes",
    "finish_labels",
    "full_resolution",
    "is_zarr_path",
    "label_table",
    "open_image",
    "open_output_store",
    "plan_blocks",
    "segment_blocks_iter",
    "segment_to_zarr",
]

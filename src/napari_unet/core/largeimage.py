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

At another scale (a pixel size or object diameter that differs from the model's, see
:mod:`napari_unet.core.scaling`) the blocks tile a lazy
:class:`~napari_unet.core.resample.Resampled` view of the image at the model's scale and
are written into a model-grid scratch array (``_napari_unet/model``); once the labels
are merged there, :func:`map_back` fills the result at the image's grid chunk by chunk.
The run record's ``scale`` says which factor was used and why; a store is resumed only
at the same factor.

Store layout (OME-NGFF 0.4, zarr format 2)::

    labels.zarr/            group; attrs: multiscales (one level), napari_unet (run record,
                            written with the group: it marks the store as ours)
      0/                    the result, chunks = blocks
      _napari_unet/         group: block records p<P>_r<I>_c<J>.json, raw/ (labels scratch),
                            model/ (the blocks' result at the model's scale, when resampled)

Public API
----------
- :func:`full_resolution` ``(data, *, multiscale=None) -> array-like``
- :func:`open_image` ``(path) -> array-like`` (lazy for zarr/OME-Zarr/TIFF)
- :func:`is_zarr_path` ``(path) -> bool``
- :func:`open_output_store` ``(path, shape, dtype, chunks, *, axes=None, overwrite=False)
  -> zarr.Array``
- :func:`check_store_output` ``(path, *, inputs=(), overwrite=False, resume=False) -> bool``
- :func:`plan_blocks` ``(image_shape, config, *, tile_size=None, block_size=...) -> BlockPlan``
- :func:`segment_blocks_iter` ``(model, image, path, *, options=None, block_size=...,
  resume=False, overwrite=False, inputs=(), predictor=None)``: generator of events,
  returns the result ``zarr.Array``.
- :func:`segment_to_zarr` drains it.
- :func:`map_back` ``(store, output)``: a resampled run's result onto the image's grid.

Your data is safe
-----------------
A store output never replaces what is not a napari-unet result: before anything is
read or computed, :func:`check_store_output` refuses an output that is, contains or
lies inside an input; a file or a folder that is not a napari-unet store (every store
we create carries the ``"napari_unet"`` attribute from its first write); a store of
ours holding other files; and an existing store unless ``overwrite`` (replace it) or
``resume`` (continue it) is given. ``resume`` on a damaged store says what is damaged
instead of starting again.

zarr (and dask, when given dask arrays) are imported lazily: they are optional.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core import normalise
from napari_unet.core.calibration import Calibration, ngff_transformations
from napari_unet.core.errors import InputError, OutputError, UNetError
from napari_unet.core.events import Progress, ScaleChosen, TileDone, drain
from napari_unet.core.io import (
    READ_SUFFIXES,
    as_planes,
    is_zarr_path,
    plane_position,
    read_image,
)
from napari_unet.core.io import ZARR_METADATA as _ZARR_METADATA
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.postprocess import instance_labels, semantic_mask
from napari_unet.core.resample import Resampled, tile_to_input_grid, to_input_grid
from napari_unet.core.safety import STORE_MARK, check_writable, is_our_store, overlaps
from napari_unet.core.scaling import ScaleChoice, check_resampled_size
from napari_unet.core.tiling import TileGrid, plan_tiles, read_region

#: What to give instead, appended to every "not a usable zarr image" message.
_ZARR_HINT = "give an OME-Zarr image or a zarr array"
#: Default block edge in pixels (rounded to whole tiles); one block = one output chunk.
DEFAULT_BLOCK_SIZE = 2048
#: Version of the store layout written in the run record.
STORE_FORMAT = 1
#: Name of the group holding block records and the labels scratch array.
WORK_GROUP = "_napari_unet"
#: Side (model pixels) of the wider central crop ``auto`` measures when the first crop
#: holds too few objects (in memory the whole plane is measured instead).
AUTO_FALLBACK_CROP = 2048

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


#: Files that make a folder a zarr store (format 2 group, format 2 array, format 3).
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
        In one line, for a missing path, an unknown format, a folder that is not a zarr
        store (or is empty), damaged zarr metadata, a zarr group without an image array,
        malformed OME-Zarr multiscales, and an empty, non-TIFF or truncated TIFF.
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

    _check_zarr_folder(path)
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:  # zarr raises many types for damaged metadata
        raise InputError(
            f"cannot open {path} as zarr: its metadata is damaged ({_one_line(error)}); "
            f"{_ZARR_HINT}"
        ) from error
    if isinstance(node, zarr.Array):
        return node
    level = _level_name(path, dict(node.attrs))
    if level is None:
        try:
            names = sorted(name for name, _ in node.arrays())
        except Exception as error:  # a member with damaged metadata
            raise InputError(
                f"cannot open {path} as zarr: an array in it is damaged ({_one_line(error)})"
            ) from error
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
            f"{path}: its multiscales metadata names a missing level {level!r}; fix the "
            f"metadata or give the path of one of its arrays"
        ) from None
    except Exception as error:  # damaged metadata of that level
        raise InputError(
            f"cannot open {path / level} as zarr: its metadata is damaged ({_one_line(error)})"
        ) from error
    if not isinstance(array, zarr.Array):
        raise InputError(f"{path / level} is a zarr group, not an image array; {_ZARR_HINT}")
    return array


def _check_zarr_folder(path: Path) -> None:
    """Refuse, before zarr sees it, a ``.zarr`` path that cannot hold a zarr store."""
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a zarr store (a zarr store is a folder)")
    if not any(path.iterdir()):
        raise InputError(f"{path} is an empty folder, not a zarr store; {_ZARR_HINT}")
    if not any((path / name).is_file() for name in _ZARR_METADATA):
        raise InputError(
            f"{path} is not a zarr store (it has no {', '.join(_ZARR_METADATA)}); {_ZARR_HINT}"
        )


def _level_name(path: Path, attrs: dict[str, Any]) -> str | None:
    """The full-resolution dataset of an OME-Zarr group, ``None`` for a plain group.

    Raises
    ------
    InputError
        When the group has OME-Zarr multiscales metadata that names no usable level.
    """
    if "multiscales" not in attrs:
        ome = attrs.get("ome", {})  # NGFF 0.5 nests the metadata
        if not isinstance(ome, dict):
            raise _malformed(path, "'ome' is not an object")
        if "multiscales" not in ome:
            return None  # a plain zarr group
    level = _first_level_name(attrs)
    if level is None:
        raise _malformed(path, "no dataset path for level 0")
    if not level or any(part in ("", ".", "..") for part in level.split("/")):
        raise _malformed(path, f"invalid dataset path {level!r}")
    return level


def _malformed(path: Path, why: str) -> InputError:
    return InputError(
        f"{path}: its OME-Zarr multiscales metadata is malformed ({why}); fix it or give the "
        f"path of one of its arrays (e.g. {path / '0'})"
    )


def _first_level_name(attrs: dict[str, Any]) -> str | None:
    """Path of the full-resolution dataset in OME-NGFF 0.4 (top-level) or 0.5 (``ome``)."""
    ome = attrs.get("ome")
    multiscales = attrs.get("multiscales") or (
        ome.get("multiscales") if isinstance(ome, dict) else None
    )
    try:
        level = multiscales[0]["datasets"][0]["path"]
    except (TypeError, LookupError):
        return None
    return level if isinstance(level, str) else None


def _open_tiff_lazily(path: Path) -> Any:
    import tifffile
    import zarr

    if path.stat().st_size == 0:
        raise InputError(f"cannot read {path.name}: the file is empty (0 bytes)")
    try:
        with _quiet_logger("tifffile"), tifffile.TiffFile(path) as tiff:
            _check_tiff_data(tiff, path)
            store = tiff.aszarr()
        node = zarr.open(store, mode="r")
        if not isinstance(node, zarr.Array):  # a pyramid: level 0 is the full resolution
            node = node[_first_level_name(dict(node.attrs)) or "0"]
    except (UNetError, MemoryError):
        raise
    except Exception as error:  # tifffile and zarr raise many types for broken files
        raise InputError(f"cannot read {path.name} as TIFF: {_one_line(error)}") from error
    return node


def _check_tiff_data(tiff: Any, path: Path) -> None:
    """Refuse a TIFF whose pixel data lies (partly) beyond its end: truncated, or a header
    claiming more pixels than the file holds. Reads offsets only, never pixels."""
    if not tiff.series:
        raise InputError(
            f"cannot read {path.name} as TIFF: it holds no image (the file may be truncated)"
        )
    series, size = tiff.series[0], tiff.filehandle.size
    if series.dataoffset is not None:  # contiguous, uncompressed
        end = series.dataoffset + series.nbytes
    else:
        end, claimed, stored = 0, 0, 0
        for page in series.pages:
            if page is None:
                continue
            offsets, counts = page.dataoffsets, page.databytecounts
            end = max([end, *(o + c for o, c in zip(offsets, counts, strict=False) if c)])
            if page.keyframe.compression == 1 and all(counts):  # uncompressed, not sparse
                claimed, stored = claimed + page.keyframe.nbytes, stored + sum(counts)
        if stored < claimed:
            raise InputError(
                f"cannot read {path.name} as TIFF: its header claims {claimed} bytes of pixels "
                f"but it stores {stored}; the file is damaged or truncated"
            )
    if end > size:
        raise InputError(
            f"cannot read {path.name} as TIFF: its pixels need {end} bytes but the file has "
            f"{size} (it is truncated, or its header is damaged); copy it again"
        )


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's warnings while its errors become one-line InputErrors."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(error: BaseException, limit: int = 200) -> str:
    """``error``'s message on one line (whitespace collapsed), at most ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


class _GuardedReads:
    """An image whose failing reads (a damaged chunk, a truncated strip) raise one
    :class:`~napari_unet.core.errors.InputError` naming the source, not a reader's traceback.
    """

    def __init__(self, array: Any, name: str) -> None:
        self.array, self.name = array, name
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return np.asarray(self.array[key])
        except (UNetError, MemoryError):
            raise
        except Exception as error:  # zarr, tifffile, dask, codecs: many types
            raise InputError(
                f"cannot read the pixels of {self.name} ({_one_line(error)}); the file may be "
                "damaged or truncated"
            ) from error

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


def readable(image: Any) -> Any:
    """``image`` wrapped so slices come back as numpy without a cluster round trip, and a
    failing read is one :class:`~napari_unet.core.errors.InputError`."""
    if isinstance(image, (np.ndarray, _GuardedReads)):
        return image
    sources = source_paths(image)
    name = str(sources[0]) if sources else "the input image"
    if type(image).__module__.startswith("dask"):
        image = _SyncDask(image)
    return _GuardedReads(image, name)


def source_paths(image: Any) -> list[Path]:
    """The store or file ``image`` reads from, when it can tell; else ``[]``.

    Knows zarr arrays opened from a folder (the store's root) and TIFFs opened by
    :func:`open_image`; dask arrays and in-memory data give ``[]`` (pass the source
    explicitly).
    """
    store = getattr(getattr(image, "store_path", None), "store", None)
    root = getattr(store, "root", None)  # zarr.storage.LocalStore
    if root is not None:
        return [Path(root)]
    try:  # tifffile's ZarrTiffStore: the series' file (private, so best effort)
        return [Path(store._data[0].parent.filehandle.path)]
    except (AttributeError, LookupError, TypeError):
        return []


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
    overwrite: bool = False,
    transformations: list[dict[str, Any]] | None = None,
) -> Any:
    """Create a single-level OME-Zarr (NGFF 0.4) image, marked as ours, and return its array.

    The store carries the ``"napari_unet"`` attribute from the moment it exists (see
    :func:`~napari_unet.core.safety.is_our_store`), so an interrupted creation can
    still be replaced with ``overwrite``.

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
    overwrite : bool
        Replace an existing napari-unet store at ``path``. Nothing else is ever
        replaced: not a file, a folder that is not our store, or a store of ours
        holding files we did not write.
    transformations : list of dict, optional
        NGFF ``coordinateTransformations`` of the full-resolution level (its physical
        scale, see :func:`~napari_unet.core.calibration.ngff_transformations`); default
        a scale of 1.

    Returns
    -------
    zarr.Array
        Writable; write chunk-aligned regions so that concurrent writers never share a chunk.

    Raises
    ------
    OutputError
        When ``path`` exists and may not be replaced (see ``overwrite``).
    """
    import zarr

    path = Path(path)
    _clear_for_new_store(path, overwrite=overwrite)
    axes = axes or default_axes(len(shape))
    multiscale = {
        "version": "0.4",
        "name": name,
        "axes": axes,
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": transformations
                or [{"type": "scale", "scale": [1.0] * len(shape)}],
            }
        ],
    }
    # The mark is written with the group itself, never after.
    attributes = {STORE_MARK: {"format": STORE_FORMAT, "complete": False}}
    root = zarr.open_group(
        str(path),
        mode="w",
        zarr_format=2,
        attributes={**attributes, "multiscales": [multiscale]},
    )
    return root.create_array(
        "0", shape=tuple(shape), dtype=np.dtype(dtype), chunks=tuple(chunks), fill_value=0
    )


#: Top-level entries of a store napari-unet writes (and files operating systems add to
#: any folder): a store holding anything else holds someone else's files.
_STORE_ENTRIES = frozenset({".zgroup", ".zattrs", "0", WORK_GROUP})
_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _foreign_entries(path: Path) -> list[str]:
    """Names at the top of the store folder ``path`` that napari-unet did not write."""
    return sorted(
        entry.name
        for entry in path.iterdir()
        if entry.name not in _STORE_ENTRIES | _SYSTEM_FILES or entry.is_symlink()
    )


def _recognisably_ours(path: Path) -> bool:
    """Whether the folder ``path`` is a store of ours, even with a damaged run record.

    Marked stores are; an unmarked one only if it has our work group and nothing we
    would not write (a damaged ``.zattrs`` must not make our own result undeletable).
    """
    if is_our_store(path):
        return True
    return (path / WORK_GROUP).is_dir() and not _foreign_entries(path)


def _refuse_replacing(path: Path, *, overwrite: bool) -> None:
    """Raise unless the existing ``path`` is a store of ours that ``overwrite`` may replace."""
    if path.is_symlink() or not path.is_dir():
        raise OutputError(
            f"{path} exists and is not a napari-unet result store (a store is a folder); "
            "it is never replaced: choose another output"
        )
    if not _recognisably_ours(path):
        raise OutputError(
            f"{path} is a folder that is not a napari-unet result store; it is never "
            "deleted: choose another output"
        )
    if not overwrite:
        raise OutputError(
            f"{path} already exists; pass --overwrite or --resume to replace it, or choose "
            "another output"
        )
    foreign = _foreign_entries(path)
    if foreign:
        raise OutputError(
            f"{path} holds files napari-unet did not write ({', '.join(foreign[:3])}); it is "
            "never deleted: move them or choose another output"
        )


def _clear_for_new_store(path: Path, *, overwrite: bool) -> None:
    """Empty an existing store of ours before it is recreated; refuse anything else.

    Everything but ``.zattrs``/``.zgroup`` goes first, so an interrupted clear still
    leaves a folder marked as ours.
    """
    if not (path.exists() or path.is_symlink()):
        return
    _refuse_replacing(path, overwrite=overwrite)
    for entry in path.iterdir():
        if entry.name in (".zattrs", ".zgroup"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_store_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> bool:
    """Refuse, before any work, a store output that would lose data or cannot be written.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` store to write.
    inputs : iterable of path-like
        Files and stores the run reads: the store may not be, contain or lie in one.
    overwrite : bool
        Whether an existing store of ours may be replaced.
    resume : bool
        Whether an existing store of ours is continued.

    Returns
    -------
    bool
        Whether an existing store is to be resumed (``False``: a new store is created).

    Raises
    ------
    OutputError
        In one line: an input would be overwritten; ``path`` is a file, a folder that is
        not a napari-unet store, or holds other files; it exists and neither
        ``overwrite`` nor ``resume`` is given; a store to resume is damaged; or the
        place cannot be written.
    """
    path = Path(path)
    inputs = [Path(source) for source in inputs]
    for source in inputs:
        if overlaps(source, path):
            raise OutputError(
                f"the output {path} would overwrite the input {source}; choose another output"
            )
    exists = path.exists() or path.is_symlink()
    if exists and resume:
        BlockStore(path).check_record()
        for folder in (path, path / "0", path / WORK_GROUP):
            if folder.is_dir():
                check_writable(folder)
        return True
    if exists:
        _refuse_replacing(path, overwrite=overwrite)
    check_writable(path.parent)
    return False


def default_axes(ndim: int, *, channels: bool = False) -> list[dict[str, str]]:
    """NGFF 0.4 axes for ``ndim`` dimensions (the last two are ``y, x``).

    With ``channels`` the axis before ``y`` is a channel axis ``c`` and a further
    leading axis is time ``t`` (NGFF orders t, c, z, y, x); otherwise a leading axis is ``z``.
    Two leading axes are ``t, z``; before a channel axis the ``z`` gets no type (NGFF
    wants channels before space axes, which a ``(T, Z, K, Y, X)`` result cannot follow).
    """
    space = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    time, channel = {"name": "t", "type": "time"}, {"name": "c", "type": "channel"}
    leading = {
        (2, False): [],
        (3, False): [{"name": "z", "type": "space"}],
        (4, False): [time, {"name": "z", "type": "space"}],
        (3, True): [channel],
        (4, True): [time, channel],
        (5, True): [time, {"name": "z"}, channel],
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
    model_grid : bool
        Whether the run segments at the model's scale (the image resampled): blocks are
        then written into a model-grid scratch array (:meth:`target`) and mapped back
        into the result by :func:`map_back`.
    """

    def __init__(self, path: str | os.PathLike, *, model_grid: bool = False) -> None:
        self.path = Path(path)
        self.model_grid = model_grid

    @property
    def records(self) -> Path:
        """Folder of the per-block JSON records."""
        return self.path / WORK_GROUP

    def create(
        self,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        run: dict,
        *,
        overwrite: bool = False,
        scratch: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
        calibration: Calibration | None = None,
    ):
        """Create a fresh store for ``run`` (replacing a store of ours only with
        ``overwrite``, see :func:`open_output_store`); return the result array.

        ``scratch`` is ``(shape, chunks)`` of the model-grid arrays of a resampled run
        (the blocks' result, and the labels scratch); by default they are the result's.
        ``calibration`` (the result's) gives the multiscales' axes, units and scale.
        """
        import zarr

        channels = run["output"] == "probabilities"
        axes, transformations = default_axes(len(shape), channels=channels), None
        if calibration is not None:
            axes, transformations = ngff_transformations(calibration, len(shape))
        array = open_output_store(
            self.path,
            shape,
            dtype,
            chunks,
            axes=axes,
            name=run["output"],
            overwrite=overwrite,
            transformations=transformations,
        )
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        work = root.create_group(WORK_GROUP)
        scratch_shape, scratch_chunks = scratch if scratch is not None else (shape, chunks)
        if scratch is not None:
            work.create_array(
                "model", shape=scratch_shape, dtype=dtype, chunks=scratch_chunks, fill_value=0
            )
        if run["output"] == "labels":
            work.create_array(
                "raw", shape=scratch_shape, dtype="int32", chunks=scratch_chunks, fill_value=0
            )
        root.attrs[STORE_MARK] = {**run, "complete": False}
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
        return dict(root.attrs).get(STORE_MARK)

    def check_record(self) -> dict[str, Any]:
        """The run record of a store to resume, checked for damage (no image or plan needed).

        Returns
        -------
        dict
            The record (``format``, ``output``... and ``complete``).

        Raises
        ------
        OutputError
            ``"cannot resume PATH: ...; <what to do>"`` when ``path`` is not a folder,
            not a napari-unet store, or its ``.zattrs`` or ``.zgroup`` is missing or damaged.
        """
        path = self.path
        if path.is_symlink() or not path.is_dir():
            raise OutputError(
                f"cannot resume {path}: it is a file (or a link), not a napari-unet result store; "
                "choose another output"
            )
        if not _recognisably_ours(path):
            raise OutputError(
                f"cannot resume {path}: it is not a napari-unet result store (it is never "
                "deleted); choose another output"
            )
        try:
            attrs = json.loads((path / ".zattrs").read_text())
        except FileNotFoundError:
            raise _damaged(path, "its run record (.zattrs) is missing") from None
        except (OSError, ValueError) as error:
            raise _damaged(
                path, f"its run record (.zattrs) is damaged (not valid JSON: {error})"
            ) from None
        record = attrs.get(STORE_MARK) if isinstance(attrs, dict) else None
        if not isinstance(record, dict):
            raise _damaged(path, "its run record (.zattrs) has no napari-unet entry")
        missing = [key for key in _RECORD_KEYS if key not in record]
        if missing:
            raise _damaged(path, f"its run record is damaged (no {', '.join(missing[:3])})")
        if record["format"] != STORE_FORMAT:
            raise _damaged(
                path, f"it was written by another napari-unet version (format {record['format']})"
            )
        try:
            json.loads((path / ".zgroup").read_text())
        except (OSError, ValueError):
            raise _damaged(path, "its zarr metadata (.zgroup) is missing or damaged") from None
        return record

    def check_resumable(
        self,
        plan: BlockPlan,
        run: dict[str, Any],
        result_shape: tuple[int, ...],
        scratch_shape: tuple[int, ...] | None = None,
    ) -> None:
        """Check a store passed :meth:`check_record` can continue ``run``, before any work.

        Parameters
        ----------
        plan : BlockPlan
        run : dict
            This run's record; ``stats`` (known only after reading the image) is
            compared later, by :func:`prepare_store`.
        result_shape : tuple of int
            Of the result array ``"0"``.
        scratch_shape : tuple of int, optional
            Of the model-grid arrays (the labels scratch, and the blocks' result of a
            resampled run); default ``result_shape``.

        Raises
        ------
        InputError
            When the store was written with other settings (a different run, not damage).
        OutputError
            When its result array, labels scratch or a block record is missing or damaged.
        """
        import zarr

        record = self.check_record()
        _refuse_other_settings(self.path, record, run, ignore=("stats",))
        scratch_shape = result_shape if scratch_shape is None else scratch_shape
        output = run["output"]
        try:
            result = zarr.open_array(str(self.path / "0"), mode="r", zarr_format=2)
        except Exception:  # missing or damaged .zarray: zarr raises many types
            raise _damaged(self.path, "its result array (0) is missing or damaged") from None
        if result.shape != result_shape or result.dtype != np.dtype(_OUT_DTYPES[output]):
            raise _damaged(
                self.path,
                f"its result array (0) is {result.shape} {result.dtype}, not "
                f"{result_shape} {_OUT_DTYPES[output]}",
            )
        scratches = ["raw"] if output == "labels" else []
        scratches += ["model"] if self.model_grid else []
        for name in scratches if not record["complete"] else ():
            try:
                scratch = zarr.open_array(str(self.records / name), mode="r", zarr_format=2)
            except Exception:
                scratch = None
            if scratch is None or scratch.shape != scratch_shape:
                what = "labels scratch" if name == "raw" else "model-scale scratch"
                raise _damaged(
                    self.path,
                    f"its {what} ({WORK_GROUP}/{name}) is gone while the run is unfinished",
                )
        blocks = {block.key: block for block in plan.blocks}
        done = set()
        for path in sorted(self.records.glob("*.json")) if self.records.is_dir() else ():
            try:
                block_record = json.loads(path.read_text())
            except (OSError, ValueError):
                raise _damaged(
                    self.path, f"its block record {path.name} is damaged (not JSON)"
                ) from None
            why = _block_record_problem(blocks.get(path.stem), block_record, output)
            if why:
                raise _damaged(self.path, f"its block record {path.name} is damaged ({why})")
            done.add(path.stem)
        if record["complete"] and len(done) < len(blocks):
            raise _damaged(
                self.path,
                f"it is marked complete but {len(blocks) - len(done)} block records are missing",
            )

    def set_complete(self, complete: bool) -> None:
        """Record whether every step (blocks, label merge) has finished."""
        import zarr

        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        root.attrs[STORE_MARK] = {**dict(root.attrs)[STORE_MARK], "complete": complete}

    def result(self, mode: str = "r+") -> Any:
        """The result array ``"0"``."""
        import zarr

        return zarr.open_array(str(self.path / "0"), mode=mode, zarr_format=2)

    def raw(self, mode: str = "r+") -> Any:
        """Scratch array of block-local labels (labels runs only)."""
        import zarr

        return zarr.open_array(str(self.records / "raw"), mode=mode, zarr_format=2)

    def target(self, mode: str = "r+") -> Any:
        """The array blocks are written into: the result, or with ``model_grid`` the
        model-grid scratch array that :func:`map_back` maps onto the result."""
        import zarr

        if not self.model_grid:
            return self.result(mode)
        return zarr.open_array(str(self.records / "model"), mode=mode, zarr_format=2)

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
    overwrite: bool = False,
    scratch_shape: tuple[int, ...] | None = None,
    calibration: Calibration | None = None,
) -> BlockStore:
    """Create the store for ``run``, or with ``resume`` reopen a matching one.

    Call :func:`check_store_output` (and, to resume, :meth:`BlockStore.check_resumable`)
    first: this only compares the records and creates. ``scratch_shape`` is the shape of
    the model-grid result of a resampled run (``run["scale"]`` holds its factors): blocks
    go into a scratch array of that shape, the result has ``result_shape``.

    Raises
    ------
    InputError
        When resuming a store written for a different image, model or settings.
    OutputError
        When creating over something :func:`open_output_store` may not replace.
    """
    store = BlockStore(path, model_grid=scratch_shape is not None)
    existing = store.run_record() if resume else None
    if existing is not None:
        _refuse_other_settings(store.path, existing, run)
        return store
    channels = result_shape[-3] if run["output"] == "probabilities" else None
    chunks = (1,) * (len(result_shape) - 2 - (channels is not None))
    if channels is not None:
        chunks += (channels,)
    scratch = None
    block_shape = plan.block_shape
    if scratch_shape is not None:
        scratch = (scratch_shape, (*chunks, *block_shape))
        # the result is mapped back chunk by chunk: chunks of a block's size bound memory
        block_shape = tuple(min(e, s) for e, s in zip(block_shape, result_shape[-2:], strict=True))
    store.create(
        result_shape,
        _OUT_DTYPES[run["output"]],
        (*chunks, *block_shape),
        run,
        overwrite=overwrite,
        scratch=scratch,
        calibration=calibration,
    )
    return store


#: Keys every run record has (see :func:`run_record`).
_RECORD_KEYS = (
    "format",
    "model",
    "config",
    "output",
    "threshold",
    "min_size",
    "stats",
    "planes",
    "plane_shape",
    "tile_input",
    "tile_stride",
    "tiles_per_block",
    "complete",
)
#: How the run record's keys are named in "written with a different ..." messages.
_SETTING_NAMES = {
    "config": "network",
    "stats": "image (its intensities differ)",
    "planes": "number of planes",
    "plane_shape": "image size",
    "tile_input": "tile size",
    "tile_stride": "tile size",
    "tiles_per_block": "block size",
    "format": "store format",
}


def _refuse_other_settings(
    path: Path, record: dict[str, Any], run: dict[str, Any], *, ignore: tuple[str, ...] = ()
) -> None:
    """Raise when the store's ``record`` was written by another run than ``run``."""
    _refuse_other_scale(path, record, run)
    skip = {"complete", "scale", *ignore}
    keys = (set(run) | set(record)) - skip
    changed = sorted({_SETTING_NAMES.get(k, k) for k in keys if run.get(k) != record.get(k)})
    if changed:
        raise InputError(
            f"cannot resume {path}: it was written with a different {', '.join(changed)}; "
            "rerun with --overwrite instead of --resume to start again"
        )


def _refuse_other_scale(path: Path, record: dict[str, Any], run: dict[str, Any]) -> None:
    """Raise, naming both, when the store was written at another scale than ``run``'s.

    Stores written before scales existed were written at the image's own scale.
    """
    theirs = record.get("scale") if isinstance(record.get("scale"), dict) else {}
    ours = run.get("scale") or {}
    factor = [float(f) for f in theirs.get("factor", [1.0, 1.0])]
    wanted = [float(f) for f in ours.get("factor", [1.0, 1.0])]
    if factor != wanted:
        why = f" ({theirs['reason']})" if theirs.get("reason") else ""
        raise InputError(
            f"cannot resume {path}: it was written at scale {_times(factor)}{why}, this run "
            f"is at {_times(wanted)} ({ours.get('reason', 'not resampled')}); give the same "
            "--pixel-size / --diameter, or rerun with --overwrite instead of --resume"
        )


def _times(factors: list[float]) -> str:
    fy, fx = factors
    return f"x{fy:.4g}" if fy == fx else f"x{fy:.4g} (y) x{fx:.4g} (x)"


def _damaged(path: Path, what: str) -> OutputError:
    return OutputError(f"cannot resume {path}: {what}; rerun with --overwrite to start again")


def _block_record_problem(block: Block | None, record: Any, output: str) -> str | None:
    """What is wrong with a finished block's record, or ``None`` (cheap shape checks)."""
    if block is None:
        return "no such block in this run"
    if not isinstance(record, dict) or record.get("rows") != [block.rows.start, block.rows.stop]:
        return "wrong rows"
    if output != "labels":
        return None
    count = record.get("count")
    if not isinstance(count, int) or count < 0:
        return "no object count"
    for key in ("classes", "first", "sizes"):
        values = record.get(key)
        if not isinstance(values, list) or len(values) != count:
            return f"{key} does not list {count} objects"
    edges = record.get("edges")
    height, width = block.rows.stop - block.rows.start, block.cols.stop - block.cols.start
    lengths = {"top": width, "bottom": width, "left": height, "right": height}
    if not isinstance(edges, dict) or any(
        not isinstance(edges.get(side), list) or len(edges[side]) != length
        for side, length in lengths.items()
    ):
        return "wrong edges"
    return None


def run_record(
    model: ModelBundle | UNet,
    plan: BlockPlan,
    options: Any,
    stats: list,
    choice: ScaleChoice | None = None,
) -> dict:
    """What a store records about its run, to refuse resuming with other settings.

    ``scale`` records the scale ``choice`` (its factors, and why); a store is resumed only
    at the same factors.
    """
    choice = choice or ScaleChoice(1.0, "none", "not resampled")
    return {
        "scale": choice.record(),
        "format": STORE_FORMAT,
        "model": getattr(model, "name", type(model).__name__),
        "config": model.config.to_dict(),
        "output": options.output,
        "threshold": options.threshold,
        "min_size": options.min_size,
        "stats": stats,
        # as lists: a resumed run compares them with the JSON record
        "channel_axis": getattr(options, "channel_axis", None),
        "channels": None if getattr(options, "channels", None) is None else list(options.channels),
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
    if options.output == "labels" and getattr(options, "link", False):
        raise InputError(
            "linking labels through z needs the whole result in memory and is not available "
            "for block-wise (.zarr) segmentation; write a .tif OUTPUT, or turn it off (--no-link)"
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


# --------------------------------------------------------------- pipeline


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
    options: Any,
    *,
    block_size: int,
    resume: bool,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    predictor: Any | None = None,
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
    from napari_unet.core.segment import _normalisation_of, choose_plane_scale

    check_options(options)
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
    result_shape = _result_shape(options.output, config, leading, input_size)
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
        scratch_shape = _result_shape(options.output, config, leading, model_size)
    if resuming:
        BlockStore(path, model_grid=choice.resamples).check_resumable(
            plan, run_record(model, plan, options, [], choice), result_shape, scratch_shape
        )
    spec = _normalisation_of(model)
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
        result_shape,
        resume=resuming,
        overwrite=overwrite,
        scratch_shape=scratch_shape,
        calibration=calibration,
    )
    return Prepared(stack, plane_ndim, plan, stats, store, leading, choice, input_size)


def _result_shape(
    output: str, config: UNetConfig, leading: tuple[int, ...], size: tuple[int, int]
) -> tuple[int, ...]:
    """``(*leading, H, W)``, or ``(*leading, K, H, W)`` for probabilities."""
    channels = (config.num_classes,) if output == "probabilities" else ()
    return (*leading, *channels, *size)


def planes_of(image: Any, config: UNetConfig, options: Any) -> tuple[Any, tuple[int, ...]]:
    """``(N, [C,] H, W)`` lazy planes of ``image`` and the shape of its leading axes.

    :func:`~napari_unet.core.io.as_planes` with the options' channel axis and channels:
    checks the image (one-line errors), reads no pixel.
    """
    stack, restore = as_planes(
        image,
        in_channels=config.in_channels,
        channel_axis=getattr(options, "channel_axis", None),
        channels=getattr(options, "channels", None),
    )
    return stack, restore.leading


def segment_blocks_iter(
    model: ModelBundle | UNet,
    image: Any,
    path: str | os.PathLike,
    *,
    options: Any | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    resume: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    predictor: Any | None = None,
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
        The output ``.zarr`` (OME-Zarr, see the module docstring).
    options : SegmentOptions, optional
        ``split_touching``, ``fill_boundaries``, ``merge_boundaries`` and ``link`` need
        whole planes or the whole result and are refused block-wise. ``pixel_size`` and
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
    from napari_unet.core.segment import SegmentOptions, get_predictor, scale_matters

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
    :func:`~napari_unet.core.resample.tile_to_input_grid`)."""
    try:
        for done in tiles:
            region, data = tile_to_input_grid(
                done.data, done.region, prepared.model_size, prepared.input_size, kind=output
            )
            yield TileDone(done.plane, done.index, done.total, region, data)
    finally:
        tiles.close()


def finish(store: BlockStore, plan: BlockPlan, options: Any) -> Iterator[Progress]:
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


def segment_to_zarr(model: ModelBundle | UNet, image: Any, path: str | os.PathLike, **kwargs):
    """Drain :func:`segment_blocks_iter` (same keywords: ``overwrite``, ``resume``,
    ``inputs``...); return the result ``zarr.Array``."""
    generator = segment_blocks_iter(model, image, path, **kwargs)
    return drain(generator)


__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "Block",
    "BlockPlan",
    "BlockStore",
    "check_store_output",
    "default_axes",
    "finish_labels",
    "full_resolution",
    "is_zarr_path",
    "label_table",
    "map_back",
    "open_image",
    "open_output_store",
    "plan_blocks",
    "planes_of",
    "readable",
    "segment_blocks_iter",
    "segment_to_zarr",
    "source_paths",
]

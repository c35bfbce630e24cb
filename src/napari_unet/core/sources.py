"""Image sources read lazily: zarr, OME-Zarr, tiled TIFF, dask.

:func:`open_image` opens a file or store for tile-by-tile reading; :func:`readable` wraps
any array-like so that slices come back as numpy (dask computed in the calling thread)
and a failing read is one :class:`~napari_unet.core.errors.InputError`;
:func:`full_resolution` picks level 0 of multiscale data; :func:`source_paths` names
the files an array reads (so an output never overwrites them).

zarr (and dask, when given dask arrays) are optional: imported where a store is opened.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.formats import ZARR_METADATA as _ZARR_METADATA
from napari_unet.core.formats import is_zarr_path
from napari_unet.core.planeview import PlaneView
from napari_unet.core.readers import READ_SUFFIXES, read_file

#: What to give instead, appended to every "not a usable zarr image" message.
_ZARR_HINT = "give an OME-Zarr image or a zarr array"


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
        return read_file(path)
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
    return PlaneView.at(image, (index,))

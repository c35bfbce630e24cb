"""Output stores: creating a marked OME-Zarr store and never replacing what is not ours.

:func:`open_output_store` creates a single-level OME-Zarr (NGFF 0.4) image carrying the
``"napari_unet"`` mark from its first write; an existing path is replaced only when it
is a store of ours holding nothing we did not write, and ``overwrite`` is given.

zarr is optional: imported where a store is created.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.safety import STORE_MARK, is_our_store

#: Version of the store layout written in the run record.
STORE_FORMAT = 1


#: Name of the group holding block records and the labels scratch array.
WORK_GROUP = "_napari_unet"


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

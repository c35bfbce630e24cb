"""Writing results: zlib-compressed TIFF, atomically, never replacing a file unless
asked (:func:`write_image`), and reading back napari-unet's record of a result.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.calibration_axes import Calibration
from napari_unet.core.calibration_write import tiff_calibration_kwargs
from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.formats import TiffLog as _TiffLog
from napari_unet.core.formats import is_zarr_path
from napari_unet.core.formats import tidy as _tidy
from napari_unet.core.safety import atomic_write

#: Suffixes :func:`write_image` writes.
WRITE_SUFFIXES = (".tif", ".tiff")


def write_image(
    path: str | os.PathLike,
    array: Any,
    *,
    overwrite: bool = False,
    calibration: Calibration | None = None,
    description_extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``array`` as a zlib-compressed TIFF, atomically, creating parent folders.

    The TIFF is written to a temporary file beside ``path`` and renamed onto it only
    when complete (:func:`napari_unet.core.safety.atomic_write`): an interrupted or
    failed write leaves an existing file exactly as it was and no partial file.

    Parameters
    ----------
    path : path-like
        ``.tif`` or ``.tiff`` target.
    array : array-like
        Any shape; a stack of 3 or 4 planes is written as a stack, never as RGB(A).
    overwrite : bool
        Whether an existing file at ``path`` may be replaced.
    calibration : Calibration, optional
        The result's calibration (e.g. ``read_calibration(input).for_result(...)``),
        fitted to ``array``'s axes: written as ImageJ hyperstack metadata, or as OME
        metadata when it came from OME-TIFF / OME-Zarr or ImageJ cannot hold the data
        type (see :func:`~napari_unet.core.calibration.tiff_calibration_kwargs`), so
        :func:`~napari_unet.core.calibration.read_calibration` of the file gives it back.
    description_extra : dict, optional
        JSON-serialisable record stored with the image (ImageJ's ``Info`` property,
        shown by Image > Show Info; the OME image description), e.g.
        ``{"napari_unet": {"scale_factor": 0.5, "scale_reason": "..."}}``; read back by
        :func:`read_result_info`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If ``path`` does not end in ``.tif`` or ``.tiff``.
    OutputError
        If ``path`` exists and ``overwrite`` is false, or is not a regular file.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise InputError(f"results are written as TIFF: use a .tif path, got {path.name!r}")
    if path.is_dir():
        raise OutputError(f"{path} is a folder, not a TIFF file; choose another output")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputError(
            f"{path} already exists; pass --overwrite to replace it, or choose another output"
        )
    data = np.asarray(array)
    info = None if description_extra is None else json.dumps(description_extra)
    metadata = tiff_calibration_kwargs(calibration, shape=data.shape, dtype=data.dtype, info=info)
    with atomic_write(path) as temporary:
        # minisblack: a stack of 3 or 4 planes is a stack, never an RGB(A) image.
        options = {"compression": "zlib", "photometric": "minisblack"}
        try:
            tifffile.imwrite(temporary, data, **options, **metadata)
        except (ValueError, TypeError, tifffile.OmeXmlError) as error:
            if not metadata:
                raise
            # Metadata tifffile cannot write for this array must not lose the result:
            # write the pixels without it (the file is the temporary one, rewritten whole).
            warnings.warn(
                f"{path.name} is written without its calibration: {_tidy(str(error))}",
                stacklevel=2,
            )
            tifffile.imwrite(temporary, data, **options)
    return path


#: Key of napari-unet's own record in a result's metadata (TIFF description, zarr attributes).
RESULT_INFO_KEY = "napari_unet"


def read_result_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record :func:`write_image` stored in a result (``description_extra``), or ``None``.

    TIFF: the JSON object in ImageJ's ``Info`` property or the OME image description.
    Zarr store: ``{"napari_unet": <the store's "napari_unet" attribute>}``. ``None`` when
    there is none, it is not a JSON object, or the file cannot be read.
    """
    path = Path(path)
    try:
        if is_zarr_path(path):
            import zarr

            record = dict(zarr.open(str(path), mode="r").attrs).get(RESULT_INFO_KEY)
            return {RESULT_INFO_KEY: record} if isinstance(record, dict) else None
        if path.suffix.lower() not in WRITE_SUFFIXES or not path.is_file():
            return None
        with _TiffLog(), tifffile.TiffFile(path) as tiff:
            text = _stored_description(tiff)
        info = json.loads(text) if text else None
    except Exception:  # a damaged file or text that is not JSON: nothing we wrote
        return None
    return info if isinstance(info, dict) else None


def _stored_description(tiff: tifffile.TiffFile) -> str | None:
    """ImageJ's ``Info`` or the first OME image's ``Description`` of an open TIFF."""
    if tiff.is_ome and tiff.ome_metadata:
        from xml.etree import ElementTree

        for element in ElementTree.fromstring(tiff.ome_metadata).iter():
            if str(element.tag).rsplit("}", 1)[-1] == "Description":
                return element.text
        return None
    if tiff.is_imagej:
        info = (tiff.imagej_metadata or {}).get("Info")
        return info if isinstance(info, str) else None
    return None

"""Reading and writing images, and checking an image can be segmented: the front door.

The work is done by small modules below this one, whose public names are importable
from here:

- :mod:`~napari_unet.core.readers`: whole TIFF/PNG files into memory (one-line
  :class:`~napari_unet.core.errors.InputError` for every unreadable file), axis letters;
- :mod:`~napari_unet.core.sources`: zarr/OME-Zarr stores and TIFFs opened lazily;
- :mod:`~napari_unet.core.memory`: :func:`check_fits_in_memory` and friends;
- :mod:`~napari_unet.core.writer`: :func:`write_image` (atomic, never replaces unasked);
- :mod:`~napari_unet.core.planes`: :func:`as_planes`, :class:`Restore`,
  :func:`plane_index` / :func:`plane_position`;
- :mod:`~napari_unet.core.channels`: channel axis and RGB checks, :func:`rgb_to_grey`.

:func:`read_image` is defined here because it chooses between the eager readers and the
lazy sources.
"""

from __future__ import annotations

import os
from typing import Any

from napari_unet.core.channels import (
    LUMINANCE,
    MAX_CHANNELS,
    RGB_MESSAGE,
    leading_axes,
    looks_rgb,
    rgb_message,
    rgb_to_grey,
)
from napari_unet.core.formats import ZARR_METADATA, is_zarr_path
from napari_unet.core.memory import (
    UNKNOWN_MEMORY,
    available_memory,
    check_fits_in_memory,
    describe_array,
    format_bytes,
)
from napari_unet.core.planes import Restore, as_planes, plane_index, plane_position
from napari_unet.core.readers import READ_SUFFIXES, read_axes, read_file
from napari_unet.core.sources import open_image
from napari_unet.core.writer import (
    RESULT_INFO_KEY,
    WRITE_SUFFIXES,
    read_result_info,
    write_image,
)


def read_image(path: str | os.PathLike, *, lazy: bool = False, rgb: bool = False) -> Any:
    """Read a TIFF (2D or stack) or PNG image, or open a zarr / TIFF image lazily.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` or ``.png`` file; with ``lazy`` also a ``.zarr`` store (plain
        array or OME-Zarr image, whose full-resolution level is used).
    lazy : bool
        Return a read-only ``zarr.Array`` that reads only the regions sliced from it
        (TIFF through tifffile's zarr interface; PNG is still read whole), see
        :func:`~napari_unet.core.sources.open_image`. Needs zarr.
    rgb : bool
        As in :func:`~napari_unet.core.readers.read_file` (eager reads only).

    Returns
    -------
    (H, W) or (N, H, W) ndarray, or zarr.Array when ``lazy``

    Raises
    ------
    InputError
        In one line, for every file that cannot be read (see
        :func:`~napari_unet.core.readers.read_file`).
    """
    if lazy:
        return open_image(path)
    return read_file(path, rgb=rgb)


__all__ = [
    "LUMINANCE",
    "MAX_CHANNELS",
    "READ_SUFFIXES",
    "RESULT_INFO_KEY",
    "RGB_MESSAGE",
    "UNKNOWN_MEMORY",
    "WRITE_SUFFIXES",
    "ZARR_METADATA",
    "Restore",
    "as_planes",
    "available_memory",
    "check_fits_in_memory",
    "describe_array",
    "format_bytes",
    "is_zarr_path",
    "leading_axes",
    "looks_rgb",
    "plane_index",
    "plane_position",
    "read_axes",
    "read_image",
    "read_result_info",
    "rgb_message",
    "rgb_to_grey",
    "write_image",
]

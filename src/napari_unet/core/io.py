"""Reading and writing images, and checking an image can be segmented.

:func:`read_image` reads TIFF (including stacks) and PNG; :func:`write_image` writes
zlib-compressed TIFF. :func:`as_planes` turns any accepted image into a stack of
planes plus a function that puts per-plane results back in the image's layout,
rejecting what a U-Net cannot segment (RGB, empty, 1D, >3D, complex) with a message
saying what to do. ``read_image(path, lazy=True)`` opens zarr/OME-Zarr stores and TIFFs
for tile-by-tile reading instead (see :func:`napari_unet.core.largeimage.open_image`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.errors import InputError

#: Suffixes :func:`read_image` understands.
READ_SUFFIXES = (".tif", ".tiff", ".png")
#: Suffixes :func:`write_image` writes.
WRITE_SUFFIXES = (".tif", ".tiff")

RGB_MESSAGE = (
    "RGB image{where}: the model expects one grayscale channel; convert it to grayscale "
    "or split the channels and segment one (napari: right-click the layer > Split RGB)"
)

#: Puts per-plane results ``(N, ...)`` back in the layout of the original image.
Restore = Callable[[Any], Any]


def read_image(path: str | os.PathLike, *, lazy: bool = False) -> Any:
    """Read a TIFF (2D or stack) or PNG image, or open a zarr / TIFF image lazily.

    RGB images whose channels are all equal (grayscale saved as RGB) come back as
    one grayscale plane; a PNG's alpha channel next to gray is dropped.

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` or ``.png`` file; with ``lazy`` also a ``.zarr`` store (plain
        array or OME-Zarr image, whose full-resolution level is used).
    lazy : bool
        Return a read-only ``zarr.Array`` that reads only the regions sliced from it
        (TIFF through tifffile's zarr interface; PNG is still read whole). Needs zarr.

    Returns
    -------
    (H, W) or (N, H, W) ndarray, or zarr.Array when ``lazy``
        Colour images are returned as ``(..., 3|4)`` only from PNG; :func:`as_planes`
        rejects them.

    Raises
    ------
    InputError
        For a missing file, an unsupported suffix, or a TIFF tagged RGB whose
        channels differ.
    """
    if lazy:
        from napari_unet.core.largeimage import open_image  # imports zarr: optional

        return open_image(path)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(
            f"cannot read {path.name}: supported formats are {', '.join(READ_SUFFIXES)}"
        )
    if suffix == ".png":
        return _read_png(path)
    return _read_tiff(path)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        image = series.asarray()
        axes = series.axes
    if axes.endswith("S") and image.shape[-1] in (3, 4):
        gray = _gray_if_channels_equal(image)
        if gray is None:
            raise InputError(RGB_MESSAGE.format(where=f" ({path.name}, shape {image.shape})"))
        return gray
    return image


def _read_png(path: Path) -> np.ndarray:
    # imported lazily: scikit-image's io pulls in imageio and plugins
    from skimage import io as skio

    image = np.asarray(skio.imread(path))
    if image.ndim == 3 and image.shape[-1] == 2:  # gray + alpha
        return image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        gray = _gray_if_channels_equal(image)
        if gray is not None:
            return gray
    return image


def _gray_if_channels_equal(image: np.ndarray) -> np.ndarray | None:
    """The first channel of ``(..., 3|4)`` colour data whose R, G and B are equal, else None."""
    red = image[..., 0]
    if np.array_equal(red, image[..., 1]) and np.array_equal(red, image[..., 2]):
        return np.ascontiguousarray(red)
    return None


def write_image(path: str | os.PathLike, array: Any) -> Path:
    """Write ``array`` as a zlib-compressed TIFF, creating parent folders.

    Raises
    ------
    InputError
        If ``path`` does not end in ``.tif`` or ``.tiff``.
    """
    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise InputError(f"results are written as TIFF: use a .tif path, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    # minisblack: a stack of 3 or 4 planes is a stack, never an RGB(A) image.
    tifffile.imwrite(path, np.asarray(array), compression="zlib", photometric="minisblack")
    return path


def as_planes(image: Any, *, in_channels: int = 1, rgb: bool | None = None) -> tuple[Any, Restore]:
    """Check ``image`` can be segmented and view it as a stack of planes.

    Parameters
    ----------
    image : array-like
        ``(H, W)`` or ``(N, H, W)`` for one-channel models; ``(C, H, W)`` or
        ``(N, C, H, W)`` with ``C = in_channels`` otherwise. numpy, zarr or dask;
        numpy input is viewed, not copied. bool is read as uint8 (0/1).
    in_channels : int
        Channels the model expects.
    rgb : bool, optional
        Whether the image is known to be RGB(A) (e.g. napari's ``layer.rgb``); by
        default a 3D image whose last axis is 3 or 4 long is taken as RGB.

    Returns
    -------
    planes : (N, H, W) or (N, C, H, W) array-like
    restore : callable
        Maps a per-plane result ``(N, ...)`` back to the image's layout: it drops
        the plane axis for a single 2D image and is the identity for stacks.

    Raises
    ------
    InputError
        For RGB, empty, 1D or too-many-dimensional images and unsupported dtypes.
    """
    shape = tuple(int(s) for s in image.shape)
    _check_dtype(image.dtype)
    if rgb or (rgb is None and _looks_rgb(shape, in_channels)):
        raise InputError(RGB_MESSAGE.format(where=f" (shape {shape})"))
    if 0 in shape:
        raise InputError(f"the image is empty: shape {shape}")
    if np.dtype(image.dtype) == bool:
        image = image.view(np.uint8) if isinstance(image, np.ndarray) else image.astype(np.uint8)
    plane_ndim = 2 if in_channels == 1 else 3
    if image.ndim == plane_ndim:
        _check_channels(shape, in_channels, plane_ndim)
        return _add_plane_axis(image), _drop_plane_axis
    if image.ndim == plane_ndim + 1:
        _check_channels(shape, in_channels, plane_ndim)
        return image, _identity
    expected = "(H, W) or a stack (N, H, W)"
    if in_channels > 1:
        expected = f"(C, H, W) or (N, C, H, W) with C = {in_channels}"
    raise InputError(
        f"cannot segment an image of shape {shape} ({len(shape)}D): expected {expected}"
    )


def _check_dtype(dtype: Any) -> None:
    dtype = np.dtype(dtype)
    if (
        dtype == np.dtype(bool)
        or np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.floating)
    ):
        return
    raise InputError(
        f"cannot segment an image of dtype {dtype}: use integer, float or bool intensities "
        "(take the magnitude or real part of complex data first)"
    )


def _looks_rgb(shape: tuple[int, ...], in_channels: int) -> bool:
    # A "stack" of planes 3 or 4 pixels wide is not a plausible microscopy image,
    # whereas (H, W, 3|4) is what every RGB reader returns.
    return in_channels == 1 and len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4


def _check_channels(shape: tuple[int, ...], in_channels: int, plane_ndim: int) -> None:
    if plane_ndim == 3 and shape[-3] != in_channels:
        raise InputError(
            f"the model expects {in_channels} channels but the image of shape {shape} has "
            f"{shape[-3]} on its channel axis (read as (..., C, H, W))"
        )


def _add_plane_axis(image: Any) -> Any:
    try:
        return image[np.newaxis]
    except (TypeError, IndexError):  # array-likes without newaxis indexing (zarr)
        return _OnePlaneStack(image)


class _OnePlaneStack:
    """``image[np.newaxis]`` for array-likes that cannot do it, without reading ``image``.

    ``stack[0]`` is ``image`` itself (still lazy); other keys index ``image`` after the
    plane index.
    """

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = (1, *image.shape)
        self.dtype = image.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if key and isinstance(key[0], (int, np.integer)) and int(key[0]) in (0, -1):
            return self.image if len(key) == 1 else self.image[key[1:]]
        return np.asarray(self.image)[np.newaxis][key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.image, dtype=dtype)[np.newaxis]


def _drop_plane_axis(result: Any) -> Any:
    return result[0]


def _identity(result: Any) -> Any:
    return result


__all__ = [
    "READ_SUFFIXES",
    "RGB_MESSAGE",
    "WRITE_SUFFIXES",
    "as_planes",
    "read_image",
    "write_image",
]

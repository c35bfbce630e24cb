"""Reading and writing images, and checking an image can be segmented.

:func:`read_image` reads TIFF (including stacks) and PNG, turning every unreadable
file (empty, not an image, truncated, a header claiming more pixels than memory holds)
into one :class:`~napari_unet.core.errors.InputError` line; :func:`write_image` writes
zlib-compressed TIFF atomically and never replaces a file unless asked.
:func:`check_fits_in_memory` refuses an allocation larger than :func:`available_memory`.
:func:`as_planes` turns any accepted image into a stack of planes plus a function that
puts per-plane results back in the image's layout, rejecting what a U-Net cannot
segment (RGB, empty, 1D, >3D, complex) with a message saying what to do.
``read_image(path, lazy=True)`` opens zarr/OME-Zarr stores and TIFFs for tile-by-tile
reading instead (see :func:`napari_unet.core.largeimage.open_image`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.errors import InputError, OutputError, UNetError
from napari_unet.core.safety import atomic_write

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


ZARR_METADATA = (".zgroup", ".zarray", "zarr.json")


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` path or a folder with zarr metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / name).exists() for name in ZARR_METADATA)


def read_image(path: str | os.PathLike, *, lazy: bool = False) -> Any:
    """Read a TIFF (2D or stack) or PNG image, or open a zarr / TIFF image lazily.

    RGB images whose channels are all equal (grayscale saved as RGB) come back as
    one grayscale plane; a PNG's alpha channel next to gray is dropped.

    Every file that cannot be read gives an :class:`InputError` with one line naming
    the file, never another exception: empty, text or otherwise non-TIFF/PNG content,
    truncated or damaged files, and headers that claim more pixels than the memory
    available (checked from the header, before any pixel is allocated).

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
        For a missing, empty, unreadable, truncated or too large file, an unsupported
        suffix, or a TIFF tagged RGB whose channels differ.
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
    kind = "PNG" if suffix == ".png" else "TIFF"
    try:
        _check_content(path, kind)
    except OSError as error:  # permission denied, I/O error...
        reason = error.strerror or " ".join(str(error).split()) or type(error).__name__
        raise InputError(
            f"cannot read {path.name}: {reason}; check the file exists and you may read it"
        ) from error
    reader = _read_png if kind == "PNG" else _read_tiff
    with _TiffLog() as log:
        try:
            image = reader(path)
        except UNetError:
            raise
        except MemoryError:
            raise InputError(
                f"cannot read {path.name}: out of memory while reading it; {_ZARR_HINT}"
            ) from None
        except Exception as error:  # readers raise many types for damaged files
            raise InputError(
                f"cannot read {path.name}: the {kind} file is damaged or truncated "
                f"({_reason(error, log.messages)}); {_DAMAGED_HINT}"
            ) from error
    damage = log.damage()
    if damage:  # tifffile worked around a broken structure: a stack may have lost planes
        _damaged(path, damage)
    return image


#: What to do about a file that cannot be decoded.
_DAMAGED_HINT = "check it was saved or copied completely, or export it again"
#: What to do about an image too large for memory.
_ZARR_HINT = "segment it into a .zarr output (-o result.zarr), which reads it tile by tile"
#: File signatures of formats users plausibly rename by mistake: (magic, description, hint).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", "rename it to .png"),
    (b"II*\x00", "a TIFF image", "rename it to .tif"),
    (b"MM\x00*", "a TIFF image", "rename it to .tif"),
    (b"II+\x00", "a TIFF image", "rename it to .tif"),
    (b"MM\x00+", "a TIFF image", "rename it to .tif"),
    (b"\xff\xd8\xff", "a JPEG image", "convert it to TIFF or PNG"),
    (b"GIF8", "a GIF image", "convert it to TIFF or PNG"),
    (b"BM", "a BMP image", "convert it to TIFF or PNG"),
    (b"PK\x03\x04", "a ZIP archive", "extract the image from it first"),
    (b"\x1f\x8b", "a gzip archive", "decompress it first"),
    (b"\x93NUMPY", "a NumPy .npy file", "save the array as TIFF (tifffile.imwrite)"),
    (b"\x89HDF", "an HDF5 file", "export the image as TIFF"),
    (b"%PDF", "a PDF document", "export the image as TIFF or PNG"),
)
_PNG_SIGNATURE = _SIGNATURES[0][0]


def _check_content(path: Path, kind: str) -> None:
    """Refuse an empty file or one whose first bytes are not a ``kind`` (TIFF/PNG) header."""
    with path.open("rb") as file:
        head = file.read(512)
    if not head:
        raise InputError(f"cannot read {path.name}: the file is empty (0 bytes); {_DAMAGED_HINT}")
    if kind == "PNG" and head.startswith(_PNG_SIGNATURE):
        return
    # TIFF is "II" or "MM" then a version tifffile checks itself (classic, BigTIFF, and
    # a few camera-raw variants it also reads).
    if kind == "TIFF" and head[:2] in (b"II", b"MM"):
        return
    looks_like, hint = _guess_format(head)
    if looks_like is None:
        looks_like, hint = f"it does not start with a {kind} header", f"export the image as {kind}"
    else:
        looks_like = f"it looks like {looks_like}"
    raise InputError(f"cannot read {path.name}: it is not a {kind} file ({looks_like}); {hint}")


def _guess_format(head: bytes) -> tuple[str | None, str]:
    for magic, description, hint in _SIGNATURES:
        if head.startswith(magic):
            return description, hint
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:  # may cut a multi-byte character at the end: retry shorter
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None, ""
    if text and all(char.isprintable() or char in "\t\r\n" for char in text):
        return "text", "give the image file itself, not a text file renamed .tif/.png"
    return None, ""


class _TiffLog(logging.Filter):
    """Collect (and silence) what tifffile logs while a file is read.

    tifffile logs damage it works around (bad offsets, odd tags) to stderr; a user gets
    one line instead, with the logged reason when the read fails after all.
    """

    #: Errors tifffile logs about one bad tag value, which it skips harmlessly.
    HARMLESS = ("<TiffTag.fromfile>", "for tag #")

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.errors: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        self.messages.append(message)
        if record.levelno >= logging.ERROR and not any(h in message for h in self.HARMLESS):
            self.errors.append(message)
        return False

    def damage(self) -> str | None:
        """The first structural error tifffile logged (a broken page chain, series...)."""
        return _tidy(self.errors[0]) if self.errors else None

    def __enter__(self) -> _TiffLog:
        logging.getLogger("tifffile").addFilter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("tifffile").removeFilter(self)


def _reason(error: BaseException, logged: list[str]) -> str:
    """A short one-line reason for a failed read, from the error or what tifffile logged."""
    text = " ".join(str(error).split())
    # Messages of these types describe the damage; IndexError, KeyError, struct.error...
    # from deep inside a decoder do not, and tifffile usually logged why first.
    descriptive = isinstance(error, (ValueError, OSError, EOFError)) and text
    if isinstance(error, _NoImageError) and logged:  # tifffile logged why
        text = f"{text}: {' '.join(logged[-1].split())}"
    elif not descriptive and logged:
        text = " ".join(logged[-1].split())
    elif not descriptive:
        name = type(error).__name__
        if name == "error":  # zlib.error, struct.error: the module says what failed
            name = f"{type(error).__module__}.{name}"
        text = f"{name}: {text}" if text else name
    return _tidy(text)


def _tidy(text: str) -> str:
    """One short line of a tifffile message, without its object names."""
    # "<tifffile.TiffPages @8> invalid offset ..." -> "invalid offset ...": the objects
    # mean nothing to a user.
    text = " ".join(re.sub(r"<tifffile\.[^>]*>\s*", "", text).split())
    return text if len(text) <= 120 else text[:117] + "..."


class _NoImageError(ValueError):
    """tifffile found no image series (it logs why)."""


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tiff:
        if not tiff.series:
            raise _NoImageError("no image found in the file")
        series = tiff.series[0]
        shape, dtype = tuple(int(s) for s in series.shape), np.dtype(series.dtype)
        _check_segments(series.pages, path)
        _check_codec(series.keyframe.compression, path)
        check_fits_in_memory(
            math.prod(shape) * dtype.itemsize,
            f"reading {path.name} (a {describe_array(shape, dtype)} image)",
            hint=_ZARR_HINT,
        )
        image = series.asarray()
        axes = series.axes
    if axes.endswith("S") and image.shape[-1] in (3, 4):
        gray = _gray_if_channels_equal(image)
        if gray is None:
            raise InputError(RGB_MESSAGE.format(where=f" ({path.name}, shape {image.shape})"))
        return gray
    return image


def _check_segments(pages: Any, path: Path) -> None:
    """Refuse a header whose pixel data cannot all be in the file, before allocating.

    Each page must list every strip or tile its size implies, inside the file, and
    uncompressed pages must store at least their pixels' bytes: a header patched to
    claim far more pixels than the file holds fails here, in one line, instead of
    allocating and looping over millions of missing tiles.
    """
    size = path.stat().st_size
    for page in pages:
        if page is None:
            continue
        offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
        counts = np.asarray(page.databytecounts, dtype=np.uint64)
        expected = math.prod(page.chunked)
        if len(offsets) < expected or len(counts) < len(offsets):
            _damaged(path, f"its header lists {len(offsets)} of the {expected} strips or tiles")
        starts, lengths = offsets[counts > 0], counts[counts > 0]
        # each compared with the size first, so their sum cannot overflow
        if (starts > size).any() or (lengths > size).any() or (starts + lengths > size).any():
            end = max(int(a) + int(b) for a, b in zip(starts, lengths, strict=True))
            _damaged(path, f"its pixel data should end at byte {end} but the file has {size} bytes")
        keyframe = page.keyframe
        stored, needed = int(counts.sum()), math.prod(page.shape) * keyframe.bitspersample // 8
        if keyframe.compression == tifffile.COMPRESSION.NONE and stored < needed:
            _damaged(path, f"it stores {stored} of the {needed} bytes its pixels need")


def _damaged(path: Path, reason: str) -> None:
    raise InputError(
        f"cannot read {path.name}: the TIFF file is damaged or truncated ({reason}); "
        f"{_DAMAGED_HINT}"
    )


def _check_codec(compression: Any, path: Path) -> None:
    """Refuse a compression tifffile cannot decode here, saying so instead of "damaged"."""
    if compression == tifffile.COMPRESSION.NONE:
        return
    try:
        tifffile.TIFF.DECOMPRESSORS[compression]
    except KeyError:
        name = getattr(compression, "name", str(compression))
        raise InputError(
            f"cannot read {path.name}: its {name} compression needs the imagecodecs package; "
            "install it (pip install imagecodecs), or save the image uncompressed or with "
            "zlib compression"
        ) from None


def _read_png(path: Path) -> np.ndarray:
    # imported lazily: scikit-image's io pulls in imageio and plugins
    from PIL import Image
    from skimage import io as skio

    shape, itemsize = _png_header(path)
    check_fits_in_memory(
        math.prod(shape) * itemsize,
        f"reading {path.name} (a {describe_array(shape, np.dtype(f'u{itemsize}'))} image)",
        hint=_ZARR_HINT,
    )
    try:
        image = np.asarray(skio.imread(path))
    except Image.DecompressionBombError:
        # Pillow's own guard against huge images, passed only when memory would allow.
        raise InputError(
            f"cannot read {path.name}: its {shape[1]} x {shape[0]} pixels exceed the PNG "
            "reader's size limit; save the image as TIFF instead"
        ) from None
    if image.ndim == 3 and image.shape[-1] == 2:  # gray + alpha
        return image[..., 0]
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        gray = _gray_if_channels_equal(image)
        if gray is not None:
            return gray
    return image


#: Samples per pixel of each PNG colour type (a palette may expand to RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}


def _png_header(path: Path) -> tuple[tuple[int, ...], int]:
    """Decoded ``(H, W[, C])`` shape and bytes per sample from a PNG's IHDR chunk.

    Read by hand so the memory check runs before the decoder allocates anything.
    """
    with path.open("rb") as file:
        head = file.read(26)
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise ValueError("no IHDR header chunk")
    width, height = struct.unpack(">II", head[16:24])
    bit_depth, colour_type = head[24], head[25]
    channels = _PNG_CHANNELS.get(colour_type)
    if channels is None or width == 0 or height == 0:
        raise ValueError(f"invalid header: {width} x {height}, colour type {colour_type}")
    shape = (height, width) if channels == 1 else (height, width, channels)
    return shape, 2 if bit_depth == 16 else 1


def _gray_if_channels_equal(image: np.ndarray) -> np.ndarray | None:
    """The first channel of ``(..., 3|4)`` colour data whose R, G and B are equal, else None."""
    red = image[..., 0]
    if np.array_equal(red, image[..., 1]) and np.array_equal(red, image[..., 2]):
        return np.ascontiguousarray(red)
    return None


# ------------------------------------------------------------------ memory


#: Returned by :func:`available_memory` when the platform does not say.
UNKNOWN_MEMORY = 2**62


def available_memory() -> int:
    """Bytes of memory a new allocation can use without swapping, as the OS reports it.

    Linux: ``MemAvailable`` of ``/proc/meminfo``, lowered to what a cgroup (v2) memory
    limit still allows (containers); elsewhere ``os.sysconf`` (available, else physical
    pages); when nothing answers, :data:`UNKNOWN_MEMORY` (so nothing is refused).
    """
    memory = _meminfo_available()
    if memory is None:
        memory = _sysconf_memory()
    limit = _cgroup_remaining()
    if limit is not None:
        memory = limit if memory is None else min(memory, limit)
    return UNKNOWN_MEMORY if memory is None else memory


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_memory() -> int | None:
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _cgroup_remaining() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return max(0, int(limit) - int(used))
    except (OSError, ValueError):
        return None


def check_fits_in_memory(
    nbytes: int,
    what: str,
    *,
    hint: str = "segment into a .zarr output (-o result.zarr), which works tile by tile",
) -> None:
    """Refuse, in one line, an allocation larger than :func:`available_memory`.

    Parameters
    ----------
    nbytes : int
        Bytes the allocation needs.
    what : str
        What needs them, the subject of the message, e.g. ``"the result"`` or
        ``"reading x.tif (a 100000 x 100000 uint16 image)"``.
    hint : str
        What to do instead.

    Raises
    ------
    InputError
        ``"<what> needs 18.6 GB, more than the memory available (3.2 GB); <hint>"``.
    """
    available = available_memory()
    if nbytes > available:
        raise InputError(
            f"{what} needs {format_bytes(nbytes)}, more than the memory available "
            f"({format_bytes(available)}); {hint}"
        )


def format_bytes(nbytes: int) -> str:
    """``nbytes`` for people: ``"512 bytes"``, ``"1.5 KB"``, ``"18.6 GB"`` (units of 1024)."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    value = float(nbytes)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        value /= 1024
        if value < 1024 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def describe_array(shape: tuple[int, ...], dtype: Any) -> str:
    """``"100000 x 100000 uint16"`` for an array's shape and dtype."""
    return f"{' x '.join(str(int(s)) for s in shape)} {np.dtype(dtype)}"


# ------------------------------------------------------------------ writing


def write_image(path: str | os.PathLike, array: Any, *, overwrite: bool = False) -> Path:
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
    with atomic_write(path) as temporary:
        # minisblack: a stack of 3 or 4 planes is a stack, never an RGB(A) image.
        tifffile.imwrite(temporary, data, compression="zlib", photometric="minisblack")
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
    "UNKNOWN_MEMORY",
    "WRITE_SUFFIXES",
    "ZARR_METADATA",
    "as_planes",
    "available_memory",
    "check_fits_in_memory",
    "describe_array",
    "format_bytes",
    "is_zarr_path",
    "read_image",
    "write_image",
]

"""Reading whole image files: TIFF (stacks included) and PNG, and a file's axis letters.

:func:`read_file` turns every unreadable file (empty, not an image, truncated, a header
claiming more pixels than memory holds) into one
:class:`~napari_unet.core.errors.InputError` line. Lazy, tile-by-tile reading of zarr
and TIFF is :mod:`napari_unet.core.sources`.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.channels import RGB_MESSAGE
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.formats import TiffLog as _TiffLog
from napari_unet.core.formats import is_zarr_path
from napari_unet.core.formats import tidy as _tidy
from napari_unet.core.memory import check_fits_in_memory, describe_array

#: Suffixes :func:`read_file` understands.
READ_SUFFIXES = (".tif", ".tiff", ".png")


def read_file(path: str | os.PathLike, *, rgb: bool = False) -> np.ndarray:
    """Read a whole TIFF (2D or stack) or PNG image into memory.

    RGB images whose channels are all equal (grayscale saved as RGB) come back as
    one grayscale plane (unless ``rgb``); a PNG's alpha channel next to gray is dropped.

    Every file that cannot be read gives an :class:`InputError` with one line naming
    the file, never another exception: empty, text or otherwise non-TIFF/PNG content,
    truncated or damaged files, and headers that claim more pixels than the memory
    available (checked from the header, before any pixel is allocated).

    Parameters
    ----------
    path : path-like
        ``.tif``/``.tiff`` or ``.png`` file.
    rgb : bool
        Return colour images as they are, ``(..., 3|4)``, for the caller to read as
        channels or convert with :func:`~napari_unet.core.channels.rgb_to_grey`,
        instead of refusing a colour TIFF.

    Returns
    -------
    (H, W) or (N, H, W) ndarray
        Colour images are returned as ``(..., 3|4)`` only from PNG (or with ``rgb``);
        :func:`~napari_unet.core.planes.as_planes` rejects them unless a channel axis
        is named.

    Raises
    ------
    InputError
        For a missing, empty, unreadable, truncated or too large file, an unsupported
        suffix, or a TIFF tagged RGB whose channels differ.
    """
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
            image = reader(path, rgb=rgb)
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


class _NoImageError(ValueError):
    """tifffile found no image series (it logs why)."""


def _read_tiff(path: Path, *, rgb: bool = False) -> np.ndarray:
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
    if axes.endswith("S") and image.shape[-1] in (3, 4) and not rgb:
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


def _read_png(path: Path, *, rgb: bool = False) -> np.ndarray:
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
    if image.ndim == 3 and image.shape[-1] in (3, 4) and not rgb:
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


def read_axes(path: str | os.PathLike) -> str | None:
    """The axis letters of an image file, e.g. ``"TZCYX"``, ``"ZYX"``, ``"YXS"``, or ``None``.

    TIFF: tifffile's axes of the first series (ImageJ hyperstacks and OME-TIFF name
    them; ``Q`` is an unknown axis, ``S`` the samples of an RGB(A) pixel). OME-Zarr: the
    names of the first multiscale's axes (``t``, ``c``, ``z``... upper-cased; an axis of
    type ``channel`` is ``C``, ``time`` ``T``). ``None`` for other files, plain zarr
    arrays and anything that cannot be read (reading the image says why).
    """
    path = Path(path)
    try:
        if is_zarr_path(path):
            return _zarr_axes(path)
        if path.suffix.lower() in (".tif", ".tiff") and path.is_file():
            with _TiffLog(), tifffile.TiffFile(path) as tiff:
                return str(tiff.series[0].axes) if tiff.series else None
    except Exception:  # damaged files are reported by the reader, in one line
        return None
    return None


def _zarr_axes(path: Path) -> str | None:
    import json

    attrs: Any = None
    if (path / ".zattrs").is_file():
        attrs = json.loads((path / ".zattrs").read_text())
    elif (path / "zarr.json").is_file():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes")
    if not isinstance(attrs, dict):
        return None
    ome = attrs.get("ome")
    multiscales = attrs.get("multiscales") or (ome or {}).get("multiscales")
    axes = multiscales[0].get("axes") if multiscales else None
    if not axes:
        return None
    letters = []
    for entry in axes:
        name, kind = (entry, None) if isinstance(entry, str) else (entry["name"], entry.get("type"))
        if kind == "channel":
            letters.append("C")
        elif kind == "time":
            letters.append("T")
        else:
            letters.append(name.upper() if len(name) == 1 else "Q")
    return "".join(letters)

"""Reading and writing images, and checking an image can be segmented.

:func:`read_image` reads TIFF (including stacks) and PNG, turning every unreadable
file (empty, not an image, truncated, a header claiming more pixels than memory holds)
into one :class:`~napari_unet.core.errors.InputError` line; :func:`write_image` writes
zlib-compressed TIFF atomically and never replaces a file unless asked.
:func:`check_fits_in_memory` refuses an allocation larger than :func:`available_memory`.
:func:`as_planes` turns any accepted image, with up to two leading axes (t, z) and a
channel axis anywhere, into a stack of 2-D planes plus a :class:`Restore` that puts
per-plane results back in the image's layout, rejecting what a U-Net cannot segment
(RGB without a channel choice, empty, 1D, 6-D, complex, the wrong channel count) with a
message saying what to do. :func:`plane_index` / :func:`plane_position` convert between
a position on the leading axes and the flat plane index; :func:`read_axes` gives a
file's axis letters (TIFF, OME-Zarr); :func:`rgb_to_grey` reads colour as grey.
``read_image(path, lazy=True)`` opens zarr/OME-Zarr stores and TIFFs for tile-by-tile
reading instead (see :func:`napari_unet.core.largeimage.open_image`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_unet.core.calibration import Calibration, tiff_calibration_kwargs
from napari_unet.core.errors import InputError, OutputError, UNetError
from napari_unet.core.formats import ZARR_METADATA, is_zarr_path
from napari_unet.core.formats import TiffLog as _TiffLog
from napari_unet.core.formats import tidy as _tidy
from napari_unet.core.safety import atomic_write

#: Suffixes :func:`read_image` understands.
READ_SUFFIXES = (".tif", ".tiff", ".png")
#: Suffixes :func:`write_image` writes.
WRITE_SUFFIXES = (".tif", ".tiff")

RGB_MESSAGE = (
    "RGB image{where}: the model expects one grayscale channel; read it as grey or as "
    "channels (--rgb grey or --rgb channels; in napari the RGB choice), convert it to "
    "grayscale, or split the channels and segment one (napari: right-click the layer > "
    "Split RGB)"
)


def read_image(path: str | os.PathLike, *, lazy: bool = False, rgb: bool = False) -> Any:
    """Read a TIFF (2D or stack) or PNG image, or open a zarr / TIFF image lazily.

    RGB images whose channels are all equal (grayscale saved as RGB) come back as
    one grayscale plane (unless ``rgb``); a PNG's alpha channel next to gray is dropped.

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
    rgb : bool
        Return colour images as they are, ``(..., 3|4)``, for the caller to read as
        channels or convert with :func:`rgb_to_grey`, instead of refusing a colour TIFF.

    Returns
    -------
    (H, W) or (N, H, W) ndarray, or zarr.Array when ``lazy``
        Colour images are returned as ``(..., 3|4)`` only from PNG (or with ``rgb``);
        :func:`as_planes` rejects them unless a channel axis is named.

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


# ------------------------------------------------------------------ planes, axes, channels

#: Most channels an image's channel axis (and a model) may have.
MAX_CHANNELS = 8
#: Most axes besides a channel axis: t, z, y, x.
MAX_NON_CHANNEL_AXES = 4
#: Luminance weights of :func:`rgb_to_grey` (ITU-R BT.601, as PIL and scikit-image's
#: ``rgb2gray`` of old).
LUMINANCE = (0.299, 0.587, 0.114)


class Restore:
    """Puts per-plane results ``(N, ...)`` back in the layout ``(*leading, ...)`` of the image.

    Attributes
    ----------
    leading : tuple of int
        Shape of the image's leading axes (every axis but the channel axis and the
        last two), ``()`` for a single 2-D plane; ``N = prod(leading)``.
    """

    def __init__(self, leading: tuple[int, ...]) -> None:
        self.leading = tuple(int(s) for s in leading)

    def __call__(self, result: Any) -> Any:
        if not self.leading:
            return result[0]  # a single plane: no plane axis
        if len(self.leading) == 1:
            return result
        shape = (*self.leading, *tuple(result.shape)[1:])
        if not hasattr(result, "reshape"):  # e.g. zarr: read it (a result fits in memory)
            result = np.asarray(result)
        return result.reshape(shape)

    def __repr__(self) -> str:
        return f"Restore(leading={self.leading})"


def as_planes(
    image: Any,
    *,
    in_channels: int = 1,
    channel_axis: int | None = None,
    channels: Any = None,
    rgb: bool | None = None,
) -> tuple[Any, Restore]:
    """Check ``image`` can be segmented and view it as a stack of 2-D planes.

    The last two axes that are not the channel axis are ``(H, W)``; every other axis
    but the channel axis is a *leading* axis (t, z...), flattened row-major into the
    plane index ``N``.

    Parameters
    ----------
    image : array-like
        numpy, zarr or dask, up to 5-D: at most 4 axes besides the channel axis
        (t, z, y, x) and one channel axis anywhere. numpy input is viewed, not copied
        (unless the axes cannot be viewed that way: then, as for zarr and dask, planes
        are read lazily, one at a time). bool is read as uint8 (0/1).
    in_channels : int
        Channels the model expects.
    channel_axis : int, optional
        The image's channel axis (negative counts from the end), e.g. ``0`` for
        ``(C, Z, Y, X)``, ``-1`` for ``(Y, X, C)``. By default a one-channel model reads
        every axis but the last two as leading axes, and a model of ``C > 1`` channels
        reads axis ``-3`` as channels (``(C, H, W)``, ``(N, C, H, W)``, ``(T, Z, C, H, W)``).
    channels : sequence of int, optional
        Channels to use, in this order (indices on the channel axis); default all.
    rgb : bool, optional
        Whether the image is known to be RGB(A) (e.g. napari's ``layer.rgb``); by
        default an image whose last axis is 3 or 4 long after two axes longer than 4
        pixels is taken as RGB. RGB is refused unless ``channel_axis`` is given (then it
        is just 3 or 4 channels); for grey, convert it first with :func:`rgb_to_grey`.

    Returns
    -------
    planes : (N, H, W) or (N, C, H, W) array-like
        ``(N, H, W)`` for one-channel models, ``(N, C, H, W)`` with ``C = in_channels``
        otherwise. ``planes[p]`` is plane ``p`` (lazy for zarr/dask).
    restore : Restore
        Maps a per-plane result ``(N, ...)`` back to ``(*leading, ...)``: drops the
        plane axis for a single 2-D plane, is the identity for ``(N, H, W)`` stacks.
        ``restore.leading`` is the shape of the leading axes.

    Raises
    ------
    InputError
        In one line, for RGB without a channel axis, empty, 1-D, 6-D (or more) images,
        5 axes without a channel axis, an unsupported dtype, a channel axis that does not
        exist or is longer than :data:`MAX_CHANNELS`, a channel index out of range, and a
        channel count that is not the model's.
    """
    shape = tuple(int(s) for s in image.shape)
    ndim = len(shape)
    _check_dtype(image.dtype)
    if ndim > MAX_NON_CHANNEL_AXES + 1:
        raise InputError(
            f"cannot segment an image of shape {shape}: {ndim}-D images are not supported "
            "(at most 5 axes: t, z, c, y, x); save fewer axes per file"
        )
    if channel_axis is None and (rgb or (rgb is None and looks_rgb(shape))):
        raise InputError(rgb_message(f" (shape {shape})", in_channels))
    if 0 in shape:
        raise InputError(f"the image is empty: shape {shape}")
    if ndim < 2:
        raise InputError(
            f"cannot segment an image of shape {shape} ({ndim}D): expected (H, W) or a "
            "stack (N, H, W)"
        )
    axis = _channel_axis(shape, in_channels, channel_axis, channels)
    chosen = _chosen_channels(shape, axis, channels, in_channels)
    spatial = [a for a in range(ndim) if a != axis]
    if len(spatial) > MAX_NON_CHANNEL_AXES:
        raise InputError(
            f"cannot segment an image of shape {shape} ({ndim}D) without a channel axis: at "
            "most t, z, y, x; name its channel axis (--channel-axis / the channel axis field)"
        )
    leading = tuple(shape[a] for a in spatial[:-2])
    restore = Restore(leading)
    if np.dtype(image.dtype) == bool and isinstance(image, np.ndarray):
        image = image.view(np.uint8)
    if isinstance(image, np.ndarray):
        planes = _numpy_planes(image, axis, chosen, leading, in_channels)
        if planes is not None:
            return planes, restore
    elif axis in (None, ndim - 3) and chosen is None and len(leading) <= 1:
        # Already (N, [C,] H, W) or a single (C, H, W) / (H, W) plane: kept as it is.
        if np.dtype(image.dtype) == bool:
            image = image.astype(np.uint8) if hasattr(image, "astype") else _AsUint8(image)
        return (_add_plane_axis(image) if not leading else image), restore
    return _PlaneStack(image, axis, chosen, leading, keep_channels=in_channels > 1), restore


def rgb_message(where: str = "", in_channels: int = 1) -> str:
    """The one-line refusal of an RGB image, ``where`` naming it (e.g. ``" (x.png)"``)."""
    expects = "one grayscale channel" if in_channels == 1 else f"{in_channels} channels"
    return RGB_MESSAGE.format(where=where).replace("one grayscale channel", expects)


def _channel_axis(
    shape: tuple[int, ...], in_channels: int, channel_axis: int | None, channels: Any
) -> int | None:
    """The channel axis as a non-negative index, or ``None`` for one-channel planes."""
    ndim = len(shape)
    if channel_axis is None:
        if in_channels == 1:
            if channels is not None:
                raise InputError(
                    f"channels {_list(channels)} were chosen but the image of shape {shape} "
                    "has no channel axis; name it (--channel-axis / the channel axis field)"
                )
            return None
        if ndim < 3:
            raise InputError(
                f"the model expects {_channel_count(in_channels)} but the image of shape "
                f"{shape} has no channel axis; give a (C, H, W) image or name its channel "
                "axis (--channel-axis / the channel axis field)"
            )
        return ndim - 3
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise InputError(f"the channel axis must be an axis number, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise InputError(
            f"channel axis {channel_axis} does not exist in an image of shape {shape}; "
            f"choose an axis from {-ndim} to {ndim - 1} (--channel-axis / the channel axis field)"
        )
    if ndim < 3:
        raise InputError(
            f"an image with a channel axis needs 3 axes or more (C, H, W), got shape {shape}; "
            "give no channel axis for a 2-D image"
        )
    return int(channel_axis) % ndim


def _chosen_channels(
    shape: tuple[int, ...], axis: int | None, channels: Any, in_channels: int
) -> tuple[int, ...] | None:
    """Checked channel selection (``None``: all channels, or no channel axis)."""
    if axis is None:
        return None
    count = shape[axis]
    if count > MAX_CHANNELS:
        raise InputError(
            f"the channel axis (axis {axis}) of the image of shape {shape} has {count} "
            f"entries, more than the {MAX_CHANNELS} channels supported; name the right "
            "channel axis (--channel-axis / the channel axis field) or keep fewer channels "
            "per file"
        )
    chosen = None
    if channels is not None:
        chosen = _channel_indices(channels)
        for index in chosen:
            if not 0 <= index < count:
                raise InputError(
                    f"channel {index} is out of range: the channel axis (axis {axis}) has "
                    f"{count} channel{'s' if count > 1 else ''} (0 to {count - 1}); choose "
                    f"channels from 0 to {count - 1} (--channels / the Channels field)"
                )
    selected = count if chosen is None else len(chosen)
    if selected != in_channels:
        if chosen is None:
            raise InputError(
                f"the model expects {_channel_count(in_channels)} but the image of shape "
                f"{shape} has {count} on its channel axis (axis {axis}); choose channels "
                "with --channels / the Channels field"
            )
        raise InputError(
            f"the model expects {_channel_count(in_channels)} but {selected} "
            f"{'are' if selected > 1 else 'is'} chosen (channels {_list(chosen)} of axis "
            f"{axis}); choose {in_channels} with --channels / the Channels field"
        )
    if chosen == tuple(range(count)):
        return None  # all, in order: a plain view
    return chosen


def _channel_indices(channels: Any) -> tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        channels = [channels]
    chosen = []
    for value in channels:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"channels are numbers like 0,2; got {_list(channels)}")
        chosen.append(int(value))
    if not chosen:
        raise InputError("no channel is chosen; choose at least one (--channels / Channels)")
    return tuple(chosen)


def _channel_count(count: int) -> str:
    return f"{count} channel{'s' if count != 1 else ''}"


def _list(values: Any) -> str:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        return str(values)
    return ",".join(str(v) for v in values)


def looks_rgb(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is taken as RGB(A) when nothing says: ``(..., H, W, 3|4)``
    with ``H`` and ``W`` above 4 pixels."""
    # A "stack" of planes 3 or 4 pixels wide is not a plausible microscopy image,
    # whereas (..., H, W, 3|4) is what every RGB reader returns.
    return len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4


def _numpy_planes(
    image: np.ndarray,
    axis: int | None,
    chosen: tuple[int, ...] | None,
    leading: tuple[int, ...],
    in_channels: int,
) -> np.ndarray | None:
    """``(N, [C,] H, W)`` view of a numpy image, or ``None`` when no view can express it."""
    array = image
    if axis is not None:
        array = np.moveaxis(array, axis, -3)
        if chosen is not None:
            picked = _as_slice(chosen)
            if picked is None:
                return None  # an irregular selection: read plane by plane instead
            array = array[..., picked, :, :]
        if in_channels == 1:
            array = array[..., 0, :, :]
    target = (math.prod(leading), *array.shape[len(leading) :])
    unchanged = axis in (None, image.ndim - 3) and chosen is None
    if unchanged and target == image.shape:
        return image  # already (N, [C,] H, W): the image itself
    try:
        return np.reshape(array, target, copy=False)
    except ValueError:  # leading axes interleaved with the channel axis in memory
        return None


def _as_slice(chosen: tuple[int, ...]) -> slice | None:
    """The channels as a slice (a view), or ``None`` if they are not evenly spaced."""
    if len(chosen) == 1:
        return slice(chosen[0], chosen[0] + 1)
    step = chosen[1] - chosen[0]
    if step == 0 or any(b - a != step for a, b in itertools.pairwise(chosen)):
        return None
    stop = chosen[-1] + step
    return slice(chosen[0], stop if stop >= 0 else None, step)


def plane_index(leading_shape: tuple[int, ...], position: tuple[int, ...]) -> int:
    """Flat plane index of a position on the leading axes (row-major).

    Parameters
    ----------
    leading_shape : tuple of int
        Shape of the leading axes (``Restore.leading``), e.g. ``(T, Z)``; ``()`` for
        one plane.
    position : tuple of int
        Index on each leading axis, e.g. ``(t, z)``.

    Returns
    -------
    int
        ``t * Z + z`` for ``(T, Z)``; ``0`` for ``()``.

    Raises
    ------
    InputError
        If the position has the wrong length or lies outside the leading axes.
    """
    leading = tuple(int(s) for s in leading_shape)
    position = tuple(int(p) for p in position)
    if len(position) != len(leading) or not all(
        0 <= p < s for p, s in zip(position, leading, strict=True)
    ):
        raise InputError(f"position {position} is outside the leading axes {leading}")
    return int(np.ravel_multi_index(position, leading)) if leading else 0


def plane_position(leading_shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """Position on the leading axes of flat plane ``index``: the inverse of :func:`plane_index`.

    Raises
    ------
    InputError
        If ``index`` is not in ``0 .. prod(leading_shape) - 1``.
    """
    leading = tuple(int(s) for s in leading_shape)
    count = math.prod(leading)
    if not 0 <= int(index) < count:
        raise InputError(f"plane {index} is out of range for {count} plane(s)")
    return tuple(int(i) for i in np.unravel_index(int(index), leading)) if leading else ()


def leading_axes(ndim: int, *, in_channels: int = 1, channel_axis: int | None = None) -> tuple:
    """Which axes of an ``ndim``-D image are leading axes (as :func:`as_planes` reads them).

    Returns
    -------
    tuple of int
        Axis numbers, e.g. ``(0, 1)`` for ``(T, Z, Y, X)``, ``(0, 2)`` for ``(T, C, Z, Y, X)``
        with ``channel_axis=1``, ``(0,)`` for ``(Z, C, Y, X)`` with ``in_channels=2``.
    """
    if channel_axis is None and in_channels > 1 and ndim >= 3:
        channel_axis = ndim - 3
    axis = None if channel_axis is None else int(channel_axis) % ndim
    spatial = [a for a in range(ndim) if a != axis]
    return tuple(spatial[:-2])


def rgb_to_grey(image: Any) -> Any:
    """Luminance ``0.299 R + 0.587 G + 0.114 B`` of an ``(..., 3|4)`` RGB(A) image.

    Alpha is dropped. numpy images are converted at once; zarr and dask images are
    converted lazily, region by region, as they are read.

    Parameters
    ----------
    image : (..., 3) or (..., 4) array-like

    Returns
    -------
    (...) float32 ndarray, or a lazy array-like of that shape and dtype

    Raises
    ------
    InputError
        If the last axis is not 3 or 4 long.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 3 or shape[-1] not in (3, 4):
        raise InputError(
            f"cannot read an image of shape {shape} as RGB: its last axis should hold 3 "
            "(RGB) or 4 (RGBA) colours"
        )
    if isinstance(image, np.ndarray):
        return _grey(image)
    return _GreyView(image)


def _grey(colour: np.ndarray) -> np.ndarray:
    red, green, blue = (np.float32(w) for w in LUMINANCE)
    grey = colour[..., 0].astype(np.float32) * red
    grey += colour[..., 1].astype(np.float32) * green
    grey += colour[..., 2].astype(np.float32) * blue
    return grey


class _GreyView:
    """:func:`rgb_to_grey` of a lazy image, computed on the regions read."""

    def __init__(self, colour: Any) -> None:
        self.colour = colour
        self.shape = tuple(int(s) for s in colour.shape[:-1])
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key, self.ndim)
        return _grey(np.asarray(self.colour[(*key, slice(0, 3))]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


def _full_key(key: Any, ndim: int) -> tuple:
    """``key`` with its Ellipsis expanded and padded with full slices to ``ndim`` entries."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = ndim - (len(key) - 1 - sum(k is None for k in key))
        key = (*key[:at], *(slice(None),) * fill, *key[at + 1 :])
    if any(k is None for k in key):
        raise IndexError("new axes are not supported when indexing planes")
    if len(key) > ndim:
        raise IndexError(f"too many indices for {ndim} axes")
    return (*key, *(slice(None),) * (ndim - len(key)))


class _AsUint8:
    """A lazy bool image read as uint8 (0/1)."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = tuple(int(s) for s in image.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.image[key]).astype(np.uint8)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


class _PlaneStack:
    """``(N, [C,] H, W)`` planes of an image of any layout, read lazily.

    ``stack[p]`` is a lazy view of plane ``p``; ``stack[p, ...region]`` reads only that
    region of that plane from the image (the selected channels' span of the channel
    axis, then the chosen channels in order).

    Parameters
    ----------
    image : array-like
        The image (numpy, zarr, dask...).
    axis : int or None
        Its channel axis (non-negative).
    chosen : tuple of int or None
        Channels to keep, in order (``None``: all).
    leading : tuple of int
        Shape of the leading axes.
    keep_channels : bool
        Whether planes have a channel axis (``C > 1`` models); else the one chosen
        channel is dropped.
    """

    def __init__(
        self,
        image: Any,
        axis: int | None,
        chosen: tuple[int, ...] | None,
        leading: tuple[int, ...],
        *,
        keep_channels: bool,
    ) -> None:
        self.image = image
        self.axis = axis
        shape = tuple(int(s) for s in image.shape)
        self.spatial = [a for a in range(len(shape)) if a != axis]
        self.leading = leading
        if axis is not None:
            self.chosen = chosen if chosen is not None else tuple(range(shape[axis]))
        else:
            self.chosen = None
        self.keep_channels = keep_channels and axis is not None
        height, width = shape[self.spatial[-2]], shape[self.spatial[-1]]
        plane = (len(self.chosen), height, width) if self.keep_channels else (height, width)
        self.shape = (math.prod(leading), *plane)
        boolean = np.dtype(image.dtype) == bool
        self.dtype = np.dtype(np.uint8) if boolean else np.dtype(image.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        key = _full_key(key, self.ndim)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index = int(first)
            if index < 0:
                index += len(self)
            if not 0 <= index < len(self):
                raise IndexError(f"plane {first} is out of range for {len(self)} plane(s)")
            if all(isinstance(k, slice) and k == slice(None) for k in rest):
                return _PlaneOf(self, index)
            return self._read(index, rest)
        indices = range(len(self))[first] if isinstance(first, slice) else np.asarray(first)
        return np.stack([self._read(int(i), rest) for i in np.atleast_1d(indices)])

    def _read(self, index: int, rest: tuple) -> np.ndarray:
        """Plane ``index`` indexed by ``rest`` (keys of ``([C,] H, W)``) as numpy."""
        channel_key = rest[0] if self.keep_channels else slice(None)
        source: list[Any] = [slice(None)] * len(self.image.shape)
        position = plane_position(self.leading, index)
        for axis, value in zip(self.spatial[:-2], position, strict=True):
            source[axis] = value
        for axis, value in zip(self.spatial[-2:], rest[-2:], strict=True):
            if not isinstance(value, (slice, int, np.integer)):
                raise IndexError("planes are indexed with integers and slices only")
            source[axis] = value
        if self.axis is not None:
            # The span of the chosen channels: at most 8, each read once.
            source[self.axis] = slice(min(self.chosen), max(self.chosen) + 1)
        block = np.asarray(self.image[tuple(source)])
        if block.dtype == bool:
            block = block.view(np.uint8)
        if self.axis is not None:
            remaining = [a for a, k in enumerate(source) if isinstance(k, slice)]
            block = np.moveaxis(block, remaining.index(self.axis), 0)
            block = block[[c - min(self.chosen) for c in self.chosen]]
            block = block[channel_key] if self.keep_channels else block[0]
        return block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)

    def __repr__(self) -> str:
        return f"<planes {self.shape} of {type(self.image).__name__} {tuple(self.image.shape)}>"


class _PlaneOf:
    """Plane ``index`` of a :class:`_PlaneStack`, read lazily: ``view[key]`` reads only ``key``."""

    def __init__(self, stack: _PlaneStack, index: int) -> None:
        self.stack = stack
        self.index = index
        self.shape = tuple(stack.shape[1:])
        self.dtype = stack.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.stack._read(self.index, _full_key(key, self.ndim))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


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


def _add_plane_axis(image: Any) -> Any:
    module = type(image).__module__
    if isinstance(image, np.ndarray) or module.startswith("dask"):
        return image[np.newaxis]
    return _OnePlaneStack(image)  # array-likes without newaxis indexing (zarr)


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

"""Hostile files: every bad or crafted image file gives one clear line, quickly, in bounded memory.

A table names the message for each kind of bad file a user meets (empty, text, truncated,
not a TIFF, a header claiming more pixels than memory, a corrupt PNG); property tests
(hypothesis) then feed :func:`read_image` random bytes and small real TIFFs and PNGs with
mutated headers (IFD offsets, width/height, bits per sample, compression, strip offsets
and counts, tag types and counts) and truncations, and check that it either returns an
array or raises a :class:`UNetError`, never another exception, within a few seconds and
a bounded amount of memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage import io as skio

from napari_unet.core import memory as memory_module
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.io import read_image

# ------------------------------------------------------------------ bad files: one line each


def _tiff_bytes(tmp_path, image=None, **options) -> bytes:
    image = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) if image is None else image
    tifffile.imwrite(tmp_path / "seed.tif", image, **options)
    return (tmp_path / "seed.tif").read_bytes()


def _png_bytes(tmp_path) -> bytes:
    image = np.arange(40 * 50, dtype=np.uint16).reshape(40, 50).astype(np.uint8)
    skio.imsave(tmp_path / "seed.png", image, check_contrast=False)
    return (tmp_path / "seed.png").read_bytes()


def _patch_tags(data: bytes, folder: Path, values: dict[int, int]) -> bytes:
    """``data`` (a TIFF) with the first page's given tags set to new values (modulo their type)."""
    (folder / "patch.tif").write_bytes(data)
    patched = bytearray(data)
    with tifffile.TiffFile(folder / "patch.tif") as tiff:
        tags = tiff.pages[0].tags
        for code, value in values.items():
            tag = tags[code]
            fmt = tiff.byteorder + tifffile.TIFF.DATA_FORMATS[tag.dtype]
            size = struct.calcsize(fmt)
            new = struct.pack(fmt, value % 256**size)
            patched[tag.valueoffset : tag.valueoffset + size] = new
    return bytes(patched)


def _flip_middle(data: bytes, start: int) -> bytes:
    """``data`` with 16 bytes from ``start`` inverted (damaged, same length)."""
    damaged = bytearray(data)
    damaged[start : start + 16] = bytes(255 - b for b in damaged[start : start + 16])
    return bytes(damaged)


DAMAGED = r"; check it was saved or copied completely, or export it again$"

BAD_FILES = {
    # name: (file name, bytes from tmp_path, exact message or regex)
    "empty tif": (
        "empty.tif",
        lambda tmp: b"",
        r"^cannot read empty.tif: the file is empty \(0 bytes\)" + DAMAGED,
    ),
    "empty png": (
        "empty.png",
        lambda tmp: b"",
        r"^cannot read empty.png: the file is empty \(0 bytes\)" + DAMAGED,
    ),
    "text renamed tif": (
        "notes.tif",
        lambda tmp: b"sample,area\n1,2.5\n" * 20,
        r"^cannot read notes.tif: it is not a TIFF file \(it looks like text\); give the image "
        r"file itself, not a text file renamed \.tif/\.png$",
    ),
    "binary renamed tif": (
        "noise.tif",
        lambda tmp: bytes(np.random.default_rng(0).integers(128, 256, 4096, dtype=np.uint8)),
        r"^cannot read noise.tif: it is not a TIFF file \(it does not start with a TIFF "
        r"header\); export the image as TIFF$",
    ),
    "png renamed tif": (
        "cells.tif",
        _png_bytes,
        r"^cannot read cells.tif: it is not a TIFF file \(it looks like a PNG image\); "
        r"rename it to \.png$",
    ),
    "tif renamed png": (
        "cells.png",
        _tiff_bytes,
        r"^cannot read cells.png: it is not a PNG file \(it looks like a TIFF image\); "
        r"rename it to \.tif$",
    ),
    "zip renamed tif": (
        "cells.tif",
        lambda tmp: b"PK\x03\x04" + bytes(100),
        r"^cannot read cells.tif: it is not a TIFF file \(it looks like a ZIP archive\); "
        r"extract the image from it first$",
    ),
    "truncated tif, data cut": (
        "cut.tif",
        lambda tmp: _tiff_bytes(tmp)[:2000],
        r"^cannot read cut.tif: the TIFF file is damaged or truncated \(its pixel data should "
        r"end at byte \d+ but the file has 2000 bytes\)" + DAMAGED,
    ),
    "truncated zlib tif": (
        "cut.tif",
        lambda tmp: (data := _tiff_bytes(tmp, compression="zlib"))[: len(data) // 2],
        r"^cannot read cut.tif: the TIFF file is damaged or truncated \(its pixel data should "
        r"end at byte \d+ but the file has \d+ bytes\)" + DAMAGED,
    ),
    "stack cut before its last plane": (
        "stack.tif",
        # ImageJ writes the planes' pixels together, then the second page's header:
        # tifffile alone would return the first plane as if it were the whole stack
        lambda tmp: (data := _tiff_bytes(tmp, np.zeros((2, 24, 30), np.uint8), imagej=True))[
            : len(data) * 3 // 4
        ],
        r"^cannot read stack.tif: the TIFF file is damaged or truncated \(.*(page|series).*\)"
        + DAMAGED,
    ),
    "truncated tif, header cut": (
        "cut.tif",
        lambda tmp: _tiff_bytes(tmp)[:12],
        r"^cannot read cut.tif: the TIFF file is damaged or truncated \(.+\)" + DAMAGED,
    ),
    "garbled zlib data": (
        "garbled.tif",
        lambda tmp: _flip_middle(_tiff_bytes(tmp, compression="zlib"), 20),
        r"^cannot read garbled.tif: the TIFF file is damaged or truncated \(.+\)" + DAMAGED,
    ),
    "width and height patched": (
        "patched.tif",
        lambda tmp: _patch_tags(_tiff_bytes(tmp, rowsperstrip=8), tmp, {256: 100000, 257: 100000}),
        r"^cannot read patched.tif: the TIFF file is damaged or truncated \(its header lists 5 "
        r"of the 12500 strips or tiles\)" + DAMAGED,
    ),
    "uncompressed, fewer bytes than pixels": (
        "short.tif",
        lambda tmp: _patch_tags(_tiff_bytes(tmp), tmp, {256: 100000, 278: 2**31}),
        r"^cannot read short.tif: the TIFF file is damaged or truncated \(it stores 4000 of the "
        r"8000000 bytes its pixels need\)" + DAMAGED,
    ),
    "truncated png": (
        "cut.png",
        lambda tmp: _png_bytes(tmp)[:60],
        r"^cannot read cut.png: the PNG file is damaged or truncated \(.+\)" + DAMAGED,
    ),
    "corrupt png data": (
        "bad.png",
        lambda tmp: _flip_middle(_png_bytes(tmp), 60),
        r"^cannot read bad.png: the PNG file is damaged or truncated \(.+\)" + DAMAGED,
    ),
    "png signature only": (
        "bad.png",
        lambda tmp: b"\x89PNG\r\n\x1a\n",
        r"^cannot read bad.png: the PNG file is damaged or truncated \(no IHDR header chunk\)"
        + DAMAGED,
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_gives_one_line_naming_it(tmp_path, case):
    name, make, message = BAD_FILES[case]
    (tmp_path / name).write_bytes(make(tmp_path))
    with pytest.raises(InputError) as caught:
        read_image(tmp_path / name)
    assert re.search(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_what_tifffile_logs_about_a_damaged_file_is_not_shown(tmp_path, caplog):
    (tmp_path / "cut.tif").write_bytes(_tiff_bytes(tmp_path)[:8])
    with caplog.at_level(logging.DEBUG), pytest.raises(InputError, match="invalid offset"):
        read_image(tmp_path / "cut.tif")
    assert not [record for record in caplog.records if record.name.startswith("tifffile")]


HUGE = (
    "reading huge.{ext} (a 100000 x 100000 {dtype} image) needs {size}, more than the memory "
    "available (4.0 GB); segment it into a .zarr output (-o result.zarr), which reads it tile "
    "by tile"
)


def test_a_tiff_header_claiming_more_than_memory_is_refused_before_allocating(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(memory_module, "available_memory", lambda: 4 * 2**30)
    # one zlib strip (RowsPerStrip = 2**31) said to hold 100000 x 100000 pixels
    seed = _tiff_bytes(tmp_path, compression="zlib", rowsperstrip=40)
    (tmp_path / "huge.tif").write_bytes(
        _patch_tags(seed, tmp_path, {256: 100000, 257: 100000, 278: 2**31})
    )
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as caught:
            read_image(tmp_path / "huge.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(caught.value) == HUGE.format(ext="tif", dtype="uint16", size="18.6 GB")
    assert peak < 10 * 2**20


def test_a_png_header_claiming_more_than_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(memory_module, "available_memory", lambda: 4 * 2**30)
    data = bytearray(_png_bytes(tmp_path))
    data[16:24] = struct.pack(">II", 100000, 100000)  # IHDR width, height (CRC now wrong)
    (tmp_path / "huge.png").write_bytes(bytes(data))
    with pytest.raises(InputError) as caught:
        read_image(tmp_path / "huge.png")
    assert str(caught.value) == HUGE.format(ext="png", dtype="uint8", size="9.3 GB")


def test_the_real_memory_check_refuses_a_terabyte_header(tmp_path):
    seed = _tiff_bytes(tmp_path, compression="zlib", rowsperstrip=40)
    (tmp_path / "huge.tif").write_bytes(
        _patch_tags(seed, tmp_path, {256: 1_000_000, 257: 1_000_000, 278: 2**31})
    )
    with pytest.raises(
        InputError,
        match=r"\(a 1000000 x 1000000 uint16 image\) needs 1\.8 TB, more than the memory",
    ):
        read_image(tmp_path / "huge.tif")


def _lzw_tiff(tmp_path) -> Path:
    from PIL import Image

    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(pixels).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    return tmp_path / "lzw.tif"


def test_lzw_tiffs_from_microscopes_are_read(tmp_path):
    """imagecodecs is a dependency: the LZW compression many microscopes write just works."""
    np.testing.assert_array_equal(
        read_image(_lzw_tiff(tmp_path)), np.arange(64, dtype=np.uint8).reshape(8, 8)
    )


def test_a_codec_tifffile_lacks_is_named_not_called_damage(tmp_path, monkeypatch):
    path = _lzw_tiff(tmp_path)
    monkeypatch.setattr(tifffile.TIFF, "DECOMPRESSORS", {})  # as without imagecodecs
    with pytest.raises(InputError) as caught:
        read_image(path)
    assert str(caught.value) == (
        "cannot read lzw.tif: its LZW compression needs the imagecodecs package; install it "
        "(pip install imagecodecs), or save the image uncompressed or with zlib compression"
    )


def test_an_unreadable_file_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "locked.tif"
    path.write_bytes(_tiff_bytes(tmp_path))
    # chmod 0 would not stop root (CI runs as root): refuse the read as the OS would.
    real_open = Path.open

    def refusing_open(self, *args, **kwargs):
        if self.name == "locked.tif":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refusing_open)
    with pytest.raises(InputError, match=r"^cannot read locked.tif: Permission denied; check"):
        read_image(path)


# ------------------------------------------------------------------ property tests

#: Memory the reader is told is available during the property tests: every header
#: claiming more is refused before allocating, so the peak stays near this.
FUZZ_MEMORY = 64 * 2**20
#: Bounds asserted per example: generous, so only a hang or a blow-up fails.
MAX_SECONDS = 5.0
MAX_TRACED_BYTES = 200 * 2**20

#: NAPARI_UNET_FUZZ_EXAMPLES=5000 fuzzes deeper, with new random examples on each run;
#: by default the same 150 examples run every time, so a failure reproduces.
DEEPER = int(os.environ.get("NAPARI_UNET_FUZZ_EXAMPLES", "0"))
FUZZ_SETTINGS = settings(
    max_examples=DEEPER or 150,
    derandomize=not DEEPER,
    deadline=None,  # timed by the test itself, with a generous bound
    database=None,  # nothing written beside the repository
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclasses.dataclass(frozen=True)
class Field:
    """Bytes of a header field that mutations overwrite: ``size`` bytes at ``offset``."""

    offset: int
    size: int
    byteorder: str = "little"


class Seed:
    """A small valid file and the header fields worth mutating."""

    def __init__(self, path: Path, fields: tuple[Field, ...]) -> None:
        self.name, self.data, self.fields = path.name, path.read_bytes(), fields
        self.image = read_image(path)

    def __repr__(self) -> str:  # short: hypothesis prints the fixtures of a failing example
        return f"Seed({self.name!r}, {len(self.data)} bytes, {len(self.fields)} fields)"


#: Tags whose values decide shapes, layout and decoding.
TAGS = {
    256: "ImageWidth",
    257: "ImageLength",
    258: "BitsPerSample",
    259: "Compression",
    262: "Photometric",
    273: "StripOffsets",
    277: "SamplesPerPixel",
    278: "RowsPerStrip",
    279: "StripByteCounts",
    284: "PlanarConfiguration",
    317: "Predictor",
    322: "TileWidth",
    323: "TileLength",
    324: "TileOffsets",
    325: "TileByteCounts",
    338: "ExtraSamples",
    339: "SampleFormat",
}


def _tiff_fields(path: Path) -> tuple[Field, ...]:
    """IFD offsets and the type, count and value(s) of the layout tags of every page."""
    with tifffile.TiffFile(path) as tiff:
        big = tiff.is_bigtiff
        fields = [Field(8 if big else 4, 8 if big else 4)]  # offset of the first IFD
        for page in tiff.pages:
            entries = len(page.tags)
            entry_size, count_size = (20, 8) if big else (12, 4)
            head = 8 if big else 2
            fields.append(Field(page.offset + head + entries * entry_size, count_size))  # next IFD
            for tag in page.tags:
                if tag.code not in TAGS:
                    continue
                item = struct.calcsize(tiff.byteorder + tifffile.TIFF.DATA_FORMATS[tag.dtype])
                fields.append(Field(tag.offset + 2, 2))  # type
                fields.append(Field(tag.offset + 4, count_size))  # count
                fields += [
                    Field(tag.valueoffset + i * item, item) for i in range(min(tag.count, 4))
                ]
    return tuple(fields)


def _png_fields(data: bytes) -> tuple[Field, ...]:
    """IHDR fields, then every chunk's length, type and CRC."""
    fields = [Field(16, 4, "big"), Field(20, 4, "big")]  # width, height
    fields += [
        Field(offset, 1) for offset in range(24, 29)
    ]  # depth, colour, compr., filter, interlace
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        fields += [Field(position, 4, "big"), Field(position + 4, 4, "big")]
        fields.append(Field(position + 8 + length, 4, "big"))  # CRC
        position += 12 + length
    return tuple(fields)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple[Seed, ...]:
    """Small real TIFFs (several layouts and writers) and PNGs."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    gray16 = rng.integers(0, 4000, (24, 30)).astype(np.uint16)
    gray8 = (gray16 // 16).astype(np.uint8)
    tiffs = {
        "strips.tif": (gray16, {"rowsperstrip": 8}),
        "zlib.tif": (gray16, {"compression": "zlib", "predictor": True}),
        "tiled.tif": (gray16, {"tile": (16, 16)}),
        "tiled-zlib.tif": (gray16, {"tile": (16, 16), "compression": "zlib"}),
        "stack.tif": (np.stack([gray16] * 3), {"photometric": "minisblack"}),
        "imagej.tif": (np.stack([gray8] * 2), {"imagej": True}),
        "bigtiff.tif": (gray16.astype(np.float32), {"bigtiff": True}),
        "rgb.tif": (np.stack([gray8] * 3, axis=-1), {"photometric": "rgb"}),
        "separate.tif": (np.stack([gray8] * 3), {"photometric": "rgb", "planarconfig": "separate"}),
    }
    found = []
    for name, (image, options) in tiffs.items():
        tifffile.imwrite(folder / name, image, **options)
        found.append(Seed(folder / name, _tiff_fields(folder / name)))
    pillow = {"packbits.tif": "packbits", "pillow-deflate.tif": "tiff_adobe_deflate"}
    for name, compression in pillow.items():
        Image.fromarray(gray8).save(folder / name, compression=compression)
        found.append(Seed(folder / name, _tiff_fields(folder / name)))
    Image.fromarray(gray8 > 100).save(folder / "bits.tif")
    found.append(Seed(folder / "bits.tif", _tiff_fields(folder / "bits.tif")))
    pngs = {
        "gray.png": gray8,
        "gray16.png": gray16,
        "rgb.png": np.stack([gray8, gray8 // 2, gray8], axis=-1),
        "rgba.png": np.stack([gray8] * 4, axis=-1),
    }
    for name, image in pngs.items():
        skio.imsave(folder / name, image, check_contrast=False)
        found.append(Seed(folder / name, _png_fields((folder / name).read_bytes())))
    Image.fromarray(gray8).convert("P").save(folder / "palette.png")
    found.append(Seed(folder / "palette.png", _png_fields((folder / "palette.png").read_bytes())))
    return tuple(found)


def test_the_seeds_are_valid_images_with_fields_to_mutate(seeds):
    for seed in seeds:
        assert seed.image.size > 0, seed.name
        assert len(seed.fields) > 3, seed.name


#: Values that break parsers: zero, one, powers of two and their neighbours, all ones.
SPECIAL = [0, 1, 2, 3, 4, 7, 8, 12, 16, 32, 64, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1]
values = st.one_of(st.sampled_from(SPECIAL), st.integers(0, 2**32 - 1))

#: One mutation: (kind, which, value); "which" picks a field or a position modulo their number.
mutations = st.tuples(
    st.sampled_from(["field", "field", "field", "byte", "word", "truncate"]),
    st.integers(0, 2**16),
    values,
)


def _mutate(seed: Seed, changes: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(seed.data)
    for kind, which, value in changes:
        if not data:
            break
        if kind == "field":
            field = seed.fields[which % len(seed.fields)]
            new = (value % 256**field.size).to_bytes(field.size, field.byteorder)
            data[field.offset : field.offset + field.size] = new
        elif kind == "byte":
            data[which % len(data)] = value % 256
        elif kind == "word":
            position = which % len(data)
            data[position : position + 4] = (value % 2**32).to_bytes(4, "little")
        else:
            del data[which % len(data) :]
    return bytes(data)


def _read_within_bounds(path: Path) -> np.ndarray | None:
    """Read ``path``; fail unless it returns an array or raises UNetError, in time and memory.

    Returns the array read, or None after a (checked) one-line UNetError.
    """
    tracemalloc.start()
    start = time.perf_counter()
    result = None
    try:
        result = read_image(path)
        assert isinstance(result, np.ndarray)
    except UNetError as error:
        message = str(error)
        assert "\n" not in message and path.name in message, message
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"{path.name}: {elapsed:.1f} s"
    assert peak < MAX_TRACED_BYTES, f"{path.name}: {peak / 2**20:.0f} MB"
    return result


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def little_memory():
    """Every header claiming more than FUZZ_MEMORY is refused: the memory bound is tight."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(memory_module, "available_memory", lambda: FUZZ_MEMORY)
        yield


@FUZZ_SETTINGS
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".tif", ".tiff", ".png"]))
def test_random_bytes_never_escape_as_another_error(little_memory, fuzz_folder, data, suffix):
    path = fuzz_folder / f"random{suffix}"
    path.write_bytes(data)
    _read_within_bounds(path)


@FUZZ_SETTINGS
@given(
    magic=st.sampled_from(
        [b"II*\x00", b"MM\x00*", b"II+\x00\x08\x00\x00\x00", b"\x89PNG\r\n\x1a\n"]
    ),
    rest=st.binary(max_size=2048),
)
def test_random_bytes_behind_a_valid_signature(little_memory, fuzz_folder, magic, rest):
    path = fuzz_folder / ("signed.png" if magic.startswith(b"\x89") else "signed.tif")
    path.write_bytes(magic + rest)
    _read_within_bounds(path)


@FUZZ_SETTINGS
@given(which=st.integers(0, 2**16), changes=st.lists(mutations, min_size=1, max_size=4))
def test_mutated_real_files_fail_in_one_line_in_bounded_time_and_memory(
    little_memory, seeds, fuzz_folder, which, changes
):
    seed = seeds[which % len(seeds)]
    path = fuzz_folder / f"mutated-{seed.name}"
    path.write_bytes(_mutate(seed, changes))
    _read_within_bounds(path)


@FUZZ_SETTINGS
@given(which=st.integers(0, 2**16), fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_real_files_fail_in_one_line(little_memory, seeds, fuzz_folder, which, fraction):
    seed = seeds[which % len(seeds)]
    path = fuzz_folder / f"cut-{seed.name}"
    path.write_bytes(seed.data[: int(len(seed.data) * fraction)])
    result = _read_within_bounds(path)
    # only a cut through trailing metadata may still read, and then as the whole image:
    # never a stack silently missing planes, or zeros where pixels were cut off
    if result is not None:
        np.testing.assert_array_equal(result, seed.image)


@FUZZ_SETTINGS
@given(which=st.integers(0, 2**16), width=values, height=values)
def test_width_and_height_claims_are_checked_before_allocating(
    little_memory, seeds, fuzz_folder, which, width, height
):
    tiffs = [seed for seed in seeds if seed.name.endswith(".tif")]
    seed = tiffs[which % len(tiffs)]
    path = fuzz_folder / f"claims-{seed.name}"
    path.write_bytes(_patch_tags(seed.data, fuzz_folder, {256: width, 257: height}))
    _read_within_bounds(path)

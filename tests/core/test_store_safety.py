"""Store outputs never destroy inputs or foreign data, --resume on a damaged store says so,
the output is checked before any computation, and bad lazy inputs are one InputError.

Every refusal asserts its message AND that every file that existed before the call is
byte-identical afterwards (and that no file was added).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from napari_unet.core import safety
from napari_unet.core.errors import InputError, OutputError, UNetError
from napari_unet.core.events import Progress
from napari_unet.core.largeimage import (
    BlockStore,
    check_store_output,
    open_image,
    open_output_store,
    readable,
    segment_blocks_iter,
    segment_to_zarr,
    source_paths,
)
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model
from napari_unet.core.safety import is_our_store
from napari_unet.core.segment import SegmentOptions, get_predictor, segment

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
TILE = 124
BLOCK = 100  # one tile per block: a 200 x 220 image has 3 x 3 blocks


# ------------------------------------------------------------------ helpers


def snapshot(folder: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def refused(folder: Path, error: type[Exception], match: str, call) -> str:
    """Run ``call``, expect ``error`` matching ``match`` in one line, and no file touched."""
    before = snapshot(folder)
    with pytest.raises(error, match=match) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    after = snapshot(folder)
    assert after.keys() == before.keys(), sorted(after.keys() ^ before.keys())
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, changed
    return message


class CountingPredictor:
    """A predictor that counts its calls, to prove nothing was computed."""

    def __init__(self, model) -> None:
        self.inner, self.calls = get_predictor(model, "cpu"), 0

    def __call__(self, batch):
        self.calls += 1
        return self.inner(batch)


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=1, name="tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    noise = np.random.default_rng(0).normal(size=(200, 220))
    return ndimage.gaussian_filter(noise, 4).astype(np.float32)


@pytest.fixture(scope="module")
def options(model, image) -> SegmentOptions:
    probabilities = segment(model, image, tile_size=TILE, output="probabilities")
    return SegmentOptions(tile_size=TILE, threshold=float(np.median(probabilities[1])))


def run(model, image, path, options, **kwargs):
    return segment_to_zarr(model, image, path, options=options, block_size=BLOCK, **kwargs)


def input_store(path: Path, image: np.ndarray) -> Path:
    """A user's OME-Zarr image (not written by napari-unet)."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", data=image, chunks=(64, 64))
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    return path


def interrupted(model, image, path, options, blocks: int = 2) -> None:
    """A labels store of ours whose run stopped after ``blocks`` blocks."""
    generator = segment_blocks_iter(model, image, path, options=options, block_size=BLOCK)
    for event in generator:
        if isinstance(event, Progress) and event.message == "blocks" and event.done == blocks:
            break
    generator.close()
    assert len(BlockStore(path).done()) == blocks


# ------------------------------------------------ outputs that overlap inputs


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_the_input_store_is_never_the_output(tmp_path, model, image, options, flags):
    source = input_store(tmp_path / "v.zarr", image)
    message = refused(
        tmp_path,
        OutputError,
        "would overwrite the input",
        lambda: run(model, open_image(source), source, options, **flags),
    )
    assert str(source) in message


def test_an_output_inside_the_input_store_is_refused(tmp_path, model, image, options):
    source = input_store(tmp_path / "v.zarr", image)
    refused(
        tmp_path,
        OutputError,
        "would overwrite the input",
        lambda: run(model, open_image(source), source / "labels.zarr", options),
    )


def test_an_output_containing_the_input_array_is_refused(tmp_path, model, image, options):
    source = input_store(tmp_path / "v.zarr", image)
    # The array "0" opened directly: the output would be its store.
    refused(
        tmp_path,
        OutputError,
        "would overwrite the input",
        lambda: run(model, open_image(source / "0"), source, options, overwrite=True),
    )


def test_explicit_inputs_protect_in_memory_images(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    run(model, image, out, options)
    tifffile.imwrite(out / "cells.tif", image)  # the user keeps the input inside a result
    refused(
        tmp_path,
        OutputError,
        "would overwrite the input .*cells.tif",
        lambda: run(model, image, out, options, overwrite=True, inputs=[out / "cells.tif"]),
    )


def test_a_lazily_opened_input_knows_its_source(tmp_path, image):
    tifffile.imwrite(tmp_path / "in.tif", image, tile=(64, 64))
    assert source_paths(open_image(tmp_path / "in.tif")) == [tmp_path / "in.tif"]
    store = input_store(tmp_path / "v.zarr", image)
    assert source_paths(open_image(store)) == [store]
    assert source_paths(image) == []


def test_a_distributed_run_never_writes_into_its_source(tmp_path, model, image, options):
    pytest.importorskip("distributed")
    from napari_unet.core.distributed import local_client, segment_distributed_iter

    source = input_store(tmp_path / "v.zarr", image)
    with local_client(1, processes=False) as client:
        for target, flags in ((source, {"overwrite": True}), (source / "o.zarr", {})):
            generator = segment_distributed_iter(
                model, source, target, client=client, options=options, **flags
            )
            refused(tmp_path, OutputError, "would overwrite the input", lambda g=generator: next(g))


# ------------------------------------------- existing outputs that are not ours


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}])
def test_a_folder_of_other_files_is_never_replaced(tmp_path, model, image, options, flags):
    folder = tmp_path / "data.zarr"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"years of work")
    refused(
        tmp_path,
        OutputError,
        "data.zarr is a folder that is not a napari-unet result store; it is never deleted",
        lambda: run(model, image, folder, options, **flags),
    )


def test_a_zarr_image_of_someone_else_is_never_replaced(tmp_path, model, image, options):
    other = input_store(tmp_path / "theirs.zarr", image)
    refused(
        tmp_path,
        OutputError,
        "not a napari-unet result store",
        lambda: run(model, image, other, options, overwrite=True),
    )


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True}])
def test_a_file_named_like_a_store_is_never_replaced(tmp_path, model, image, options, flags):
    (tmp_path / "out.zarr").write_bytes(b"not a folder")
    refused(
        tmp_path,
        OutputError,
        r"out\.zarr.* (is not a napari-unet result store|is a file)",
        lambda: run(model, image, tmp_path / "out.zarr", options, **flags),
    )


def test_our_store_holding_other_files_is_never_replaced(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    run(model, image, out, options)
    (out / "notes.txt").write_text("my notes")
    refused(
        tmp_path,
        OutputError,
        r"holds files napari-unet did not write \(notes\.txt\); it is never deleted",
        lambda: run(model, image, out, options, overwrite=True),
    )


def test_an_existing_result_needs_overwrite_or_resume(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    run(model, image, out, options)
    refused(
        tmp_path,
        OutputError,
        r"out\.zarr already exists; pass --overwrite or --resume",
        lambda: run(model, image, out, options),
    )
    mask = SegmentOptions(tile_size=TILE, threshold=options.threshold, output="mask")
    replaced = run(model, image, out, mask, overwrite=True)
    np.testing.assert_array_equal(replaced[:], segment(model, image, options=mask))
    assert is_our_store(out) and BlockStore(out).run_record()["output"] == "mask"
    assert not (out / "_napari_unet" / "raw").exists()  # nothing of the old run is left


def test_every_store_is_marked_ours_from_its_creation(tmp_path, model, image, options):
    path = tmp_path / "alone.zarr"
    array = open_output_store(path, (30, 40), np.uint8, (16, 16))
    assert is_our_store(path) and array.shape == (30, 40)
    refused(
        tmp_path,
        OutputError,
        "already exists",
        lambda: open_output_store(path, (30, 40), np.uint8, (16, 16)),
    )
    # A store whose run stopped right after its creation is replaced with overwrite.
    result = run(model, image, path, options, overwrite=True)
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))


def test_open_output_store_never_wipes_a_foreign_folder(tmp_path):
    folder = tmp_path / "data.zarr"
    folder.mkdir()
    (folder / "a.txt").write_bytes(b"x")
    refused(
        tmp_path,
        OutputError,
        "not a napari-unet result store",
        lambda: open_output_store(folder, (8, 8), np.uint8, (8, 8), overwrite=True),
    )


def test_our_store_with_a_damaged_run_record_can_be_overwritten(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    interrupted(model, image, out, options)
    (out / ".zattrs").write_text("{not json")
    assert not is_our_store(out)
    result = run(model, image, out, options, overwrite=True)
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))


# ------------------------------------------------------- resume, damaged stores


def _remove(relative: str):
    def damage(path: Path) -> None:
        target = path / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    return damage


def _write(relative: str, text: str):
    def damage(path: Path) -> None:
        (path / relative).write_text(text)

    return damage


def _edit_record(change):
    def damage(path: Path) -> None:
        attrs = json.loads((path / ".zattrs").read_text())
        change(attrs)
        (path / ".zattrs").write_text(json.dumps(attrs))

    return damage


def _edit_block(key: str, change):
    def damage(path: Path) -> None:
        record_path = path / "_napari_unet" / f"{key}.json"
        record = json.loads(record_path.read_text())
        change(record)
        record_path.write_text(json.dumps(record))

    return damage


_SMALL_ZARRAY = {
    "zarr_format": 2,
    "shape": [10, 10],
    "chunks": [10, 10],
    "dtype": "<i4",
    "compressor": None,
    "fill_value": 0,
    "order": "C",
    "filters": None,
}

#: name: (damage done to an interrupted labels store, expected part of the message)
DAMAGE = {
    ".zattrs missing": (_remove(".zattrs"), r"run record \(\.zattrs\) is missing"),
    ".zattrs not JSON": (
        _write(".zattrs", "{not json"),
        r"run record \(\.zattrs\) is damaged \(not valid JSON: ",
    ),
    ".zattrs without our record": (
        _edit_record(lambda attrs: attrs.pop("napari_unet")),
        r"run record \(\.zattrs\) has no napari-unet entry",
    ),
    "record not an object": (
        _edit_record(lambda attrs: attrs.update(napari_unet=[1, 2])),
        "has no napari-unet entry",
    ),
    "record without a key": (
        _edit_record(lambda attrs: attrs["napari_unet"].pop("output")),
        r"run record is damaged \(no output\)",
    ),
    "record of another format": (
        _edit_record(lambda attrs: attrs["napari_unet"].update(format=99)),
        r"another napari-unet version \(format 99\)",
    ),
    ".zgroup missing": (_remove(".zgroup"), r"zarr metadata \(\.zgroup\) is missing or damaged"),
    "result array missing": (_remove("0"), r"result array \(0\) is missing or damaged"),
    "result metadata damaged": (
        _write("0/.zarray", "garbage"),
        r"result array \(0\) is missing or damaged",
    ),
    "result of another shape": (
        _write("0/.zarray", json.dumps(_SMALL_ZARRAY)),
        r"result array \(0\) is \(10, 10\) int32, not \(200, 220\) int32",
    ),
    "block record not JSON": (
        _write("_napari_unet/p0_r0_c0.json", "{trunc"),
        r"block record p0_r0_c0\.json is damaged \(not JSON\)",
    ),
    "block record with wrong rows": (
        _edit_block("p0_r0_c0", lambda record: record.update(rows=[0, 5])),
        r"block record p0_r0_c0\.json is damaged \(wrong rows\)",
    ),
    "block record without rows": (
        _edit_block("p0_r0_c1", lambda record: record.pop("rows")),
        r"p0_r0_c1\.json is damaged \(wrong rows\)",
    ),
    "mask scratch of another shape": (
        _write("_napari_unet/mask/.zarray", json.dumps(_SMALL_ZARRAY)),
        r"mask scratch \(_napari_unet/mask\) is gone while the run is unfinished",
    ),
    "block record of no block": (
        _write("_napari_unet/p7_r0_c0.json", json.dumps({"rows": [0, 1]})),
        r"p7_r0_c0\.json is damaged \(no such block",
    ),
    "scratch gone while unfinished": (
        _remove("_napari_unet/mask"),
        r"mask scratch \(_napari_unet/mask\) is gone while the run is unfinished",
    ),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_resume_on_a_damaged_store_says_so_and_what_to_do(tmp_path, model, image, options, name):
    damage, expected = DAMAGE[name]
    out = tmp_path / "out.zarr"
    interrupted(model, image, out, options)
    damage(out)
    predictor = CountingPredictor(model)
    message = refused(
        tmp_path,
        OutputError,
        expected,
        lambda: run(model, image, out, options, resume=True, predictor=predictor),
    )
    assert message.startswith(f"cannot resume {out}: ")
    assert message.endswith("; rerun with --overwrite to start again")
    assert predictor.calls == 0
    # ... and the advice works: the damaged store of ours is replaced.
    result = run(model, image, out, options, overwrite=True)
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))


def test_resume_on_a_complete_store_missing_a_block_record(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    run(model, image, out, options)
    (out / "_napari_unet" / "p0_r1_c1.json").unlink()
    refused(
        tmp_path,
        OutputError,
        r"cannot resume .*: it is marked complete but 1 block records are missing",
        lambda: run(model, image, out, options, resume=True),
    )


def test_resume_on_a_folder_that_is_not_a_store(tmp_path, model, image, options):
    folder = tmp_path / "out.zarr"
    folder.mkdir()
    (folder / "results.csv").write_text("a,b\n")
    refused(
        tmp_path,
        OutputError,
        r"cannot resume .*out\.zarr: it is not a napari-unet result store .*choose another output",
        lambda: run(model, image, folder, options, resume=True),
    )


def test_resume_on_someone_elses_zarr_store(tmp_path, model, image, options):
    other = input_store(tmp_path / "theirs.zarr", image)
    refused(
        tmp_path,
        OutputError,
        "cannot resume .*: it is not a napari-unet result store",
        lambda: run(model, image, other, options, resume=True),
    )


def test_resume_with_other_settings_names_them(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    interrupted(model, image, out, options)
    other = SegmentOptions(tile_size=TILE, threshold=0.99, min_size=7)
    refused(
        tmp_path,
        InputError,
        r"cannot resume .*different min_size, threshold; rerun with --overwrite instead",
        lambda: run(model, image, out, other, resume=True),
    )
    refused(
        tmp_path,
        InputError,
        r"different image \(its intensities differ\)",
        lambda: run(model, image * 2 + 1, out, options, resume=True),
    )


def test_resume_on_an_intact_store_still_works(tmp_path, model, image, options):
    out = tmp_path / "out.zarr"
    interrupted(model, image, out, options, blocks=3)
    (out / "_napari_unet" / "p0_r1_c0.json.partial").write_text("{half")  # a cut write
    predictor = CountingPredictor(model)
    result = run(model, image, out, options, resume=True, predictor=predictor)
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))
    assert predictor.calls == 9 - 3  # one tile per block, the 3 finished blocks kept


def test_resume_without_a_store_starts_fresh(tmp_path, model, image, options):
    result = run(model, image, tmp_path / "new.zarr", options, resume=True)
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))


# ------------------------------------------------ writable, before computing


def _deny_writes(monkeypatch, folder: Path) -> None:
    """Make ``folder`` refuse new files, also for root (chmod does not stop root)."""
    real = safety.tempfile.TemporaryFile

    def temporary_file(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(safety.tempfile, "TemporaryFile", temporary_file)


def test_a_read_only_output_folder_fails_before_any_block(
    tmp_path, model, image, options, monkeypatch
):
    folder = tmp_path / "read-only"
    folder.mkdir()
    _deny_writes(monkeypatch, folder)
    predictor = CountingPredictor(model)
    refused(
        tmp_path,
        OutputError,
        r"cannot write to .*read-only \(Permission denied\)",
        lambda: run(model, image, folder / "out.zarr", options, predictor=predictor),
    )
    assert predictor.calls == 0


def test_an_output_folder_that_is_a_file_fails_before_any_block(tmp_path, model, image, options):
    (tmp_path / "notes.txt").write_text("my notes")
    predictor = CountingPredictor(model)
    refused(
        tmp_path,
        OutputError,
        "cannot write to",
        lambda: run(model, image, tmp_path / "notes.txt" / "o.zarr", options, predictor=predictor),
    )
    assert predictor.calls == 0


def test_resuming_a_read_only_store_fails_before_any_block(
    tmp_path, model, image, options, monkeypatch
):
    out = tmp_path / "out.zarr"
    interrupted(model, image, out, options)
    _deny_writes(monkeypatch, out / "_napari_unet")
    predictor = CountingPredictor(model)
    refused(
        tmp_path,
        OutputError,
        "cannot write to .*_napari_unet",
        lambda: run(model, image, out, options, resume=True, predictor=predictor),
    )
    assert predictor.calls == 0


def test_check_store_output_alone(tmp_path):
    assert check_store_output(tmp_path / "new.zarr") is False
    assert check_store_output(tmp_path / "new.zarr", resume=True) is False  # nothing to resume
    with pytest.raises(OutputError, match="would overwrite the input"):
        check_store_output(tmp_path / "a.zarr", inputs=[tmp_path / "a.zarr" / "0"])


# ------------------------------------------------------------- lazy inputs


def _zarr_group(path: Path, attrs: dict) -> Path:
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    root.create_array("0", shape=(8, 8), dtype="u1")
    root.create_group("sub")
    root.attrs.put(attrs)
    return path


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir()
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def _file(path: Path) -> Path:
    path.write_bytes(b"zarr?")
    return path


def _empty_group(path: Path) -> Path:
    zarr.open_group(str(path), mode="w", zarr_format=2)
    return path


def _multiscales(datasets) -> dict:
    return {"multiscales": [{"version": "0.4", "datasets": datasets}]}


#: name: (make the bad input at the path given, expected part of the message)
BAD_ZARR = {
    "empty folder": (lambda p: _folder(p, {}), "is an empty folder, not a zarr store"),
    "folder of other files": (
        lambda p: _folder(p, {"readme.txt": b"hello"}),
        r"is not a zarr store \(it has no \.zgroup, \.zarray, zarr\.json\)",
    ),
    "a file": (_file, "is a file, not a zarr store"),
    "damaged .zgroup": (lambda p: _folder(p, {".zgroup": b"nope"}), "its metadata is damaged"),
    "damaged .zarray": (
        lambda p: _folder(p, {".zarray": b'{"zarr_format": 2}'}),
        "its metadata is damaged",
    ),
    "group without arrays": (_empty_group, "zarr group without image arrays"),
    "multiscales not a list": (
        lambda p: _zarr_group(p, {"multiscales": 5}),
        r"multiscales metadata is malformed \(no dataset path",
    ),
    "multiscales empty": (
        lambda p: _zarr_group(p, {"multiscales": []}),
        "multiscales metadata is malformed",
    ),
    "multiscales without datasets": (
        lambda p: _zarr_group(p, {"multiscales": [{"version": "0.4"}]}),
        "multiscales metadata is malformed",
    ),
    "dataset path not a string": (
        lambda p: _zarr_group(p, _multiscales([{"path": ["0"]}])),
        "multiscales metadata is malformed",
    ),
    "dataset path leaves the store": (
        lambda p: _zarr_group(p, _multiscales([{"path": "../x"}])),
        r"malformed \(invalid dataset path '\.\./x'\)",
    ),
    "dataset path empty": (
        lambda p: _zarr_group(p, _multiscales([{"path": ""}])),
        "invalid dataset path",
    ),
    "dataset missing": (
        lambda p: _zarr_group(p, _multiscales([{"path": "missing"}])),
        "names a missing level 'missing'",
    ),
    "dataset is a group": (
        lambda p: _zarr_group(p, _multiscales([{"path": "sub"}])),
        "is a zarr group, not an image array",
    ),
    "ome not an object": (
        lambda p: _zarr_group(p, {"ome": 3}),
        r"malformed \('ome' is not an object\)",
    ),
}


@pytest.mark.parametrize("name", list(BAD_ZARR))
def test_a_bad_zarr_input_is_one_input_error(tmp_path, name):
    make, expected = BAD_ZARR[name]
    path = make(tmp_path / "in.zarr")
    message = refused(tmp_path, InputError, expected, lambda: open_image(path))
    assert "in.zarr" in message


def _tiff_bytes(**kwargs) -> bytes:
    buffer = io.BytesIO()
    data = np.random.default_rng(0).integers(0, 255, (120, 130), dtype=np.uint8)
    tifffile.imwrite(buffer, data, **kwargs)
    return buffer.getvalue()


def _huge_header(**kwargs) -> bytes:
    """A TIFF whose header claims 100000 x 100000 pixels."""
    data = bytearray(_tiff_bytes(**kwargs))
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        tags = [tiff.pages[0].tags[name] for name in ("ImageWidth", "ImageLength")]
        places = [(tag.valueoffset, 2 if tag.dtype == 3 else 4) for tag in tags]
    for offset, size in places:
        data[offset : offset + size] = (100_000).to_bytes(size, "little")
    return bytes(data)


BAD_TIFF = {
    "empty": (b"", "the file is empty"),
    "text": (b"cell,area\n1,2\n" * 10, "not a TIFF file"),
    "header only": (_tiff_bytes()[:8], "holds no image"),
    "cut in the IFD": (_tiff_bytes()[:100], "cannot read in.tif as TIFF"),
    "cut in the pixels": (
        _tiff_bytes()[:-1000],
        r"its pixels need 15856 bytes but the file has 14856 \(it is truncated",
    ),
    "tiled, cut": (
        _tiff_bytes(tile=(32, 32), compression="zlib")[:-300],
        "but the file has .* truncated",
    ),
    "header claims 100000 x 100000": (
        _huge_header(),
        r"its pixels need 10000000256 bytes but the file has 15856 \(.*header is damaged",
    ),
    "strips claim 100000 x 100000": (
        _huge_header(rowsperstrip=16),
        r"its header claims 10000000000 bytes of pixels but it stores 15600",
    ),
    "tiles claim 100000 x 100000": (
        _huge_header(tile=(32, 32)),
        r"its header claims 10000000000 bytes of pixels but it stores 20480",
    ),
}


@pytest.mark.parametrize("name", list(BAD_TIFF))
def test_a_bad_tiff_opened_lazily_is_one_input_error(tmp_path, name):
    data, expected = BAD_TIFF[name]
    (tmp_path / "in.tif").write_bytes(data)
    refused(tmp_path, InputError, expected, lambda: open_image(tmp_path / "in.tif"))


def test_any_cut_of_a_tiff_is_an_input_error_or_readable(tmp_path):
    """Open, then read through :func:`readable` as a run does: never another exception."""
    for kwargs in ({}, {"tile": (32, 32), "compression": "zlib"}, {"rowsperstrip": 16}):
        data = _tiff_bytes(**kwargs)
        for cut in np.linspace(0, len(data), 40).astype(int):
            path = tmp_path / f"cut{cut}.tif"
            path.write_bytes(data[:cut])
            try:
                readable(open_image(path))[...]
            except UNetError:
                pass
            assert path.read_bytes() == data[:cut]


def test_a_damaged_chunk_is_one_input_error_and_no_store(tmp_path, model, image, options):
    source = input_store(tmp_path / "v.zarr", image)
    (source / "0" / "1.1").write_bytes(b"garbage" * 10)
    refused(
        tmp_path,
        InputError,
        r"cannot read the pixels of .*v\.zarr \(.*\); the file may be damaged or truncated",
        lambda: run(model, open_image(source), tmp_path / "out.zarr", options),
    )
    assert not (tmp_path / "out.zarr").exists()


def test_a_compressed_tiff_claiming_too_many_pixels_fails_before_any_store(
    tmp_path, model, options
):
    (tmp_path / "huge.tif").write_bytes(_huge_header(compression="zlib"))
    lazy = open_image(tmp_path / "huge.tif")  # compressed: only reading can tell
    assert lazy.shape == (100_000, 100_000)
    refused(
        tmp_path,
        InputError,
        r"cannot read the pixels of .*huge\.tif \(corrupted strip",
        lambda: run(model, lazy, tmp_path / "out.zarr", options),
    )
    assert not (tmp_path / "out.zarr").exists()

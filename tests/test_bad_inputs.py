"""A corpus of bad inputs and hostile files through the command line.

Each case builds its files in a fresh folder, runs ``napari-unet`` in-process and checks
what a careful but unlucky user would check:

* the exit status;
* exactly one ``napari-unet: error:`` line saying what is wrong (never a traceback);
* every file that existed before the run is byte-identical afterwards, and no partial
  or temporary file is left behind.

The cases are data (:data:`CASES`), so adding one is one line plus, at most, a small
function that writes the bad file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from safetensors.torch import save_file
from skimage import io as skio

import hostile
from napari_unet.cli import main
from napari_unet.core import modelfile, registry
from napari_unet.core.model import UNetConfig
from napari_unet.core.safety import TEMP_PREFIX

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


# ------------------------------------------------------------------ the files


def _image(shape=(40, 36), dtype=np.uint8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, shape).astype(dtype)


def _tif(folder: Path, name: str, array: np.ndarray) -> str:
    tifffile.imwrite(folder / name, array)
    return str(folder / name)


def _bytes(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return str(folder / name)


def _truncated_tif(folder: Path) -> str:
    tifffile.imwrite(folder / "cut.tif", _image((64, 64)))
    data = (folder / "cut.tif").read_bytes()
    return _bytes(folder, "cut.tif", data[: len(data) // 2])


def _huge_header_tif(folder: Path) -> str:
    """A few hundred bytes whose header claims 100000 x 100000 uint16 pixels (20 GB)."""
    path = folder / "huge.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint16))
    with tifffile.TiffFile(path, mode="r+") as tiff:
        tiff.pages[0].tags["ImageWidth"].overwrite(100000)
        tiff.pages[0].tags["ImageLength"].overwrite(100000)
    return str(path)


def _png(folder: Path, name: str, array: np.ndarray) -> str:
    skio.imsave(folder / name, array, check_contrast=False)
    return str(folder / name)


def _zarr_store(folder: Path, name: str = "v.zarr") -> str:
    root = zarr.open_group(str(folder / name), mode="w", zarr_format=2)
    root.create_array("0", data=_image((40, 36)), chunks=(20, 18))
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}
            ],
        }
    ]
    return str(folder / name)


def _empty_zarr_array(folder: Path) -> str:
    zarr.open_array(str(folder / "e0.zarr"), mode="w", shape=(0, 10), dtype="uint8")
    return str(folder / "e0.zarr")


def _folder_with(folder: Path, name: str, files: dict[str, bytes]) -> str:
    (folder / name).mkdir()
    for relative, data in files.items():
        (folder / name / relative).write_bytes(data)
    return str(folder / name)


def _zarr_group_without_arrays(folder: Path) -> str:
    zarr.open_group(str(folder / "g.zarr"), mode="w", zarr_format=2)
    return str(folder / "g.zarr")


def _zarr_broken_multiscales(folder: Path) -> str:
    path = _zarr_store(folder, "b.zarr")
    attrs = Path(path) / ".zattrs"
    attrs.write_text(json.dumps({"multiscales": [{"datasets": [{"path": "missing"}]}]}))
    return path


def _pickle_model(folder: Path) -> str:
    return _bytes(folder, "ckpt.safetensors", pickle.dumps({"state_dict": {"w": [1.0]}}))


def _truncated_model(folder: Path) -> str:
    path = Path(hostile.model(folder, "cut.safetensors"))
    data = path.read_bytes()
    return _bytes(folder, "cut.safetensors", data[: len(data) - 200])


def _header_bomb(folder: Path) -> str:
    """Eight bytes claiming a 2**60-byte header, then nothing."""
    return _bytes(folder, "bomb.safetensors", struct.pack("<Q", 2**60) + b"{")


# -------------------------------------------------------------- train inputs


def _annotated(folder: Path) -> tuple[str, str]:
    rows, cols = np.indices((80, 90))
    labels = np.zeros((80, 90), np.uint16)
    labels[(rows - 30) ** 2 + (cols - 30) ** 2 < 100] = 1
    labels[(rows - 50) ** 2 + (cols - 60) ** 2 < 100] = 2
    image = (40 + 150 * (labels > 0)).astype(np.uint8)
    return _tif(folder, "image.tif", image), _tif(folder, "labels.tif", labels)


def _train(folder: Path, *extra: str, labels: str | None = None, images: str | None = None):
    image, good_labels = _annotated(folder)
    return [
        "train",
        "--images",
        images or image,
        "--labels",
        labels or good_labels,
        "--base",
        "scratch",
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "-o",
        str(folder / "out.safetensors"),
        *extra,
    ]


# ---------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    """One bad run: ``argv(folder)`` builds its files and returns the arguments."""

    name: str
    argv: Callable[[Path], list[str]]
    message: str
    status: int = 2


def _segment(folder: Path, source: str, *extra: str, output: str | None = None) -> list[str]:
    target = output if output is not None else str(folder / "out.tif")
    return ["segment", source, "-o", target, "--model", hostile.model(folder), *extra]


def _good(folder: Path) -> str:
    return _tif(folder, "good.tif", _image())


def _seg(source: Callable[[Path], str], *extra: str) -> Callable[[Path], list[str]]:
    return lambda folder: _segment(folder, source(folder), *extra)


def _seg_model(model: Callable[[Path], str]) -> Callable[[Path], list[str]]:
    return lambda folder: [
        "segment",
        _good(folder),
        "-o",
        str(folder / "out.tif"),
        "--model",
        model(folder),
    ]


def _seg_to(output: Callable[[Path], str], *extra: str) -> Callable[[Path], list[str]]:
    return lambda folder: _segment(folder, _good(folder), *extra, output=output(folder))


def _existing_result(folder: Path) -> str:
    return _tif(folder, "out.tif", np.full((40, 36), 7, np.int32))


def _model_with_config(**changes) -> Callable[[Path], str]:
    return lambda folder: hostile.raw_model(
        folder, "bad.safetensors", hostile.description(**changes)
    )


def _model_recommending(**postprocess) -> Callable[[Path], str]:
    return lambda folder: hostile.recommending(folder, **postprocess)


def _output_file_in_the_way(folder: Path) -> str:
    _bytes(folder, "notes.txt", b"my notes")
    return str(folder / "notes.txt" / "out.tif")


def _damaged_store(folder: Path) -> str:
    path = folder / "out.zarr"
    _segment_once_into(folder, path)
    (path / ".zattrs").write_text("{not json")
    return str(path)


def _segment_once_into(folder: Path, path: Path) -> None:
    assert main(_segment(folder, _good(folder), output=str(path))) == 0


CASES = [
    # --- image files that cannot be read
    Case("missing input", lambda f: _segment(f, str(f / "absent.tif")), "input file not found"),
    Case("empty tif", _seg(lambda f: _bytes(f, "e.tif", b"")), r"e\.tif.*empty"),
    Case(
        "text named tif",
        _seg(lambda f: _bytes(f, "t.tif", b"cell,area\n1,2\n")),
        r"t\.tif.*not a (valid )?TIFF",
    ),
    Case(
        "random bytes named tif",
        _seg(lambda f: _bytes(f, "r.tif", np.random.default_rng(3).bytes(4000))),
        r"r\.tif.*not a (valid )?TIFF",
    ),
    Case(
        "png bytes named tif",
        _seg(lambda f: _bytes(f, "p.tif", Path(_png(f, "x.png", _image())).read_bytes())),
        r"p\.tif.*not a (valid )?TIFF",
    ),
    Case("truncated tif", _seg(_truncated_tif), r"cut\.tif.*(truncated|corrupt)"),
    # The file cannot hold what its header claims: found from the header, nothing allocated.
    Case("header claims 20 GB", _seg(_huge_header_tif), r"huge\.tif.*(damaged|truncated)"),
    Case("empty png", _seg(lambda f: _bytes(f, "e.png", b"")), r"e\.png"),
    Case(
        "corrupt png",
        _seg(lambda f: _bytes(f, "c.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)),
        r"c\.png.*(corrupt|truncated|cannot read|not a valid)",
    ),
    Case(
        "unsupported suffix",
        _seg(lambda f: _bytes(f, "x.jpg", b"\xff\xd8\xff")),
        "supported formats are",
    ),
    Case(
        "a plain folder as input",
        _seg(lambda f: _folder_with(f, "folder", {"a.txt": b"a"})),
        "input file not found",
    ),
    Case("rgb png", _seg(lambda f: _png(f, "rgb.png", _image((16, 16, 3)))), "RGB image"),
    Case(
        "6D tif",
        _seg(lambda f: _tif(f, "6d.tif", np.zeros((2, 2, 2, 2, 8, 8), np.uint8))),
        "6-D images are not supported",
    ),
    Case(
        "complex tif",
        _seg(lambda f: _tif(f, "c.tif", np.zeros((8, 8), np.complex64))),
        "dtype complex64",
    ),
    Case(
        "empty image array",
        # tifffile writes a zero-size array as a nonconformant TIFF
        _seg(lambda f: _tif(f, "z.tif", np.zeros((0, 10), np.uint8))),
        r"z\.tif.*damaged",
    ),
    Case("empty zarr array", _seg(_empty_zarr_array), "empty"),
    Case(
        "all NaN image",
        _seg(lambda f: _tif(f, "nan.tif", np.full((40, 36), np.nan, np.float32))),
        "no finite pixel",
    ),
    Case(
        "all inf image",
        _seg(lambda f: _tif(f, "inf.tif", np.full((40, 36), np.inf, np.float32))),
        "no finite pixel",
    ),
    Case("empty zarr folder", _seg(lambda f: _folder_with(f, "e.zarr", {})), r"e\.zarr"),
    Case(
        "zarr folder that is no store",
        _seg(lambda f: _folder_with(f, "n.zarr", {"readme.txt": b"hello"})),
        r"n\.zarr",
    ),
    Case("zarr group without arrays", _seg(_zarr_group_without_arrays), r"g\.zarr"),
    Case("broken OME multiscales", _seg(_zarr_broken_multiscales), r"b\.zarr"),
    # --- outputs that would destroy data
    Case(
        "output is the input",
        lambda f: _segment(f, _good(f), output=str(f / "good.tif")),
        "would overwrite the input",
    ),
    Case(
        "zarr output is the zarr input",
        lambda f: _segment(f, _zarr_store(f), output=str(f / "v.zarr")),
        "would overwrite the input",
    ),
    Case(
        "output store inside the input store",
        lambda f: _segment(f, _zarr_store(f), output=str(f / "v.zarr" / "labels.zarr")),
        "would overwrite the input",
    ),
    Case(
        "zarr output is a folder of other files",
        _seg_to(lambda f: _folder_with(f, "data.zarr", {"thesis.docx": b"years of work"})),
        "not a napari-unet result store",
    ),
    Case(
        "zarr output is a folder of other files, even with --overwrite",
        _seg_to(lambda f: _folder_with(f, "data.zarr", {"a.txt": b"x"}), "--overwrite"),
        "not a napari-unet result store",
    ),
    Case("existing result", _seg_to(_existing_result), "already exists.*--overwrite"),
    Case(
        "existing result store",
        lambda f: (
            _segment_once_into(f, f / "old.zarr"),
            _segment(f, _good(f), output=str(f / "old.zarr")),
        )[1],
        "already exists.*--overwrite",
    ),
    Case(
        "second input is the first one's result",
        lambda f: [
            "segment",
            _tif(f, "c.tif", _image()),
            _tif(f, "c_labels.tif", _image()),
            "-o",
            str(f),
            "--model",
            hostile.model(f),
        ],
        "would overwrite the input",
    ),
    Case("output not tif or zarr", _seg_to(lambda f: str(f / "out.png")), "use a .tif OUTPUT"),
    Case(
        "folder output is a file",
        lambda f: [
            "segment",
            _good(f),
            _tif(f, "other.tif", _image()),
            "-o",
            _bytes(f, "results", b"a file"),
            "--model",
            hostile.model(f),
        ],
        "is a file, but a folder is needed",
    ),
    Case(
        "output folder cannot be created",
        _seg_to(_output_file_in_the_way),
        "cannot write to",
    ),
    Case(
        "same stem inputs collide",
        lambda f: [
            "segment",
            _tif(f, "a.tif", _image()),
            _png(f, "a.png", _image()),
            "-o",
            str(f / "res"),
            "--model",
            hostile.model(f),
        ],
        "would both be written to",
    ),
    Case("--resume with a tif output", _seg(_good, "--resume"), "needs a zarr store"),
    Case(
        "--workers with a tif output",
        _seg(_good, "--workers", "2"),
        "needs a zarr store",
    ),
    Case(
        "--resume on a damaged store",
        lambda f: _segment(f, _good(f), "--resume", output=_damaged_store(f)),
        "cannot resume.*(damaged|corrupt).*--overwrite",
    ),
    Case(
        "--resume and --overwrite together",
        _seg_to(lambda f: str(f / "out.zarr"), "--resume", "--overwrite"),
        "not allowed with argument",
    ),
    # --- model files
    Case(
        "unknown model name",
        lambda f: ["segment", _good(f), "-o", str(f / "o.tif"), "--model", "cells"],
        "unknown model 'cells'",
    ),
    Case(
        "missing model file",
        _seg_model(lambda f: str(f / "absent.safetensors")),
        "model file not found",
    ),
    Case("empty model file", _seg_model(lambda f: _bytes(f, "e.safetensors", b"")), "too short"),
    Case(
        "text model file",
        _seg_model(lambda f: _bytes(f, "t.safetensors", b"weights: many\n" * 10)),
        "not a safetensors model file",
    ),
    Case("pickled checkpoint", _seg_model(_pickle_model), "never loads pickles"),
    Case(
        "safetensors without our metadata",
        _seg_model(lambda f: str(_plain_safetensors(f))),
        "not a napari-unet model",
    ),
    Case("truncated model", _seg_model(_truncated_model), r"cut\.safetensors.*(corrupt|truncat)"),
    Case("header length bomb", _seg_model(_header_bomb), r"bomb\.safetensors"),
    Case(
        "float depth",
        _seg_model(_model_with_config(depth=4.0)),
        r"bad\.safetensors.*depth",
    ),
    Case(
        "depth 10**6",
        _seg_model(_model_with_config(depth=10**6)),
        r"bad\.safetensors.*depth",
    ),
    Case(
        "50000 classes",
        _seg_model(_model_with_config(num_classes=50_000)),
        r"bad\.safetensors.*num_classes",
    ),
    Case(
        "negative in_channels",
        _seg_model(_model_with_config(in_channels=-1)),
        r"bad\.safetensors.*in_channels",
    ),
    Case(
        "string base width",
        _seg_model(_model_with_config(base_width="16")),
        r"bad\.safetensors.*base_width",
    ),
    Case(
        "class names not a list",
        _seg_model(_model_with_config(class_names=7)),
        r"bad\.safetensors.*class_names",
    ),
    Case(
        "unknown normalisation",
        _seg_model(_model_with_config(normalisation={"method": "magic"})),
        r"bad\.safetensors.*normalisation",
    ),
    Case(
        "other format version",
        _seg_model(_model_with_config(format_version=99)),
        "format version 99",
    ),
    Case(
        "bad recommended threshold",
        _seg_model(_model_recommending(threshold="abc")),
        r"rec\.safetensors.*threshold",
    ),
    Case(
        "recommended threshold above 1",
        _seg_model(_model_recommending(threshold=7.0)),
        r"rec\.safetensors.*threshold",
    ),
    Case(
        "negative recommended min size",
        _seg_model(_model_recommending(min_size=-3)),
        r"rec\.safetensors.*min_size",
    ),
    Case("NaN weights", _seg_model(hostile.nan_weights_model), r"nan\.safetensors.*(NaN|finite)"),
    # --- options
    Case("tile size 1", _seg(_good, "--tile-size", "1"), "tile size 1 is too small"),
    Case("tile size 0", _seg(_good, "--tile-size", "0"), "tile size 0 is too small"),
    Case("negative tile size", _seg(_good, "--tile-size", "-5"), "tile size -5 is too small"),
    Case("batch size 0", _seg(_good, "--batch-size", "0"), "batch_size must be >= 1"),
    Case("threshold above 1", _seg(_good, "--threshold", "1.5"), "threshold"),
    Case("threshold NaN", _seg(_good, "--threshold", "nan"), "threshold"),
    Case("negative min size", _seg(_good, "--min-size", "-1"), "min_size"),
    Case("merge level above 1", _seg(_good, "--merge-boundaries", "2"), "merge"),
    Case("unknown device", _seg(_good, "--device", "tpu"), "invalid choice: 'tpu'"),
    # --- training
    Case(
        "images and labels do not pair",
        lambda f: [*_train(f), "--images", _good(f)],
        "2 --images but 1 --labels",
    ),
    Case(
        "model output not safetensors",
        lambda f: [*_train(f), "-o", str(f / "m.pt")],
        "end in .safetensors",
    ),
    Case(
        "existing model",
        lambda f: [*_train(f), "-o", hostile.model(f, "mine.safetensors")],
        "already exists.*--overwrite",
    ),
    Case(
        "model output is an input",
        lambda f: [*_train(f), "-o", str(f / "image.tif")],
        "(end in .safetensors|would overwrite the input)",
    ),
    Case(
        "empty labels file",
        lambda f: _train(f, labels=_bytes(f, "l.tif", b"")),
        r"l\.tif.*empty",
    ),
    Case(
        "text labels file",
        lambda f: _train(f, labels=_bytes(f, "l.tif", b"1,2,3\n")),
        r"l\.tif.*not a (valid )?TIFF",
    ),
    Case(
        "nothing annotated",
        lambda f: _train(
            f, "--annotation", "sparse", labels=_tif(f, "l.tif", np.zeros((80, 90), np.uint16))
        ),
        "nothing is annotated",
    ),
    Case(
        "labels of another shape",
        lambda f: _train(f, labels=_tif(f, "l.tif", np.ones((20, 20), np.uint16))),
        "shape",
    ),
    Case(
        "NaN in float annotations",
        lambda f: _train(f, labels=_tif(f, "l.tif", np.full((80, 90), np.nan, np.float32))),
        "(NaN|finite)",
    ),
    Case(
        "learning rate 1e30",
        lambda f: _train(f, "--learning-rate", "1e30"),
        r"training stopped.*(NaN|infinite).*restored",
        status=1,
    ),
    Case("learning rate inf", lambda f: _train(f, "--learning-rate", "inf"), "learning rate"),
    Case(
        "train on a missing GPU",
        lambda f: _train(f, "--device", "mps"),
        "device 'mps' requested but Apple MPS is not available",
    ),
    Case(
        "segment on a missing GPU",
        _seg(_good, "--device", "cuda"),
        "device 'cuda' requested but no CUDA GPU is available",
    ),
    Case("zero steps", lambda f: _train(f, "--steps", "0"), "steps"),
    Case("negative learning rate", lambda f: _train(f, "--learning-rate", "-1"), "learning"),
    Case("train batch size 0", lambda f: _train(f, "--batch-size", "0"), "batch"),
    # --- sample
    Case(
        "sample over an existing file",
        lambda f: ["sample", "nuclei", "-o", _tif(f, "mine.tif", _image())],
        "already exists.*--overwrite",
    ),
]


def _plain_safetensors(folder: Path) -> Path:
    save_file({"w": torch.zeros(2)}, str(folder / "plain.safetensors"))
    return folder / "plain.safetensors"


# ---------------------------------------------------------------------- checks


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``folder``, by relative path."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.match(r"^napari-unet( \w+)?: error:", line)]


@pytest.fixture
def no_user_models(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "no-builtin")
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path / "no-user"))


def test_the_corpus_is_large_and_names_are_unique():
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_line_and_keeps_every_file(case, tmp_path, no_user_models, capsys):
    folder = tmp_path / "work"
    folder.mkdir()
    argv = case.argv(folder)
    capsys.readouterr()
    before = _snapshot(folder)
    try:
        status = main(argv)
    except SystemExit as exited:  # argparse's own errors (unknown choices)
        status = exited.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert status == case.status, err
    lines = _error_lines(err)
    assert len(lines) == 1, err
    assert re.search(case.message, lines[0], flags=re.IGNORECASE), lines[0]
    after = _snapshot(folder)
    for name, content in before.items():
        assert name in after, f"{name} was deleted"
        assert after[name] == content, f"{name} was changed"
    leftovers = [name for name in after if TEMP_PREFIX in name or name.endswith(".partial")]
    assert not leftovers, leftovers


def test_a_bad_input_among_good_ones_costs_only_itself(tmp_path, no_user_models, capsys):
    first, second = _tif(tmp_path, "a.tif", _image()), _tif(tmp_path, "c.tif", _image(seed=1))
    bad = _bytes(tmp_path, "b.tif", b"not an image")
    folder = tmp_path / "results"
    argv = ["segment", first, bad, second, "-o", str(folder), "--model", hostile.model(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert sorted(path.name for path in folder.iterdir()) == ["a_labels.tif", "c_labels.tif"]
    summary = [line for line in err.splitlines() if "1 of 3 inputs failed" in line]
    assert len(summary) == 1 and "b.tif" in summary[0], err
    assert "Traceback" not in err


def test_one_input_into_a_folder_that_does_not_exist_yet(tmp_path, no_user_models):
    source = _tif(tmp_path, "a.tif", _image())
    output = str(tmp_path / "results") + os.sep
    assert main(["segment", source, "-o", output, "--model", hostile.model(tmp_path)]) == 0
    assert tifffile.imread(tmp_path / "results" / "a_labels.tif").shape == (40, 36)


def test_overwrite_replaces_our_earlier_result(tmp_path, no_user_models):
    source, target = _tif(tmp_path, "a.tif", _image()), tmp_path / "a_labels.tif"
    _tif(tmp_path, "a_labels.tif", np.full((40, 36), 7, np.int32))
    argv = ["segment", source, "-o", str(target), "--model", hostile.model(tmp_path)]
    assert main(argv) == 2
    assert (tifffile.imread(target) == 7).all()
    assert main([*argv, "--overwrite"]) == 0
    assert not (tifffile.imread(target) == 7).all()


def test_an_image_larger_than_memory_is_refused_before_reading(
    tmp_path, no_user_models, monkeypatch, capsys
):
    from napari_unet.core import memory

    source = _tif(tmp_path, "big.tif", _image((600, 500), np.uint16))
    monkeypatch.setattr(memory, "available_memory", lambda: 100_000)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", _never_called)
    argv = ["segment", source, "-o", str(tmp_path / "out.tif"), "--model", hostile.model(tmp_path)]
    assert main(argv) == 2
    line = _error_lines(capsys.readouterr().err)[0]
    assert re.search(r"big\.tif.*600 x 500.*more than the memory available.*\.zarr", line), line


def test_a_result_larger_than_memory_is_refused_before_computing(
    tmp_path, no_user_models, monkeypatch, capsys
):
    """A zarr input is read lazily, but a TIFF result would be built in memory."""
    from napari_unet.core import inmemory, memory

    source = _zarr_store(tmp_path)
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    monkeypatch.setattr(inmemory, "plan_tiles", _never_called)
    argv = ["segment", source, "-o", str(tmp_path / "out.tif"), "--model", hostile.model(tmp_path)]
    assert main(argv) == 2
    line = _error_lines(capsys.readouterr().err)[0]
    assert re.search(r"result.*more than the memory available.*\.zarr", line), line
    assert main([*argv[:3], str(tmp_path / "out.zarr"), *argv[4:]]) == 0  # the hint works


def _never_called(*args, **kwargs):
    raise AssertionError("called although the memory check should have refused first")

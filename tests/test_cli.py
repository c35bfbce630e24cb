"""The napari-unet command line, run in-process through ``main`` and once as a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io as skio
from skimage.metrics import adapted_rand_error

from napari_unet import __version__
from napari_unet.cli import main
from napari_unet.core import modelfile, registry
from napari_unet.core.io import open_image
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.segment import segment

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


@pytest.fixture
def model_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    builtin, user = tmp_path / "builtin", tmp_path / "user"
    builtin.mkdir()
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", builtin)
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(user))
    return builtin, user


@pytest.fixture
def model_path(tmp_path, model_dirs) -> Path:
    return save_model(random_model(TINY, seed=2, name="tiny"), tmp_path / "tiny.safetensors")


@pytest.fixture
def image_path(tmp_path) -> Path:
    image = np.random.default_rng(0).integers(0, 255, (40, 36)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    return tmp_path / "cells.tif"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("napari-unet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_segment_one_image_writes_the_same_labels_as_segment(tmp_path, model_path, image_path):
    output = tmp_path / "out" / "labels.tif"
    bundle, image = load_model(model_path), tifffile.imread(image_path)
    # a threshold at the untrained network's median output gives non-trivial labels
    threshold = float(np.median(segment(bundle, image, output="probabilities")[1]))
    args = ["segment", str(image_path), "-o", str(output), "--model", str(model_path)]
    assert main([*args, "--threshold", str(threshold), "--device", "cpu"]) == 0
    expected = segment(bundle, image, threshold=threshold, device="cpu")
    result = tifffile.imread(output)
    assert result.dtype == np.int32 and result.max() > 1
    np.testing.assert_array_equal(result, expected)


def test_merge_boundaries_option_reaches_the_core(tmp_path, model_path, image_path, capsys):
    output = tmp_path / "cells_labels.tif"
    bundle, image = load_model(model_path), tifffile.imread(image_path)
    foreground = segment(bundle, image, output="probabilities")[1]
    seed, merge = float(np.quantile(foreground, 0.8)), float(np.quantile(1 - foreground, 0.5))
    args = ["segment", str(image_path), "-o", str(output), "--model", str(model_path)]
    options = ["--threshold", str(seed), "--merge-boundaries", str(merge)]
    assert main([*args, *options, "--device", "cpu"]) == 0
    expected = segment(bundle, image, threshold=seed, merge_boundaries=merge, device="cpu")
    assert expected.min() == 1  # grown cells fill the image: the option took effect
    np.testing.assert_array_equal(tifffile.imread(output), expected)

    # into a .zarr store (block-wise) the option applies too: the planes are labelled
    # after the blocks, as in memory
    zarr_args = ["segment", str(image_path), "-o", str(tmp_path / "cells.zarr")]
    capsys.readouterr()
    assert main([*zarr_args, "--model", str(model_path), *options, "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"grow-and-merge below {merge:g}" in err and "note:" not in err
    stored = np.asarray(open_image(tmp_path / "cells.zarr")[:])
    assert adapted_rand_error(expected, stored)[0] <= 0.005


@pytest.mark.parametrize(
    ("kind", "dtype", "shape"),
    [("mask", np.uint8, (40, 36)), ("probabilities", np.float32, (2, 40, 36))],
)
def test_output_kinds(tmp_path, model_path, image_path, kind, dtype, shape):
    output = tmp_path / f"{kind}.tif"
    argv = ["segment", str(image_path), "-o", str(output), "-m", str(model_path), "--output", kind]
    assert main(argv) == 0
    result = tifffile.imread(output)
    assert result.dtype == dtype and result.shape == shape


def test_several_inputs_go_to_a_created_folder(tmp_path, model_path, image_path):
    stack = np.random.default_rng(1).integers(0, 255, (2, 30, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    skio.imsave(tmp_path / "flat.png", np.full((20, 24), 9, np.uint8), check_contrast=False)
    inputs = [str(image_path), str(tmp_path / "stack.tif"), str(tmp_path / "flat.png")]
    folder = tmp_path / "results"
    assert main(["segment", *inputs, "-o", str(folder), "--model", str(model_path)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [
        "cells_labels.tif",
        "flat_labels.tif",
        "stack_labels.tif",
    ]
    assert tifffile.imread(folder / "stack_labels.tif").shape == (2, 30, 30)
    assert tifffile.imread(folder / "flat_labels.tif").shape == (20, 24)


def test_tile_size_is_rounded_with_a_note(tmp_path, model_path, image_path, capsys):
    output = tmp_path / "labels.tif"
    argv = ["segment", str(image_path), "-o", str(output), "-m", str(model_path)]
    assert main([*argv, "--tile-size", "50"]) == 0
    err = capsys.readouterr().err
    assert "napari-unet: note: tile size 50 is not valid" in err
    assert "using 48" in err or "using 52" in err
    expected = segment(load_model(model_path), tifffile.imread(image_path), tile_size=52)
    np.testing.assert_array_equal(tifffile.imread(output), expected)


def test_default_model_is_the_builtin_one(tmp_path, model_dirs, image_path):
    builtin, _ = model_dirs
    save_model(random_model(TINY, name="nuclei"), builtin / "nuclei.safetensors")
    assert main(["segment", str(image_path), "-o", str(tmp_path / "x.tif")]) == 0
    assert (tmp_path / "x.tif").is_file()


def test_models_lists_one_per_line_name_first(model_dirs, capsys):
    builtin, _ = model_dirs
    bundle = random_model(TINY, name="em")
    bundle.provenance["description"] = "EM membranes"
    save_model(bundle, builtin / "em.safetensors")
    modelfile.save_user_model(random_model(TINY), "mine")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["em", "built-in"], ["mine", "user"]]
    assert lines[0].endswith("EM membranes")


def test_models_says_when_there_are_none(model_dirs, capsys):
    assert main(["models"]) == 0
    assert "no models found" in capsys.readouterr().err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-unet {__version__}"
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    help_text = capsys.readouterr().out
    assert "examples:" in help_text and "--tile-size" in help_text


def _rgb_png(tmp_path) -> Path:
    colour = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    skio.imsave(tmp_path / "rgb.png", colour, check_contrast=False)
    return tmp_path / "rgb.png"


def _write_tif(tmp_path, name, array) -> Path:
    tifffile.imwrite(tmp_path / name, array)
    return tmp_path / name


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda tmp: tmp / "absent.tif", "input file not found"),
        (_rgb_png, r"RGB image .*Split RGB"),
        # (t, z, y, x) is segmented now (tests/test_cli_dims.py); 6 axes never are
        (
            lambda tmp: _write_tif(tmp, "6d.tif", np.zeros((2, 2, 2, 2, 8, 8), np.uint8)),
            "6-D images are not supported",
        ),
        (lambda tmp: _write_tif(tmp, "c.tif", np.zeros((8, 8), np.complex64)), "dtype complex64"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, model_path, capsys, make_input, message):
    path = make_input(tmp_path)
    argv = ["segment", str(path), "-o", str(tmp_path / "o.tif"), "-m", str(model_path)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert re.search(message, line), line


def test_unknown_model(tmp_path, model_dirs, image_path, capsys):
    argv = ["segment", str(image_path), "-o", str(tmp_path / "o.tif"), "--model", "cells"]
    assert main(argv) == 2
    assert "unknown model 'cells'; available models: none installed" in _error_line(capsys)


def test_corrupt_model_file(tmp_path, model_dirs, image_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    argv = ["segment", str(image_path), "-o", str(tmp_path / "o.tif"), "--model", str(bad)]
    assert main(argv) == 2
    assert "is not a safetensors model file" in _error_line(capsys)


def test_no_model_at_all_asks_for_one(tmp_path, model_dirs, image_path, capsys):
    assert main(["segment", str(image_path), "-o", str(tmp_path / "o.tif")]) == 2
    assert "no built-in model is installed; choose one with --model" in _error_line(capsys)


def test_output_must_be_tiff(tmp_path, model_path, image_path, capsys):
    argv = ["segment", str(image_path), "-o", str(tmp_path / "o.png"), "-m", str(model_path)]
    assert main(argv) == 2
    assert "use a .tif OUTPUT" in _error_line(capsys)


def test_same_stem_inputs_would_collide(tmp_path, model_path, image_path, capsys):
    other = tmp_path / "sub"
    other.mkdir()
    tifffile.imwrite(other / "cells.tif", np.zeros((8, 8), np.uint8))
    argv = ["segment", str(image_path), str(other / "cells.tif"), "-o", str(tmp_path / "res")]
    assert main([*argv, "-m", str(model_path)]) == 2
    assert "would both be written to" in _error_line(capsys)


@pytest.mark.slow  # two interpreters importing torch: ~3-8 s on a busy 2-core machine
def test_as_a_subprocess(tmp_path, model_path, image_path):
    output = tmp_path / "labels.tif"
    env = {**os.environ, modelfile.MODELS_DIR_ENV: str(tmp_path / "user")}
    command = [sys.executable, "-m", "napari_unet.cli", "segment", str(image_path)]
    done = subprocess.run(
        [*command, "-o", str(output), "--model", str(model_path), "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    expected = segment(load_model(model_path), tifffile.imread(image_path), device="cpu")
    np.testing.assert_array_equal(tifffile.imread(output), expected)
    failed = subprocess.run(
        [*command, "-o", str(tmp_path / "other.tif"), "--model", "no-such-model"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("napari-unet: error: unknown model")
    assert "Traceback" not in failed.stderr


def test_drain_with_progress_returns_the_result_and_closes_on_interrupt(capsys):
    from napari_unet.cli import drain_with_progress
    from napari_unet.core.events import Progress

    def steps(closed: list):
        try:
            for done in range(1, 4):
                yield Progress(done, 3, "step")
            return "finished"
        finally:
            closed.append(True)

    closed: list = []
    assert drain_with_progress(steps(closed), unit="step") == "finished"
    assert closed == [True]
    assert "/3 " in capsys.readouterr().err  # the bar knew the total

    def interrupted():
        yield Progress(1, 3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        drain_with_progress(interrupted())


def test_the_progress_bar_names_and_counts_each_step_after_the_blocks(capsys):
    from napari_unet.cli import drain_with_progress
    from napari_unet.core.events import Progress

    def run():
        for done in range(1, 5):
            yield Progress(done, 4, "blocks")
        for done in range(1, 3):
            yield Progress(done, 2, "grow-and-merge of plane 0: labelling blocks")
        return "result"

    assert drain_with_progress(run(), description="image.tif", unit="block") == "result"
    err = capsys.readouterr().err
    assert "image.tif:   0%|          | 0/4" in err  # the blocks
    # The labelling step has its own label and total, counted from its start.
    assert "image.tif: grow-and-merge of plane 0: labelling blocks:   0%|          | 0/2" in err


def test_the_device_is_reported_once(tmp_path, model_path, image_path, capsys):
    from napari_unet.core.device import describe_device
    from napari_unet.core.model import pick_device

    argv = ["segment", str(image_path), "-o", str(tmp_path / "o.tif"), "-m", str(model_path)]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "running on" in line]
    assert lines == [f"napari-unet: running on {describe_device(pick_device('auto'))}"]

"""napari-unet segment with zarr / OME-Zarr / large TIFF inputs, .zarr outputs, --resume,
--workers."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage

from napari_unet.cli import main
from napari_unet.cli import segment as cli_segment
from napari_unet.core import modelfile, registry, sources
from napari_unet.core.frontend import applied_postprocessing
from napari_unet.core.largeimage import BlockStore, open_image, segment_to_zarr
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model, save_model
from napari_unet.core.options import (
    WHOLE_PLANE_OPTIONS,
    SegmentOptions,
    blockwise_refused,
    whole_plane_options,
)
from napari_unet.core.segment import segment

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
#: Small blocks so a 300 x 320 image has several (4 x 4 tiles of <= 84 px -> 2 x 2 blocks).
BLOCKS = ["--tile-size", "124", "--block-size", "160"]


@pytest.fixture
def model_path(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "builtin")
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path / "user"))
    return save_model(random_model(TINY, seed=1, name="tiny"), tmp_path / "tiny.safetensors")


@pytest.fixture
def image() -> np.ndarray:
    noise = np.random.default_rng(0).normal(size=(300, 320))
    smooth = ndimage.gaussian_filter(noise, 5)
    return (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)


@pytest.fixture
def threshold(model_path, image) -> float:
    bundle = modelfile.load_model(model_path)
    probabilities = segment(bundle, image, tile_size=124, output="probabilities")
    return float(np.median(probabilities[1]))


def _expected(model_path, image, threshold):
    return segment(modelfile.load_model(model_path), image, tile_size=124, threshold=threshold)


def _args(source, target, model_path, threshold) -> list[str]:
    return [
        "segment",
        str(source),
        "-o",
        str(target),
        "-m",
        str(model_path),
        "--threshold",
        repr(threshold),
        *BLOCKS,
    ]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("napari-unet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_zarr_in_ome_zarr_out(tmp_path, model_path, image, threshold):
    zarr.create_array(str(tmp_path / "in.zarr"), shape=image.shape, dtype="u1")[:] = image
    out = tmp_path / "labels.zarr"
    assert main(_args(tmp_path / "in.zarr", out, model_path, threshold)) == 0
    expected = _expected(model_path, image, threshold)
    assert expected.max() > 10
    np.testing.assert_array_equal(open_image(out)[:], expected)
    multiscale = zarr.open_group(str(out), mode="r").attrs["multiscales"][0]
    assert multiscale["version"] == "0.4" and multiscale["datasets"][0]["path"] == "0"


def test_ome_zarr_input_uses_its_full_resolution_level(tmp_path, model_path, image, threshold):
    root = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=image.shape, dtype="u1")[:] = image
    root.create_array("1", shape=(150, 160), dtype="u1")[:] = image[::2, ::2]
    datasets = [{"path": "0"}, {"path": "1"}]
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets}]
    out = tmp_path / "res.tif"
    assert main(_args(tmp_path / "img.ome.zarr", out, model_path, threshold)) == 0
    np.testing.assert_array_equal(tifffile.imread(out), _expected(model_path, image, threshold))


def test_tiff_in_zarr_out_reads_the_tiff_lazily(
    tmp_path, model_path, image, threshold, monkeypatch
):
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(64, 64))
    opened = []
    original = sources._open_tiff_lazily
    monkeypatch.setattr(sources, "_open_tiff_lazily", lambda p: opened.append(p) or original(p))
    out = tmp_path / "labels.zarr"
    assert main(_args(tmp_path / "big.tif", out, model_path, threshold)) == 0
    assert opened == [tmp_path / "big.tif"]
    np.testing.assert_array_equal(open_image(out)[:], _expected(model_path, image, threshold))


def test_a_big_tiff_is_read_by_tiles_even_for_a_tiff_output(
    tmp_path, model_path, image, threshold, monkeypatch
):
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(64, 64))
    monkeypatch.setattr(cli_segment, "LAZY_TIFF_BYTES", 0)
    opened = []
    original = sources._open_tiff_lazily
    monkeypatch.setattr(sources, "_open_tiff_lazily", lambda p: opened.append(p) or original(p))
    assert main(_args(tmp_path / "big.tif", tmp_path / "o.tif", model_path, threshold)) == 0
    assert len(opened) == 1
    expected = _expected(model_path, image, threshold)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif"), expected)


def test_interrupt_then_resume(tmp_path, model_path, image, threshold, monkeypatch, capsys):
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "labels.zarr"
    original = BlockStore.mark_done
    calls = []

    def ctrl_c_on_the_third_block(self, block, record):
        calls.append(block.key)
        if len(calls) == 3:  # after the block's data is written, before it is marked
            raise KeyboardInterrupt
        original(self, block, record)

    monkeypatch.setattr(BlockStore, "mark_done", ctrl_c_on_the_third_block)
    args = _args(tmp_path / "in.tif", out, model_path, threshold)
    assert main(args) == 130
    assert "continues with --resume" in capsys.readouterr().err
    assert len(BlockStore(out).done()) == 2
    assert open_image(out)[:].any()  # readable, with the finished blocks

    monkeypatch.setattr(BlockStore, "mark_done", original)
    calls.clear()
    done_before = set(BlockStore(out).done())
    recorded = []
    monkeypatch.setattr(
        BlockStore, "mark_done", lambda self, b, r: recorded.append(b.key) or original(self, b, r)
    )
    assert main([*args, "--resume"]) == 0
    assert not done_before & set(recorded) and len(recorded) == 2  # only the missing blocks
    np.testing.assert_array_equal(open_image(out)[:], _expected(model_path, image, threshold))


@pytest.mark.slow  # starts two worker processes that import torch (~5-10 s)
def test_two_local_workers(tmp_path, model_path, image, threshold):
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "labels.zarr"
    assert main([*_args(tmp_path / "in.tif", out, model_path, threshold), "--workers", "2"]) == 0
    np.testing.assert_array_equal(open_image(out)[:], _expected(model_path, image, threshold))


@pytest.mark.parametrize(
    ("extra", "output", "message"),
    [
        (["--workers", "2"], "o.tif", "--workers/--scheduler needs a zarr store: use an OUTPUT"),
        (["--resume"], "o.tif", "--resume needs a zarr store"),
        ([], "o.png", r"use a \.tif OUTPUT \(or \.zarr for OME-Zarr\)"),
    ],
)
def test_bad_large_options(tmp_path, model_path, image, capsys, extra, output, message):
    tifffile.imwrite(tmp_path / "in.tif", image)
    argv = ["segment", str(tmp_path / "in.tif"), "-o", str(tmp_path / output)]
    assert main([*argv, "-m", str(model_path), *extra]) == 2
    assert re.search(message, _error_line(capsys))


def test_a_zarr_group_without_arrays_is_one_error_line(tmp_path, model_path, capsys):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    argv = ["segment", str(tmp_path / "empty.zarr"), "-o", str(tmp_path / "o.zarr")]
    assert main([*argv, "-m", str(model_path)]) == 2
    assert "is a zarr group without image arrays" in _error_line(capsys)


def test_resume_with_other_settings_is_refused(tmp_path, model_path, image, threshold, capsys):
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "labels.zarr"
    assert main(_args(tmp_path / "in.tif", out, model_path, threshold)) == 0
    other = _args(tmp_path / "in.tif", out, model_path, 0.25)
    assert main([*other, "--resume"]) == 2
    assert "cannot resume" in _error_line(capsys)


#: The command-line flags of the options a block-wise run may not be able to apply.
FLAGS = {
    "split_touching": ["--split-touching"],
    "fill_boundaries": ["--fill-boundaries"],
    "merge_boundaries": ["--merge-boundaries", "0.3"],
    "link": ["--link"],
}
#: Every one of them in use.
EVERYTHING = SegmentOptions(
    split_touching=True, fill_boundaries=True, merge_boundaries=0.3, link=True
)


def _core_store(model_path, image, path: Path, options: SegmentOptions) -> np.ndarray:
    """The core's block-wise result with the CLI's tiles and blocks."""
    options = replace(options, tile_size=124, device="cpu")
    bundle = modelfile.load_model(model_path)
    return segment_to_zarr(bundle, image, path, options=options, block_size=160)[...]


def test_the_flags_cover_the_whole_plane_policy():
    assert {option.name for option in WHOLE_PLANE_OPTIONS} <= set(FLAGS)
    assert whole_plane_options(EVERYTHING) == WHOLE_PLANE_OPTIONS


@pytest.mark.parametrize("name", list(FLAGS))
def test_an_option_the_user_gave_is_refused_block_wise_or_applied(
    tmp_path, model_path, image, threshold, capsys, name
):
    tifffile.imwrite(tmp_path / "in.tif", image)
    out = tmp_path / "o.zarr"
    argv = [*_args(tmp_path / "in.tif", out, model_path, threshold), "--device", "cpu"]
    refused = [o for o in WHOLE_PLANE_OPTIONS if o.name == name and not o.blockwise]
    if refused:  # the policy, whatever it holds today (link)
        assert main([*argv, *FLAGS[name]]) == 2
        assert _error_line(capsys) == f"napari-unet: error: {refused[0].blockwise_message()}"
        assert not out.exists()  # refused before any work
        return
    assert main([*argv, *FLAGS[name]]) == 0
    asked = replace(SegmentOptions(threshold=threshold), **{name: getattr(EVERYTHING, name)})
    expected = _core_store(model_path, image, tmp_path / "ref.zarr", asked)
    np.testing.assert_array_equal(open_image(out)[:], expected)


def test_a_recommended_grow_and_merge_is_applied_block_wise_as_in_memory(
    tmp_path, model_path, image, threshold, capsys
):
    """The issue's case: a model recommending grow-and-merge, segmented into a .zarr,
    gets it (the planes are labelled after the blocks), and the line says so."""
    bundle = modelfile.load_model(model_path)
    bundle.provenance["postprocess"] = {
        "threshold": threshold,
        "min_size": 5,
        "merge_boundaries": 0.3,
    }
    recommending = save_model(bundle, tmp_path / "recommending.safetensors")
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, image)
    out = tmp_path / "o.zarr"
    argv = ["segment", str(source), "-o", str(out), "-m", str(recommending), "--device", "cpu"]
    assert main([*argv, *BLOCKS]) == 0

    err = capsys.readouterr().err
    recommended = SegmentOptions(threshold=threshold, min_size=5, merge_boundaries=0.3)
    assert blockwise_refused(recommended) == ()
    assert "napari-unet: note:" not in err  # nothing left out
    assert "grow-and-merge below 0.3" in applied_postprocessing(recommended)
    assert f"{source} -> {out} ({applied_postprocessing(recommended)})" in err.splitlines()
    expected = _core_store(recommending, image, tmp_path / "ref.zarr", recommended)
    np.testing.assert_array_equal(open_image(out)[:], expected)
    # the same model into a TIFF (in memory) applies everything it recommends
    tiff = [*argv[:3], str(tmp_path / "o.tif"), *argv[4:], "--tile-size", "124"]
    assert main(tiff) == 0
    err = capsys.readouterr().err
    assert "note:" not in err
    assert f"({applied_postprocessing(recommended)})" in err

"""`napari-unet segment/train` with scale: --pixel-size, --diameter, calibrated results."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.cli import main
from napari_unet.core import modelfile, registry
from napari_unet.core.calibration import PixelSize, read_calibration
from napari_unet.core.events import drain
from napari_unet.core.io import read_result_info
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.segment import SegmentOptions, segment_iter

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")
#: The scaled test model's pixel size and object diameter (its own pixels).
MODEL_PIXEL = PixelSize(0.325, 0.325, "µm")
MODEL_DIAMETER = 20.0


@pytest.fixture(autouse=True)
def _model_dirs(tmp_path, monkeypatch) -> None:
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", builtin)
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path / "user"))


@pytest.fixture
def scaled_model(tmp_path) -> Path:
    """A random tiny model recording 0.325 µm pixels and objects of 20 px."""
    bundle = random_model(TINY, seed=2, name="scaled")
    bundle = replace(bundle, pixel_size=MODEL_PIXEL, object_diameter=MODEL_DIAMETER)
    return save_model(bundle, tmp_path / "scaled.safetensors")


@pytest.fixture
def image() -> np.ndarray:
    """(64, 72) uint8 discs on noise."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:64, :72]
    pixels = rng.normal(30, 8, (64, 72))
    for r, c in [(15, 15), (40, 50), (20, 55), (50, 15)]:
        pixels[(rows - r) ** 2 + (cols - c) ** 2 < 64] += 150
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _imagej_tiff(path: Path, image: np.ndarray, size_um: float) -> Path:
    tifffile.imwrite(
        path, image, imagej=True, resolution=(1 / size_um, 1 / size_um), metadata={"unit": "um"}
    )
    return path


def _ome_tiff(path: Path, image: np.ndarray, size_um: float) -> Path:
    tifffile.imwrite(
        path,
        image,
        ome=True,
        metadata={
            "axes": "YX",
            "PhysicalSizeX": size_um,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": size_um,
            "PhysicalSizeYUnit": "µm",
        },
    )
    return path


def _segment(capsys, *argv: str) -> tuple[int, str]:
    status = main(["segment", *argv, "--device", "cpu"])
    return status, capsys.readouterr().err


def _scale_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": scale: " in line]


def _tag_pixel_size_um(path: Path) -> tuple[float, float]:
    """(y, x) pixel size in µm from the TIFF resolution tags, as any TIFF reader sees it."""
    with tifffile.TiffFile(path) as tiff:
        tags = tiff.pages[0].tags
        x_num, x_den = tags["XResolution"].value
        y_num, y_den = tags["YResolution"].value
        unit = tags["ResolutionUnit"].value
        imagej_unit = (tiff.imagej_metadata or {}).get("unit")
    per_unit_um = {tifffile.RESUNIT.CENTIMETER: 1e4, tifffile.RESUNIT.INCH: 25400.0}
    if unit == tifffile.RESUNIT.NONE:  # ImageJ: pixels per its own unit
        assert imagej_unit in ("micron", "um", "µm", "\\u00B5m"), imagej_unit
        per_unit_um = {unit: 1.0}
    return per_unit_um[unit] * y_den / y_num, per_unit_um[unit] * x_den / x_num


@pytest.mark.parametrize("output", ["labels", "mask"])
def test_imagej_tiff_gives_a_result_tiff_of_the_same_pixel_size(
    tmp_path, capsys, image, scaled_model, output
):
    source = _imagej_tiff(tmp_path / "cells.tif", image, 0.325)
    target = tmp_path / f"{output}.tif"
    argv = [str(source), "-o", str(target), "-m", str(scaled_model), "--output", output]
    status, err = _segment(capsys, *argv)
    assert status == 0, err
    # the same pixel size as the model: not resampled, and the output says so
    (line,) = _scale_lines(err)
    assert line.startswith("napari-unet: cells.tif: scale: pixel size 0.325 µm")
    assert _tag_pixel_size_um(target) == pytest.approx((0.325, 0.325), rel=1e-6)
    calibration = read_calibration(target)
    assert calibration.pixel_size == PixelSize(0.325, 0.325, "µm")
    # ImageJ metadata like the input, except for int32 labels, which ImageJ cannot hold
    assert calibration.source == ("OME" if output == "labels" else "ImageJ")
    assert tifffile.imread(target).shape == image.shape
    record = read_result_info(target)["napari_unet"]["scale"]
    assert record["factor"] == [1.0, 1.0] and record["source"] == "pixel size"


def test_ome_tiff_gives_an_ome_labels_tiff_of_the_same_pixel_size(
    tmp_path, capsys, image, scaled_model
):
    source = _ome_tiff(tmp_path / "cells.ome.tif", image, 0.65)
    output = tmp_path / "labels.ome.tif"
    status, err = _segment(capsys, str(source), "-o", str(output), "-m", str(scaled_model))
    assert status == 0, err
    with tifffile.TiffFile(output) as tiff:
        assert tiff.is_ome
        pixels = re.search(r"<Pixels [^>]*>", tiff.ome_metadata).group(0)
    assert 'PhysicalSizeX="0.65"' in pixels and 'PhysicalSizeY="0.65"' in pixels
    calibration = read_calibration(output)
    assert calibration.source == "OME"
    assert calibration.pixel_size == PixelSize(0.65, 0.65, "µm")
    # twice the model's pixel size: upsampled 2x for the model, labels back on the input grid
    assert "x2" in _scale_lines(err)[0]
    assert tifffile.imread(output).shape == image.shape


def test_pixel_size_option_sets_the_scale_and_is_recorded(tmp_path, capsys, image, scaled_model):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, image)  # records no pixel size
    bundle = load_model(scaled_model)
    for given, factor in [("0.65um", 2.0), ("162.5 nm", 0.5)]:
        output = tmp_path / f"labels_{factor}.tif"
        argv = [str(source), "-o", str(output), "-m", str(scaled_model), "--pixel-size", given]
        status, err = _segment(capsys, *argv, "--threshold", "0.5")
        assert status == 0, err
        assert _scale_lines(err)[0].endswith(f"x{factor:g}")
        options = SegmentOptions(pixel_size=given, threshold=0.5, device="cpu")
        expected = drain(segment_iter(bundle, image, options=options))
        np.testing.assert_array_equal(tifffile.imread(output), expected)
        # a TIFF without calibration gets the pixel size the user gave
        recorded = read_calibration(output).pixel_size
        assert recorded.to("µm") == pytest.approx(PixelSize(0.325 * factor, 0.325 * factor, "µm"))


def test_diameter_option_sets_the_scale(tmp_path, capsys, image, scaled_model):
    source = _imagej_tiff(tmp_path / "cells.tif", image, 0.325)
    lines = {}
    for diameter in ["40", "10"]:
        output = tmp_path / f"labels_{diameter}.tif"
        argv = [str(source), "-o", str(output), "-m", str(scaled_model), "--diameter", diameter]
        status, err = _segment(capsys, *argv)
        assert status == 0, err
        (lines[diameter],) = _scale_lines(err)
        assert tifffile.imread(output).shape == image.shape
    # an explicit diameter wins over the pixel sizes (equal here, which would give x1)
    assert lines["40"].endswith("x0.5") and "objects measure 40 px (given)" in lines["40"]
    assert lines["10"].endswith("x2")


def test_models_recording_a_diameter_default_to_auto(tmp_path, capsys, image, scaled_model):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, image)
    argv = [str(source), "-o", str(tmp_path / "labels.tif"), "-m", str(scaled_model)]
    # threshold 1: the measuring pass finds no objects, so the scale stays (fast, certain)
    status, err = _segment(capsys, *argv, "--threshold", "1")
    assert status == 0, err
    assert "scale: auto: no objects found" in _scale_lines(err)[0]


BAD_VALUES = [
    (["--pixel-size", "0"], "positive"),
    (["--pixel-size=-0.3um"], "positive"),
    (["--pixel-size", "nan"], "positive"),
    (["--pixel-size", "inf um"], "positive"),
    (["--pixel-size", "0.3 furlong"], "unknown unit 'furlong'"),
    (["--pixel-size", "big"], "pixel size"),
    (["--diameter", "0"], "--diameter"),
    (["--diameter", "-5"], "--diameter"),
    (["--diameter", "nan"], "--diameter"),
    (["--diameter", "large"], "--diameter"),
]


@pytest.mark.parametrize(("options", "reason"), BAD_VALUES, ids=lambda v: str(v))
def test_bad_pixel_sizes_and_diameters_are_one_line(
    tmp_path, capsys, image, scaled_model, options, reason
):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, image)
    output = tmp_path / "labels.tif"
    status = main(["segment", str(source), "-o", str(output), "-m", str(scaled_model), *options])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("napari-unet: error:")]
    assert len(errors) == 1 and reason in errors[0], err
    assert not output.exists()


def _zarr_scale(store: Path) -> tuple[list[str | None], list[float]]:
    """Units and level-0 scale of the (y, x) axes of an OME-Zarr store's multiscales."""
    attributes = dict(zarr.open_group(str(store), mode="r").attrs)
    multiscales = attributes.get("ome", attributes)["multiscales"][0]  # NGFF 0.5 or 0.4
    axes = multiscales["axes"]
    assert [axis["name"] for axis in axes[-2:]] == ["y", "x"]
    (scale,) = [
        t["scale"] for t in multiscales["datasets"][0]["coordinateTransformations"]
        if t["type"] == "scale"
    ]  # fmt: skip
    return [axis.get("unit") for axis in axes[-2:]], scale[-2:]


def test_zarr_result_carries_the_input_scale(tmp_path, capsys, image, scaled_model):
    source = _imagej_tiff(tmp_path / "cells.tif", image, 0.65)
    output = tmp_path / "labels.zarr"
    status, err = _segment(capsys, str(source), "-o", str(output), "-m", str(scaled_model))
    assert status == 0, err
    assert "x2" in _scale_lines(err)[0]
    units, scale = _zarr_scale(output)
    assert units == ["micrometer", "micrometer"] and scale == pytest.approx([0.65, 0.65])
    assert read_calibration(output).pixel_size == PixelSize(0.65, 0.65, "µm")
    assert zarr.open_group(str(output), mode="r")["0"].shape == image.shape


@pytest.mark.slow  # starts a worker process that imports torch (~5 s)
def test_distributed_zarr_result_carries_the_given_pixel_size(
    tmp_path, capsys, image, scaled_model
):
    source = tmp_path / "plain.tif"
    tifffile.imwrite(source, np.stack([image, image[::-1]]))  # (2, H, W), no calibration
    output = tmp_path / "labels.zarr"
    argv = [str(source), "-o", str(output), "-m", str(scaled_model), "--workers", "1"]
    status, err = _segment(capsys, *argv, "--pixel-size", "0.1625um", "--output", "mask")
    assert status == 0, err
    assert _scale_lines(err)[0].endswith("x0.5")
    units, scale = _zarr_scale(output)
    assert units == ["micrometer", "micrometer"] and scale == pytest.approx([0.1625, 0.1625])
    assert zarr.open_group(str(output), mode="r")["0"].shape == (2, *image.shape)


def test_train_records_the_images_pixel_size_and_says_the_diameter(tmp_path, capsys):
    rows, cols = np.indices((80, 90))
    labels = np.zeros((80, 90), np.uint16)
    labels[(rows - 30) ** 2 + (cols - 30) ** 2 < 100] = 1
    labels[(rows - 50) ** 2 + (cols - 60) ** 2 < 100] = 2
    pixels = (40 + 150 * (labels > 0)).astype(np.uint8)
    image = _imagej_tiff(tmp_path / "image.tif", pixels, 0.5)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    base = save_model(random_model(TINY, name="base"), tmp_path / "base.safetensors")
    common = ["train", "--images", str(image), "--labels", str(tmp_path / "labels.tif"),
              "--annotation", "dense", "--base", str(base), "--steps", "1",
              "--device", "cpu"]  # fmt: skip

    assert main([*common, "-o", str(tmp_path / "from_file.safetensors")]) == 0
    err = capsys.readouterr().err
    trained = load_model(tmp_path / "from_file.safetensors")
    assert trained.pixel_size == PixelSize(0.5, 0.5, "µm")
    # two discs of 317 pixels each: equivalent diameter 2 * sqrt(317 / pi)
    area = int((labels == 1).sum())
    assert trained.object_diameter == pytest.approx(2 * np.sqrt(area / np.pi), rel=1e-6)
    assert f"objects of {trained.object_diameter:.1f} px" in err and "at 0.5 µm/px" in err

    output = tmp_path / "given.safetensors"
    assert main([*common, "--pixel-size", "4nm", "-o", str(output)]) == 0
    assert load_model(output).pixel_size == PixelSize(4, 4, "nm")

    assert main([*common, "--pixel-size", "0", "-o", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.count("napari-unet: error:") == 1 and "--pixel-size" in err
    assert not (tmp_path / "bad.safetensors").exists()


def test_models_lists_the_recorded_scale(capsys, tmp_path, scaled_model):
    user = tmp_path / "user"
    user.mkdir()
    scaled_model.rename(user / "scaled.safetensors")
    assert main(["models"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "scaled" in line]
    assert "0.325 µm/px" in line and "objects ~20 px" in line

"""Scale in the docks: pixel size and object diameter fields, calibrated result layers,
the scale shown in the status line, and the pixel size a fine-tuned model records."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from dock_fields import field

from napari_unet.core.calibration import PixelSize, read_calibration
from napari_unet.core.errors import InputError
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model

#: A tiny valid U-Net (as the widget tests' conftest), fast enough for a few tiles.
TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")

TIMEOUT_MS = 60_000
#: The object diameter the scaled test model records, in its pixels.
MODEL_DIAMETER = 20.0


def _open(viewer, name: str):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    widget.set_options(device="cpu")
    return widget


@pytest.fixture
def scaled_model_file(tmp_path: Path) -> Path:
    """A random tiny model recording a pixel size of 0.5 µm and objects of 20 px."""
    bundle = random_model(TINY, seed=1, name="scaled")
    bundle = replace(bundle, pixel_size=PixelSize(0.5, 0.5, "µm"), object_diameter=MODEL_DIAMETER)
    return save_model(bundle, tmp_path / "scaled.safetensors")


def _stack(blobs: np.ndarray) -> np.ndarray:
    return np.stack([blobs, np.roll(blobs, 17, axis=1)])


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def test_pixel_size_field_follows_the_layer(make_napari_viewer, blobs):
    viewer = make_napari_viewer()
    viewer.add_image(_stack(blobs), name="um", scale=(2, 0.5, 0.5), units="µm")
    widget = _open(viewer, "Segment")
    assert field(widget, "pixel size").value == "0.5 µm"
    assert widget.options().pixel_size == PixelSize(0.5, 0.5, "µm")

    # napari's default units are pixels: the physical size is unknown
    viewer.add_image(blobs, name="pixels", scale=(3, 3))
    assert widget.options().image == "pixels"
    assert field(widget, "pixel size").value == "" and widget.options().pixel_size is None

    viewer.add_image(blobs, name="nm", scale=(8, 4), units=("nm", "nm"))
    assert widget.options().pixel_size == PixelSize(8, 4, "nm")


def test_typed_fields_reach_the_options_and_bad_values_are_refused(
    make_napari_viewer, blobs, scaled_model_file, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer, "Segment")
    # empty: the core's default, which the field says for the chosen model
    widget.add_model_file(scaled_model_file)
    placeholder = field(widget, "object diameter").native.placeholderText()
    assert field(widget, "object diameter").value == "" and widget.options().diameter is None
    assert placeholder == "default: from the pixel sizes, else auto"
    widget.add_model_file(tiny_model_file)
    assert "not rescaled" in field(widget, "object diameter").native.placeholderText()

    widget.set_options(pixel_size="4 nm", diameter=31)
    options = widget.options()
    assert options.pixel_size == PixelSize(4, 4, "nm") and options.diameter == 31.0
    widget.set_options(pixel_size=None, diameter="auto")
    assert widget.options().pixel_size is None and widget.options().diameter == "auto"
    widget.add_model_file(scaled_model_file)
    widget.set_options(diameter=None)
    assert widget.options().diameter is None

    for key, value in [("pixel_size", "0 um"), ("pixel_size", "1 furlong"), ("diameter", -2)]:
        with pytest.raises(InputError, match="field"):
            widget.set_options(**{key: value})
    field(widget, "object diameter").value = "big"  # typed: refused when a run starts, in one line
    with pytest.raises(InputError, match=r"object diameter field.*'big'"):
        widget.options()


def test_a_bad_typed_pixel_size_is_one_notification(
    make_napari_viewer, blobs, scaled_model_file, notifications
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer, "Segment")
    widget.add_model_file(scaled_model_file)
    field(widget, "pixel size").value = "-0.3 um"
    assert widget.segment_current_slice() is None
    assert len(notifications["error"]) == 1
    assert notifications["error"][0].startswith("pixel size field:")
    assert "--pixel-size" not in notifications["error"][0]
    assert [layer.name for layer in viewer.layers] == ["blobs"]


@pytest.mark.parametrize(
    ("block_wise", "output"),
    [(False, "labels"), (True, "labels"), (True, "probabilities")],
    ids=["in-memory", "block-wise", "block-wise probabilities"],
)
def test_results_overlay_an_anisotropic_stack(
    make_napari_viewer, qtbot, tmp_path, blobs, scaled_model_file, block_wise, output
):
    viewer = make_napari_viewer()
    image = viewer.add_image(
        _stack(blobs), name="cells", scale=(2, 0.5, 0.5), translate=(4, 10, -3), units="µm"
    )
    widget = _open(viewer, "Segment")
    widget.add_model_file(scaled_model_file)
    widget.set_options(diameter=None, output=output)  # pixel sizes decide: both 0.5 µm
    if block_wise:
        widget.set_options(to_zarr=True)
        widget.set_options(output_store=tmp_path / "cells.zarr")
    widget.segment_stack()
    _wait(qtbot, widget)

    result = viewer.layers[f"cells {output}"]
    assert result.data.shape == image.data.shape
    np.testing.assert_allclose(result.scale, (2, 0.5, 0.5))
    np.testing.assert_allclose(result.translate, (4, 10, -3))
    assert [str(unit) for unit in result.units] == ["micrometer"] * 3
    # the same world point is the same pixel in both layers
    world = image.data_to_world((1, 40, 50))
    np.testing.assert_allclose(result.world_to_data(world), (1, 40, 50))
    assert widget.scale_choice.factor == pytest.approx(1.0)
    assert "scale: pixel size 0.5 µm, the model's 0.5 µm -> x1" in widget.status
    if block_wise:  # the store on disk records the image's calibration too
        calibration = read_calibration(tmp_path / "cells.zarr")
        expected = {"labels": ((2, 0.5, 0.5), (4, 10, -3), ("µm",) * 3),
                    # (Z, K, H, W): a class axis without unit before y
                    "probabilities": ((2, 1, 0.5, 0.5), (4, 0, 10, -3),
                                      ("µm", None, "µm", "µm"))}[output]  # fmt: skip
        assert calibration.scale == pytest.approx(expected[0])
        assert calibration.translate == pytest.approx(expected[1])
        assert calibration.units == expected[2]


def test_diameter_field_rescales_and_the_status_says_why(
    make_napari_viewer, qtbot, blobs, scaled_model_file
):
    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs")
    widget = _open(viewer, "Segment")
    widget.add_model_file(scaled_model_file)
    widget.set_options(diameter=2 * MODEL_DIAMETER)  # objects twice the model's size
    widget.segment_current_slice()
    _wait(qtbot, widget)

    choice = widget.scale_choice
    assert choice.factor == pytest.approx(0.5, rel=0.02)
    status = widget.status
    assert status.startswith("done: blobs labels")
    assert f"scale: {choice.reason}" in status and "objects measure 40 px (given)" in status
    layer = viewer.layers["blobs labels"]
    assert layer.data.shape == image.data.shape  # mapped back onto the image's grid


@pytest.mark.slow  # trains 2 steps
def test_finetune_records_the_layer_pixel_size(
    make_napari_viewer, qtbot, blobs, tiny_base_file, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs", scale=(0.25, 0.25), units="µm")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    annotations = widget.new_annotations()
    np.testing.assert_allclose(annotations.scale, (0.25, 0.25))
    annotations.data[2:10, 40:60] = 1
    annotations.data[10:30, 15:35] = 2  # two cells, 20 px squares
    annotations.data[40:60, 60:80] = 3
    widget.add_model_file(tiny_base_file)
    widget.set_options(steps=2)
    widget.set_options(batch_size=1)
    widget.set_options(patch_size=60)
    widget.set_options(preview_every=0)
    widget.set_options(device="cpu")
    assert widget.train_config().pixel_size == PixelSize(0.25, 0.25, "µm")
    widget.start()
    qtbot.waitUntil(lambda: widget.trained_bundle is not None, timeout=90_000)

    bundle = widget.trained_bundle
    assert bundle.pixel_size == PixelSize(0.25, 0.25, "µm")
    # equivalent diameter of a 20 x 20 square: 2 * sqrt(400 / pi)
    assert bundle.object_diameter == pytest.approx(2 * np.sqrt(400 / np.pi), rel=0.01)
    assert "objects ~23 px at 0.25 µm/px" in widget.status
    saved = load_model(widget.save_model(tmp_path / "tuned.safetensors"))
    assert saved.pixel_size == PixelSize(0.25, 0.25, "µm")

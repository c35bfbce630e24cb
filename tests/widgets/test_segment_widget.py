"""The Segment widget in a real viewer: one click, streaming, cancel, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from dock_fields import field, open_dock

from napari_unet import cli
from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core.events import TileDone
from napari_unet.core.modelfile import load_model
from napari_unet.core.segment import segment

TIMEOUT_MS = 60_000


def _wait_done(qtbot, widget: SegmentWidget) -> None:
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def _cli(tmp_path: Path, image: np.ndarray, model: Path, *options: str) -> np.ndarray:
    tifffile.imwrite(tmp_path / "input.tif", image)
    argv = ["segment", str(tmp_path / "input.tif"), "-o", str(tmp_path / "out.tif")]
    assert cli.main([*argv, "--model", str(model), "--device", "cpu", *options]) == 0
    return tifffile.imread(tmp_path / "out.tif")


def _mixed_threshold(model: Path, image: np.ndarray) -> float:
    """A threshold that makes the random tiny model mark ~30 % of pixels as foreground."""
    probabilities = segment(load_model(model), image, output="probabilities", device="cpu")
    return round(float(np.quantile(probabilities[1], 0.7)), 4)


def _make_widget(viewer, model: Path, threshold: float | None = None) -> SegmentWidget:
    widget = open_dock(viewer, "Segment")
    widget.add_model_file(model)
    widget.set_options(device="cpu")
    if threshold is not None:
        widget.set_options(threshold=threshold)
    return widget


def test_one_click_labels_match_cli(make_napari_viewer, qtbot, tmp_path, blobs, tiny_model_file):
    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs", scale=(0.5, 0.25), translate=(3, 4))
    threshold = _mixed_threshold(tiny_model_file, blobs)
    widget = _make_widget(viewer, tiny_model_file, threshold)
    assert widget.options().image == image.name  # follows the active layer

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    layer = viewer.layers["blobs labels"]
    assert layer.visible and viewer.layers.selection.active is image  # added unselected
    expected = _cli(tmp_path, blobs, tiny_model_file, "--threshold", str(threshold))
    assert expected.max() > 1  # several objects: the comparison is not trivial
    np.testing.assert_array_equal(layer.data, expected)
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)


def test_probabilities_stream_into_an_image_layer(
    make_napari_viewer, qtbot, tmp_path, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _make_widget(viewer, tiny_model_file)
    widget.set_options(output="probabilities")
    widget.set_options(tile_size=60)  # several tiles
    worker = widget.segment_current_slice()
    tiles = []
    worker.yielded.connect(lambda event: tiles.append(event))
    _wait_done(qtbot, widget)

    assert sum(type(t).__name__ == "TileDone" for t in tiles) > 1
    layer = viewer.layers["blobs probabilities"]
    expected = _cli(tmp_path, blobs, tiny_model_file, "--output", "probabilities")
    np.testing.assert_allclose(layer.data, 1.0 - expected[0], atol=1e-5)


def test_current_slice_then_stack_reuse_our_layer(
    make_napari_viewer, qtbot, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    stack = np.stack([blobs, np.roll(blobs, 20, axis=1), np.roll(blobs, 30, axis=0)])
    viewer.add_image(stack, name="stack")
    threshold = _mixed_threshold(tiny_model_file, blobs)
    widget = _make_widget(viewer, tiny_model_file, threshold)
    viewer.dims.set_current_step(0, 1)

    widget.segment_current_slice()
    _wait_done(qtbot, widget)
    layer = viewer.layers["stack labels"]
    assert layer.data.shape == stack.shape
    assert layer.data[1].any() and not layer.data[0].any() and not layer.data[2].any()

    widget.segment_stack()
    _wait_done(qtbot, widget)
    assert [lay.name for lay in viewer.layers] == ["stack", "stack labels"]
    assert all(layer.data[p].any() for p in range(3))
    expected = segment(load_model(tiny_model_file), stack, threshold=threshold, device="cpu")
    np.testing.assert_array_equal(layer.data, expected)


def test_never_overwrites_a_layer_the_user_made(make_napari_viewer, qtbot, blobs, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    painted = np.zeros(blobs.shape, np.int32)
    painted[10:20, 10:20] = 7
    user_layer = viewer.add_labels(painted.copy(), name="blobs labels")
    viewer.layers.selection.active = viewer.layers["blobs"]
    widget = _make_widget(viewer, tiny_model_file)

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    np.testing.assert_array_equal(user_layer.data, painted)
    assert "blobs labels [2]" in viewer.layers


def test_cancel_keeps_finished_tiles(make_napari_viewer, qtbot, tiny_model_file):
    viewer = make_napari_viewer()
    big = np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8)
    viewer.add_image(big, name="big")
    widget = _make_widget(viewer, tiny_model_file)
    widget.set_options(output="probabilities")  # every written pixel is > 0
    widget.set_options(tile_size=60)
    worker = widget.segment_current_slice()
    regions = []
    # Tiles only: the first event names the device.
    worker.yielded.connect(
        lambda event: regions.append(event.region) if isinstance(event, TileDone) else None
    )
    qtbot.waitUntil(lambda: len(regions) >= 3, timeout=TIMEOUT_MS)

    widget.cancel()
    _wait_done(qtbot, widget)

    data = viewer.layers["big probabilities"].data
    written = np.zeros(big.shape, bool)
    for region in regions:
        written[region] = True
    assert 3 <= len(regions) and written.mean() < 0.5  # stopped early
    assert (data[written] > 0).all()
    assert (data[~written] == 0).all()
    assert "cancelled" in widget.status


def test_cancel_before_the_worker_starts_ends_cleanly(
    make_napari_viewer, qtbot, blobs, tiny_model_file
):
    # The worker starts one event-loop turn after the click; a Cancel in between must
    # still end the run (no tile written, widget ready again), not leave it hanging.
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _make_widget(viewer, tiny_model_file)
    worker = widget.segment_current_slice()
    assert widget.is_running and not worker.is_running
    widget.cancel()
    _wait_done(qtbot, widget)

    assert not viewer.layers["blobs labels"].data.any()
    assert widget.status.startswith("cancelled: kept 0")
    assert field(widget, "Segment current slice").enabled
    assert not field(widget, "Cancel").enabled


def test_rgb_image_is_refused_with_a_clear_message(
    make_napari_viewer, notifications, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    widget = _make_widget(viewer, tiny_model_file)

    assert widget.segment_current_slice() is None
    assert len(notifications["error"]) == 1
    assert "RGB image" in notifications["error"][0]
    assert "Split RGB" in notifications["error"][0]
    assert [lay.name for lay in viewer.layers] == ["photo"]


def test_no_image_layer_is_explained(make_napari_viewer, notifications, tiny_model_file):
    viewer = make_napari_viewer()
    widget = _make_widget(viewer, tiny_model_file)
    widget.segment_stack()
    assert notifications["error"] == [
        "no image layer: open an image (or a sample) and choose it first"
    ]


def test_corrupt_model_file_error_arrives_as_notification(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model at all")
    widget = _make_widget(viewer, bad)
    widget.segment_current_slice()
    _wait_done(qtbot, widget)
    assert len(notifications["error"]) == 1
    assert "not a safetensors model file" in notifications["error"][0]


@pytest.mark.parametrize(("key", "shape"), [("em_stack", (4, 512, 512)), ("nuclei", (520, 696))])
def test_samples_open(make_napari_viewer, key, shape):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", key)
    assert len(viewer.layers) == 1
    assert viewer.layers[0].data.shape == shape
    assert viewer.layers[0].data.dtype == np.uint8


def test_choosing_a_model_applies_its_recommended_postprocessing(
    make_napari_viewer, tmp_path, tiny_model_file
):
    from napari_unet.core.modelfile import save_model

    bundle = load_model(tiny_model_file)
    bundle.provenance["postprocess"] = {
        "threshold": 0.65,
        "min_size": 12,
        "split_touching": True,
        "per_output": {"labels": {"merge_boundaries": 0.75}},
    }
    recommended = save_model(bundle, tmp_path / "recommended.safetensors")
    widget = open_dock(make_napari_viewer(), "Segment")
    widget.add_model_file(recommended)
    options = widget.options()
    chosen = (options.threshold, options.min_size, options.split_touching, options.merge_boundaries)
    assert chosen == (0.65, 12, True, 0.75)
    widget.add_model_file(tiny_model_file)  # no recommendation: back to the defaults
    options = widget.options()
    chosen = (options.threshold, options.min_size, options.split_touching, options.merge_boundaries)
    assert chosen == (0.5, 0, False, 0.0)


def test_options_cover_every_field_and_set_options_takes_them_back(
    make_napari_viewer, tmp_path, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = open_dock(viewer, "Segment")
    widget.add_model_file(tiny_model_file)
    chosen = dict(
        output="mask", tile_size=92, threshold=0.3, min_size=5, split_touching=True,
        fill_boundaries=True, merge_boundaries=0.2, device="cpu", link=True,
        pixel_size="0.5 um", diameter=12, to_zarr=True, output_store=tmp_path / "o.zarr",
        resume=True, block_size=512,
    )  # fmt: skip
    widget.set_options(**chosen)
    options = widget.options()
    assert (options.image, options.model) == ("blobs", "tiny.safetensors")
    assert str(options.pixel_size) == "0.5 µm" and options.diameter == 12.0
    same = {key: getattr(options, key) for key in chosen if key not in ("pixel_size", "diameter")}
    assert same == {key: value for key, value in chosen.items() if key in same}

    other_viewer = make_napari_viewer()
    other_viewer.add_image(blobs, name="blobs")
    other = open_dock(other_viewer, "Segment")
    other.add_model_file(tiny_model_file)
    other.set_options(**vars(options))  # every field, as it is
    assert other.options() == replace(options, channel_layers=())
    core = options.segment_options()
    assert (core.output, core.tile_size, core.merge_boundaries) == ("mask", 92, 0.2)

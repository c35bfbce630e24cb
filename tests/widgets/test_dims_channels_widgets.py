"""The docks on (t, z, y, x) stacks and multichannel images, opened as a user does.

Segment: "Segment current slice" segments the plane at the sliders' position among any
number of leading axes, "Segment stack" every plane (its progress counting them all);
a channel axis of a layer, or several layers as the channels of one input; RGB layers
read as channels or grey only when the user chooses; "link labels through z" on by
default only for a z axis. Fine-tune: annotations on any plane of an nD stack, and a
multichannel network trained from scratch. Runs are awaited on the workers' real
signals (``qtbot.waitUntil``), never with sleeps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from dock_fields import field

from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core.frontend import applied_postprocessing, left_out_note
from napari_unet.core.io import RGB_MESSAGE, rgb_to_grey
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.options import WHOLE_PLANE_OPTIONS
from napari_unet.core.segment import segment

#: The tiny valid U-Net of conftest.py (margin 20 px).
TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")

TIMEOUT_MS = 90_000
#: The RGB refusal without its "where" (the image's shape).
RGB_START = RGB_MESSAGE.split("{where}")[0]
RGB_END = RGB_MESSAGE.split("{where}")[1]


# --------------------------------------------------------------------------- helpers
def _open(viewer, name: str):
    """The dock widget ``name`` (its display name in napari.yaml), opened from the menu."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget


def _wait(qtbot, predicate) -> None:
    qtbot.waitUntil(lambda: bool(predicate()), timeout=TIMEOUT_MS)


def _threshold(model, image: np.ndarray, **options) -> float:
    """A threshold that makes the random tiny model mark ~30 % of pixels as foreground."""
    probabilities = segment(model, image, output="probabilities", device="cpu", **options)
    foreground = 1.0 - probabilities[..., 0, :, :]
    return round(float(np.quantile(foreground, 0.7)), 4)


def _segment_panel(viewer, model_file: Path, threshold: float) -> SegmentWidget:
    widget = _open(viewer, "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.add_model_file(model_file)
    widget.set_options(device="cpu", threshold=threshold)
    return widget


def _tzyx(blobs: np.ndarray) -> np.ndarray:
    """(2, 3, 64, 64) uint8: six different crops of the blobs image."""
    return np.stack([
        np.stack([np.roll(blobs, (7 * t + 11 * z, 9 * z - 5 * t), axis=(0, 1))[:64, :64]
                  for z in range(3)])
        for t in range(2)
    ])  # fmt: skip


@pytest.fixture
def two_channel_file(tmp_path: Path) -> Path:
    """A random tiny model reading 2 channels."""
    config = replace(TINY, in_channels=2)
    return save_model(random_model(config, seed=3, name="two"), tmp_path / "two.safetensors")


@pytest.fixture
def three_channel_file(tmp_path: Path) -> Path:
    """A random tiny model reading 3 channels (an RGB model)."""
    config = replace(TINY, in_channels=3)
    return save_model(random_model(config, seed=4, name="rgb"), tmp_path / "rgb.safetensors")


@pytest.fixture
def two_channels(blobs: np.ndarray) -> np.ndarray:
    """(2, 64, 64) uint8: blobs in channel 1, other blobs (a flipped copy) in channel 0."""
    return np.stack([blobs[::-1, ::-1][:64, :64], blobs[:64, :64]])


def _statuses_seen(worker, widget) -> list[str]:
    """The dock's status line after each worker event (connected after the widget's own
    handler, so it reads what the widget has just shown)."""
    seen: list[str] = []
    worker.yielded.connect(lambda _event: seen.append(widget.status))
    return seen


# ------------------------------------------------------------------- (t, z, y, x)
def test_current_slice_of_a_tzyx_stack_is_the_plane_the_sliders_show(
    make_napari_viewer, qtbot, notifications, blobs, tiny_model_file
):
    stack = _tzyx(blobs)
    model = load_model(tiny_model_file)
    threshold = _threshold(model, stack[1, 2])
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="cells", scale=(1.0, 2.0, 0.5, 0.5))
    widget = _segment_panel(viewer, tiny_model_file, threshold)
    viewer.dims.set_current_step(0, 1)  # t = 1
    viewer.dims.set_current_step(1, 2)  # z = 2 (world 4: the z scale is 2)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    layer = viewer.layers["cells labels"]
    assert layer.data.shape == stack.shape and layer.data.dtype == np.int32
    expected = segment(model, stack[1, 2], threshold=threshold, device="cpu")
    assert expected.any()
    np.testing.assert_array_equal(layer.data[1, 2], expected)
    others = np.ones(stack.shape[:2], bool)
    others[1, 2] = False
    assert not layer.data[others].any()  # only that plane was written
    # The result sits where the image is: same scale and translate on every axis.
    np.testing.assert_allclose(layer.scale, image.scale)
    np.testing.assert_allclose(layer.translate, image.translate)
    assert widget.plane_progress == (1, 1)
    assert "done" in widget.status


def test_segment_stack_fills_every_plane_and_counts_them_all(
    make_napari_viewer, qtbot, notifications, bars, blobs, tiny_model_file
):
    stack = _tzyx(blobs)
    model = load_model(tiny_model_file)
    threshold = _threshold(model, stack)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="cells")
    viewer.dims.axis_labels = ("t", "z", "y", "x")
    widget = _segment_panel(viewer, tiny_model_file, threshold)
    widget.set_options(link=False)

    worker = widget.segment_stack()
    statuses = _statuses_seen(worker, widget)
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    assert worker is not None
    expected = segment(model, stack, threshold=threshold, device="cpu")
    assert expected.shape == stack.shape and all(p.any() for p in expected.reshape(6, 64, 64))
    np.testing.assert_array_equal(viewer.layers["cells labels"].data, expected)
    assert widget.plane_progress == (6, 6)
    # One bar over the tiles of all six planes, counted to its end.
    assert len(bars) == 1
    bar = bars[0]
    assert bar.total % 6 == 0 and bar.n == bar.total and len(bar.counts) == bar.total
    tiles = bar.total // 6
    assert any(s.startswith("plane 6 of 6 (t=1, z=2), tile") for s in statuses), statuses
    # Each status says what post-processing the run applies, under its first line.
    applied = applied_postprocessing(widget.options().segment_options())
    assert statuses[-1].splitlines() == [
        "plane 6 of 6 (t=1, z=2), tile " + f"{tiles} of {tiles}",
        applied,
    ]
    assert widget.status.splitlines() == ["done: cells labels (6 planes)", applied]


def test_linking_a_z_stack_gives_the_cores_linked_labels(
    make_napari_viewer, qtbot, notifications, blobs, tiny_model_file
):
    # The same blobs in every plane, shifted a little: linked, each keeps one id.
    stack = np.stack([np.roll(blobs, 2 * z, axis=1)[:64, :64] for z in range(4)])
    model = load_model(tiny_model_file)
    threshold = _threshold(model, stack)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="zstack")
    viewer.dims.axis_labels = ("z", "y", "x")
    widget = _segment_panel(viewer, tiny_model_file, threshold)
    assert widget.options().link is True  # the axis before y is z
    assert widget.options().link is True

    widget.segment_stack()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    linked = segment(model, stack, threshold=threshold, device="cpu", link=True)
    unlinked = segment(model, stack, threshold=threshold, device="cpu")
    assert not np.array_equal(linked, unlinked)  # the test can tell them apart
    np.testing.assert_array_equal(viewer.layers["zstack labels"].data, linked)
    assert widget.status.splitlines() == [
        "done: zstack labels (4 planes, labels linked)",
        applied_postprocessing(widget.options().segment_options()),
    ]
    assert widget.status.endswith("linked through z")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (("z", "y", "x"), True),
        (("t", "y", "x"), False),
        (("Z", "y", "x"), True),
        (("0", "1", "2"), False),
    ],
)
def test_the_link_checkbox_defaults_on_only_for_a_z_axis(
    make_napari_viewer, blobs, tiny_model_file, labels, expected
):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([blobs, blobs]), name="stack")
    viewer.dims.axis_labels = labels
    widget = _segment_panel(viewer, tiny_model_file, 0.5)
    assert widget.options().link is expected
    # Relabelled while the dock is open: the default follows.
    viewer.dims.axis_labels = ("t", "y", "x") if expected else ("z", "y", "x")
    assert widget.options().link is (not expected)


def test_link_default_skips_a_labelled_channel_axis(make_napari_viewer, tiny_model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 2, 32, 32), np.uint8), name="zcyx")
    viewer.dims.axis_labels = ("z", "c", "y", "x")
    widget = _segment_panel(viewer, tiny_model_file, 0.5)
    assert widget.options().channel_axis == 1  # set from the "c" label
    assert widget.options().link is True  # the axis before y, the channel axis aside, is z


# ------------------------------------------------------------------------- channels
def test_a_two_channel_layer_with_its_channel_axis_segments(
    make_napari_viewer, qtbot, notifications, two_channels, two_channel_file
):
    model = load_model(two_channel_file)
    threshold = _threshold(model, two_channels, channel_axis=0)
    viewer = make_napari_viewer()
    viewer.add_image(two_channels, name="two")
    widget = _segment_panel(viewer, two_channel_file, threshold)
    widget.set_options(channel_axis=0)
    assert (widget.options().channel_axis, widget.options().channels) == (0, None)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    layer = viewer.layers["two labels"]
    assert layer.data.shape == two_channels.shape[1:]  # no channel axis in the result
    expected = segment(model, two_channels, threshold=threshold, device="cpu", channel_axis=0)
    assert expected.any()
    np.testing.assert_array_equal(layer.data, expected)


def test_the_channel_axis_is_set_from_the_viewers_c_label(
    make_napari_viewer, qtbot, notifications, two_channels, two_channel_file
):
    model = load_model(two_channel_file)
    yxc = np.moveaxis(two_channels, 0, -1)  # (64, 64, 2): channels last
    threshold = _threshold(model, yxc, channel_axis=-1)
    viewer = make_napari_viewer()
    viewer.add_image(yxc, name="yxc")
    viewer.dims.axis_labels = ("y", "x", "c")
    widget = _segment_panel(viewer, two_channel_file, threshold)
    assert widget.options().channel_axis == 2

    widget.segment_stack()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    expected = segment(model, yxc, threshold=threshold, device="cpu", channel_axis=-1)
    np.testing.assert_array_equal(viewer.layers["yxc labels"].data, expected)


def test_current_slice_of_a_czyx_stack_skips_the_channel_axis(
    make_napari_viewer, qtbot, notifications, two_channels, two_channel_file
):
    # (c, z, y, x): the sliders show c and z; the plane in view is z's, with both channels.
    czyx = np.stack([np.roll(two_channels, 9 * z, axis=-1) for z in range(3)], axis=1)
    model = load_model(two_channel_file)
    threshold = _threshold(model, czyx[:, 2], channel_axis=0)
    viewer = make_napari_viewer()
    image = viewer.add_image(czyx, name="czyx", translate=(0.0, 10.0, 5.0, 5.0))
    viewer.dims.axis_labels = ("c", "z", "y", "x")
    widget = _segment_panel(viewer, two_channel_file, threshold)
    assert widget.options().channel_axis == 0
    viewer.dims.set_current_step(0, 1)  # the channel slider: not a plane axis
    viewer.dims.set_current_step(1, 2)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    layer = viewer.layers["czyx labels"]
    assert layer.data.shape == (3, 64, 64)
    expected = segment(model, czyx[:, 2], threshold=threshold, device="cpu", channel_axis=0)
    assert expected.any()
    np.testing.assert_array_equal(layer.data[2], expected)
    assert not layer.data[:2].any()
    # Placed as the image, without its channel axis.
    np.testing.assert_allclose(layer.translate, (10.0, 5.0, 5.0))
    np.testing.assert_allclose(layer.scale, np.delete(image.scale, 0))


def test_two_layers_as_channels_equal_one_two_channel_layer(
    make_napari_viewer, qtbot, notifications, two_channels, two_channel_file
):
    model = load_model(two_channel_file)
    threshold = _threshold(model, two_channels, channel_axis=0)
    viewer = make_napari_viewer()
    viewer.add_image(two_channels, name="both")
    viewer.add_image(two_channels[0], name="ch0")
    viewer.add_image(two_channels[1], name="ch1")
    widget = _segment_panel(viewer, two_channel_file, threshold)

    widget.set_options(image="both", channel_axis=0)
    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)
    widget.set_options(channel_layers=["ch0", "ch1"])
    assert widget.options().channel_axis == 0  # the stacked layers' new axis
    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    one = viewer.layers["both labels"].data
    assert one.any()
    np.testing.assert_array_equal(viewer.layers["ch0+ch1 labels"].data, one)


def test_channel_layers_of_different_shapes_are_one_line(
    make_napari_viewer, notifications, two_channels, two_channel_file
):
    viewer = make_napari_viewer()
    viewer.add_image(two_channels[0], name="ch0")
    viewer.add_image(two_channels[1, :32], name="half")
    widget = _segment_panel(viewer, two_channel_file, 0.5)
    widget.set_options(channel_layers=["ch0", "half"])

    assert widget.segment_stack() is None
    assert notifications["error"] == [
        "the channel layers must have the same shape: 'ch0' is (64, 64), 'half' is "
        "(32, 64); choose layers of one image"
    ]
    assert [layer.name for layer in viewer.layers] == ["ch0", "half"]


def test_a_channel_count_the_model_does_not_read_is_one_line_and_no_run(
    make_napari_viewer, notifications, two_channels, tiny_model_file, two_channel_file
):
    viewer = make_napari_viewer()
    viewer.add_image(np.concatenate([two_channels, two_channels[:1]]), name="three")
    widget = _segment_panel(viewer, two_channel_file, 0.5)
    widget.set_options(channel_axis=0)

    assert widget.segment_stack() is None
    widget.set_options(channels="0,5")
    assert widget.segment_stack() is None
    widget.set_options(channels="0;x")
    assert widget.segment_stack() is None

    errors = notifications["error"]
    assert len(errors) == 3 and all("\n" not in e for e in errors)
    assert errors[0].startswith("the model expects 2 channels but the image of shape (3, 64, 64)")
    assert errors[1].startswith("channel 5 is out of range")
    assert errors[2].startswith("channels must be channel indices separated by commas")
    assert [layer.name for layer in viewer.layers] == ["three"] and not widget.is_running


# ------------------------------------------------------------------------------ RGB
def test_rgb_is_refused_until_the_user_chooses_grey_or_channels(
    make_napari_viewer, qtbot, notifications, blobs, tiny_model_file, three_channel_file
):
    rng = np.random.default_rng(5)
    rgb = np.stack([blobs[:64, :64], blobs[::-1, :][:64, :64], blobs[:64, :64] // 2], axis=-1)
    rgb = (rgb + rng.integers(0, 20, rgb.shape)).astype(np.uint8)
    grey_model = load_model(tiny_model_file)
    threshold = _threshold(grey_model, rgb_to_grey(rgb))
    viewer = make_napari_viewer()
    viewer.add_image(rgb, name="photo", rgb=True)
    widget = _segment_panel(viewer, tiny_model_file, threshold)
    assert not field(widget, "RGB").native.isHidden()  # the choice is shown for an RGB layer

    assert widget.segment_current_slice() is None
    assert len(notifications["error"]) == 1
    refused = notifications["error"][0]
    assert refused.startswith(RGB_START) and refused.endswith(RGB_END)
    assert [layer.name for layer in viewer.layers] == ["photo"]

    widget.set_options(rgb="grey")
    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)
    assert len(notifications["error"]) == 1
    expected = segment(grey_model, rgb_to_grey(rgb), threshold=threshold, device="cpu")
    assert expected.any()
    np.testing.assert_array_equal(viewer.layers["photo labels"].data, expected)

    # As channels: a 3-channel model reads R, G, B.
    colour_model = load_model(three_channel_file)
    colour_threshold = _threshold(colour_model, rgb, channel_axis=-1)
    widget.add_model_file(three_channel_file)
    widget.set_options(rgb="channels", threshold=colour_threshold)
    assert widget.options().channel_axis == 2
    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)
    assert len(notifications["error"]) == 1
    expected = segment(colour_model, rgb, threshold=colour_threshold, device="cpu", channel_axis=-1)
    np.testing.assert_array_equal(viewer.layers["photo labels"].data, expected)


# -------------------------------------------------------------- block-wise, lazily
def test_current_slice_of_a_lazy_tzyx_stack_is_written_to_its_own_store(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file
):
    stack = _tzyx(blobs)
    model = load_model(tiny_model_file)
    threshold = _threshold(model, stack[0, 1])
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(stack, chunks=(1, 1, 32, 32)), name="lazy")
    viewer.dims.axis_labels = ("t", "z", "y", "x")
    widget = _segment_panel(viewer, tiny_model_file, threshold)
    widget.set_options(link=True)
    widget.set_options(output_store=tmp_path / "lazy.zarr")
    viewer.dims.set_current_step(1, 1)  # t = 0, z = 1: flat plane 1

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    expected = segment(model, stack[0, 1], threshold=threshold, device="cpu")
    assert expected.any()
    shown = np.asarray(viewer.layers["lazy labels"].data)
    assert shown.shape == stack.shape
    np.testing.assert_array_equal(shown[0, 1], expected)
    shown[0, 1] = 0
    assert not shown.any()
    stored = zarr.open_array(str(tmp_path / "lazy-plane1.zarr" / "0"), mode="r")
    np.testing.assert_array_equal(stored[...], expected)


def test_a_lazy_stack_segments_block_wise_without_linking_and_says_so(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file
):
    stack = _tzyx(blobs)[:, :2]
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(stack, chunks=(1, 1, 64, 64)), name="lazy")
    viewer.dims.axis_labels = ("t", "z", "y", "x")
    widget = _segment_panel(viewer, tiny_model_file, 0.5)
    assert widget.options().link is True
    widget.set_options(output_store=tmp_path / "lazy.zarr")

    widget.segment_stack()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    link_note = left_out_note(next(o for o in WHOLE_PLANE_OPTIONS if o.name == "link"))
    assert link_note in notifications["warning"]
    assert link_note in widget.status and "done" in widget.status
    model = load_model(tiny_model_file)
    expected = segment(model, stack, threshold=0.5, device="cpu")
    np.testing.assert_array_equal(np.asarray(viewer.layers["lazy labels"].data), expected)


# ------------------------------------------------------------------------ Fine-tune
def _paint(annotations: np.ndarray) -> None:
    """Sparse strokes on one (64, 64) plane: background (1) and two cells (2, 3)."""
    annotations[2:8, 40:60] = 1
    annotations[55:62, 5:30] = 1
    annotations[15:25, 20:30] = 2
    annotations[40:50, 40:50] = 3


def _tiny_training(widget: FinetuneWidget, steps: int) -> None:
    widget.set_options(steps=steps)
    widget.set_options(batch_size=1)
    widget.set_options(patch_size=60)
    widget.set_options(augment=False)
    widget.set_options(preview_every=2)
    widget.set_options(device="cpu")


@pytest.mark.slow  # trains 3 steps of a tiny network
def test_fine_tuning_on_one_plane_of_a_tzyx_stack(
    make_napari_viewer, qtbot, notifications, blobs, tiny_base_file
):
    stack = _tzyx(blobs)
    viewer = make_napari_viewer()
    image = viewer.add_image(stack, name="cells", scale=(1.0, 2.0, 1.0, 1.0))
    widget = _open(viewer, "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    annotations = widget.new_annotations()
    assert annotations.data.shape == stack.shape
    np.testing.assert_allclose(annotations.scale, image.scale)
    _paint(annotations.data[1, 2])
    viewer.dims.set_current_step(0, 1)
    viewer.dims.set_current_step(1, 2)  # z = 2 (world 4: the z scale is 2)
    widget.add_model_file(tiny_base_file)
    _tiny_training(widget, steps=3)

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert notifications["error"] == []
    assert widget.trained_planes == 1  # plane (1, 2) alone is annotated
    assert widget.trained_bundle is not None
    assert "finished at step 3" in widget.status
    preview = viewer.layers["cells preview"]
    assert preview.data.shape == (1, 1, 64, 64) and preview.data.max() > 0
    np.testing.assert_allclose(preview.translate, (1.0, 4.0, 0.0, 0.0))  # at (t 1, z 2)


@pytest.mark.slow  # trains 3 steps of a tiny network
def test_fine_tuning_a_two_channel_network_from_scratch(
    make_napari_viewer, qtbot, notifications, two_channels
):
    viewer = make_napari_viewer()
    viewer.add_image(two_channels, name="two")
    viewer.dims.axis_labels = ("c", "y", "x")
    widget = _open(viewer, "Fine-tune")
    assert widget.options().channel_axis == 0
    annotations = widget.new_annotations()
    assert annotations.data.shape == two_channels.shape[1:]  # no channel axis
    _paint(annotations.data)
    widget.set_options(base="scratch")
    assert widget.options().base.kind == "scratch"
    _tiny_training(widget, steps=3)

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert notifications["error"] == []
    bundle = widget.trained_bundle
    assert bundle is not None and bundle.config.in_channels == 2
    assert "finished at step 3" in widget.status

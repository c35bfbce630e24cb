"""The Fine-tune dock in a real viewer: paint, train, stop, use and save the model.

Docks are opened from the plugin's menu entry, as a user does, and read and set through
their public API (``options``/``set_options``, ``status``...).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._widgets._model_choice import read_settings
from napari_unet._widgets.finetune import FIRST_CELL_LABEL, FinetuneWidget
from napari_unet.core.modelfile import list_models, load_model

TIMEOUT_MS = 90_000


def _paint(annotations: np.ndarray, image: np.ndarray) -> None:
    """Sparse strokes: background (1) in a dark corner, each bright disc its own id (2+)."""
    annotations[..., 2:10, 40:60] = 1
    annotations[..., 85:92, 50:90] = 1
    annotations[..., 15:25, 20:30] = 2
    annotations[..., 45:55, 65:75] = 3


def _open(viewer, name: str = "Fine-tune"):
    """The dock's widget, opened from the plugin's menu entry."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget


def _tiny_settings(widget: FinetuneWidget, steps: int) -> None:
    widget.set_options(
        steps=steps, batch_size=1, patch_size=60, augment=False, preview_every=2, device="cpu"
    )


@pytest.mark.slow  # trains a few steps: ~5-20 s on a busy 2-core machine
def test_paint_finetune_stop_then_segment_and_save(
    make_napari_viewer, qtbot, tmp_path, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs")
    finetune = _open(viewer)
    segment = _open(viewer, "Segment")
    annotations = finetune.new_annotations()
    assert annotations.name == "blobs annotations"
    assert annotations.data.shape == image.data.shape and annotations.data.dtype == np.uint16
    assert annotations.selected_label == FIRST_CELL_LABEL and annotations.mode == "paint"
    _paint(annotations.data, blobs)
    painted = annotations.data.copy()

    finetune.add_model_file(tiny_base_file)
    _tiny_settings(finetune, steps=1000)
    finetune.set_options(name="blobs-tuned")
    assert finetune.options().name == "blobs-tuned"
    finetune.start()
    # Added at Start (in the turn after the click, see in_separate_turns), then filled
    qtbot.waitUntil(lambda: "blobs preview" in viewer.layers, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: viewer.layers.selection.active == annotations, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: len(finetune.loss_plot.train) >= 3, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: viewer.layers["blobs preview"].data.max() > 0, timeout=TIMEOUT_MS)
    finetune.stop()
    qtbot.waitUntil(lambda: not finetune.is_training, timeout=TIMEOUT_MS)

    steps_done = len(finetune.loss_points)
    assert 3 <= steps_done < 1000
    np.testing.assert_array_equal(annotations.data, painted)  # training never edits them
    bundle = finetune.trained_bundle
    assert bundle is not None and bundle.name == "blobs-tuned"
    assert finetune.trained_model_name == "blobs-tuned" and finetune.can_save
    assert "blobs-tuned (this session)" in segment.model_labels
    assert segment.model_label == "blobs-tuned (this session)"  # selected in Segment

    saved = finetune.save_to_user_models()
    assert [m.name for m in list_models() if m.source == "user"] == ["blobs-tuned"]
    assert "blobs-tuned (saved)" in segment.model_labels
    reloaded = load_model(saved)
    for key, value in bundle.state_dict.items():
        np.testing.assert_array_equal(reloaded.state_dict[key].numpy(), value.numpy())
    assert finetune.save_model(tmp_path / "elsewhere.safetensors").is_file()


def test_all_annotated_planes_of_a_stack_are_used(make_napari_viewer, qtbot, blobs, tiny_base_file):
    viewer = make_napari_viewer()
    stack = np.stack([blobs, blobs[::-1], blobs[:, ::-1]])
    image = viewer.add_image(stack, name="stack", scale=(2.0, 1.0, 1.0))
    widget = _open(viewer)
    annotations = widget.new_annotations()
    assert annotations.data.shape == stack.shape
    _paint(annotations.data[0], blobs)
    _paint(annotations.data[2], blobs)
    viewer.dims.set_current_step(0, 2)
    widget.add_model_file(tiny_base_file)
    _tiny_settings(widget, steps=2)
    widget.set_options(holdout="off")  # auto would hold plane 2 out of training

    widget.start()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)

    assert widget.trained_planes == 2  # planes 0 and 2; plane 1 is empty
    preview = viewer.layers["stack preview"]
    assert preview.data.shape == (1, *blobs.shape)
    np.testing.assert_allclose(preview.translate, (4.0, 0.0, 0.0))  # plane 2, scale 2
    np.testing.assert_allclose(preview.scale, image.scale)
    assert widget.trained_bundle is not None
    assert "finished at step 2" in widget.status


@pytest.mark.slow  # trains until a preview arrives after the deletion
def test_a_deleted_preview_layer_comes_back_at_the_next_preview(
    make_napari_viewer, qtbot, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer)
    annotations = widget.new_annotations()
    _paint(annotations.data, blobs)
    widget.add_model_file(tiny_base_file)
    _tiny_settings(widget, steps=1000)

    widget.start()
    qtbot.waitUntil(lambda: "blobs preview" in viewer.layers, timeout=TIMEOUT_MS)
    viewer.layers.remove("blobs preview")  # the user deletes it while training runs
    qtbot.waitUntil(lambda: "blobs preview" in viewer.layers, timeout=TIMEOUT_MS)
    preview = viewer.layers["blobs preview"]
    qtbot.waitUntil(lambda: preview.visible, timeout=TIMEOUT_MS)  # shown a turn later
    widget.stop()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)
    assert preview.data.shape == blobs.shape and preview.data.max() > 0
    assert viewer.layers.selection.active == annotations


def test_empty_annotations_are_refused(make_napari_viewer, notifications, blobs):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer)
    widget.new_annotations()
    assert widget.start() is None
    assert len(notifications["error"]) == 1
    assert notifications["error"][0].startswith("nothing is annotated")


def test_missing_annotation_layer_is_explained(make_napari_viewer, notifications, blobs):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer)
    assert widget.start() is None
    assert "click 'New annotations'" in notifications["error"][0]


def test_mismatched_shapes_are_refused(make_napari_viewer, notifications, blobs):
    viewer = make_napari_viewer()
    viewer.add_labels(np.ones((50, 50), np.uint16), name="other labels")
    viewer.add_image(blobs, name="blobs")
    widget = _open(viewer)
    widget.set_options(annotations="other labels")
    assert widget.options().annotations is viewer.layers["other labels"]
    assert widget.start() is None
    assert (
        "The annotation has shape (50, 50) but the image has shape (96, 128)"
        in (notifications["error"][0])
    )


def test_rgb_image_cannot_be_annotated(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="photo", rgb=True)
    widget = _open(viewer)
    assert widget.new_annotations() is None
    assert "RGB image" in notifications["error"][0]


def test_save_before_training_is_explained(make_napari_viewer, notifications, tmp_path):
    widget = _open(make_napari_viewer())
    assert widget.save_model(tmp_path / "m.safetensors") is None
    assert notifications["error"] == ["no trained model yet: start a training run first"]


def test_every_option_set_is_read_back_and_sets_another_dock(make_napari_viewer, blobs):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    result = viewer.add_labels(np.zeros(blobs.shape, np.int32), name="result")
    widget = _open(viewer)
    widget.set_options(image="blobs")  # the labels layer added last is the active one
    annotations = widget.new_annotations()
    chosen = dict(
        image="blobs", result="result", result_planes="all", boundary_band=3,
        annotations=annotations.name, convention="dense", base="scratch", steps=7,
        learning_rate=2e-4, w0=4.0, sigma=3.0, augment=False, blur=1.5, invert_contrast=0.5,
        batch_size=2, patch_size=92, preview_every=0, device="cpu", holdout="1 plane",
        name="mine",
    )  # fmt: skip
    widget.set_options(**chosen)

    options = widget.options()
    layers = {"image": viewer.layers["blobs"], "result": result, "annotations": annotations}
    for key, value in chosen.items():
        if key != "base":  # a name here, the model itself in the options
            assert getattr(options, key) == layers.get(key, value), key
    assert widget.base_label == "scratch (small, untrained)"
    assert options.base.kind == "scratch"
    assert options.channel_axis is None and options.channel_layers == ()
    config = widget.train_config()
    assert (config.steps, config.batch_size, config.patch_size) == (7, 2, 92)
    assert (config.learning_rate, config.w0, config.sigma) == (2e-4, 4.0, 3.0)

    other = _open(viewer)  # a second dock takes the first one's options as they are
    other.set_options(**vars(options))
    assert other.options() == options
    other.set_options(patch_size=None, holdout="20 %")
    assert other.options().patch_size is None and other.options().holdout == "20%"
    with pytest.raises(TypeError, match="unknown options"):
        other.set_options(stepz=3)


def test_the_base_model_is_chosen_per_image_as_segment_chooses(
    make_napari_viewer, blobs, tiny_base_file
):
    """Not the first model of the list: the model for the image's kind or pixel size, the
    user's choice for that image when there was one (shared with Segment)."""
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="nuclei")
    viewer.add_image(blobs, name="tiny pixels", scale=(5, 5), units="nm")
    widget = _open(viewer)
    assert widget.base_label == "em-membranes"  # the active layer: 5 nm, as em-membranes
    widget.set_options(image="nuclei")
    assert widget.base_label == "nuclei"  # dark background: fluorescence

    widget.set_options(base="em-membranes")  # the user's choice for this image
    widget.set_options(image="tiny pixels")
    widget.set_options(base="nuclei")
    widget.set_options(image="nuclei")
    assert widget.base_label == "em-membranes"
    widget.set_options(image="tiny pixels")
    assert widget.base_label == "nuclei"
    assert read_settings()["last_model"] == {"fluorescence": {"name": "nuclei"}}  # the last

    segment = _open(viewer, "Segment")  # the same memory
    segment.set_options(image="nuclei")
    assert segment.model_label == "em-membranes"

    widget.add_model_file(tiny_base_file)  # a file is a choice too
    widget.set_options(image="nuclei")
    widget.set_options(image="tiny pixels")
    assert widget.base_label == "tinybase.safetensors"
    widget.set_options(base="scratch")  # not remembered: not a model for Segment
    widget.set_options(image="nuclei")
    widget.set_options(image="tiny pixels")
    assert widget.base_label == "tinybase.safetensors"

"""Fine-tune dock, "Correct a result": a labels layer -> annotations of the plane in view
to fix and train on (issue 18)."""

from __future__ import annotations

import numpy as np
from painted_docks import TINY_TRAINING
from skimage.measure import label as connected_components

from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet.core.annotations import RESULT_BOUNDARY_BAND, annotations_from_labels
from napari_unet.core.result_labels import boundary_pixels

TIMEOUT_MS = 90_000


def _stack_and_result(blobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A (3, 96, 128) image stack and its "segmentation": each plane's discs, with ids
    that are neither consecutive nor starting at 1 (as a result edited by hand can be)."""
    stack = np.stack([blobs, blobs[::-1], blobs[:, ::-1]])
    result = np.stack([connected_components(plane > 100) for plane in stack]).astype(np.int32)
    result[result > 0] = result[result > 0] * 7 + 40
    return stack, result


def _open_dock(viewer) -> FinetuneWidget:
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    return widget


def test_correct_the_plane_in_view_then_train_on_it(
    make_napari_viewer, qtbot, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    stack, labels = _stack_and_result(blobs)
    viewer.add_image(stack, name="stack", scale=(2.0, 0.5, 0.5))
    result = viewer.add_labels(labels.copy(), name="result", scale=(2.0, 0.5, 0.5))
    widget = _open_dock(viewer)
    viewer.dims.set_current_step(0, 1)

    assert widget.result_to_correct == result  # the newest labels layer
    widget.set_options(boundary_band=0)  # every pixel converted (the band: its own test)
    corrections = widget.correct_result()

    assert corrections.name == "result corrections"
    np.testing.assert_array_equal(result.data, labels)  # the result is untouched
    assert result in viewer.layers and corrections != result
    np.testing.assert_allclose(corrections.scale, result.scale)
    np.testing.assert_allclose(corrections.translate, result.translate)
    data = corrections.data
    assert data.shape == labels.shape
    assert (data[[0, 2]] == 0).all()  # other planes unannotated
    np.testing.assert_array_equal(data[1] == 1, labels[1] == 0)
    ids = np.unique(labels[1][labels[1] > 0])
    assert len(ids) == 5
    for cell, object_id in enumerate(ids, start=2):  # one cell id per object, 2, 3, ...
        np.testing.assert_array_equal(data[1] == cell, labels[1] == object_id)
    assert widget.options().annotations == corrections
    assert widget.options().convention == "sparse"
    assert viewer.layers.selection.active == corrections
    assert corrections.selected_label == 7  # painting makes a new cell
    assert widget.status.startswith("corrections for plane 1: 5 cells")
    assert widget.result_to_correct == result  # our corrections are not a result

    assert "note: choose the image it segments" in widget.status  # none chosen yet

    widget.add_model_file(tiny_base_file)
    widget.set_options(image="stack", **TINY_TRAINING)
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)
    assert widget.trained_annotations == corrections
    assert widget.trained_planes == 1  # only plane 1 is annotated
    assert widget.trained_bundle is not None
    np.testing.assert_array_equal(result.data, labels)


def test_all_planes_of_a_result_chosen_by_name(make_napari_viewer, blobs):
    viewer = make_napari_viewer()
    stack, labels = _stack_and_result(blobs)
    viewer.add_image(stack, name="stack")
    viewer.add_labels(labels, name="result")
    widget = _open_dock(viewer)
    newest = viewer.add_labels(np.zeros_like(labels), name="empty result")
    assert widget.result_to_correct == newest  # a new result becomes the one to correct
    widget.new_annotations()
    assert widget.result_to_correct == newest  # our annotations are not offered

    widget.set_options(result="result", result_planes="all", boundary_band=0)
    corrections = widget.correct_result()

    assert (corrections.data > 0).all()
    assert corrections.data.max() == 1 + len(np.unique(labels)) - 1
    assert widget.status.startswith("corrections for all 3 planes")
    empty = widget.correct_result(newest)
    assert (empty.data == 1).all()  # a result without objects: all background


def test_a_2d_result_is_corrected_whole_and_a_mismatch_is_noted(make_napari_viewer, blobs):
    viewer = make_napari_viewer()
    viewer.add_image(blobs[:50], name="crop")
    result = viewer.add_labels(connected_components(blobs > 100), name="cells labels")
    widget = _open_dock(viewer)
    widget.set_options(image="crop", boundary_band=0)

    corrections = widget.correct_result("cells labels")

    np.testing.assert_array_equal(corrections.data == 1, result.data == 0)
    status = widget.status
    assert status.startswith("corrections for the image: 5 cells")
    assert "note: image 'crop' has shape (50, 128)" in status


def test_nothing_to_correct_or_negative_labels_are_refused(make_napari_viewer, notifications):
    viewer = make_napari_viewer()
    widget = _open_dock(viewer)
    assert widget.correct_result() is None
    assert "no result to correct" in notifications["error"][0]
    assert widget.correct_result("no such layer") is None

    viewer.add_labels(np.full((8, 8), -3, np.int32), name="odd")
    assert widget.correct_result() is None
    assert "found -3" in notifications["error"][2]
    assert [layer.name for layer in viewer.layers] == ["odd"]


def test_the_result_s_boundaries_are_left_unannotated_by_default(make_napari_viewer, blobs):
    """By default RESULT_BOUNDARY_BAND px around the result's objects stay 0, so training
    does not learn the result's boundary placement; the rest is converted as before."""
    viewer = make_napari_viewer()
    stack, labels = _stack_and_result(blobs)
    viewer.add_image(stack, name="stack")
    viewer.add_labels(labels.copy(), name="result")
    widget = _open_dock(viewer)
    viewer.dims.set_current_step(0, 1)
    data = widget.correct_result().data
    band = boundary_pixels(labels[1], RESULT_BOUNDARY_BAND)
    assert band.any() and (data[1][band] == 0).all()
    whole = annotations_from_labels(labels, [(1,)])
    np.testing.assert_array_equal(data[1][~band], whole[1][~band])
    np.testing.assert_array_equal(
        data, annotations_from_labels(labels, [(1,)], boundary_band=RESULT_BOUNDARY_BAND)
    )

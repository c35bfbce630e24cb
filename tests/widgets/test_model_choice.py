"""The model the Segment dock offers, with the docks opened as a user opens them.

Each dock comes from the plugin's menu entry (``add_plugin_dock_widget``), so each is
handed its own proxy of the viewer, as in napari: the docks must still share the
session's models, and the Segment dock must select a model Fine-tune just trained.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._sample_data import dic_image
from napari_unet._widgets._model_choice import read_settings, settings_path

TIMEOUT_MS = 90_000


def _open(viewer, name: str):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return dock, widget


@pytest.fixture
def em_like() -> np.ndarray:
    """(96, 128) uint8: mid-grey cells parted by dark membranes, with grain (an EM section)."""
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[:96, :128]
    image = rng.normal(150, 20, (96, 128))
    membranes = (np.abs(np.sin(rows / 7.0 + np.sin(cols / 11.0))) < 0.15) | (
        np.abs(np.sin(cols / 9.0)) < 0.12
    )
    image[membranes] -= 100
    return np.clip(image, 0, 255).astype(np.uint8)


def _paint(annotations: np.ndarray) -> None:
    """Background (1) in a dark corner of ``blobs``, two of its discs (2, 3)."""
    annotations[2:10, 40:60] = 1
    annotations[85:92, 50:90] = 1
    annotations[15:25, 20:30] = 2
    annotations[45:55, 65:75] = 3


def test_a_model_finetuned_in_its_dock_is_selected_in_the_segment_dock(
    make_napari_viewer, qtbot, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs")
    _segment_dock, segment = _open(viewer, "Segment")
    finetune_dock, finetune = _open(viewer, "Fine-tune")
    other_viewer = make_napari_viewer()
    other_viewer.add_image(blobs, name="blobs elsewhere")
    _, other_segment = _open(other_viewer, "Segment")
    assert segment.model_label == "nuclei" == other_segment.model_label

    _paint(finetune.new_annotations().data)
    finetune.add_model_file(tiny_base_file)
    finetune.set_options(
        steps=2, batch_size=1, patch_size=60, augment=False, preview_every=0, device="cpu",
        name="blobs-tuned",
    )  # fmt: skip
    assert finetune.start() is not None
    qtbot.waitUntil(lambda: not finetune.is_training, timeout=TIMEOUT_MS)
    assert finetune.trained_bundle is not None

    assert "blobs-tuned (this session)" in segment.model_labels
    assert segment.model_label == "blobs-tuned (this session)"
    # Another viewer's Segment dock lists it, but keeps its own choice.
    assert "blobs-tuned (this session)" in other_segment.model_labels
    assert other_segment.model_label == "nuclei"

    # Fine-tune closed, Segment closed and opened again: the model is still the image's.
    viewer.window.remove_dock_widget(finetune_dock)
    viewer.window.remove_dock_widget(_segment_dock)
    _, reopened = _open(viewer, "Segment")
    assert reopened is not segment
    reopened.set_options(image=image)
    assert reopened.model_label == "blobs-tuned (this session)"


def test_each_image_is_offered_the_model_of_its_kind(make_napari_viewer, blobs, em_like):
    viewer = make_napari_viewer()
    viewer.add_image(em_like, name="section")
    viewer.add_image(blobs, name="nuclei")
    viewer.add_image(blobs, name="tiny pixels", scale=(5, 5), units="nm")
    viewer.add_image(blobs, name="light microscope", scale=(0.3, 0.3), units="µm")
    viewer.add_image(dic_image(), name="DIC")
    _, segment = _open(viewer, "Segment")

    offered = {}
    for name in ("section", "nuclei", "tiny pixels", "light microscope", "DIC"):
        segment.set_options(image=name)
        offered[name] = segment.model_label
    assert offered == {
        "section": "em-membranes",  # mid-grey texture
        "nuclei": "nuclei",  # dark background
        "tiny pixels": "em-membranes",  # 5 nm: the scale em-membranes records (4 nm)
        "light microscope": "nuclei",  # 300 nm: no model records it; dark background
        "DIC": "dic-cells",  # the DIC sample: relief on an even background
    }
    # The model's recommended post-processing comes with it.
    segment.set_options(image="section")
    assert segment.options().merge_boundaries > 0


def test_the_users_choice_is_kept_per_image(make_napari_viewer, blobs, em_like):
    viewer = make_napari_viewer()
    first = viewer.add_image(blobs, name="first")
    section = viewer.add_image(em_like, name="section")
    _, segment = _open(viewer, "Segment")
    assert segment.model_label == "em-membranes"  # follows the active layer: the last added

    viewer.layers.selection.active = first  # the user clicks a layer
    assert segment.model_label == "nuclei"
    segment.set_options(model="em-membranes")
    viewer.layers.selection.active = section
    segment.set_options(model="nuclei")
    viewer.layers.selection.active = first
    assert segment.model_label == "em-membranes"
    viewer.layers.selection.active = section
    assert segment.model_label == "nuclei"

    # A new image gets the model last chosen for an image like it; each keeps its own.
    second = viewer.add_image(blobs[::-1].copy(), name="second")
    assert segment.model_label == "em-membranes"  # like "first"
    segment.set_options(model="nuclei")
    viewer.layers.selection.active = first
    assert segment.model_label == "em-membranes"
    viewer.layers.selection.active = second
    assert segment.model_label == "nuclei"


def test_the_last_choice_for_a_kind_of_image_is_kept_across_sessions(
    make_napari_viewer, blobs, em_like, monkeypatch
):
    from napari_unet._widgets import _sessions

    viewer = make_napari_viewer()
    viewer.add_image(em_like, name="section")
    viewer.add_image(blobs, name="nuclei")
    _, segment = _open(viewer, "Segment")
    segment.set_options(image="section", model="nuclei")  # against the guess, both times
    segment.set_options(image="nuclei", model="em-membranes")
    assert read_settings()["last_model"] == {
        "em": {"name": "nuclei"},
        "fluorescence": {"name": "em-membranes"},
    }

    monkeypatch.setattr(_sessions, "_SESSION", _sessions.SessionModels())  # a new session
    viewer = make_napari_viewer()
    viewer.add_image(em_like[::-1].copy(), name="another section")
    viewer.add_image(blobs[:, ::-1].copy(), name="more nuclei")
    _, segment = _open(viewer, "Segment")
    segment.set_options(image="another section")
    assert segment.model_label == "nuclei"
    segment.set_options(image="more nuclei")
    assert segment.model_label == "em-membranes"


@pytest.mark.parametrize("content", [b"\xff\xfe not json", b"[1, 2]", b'{"last_model": 3}'])
def test_an_unreadable_settings_file_is_ignored(make_napari_viewer, em_like, content):
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_bytes(content)
    viewer = make_napari_viewer()
    viewer.add_image(em_like, name="section")
    _, segment = _open(viewer, "Segment")
    assert segment.model_label == "em-membranes"

    segment.set_options(model="nuclei")  # written anew
    assert read_settings()["last_model"] == {"em": {"name": "nuclei"}}


def test_a_choice_made_before_any_image_goes_to_the_images(
    make_napari_viewer, em_like, tiny_model_file
):
    viewer = make_napari_viewer()
    _, segment = _open(viewer, "Segment")
    segment.add_model_file(tiny_model_file)
    viewer.add_image(em_like, name="section")
    assert segment.model_label == "tiny.safetensors"

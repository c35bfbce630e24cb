"""The main bad inputs of the command-line corpus, through the dock widgets a user opens.

Each hostile model file or image gives one error notification line (never a traceback),
no output layer, and leaves every file byte-identical.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import hostile

TIMEOUT_MS = 60_000


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _open(viewer, name: str):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget


def _panel_with_model(make_napari_viewer, panel: str, tmp_path: Path, image, make):
    """A viewer showing ``image`` with the ``panel`` dock offering the model ``make`` writes.

    Returns the viewer, the widget, the models folder and its snapshot before the run.
    """
    folder = tmp_path / "models"
    folder.mkdir()
    path = make(folder)
    before = _snapshot(folder)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="blobs")
    widget = _open(viewer, panel)
    widget.add_model_file(path)
    return viewer, widget, folder, before


MODEL_FILES: list[tuple[str, Callable[[Path], str], str]] = [
    ("text file", lambda f: _write(f / "t.safetensors", b"weights: many\n" * 10), "not a safe"),
    (
        "pickled checkpoint",
        lambda f: _write(f / "p.safetensors", b"\x80\x04\x95" + b"\x00" * 40),
        "never loads pickles",
    ),
    ("NaN weights", hostile.nan_weights_model, r"nan\.safetensors.*NaN or infinite"),
    (
        "bad recommended threshold",
        lambda f: hostile.recommending(f, threshold="abc"),
        r'rec\.safetensors: field "provenance\.postprocess\.threshold"',
    ),
    (
        "depth 10**6",
        lambda f: hostile.raw_model(f, "deep.safetensors", hostile.description(depth=10**6)),
        r'deep\.safetensors: field "config\.depth"',
    ),
    (
        "50000 classes",
        lambda f: hostile.raw_model(f, "wide.safetensors", hostile.description(num_classes=50_000)),
        r'wide\.safetensors: field "config\.num_classes"',
    ),
]


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [(make, message) for _name, make, message in MODEL_FILES],
    ids=[name for name, _make, _message in MODEL_FILES],
)
def test_a_hostile_model_file_in_segment_is_one_line(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, make, message
):
    viewer, widget, folder, before = _panel_with_model(
        make_napari_viewer, "Segment", tmp_path, blobs, make
    )

    widget.segment_current_slice()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert len(notifications["error"]) == 1, notifications
    line = notifications["error"][0]
    assert re.search(message, line) and "\n" not in line and "Traceback" not in line, line
    # The output layer (added before the worker starts, for responsiveness) stays empty.
    assert not any(np.any(layer.data) for layer in viewer.layers if layer.name != "blobs")
    assert _snapshot(folder) == before


@pytest.mark.parametrize(
    ("make", "message"),
    [(make, message) for _name, make, message in MODEL_FILES[2:]],
    ids=[name for name, _make, _message in MODEL_FILES[2:]],
)
def test_a_hostile_base_model_in_fine_tune_is_one_line(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, make, message
):
    _viewer, widget, folder, before = _panel_with_model(
        make_napari_viewer, "Fine-tune", tmp_path, blobs, make
    )
    annotations = widget.new_annotations()
    annotations.data[2:10, 40:60] = 1
    annotations.data[15:25, 20:30] = 2
    painted = annotations.data.copy()

    widget.start()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)

    assert len(notifications["error"]) == 1, notifications
    line = notifications["error"][0]
    assert re.search(message, line) and "\n" not in line, line
    np.testing.assert_array_equal(annotations.data, painted)  # the painting is untouched
    assert _snapshot(folder) == before


def test_an_image_without_a_finite_pixel_is_one_line(
    make_napari_viewer, qtbot, notifications, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(np.full((64, 64), np.nan, np.float32), name="empty acquisition")
    widget = _open(viewer, "Segment")
    widget.add_model_file(tiny_model_file)

    widget.segment_current_slice()
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)

    assert len(notifications["error"]) == 1, notifications
    assert "no finite pixel values" in notifications["error"][0]

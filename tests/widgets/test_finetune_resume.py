"""Stop, change settings, Start: the resumed run takes them, or the dock says why not.

The dock is opened from the plugin's menu entry, as a user does; runs are awaited on the
workers' real signals.
"""

from __future__ import annotations

import numpy as np
from painted_docks import painted_finetune_dock

from napari_unet._widgets.finetune import FinetuneWidget

TIMEOUT_MS = 90_000


def _panel(viewer, blobs: np.ndarray, base) -> FinetuneWidget:
    """The Fine-tune dock with painted annotations and tiny settings (2 steps, batch 1)."""
    return painted_finetune_dock(viewer, blobs, base)[1]


def _train(qtbot, widget: FinetuneWidget) -> None:
    assert widget.start() is not None
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)


def test_a_resumed_run_takes_the_changed_settings_and_says_so(
    make_napari_viewer, qtbot, notifications, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    widget = _panel(viewer, blobs, tiny_base_file)
    _train(qtbot, widget)
    first = widget.trained_bundle.provenance["training_config"]
    assert (first["learning_rate"], first["batch_size"], first["w0"]) == (1e-3, 1, 10.0)
    assert "resumed" not in widget.status

    # The user stops, changes the settings, and starts again.
    widget.set_options(
        steps=3, learning_rate=1e-4, batch_size=2, w0=3.0, sigma=2.0, augment=True, device="auto"
    )
    _train(qtbot, widget)

    assert notifications["error"] == []
    status = widget.status
    assert "finished at step 5" in status  # the same run, continued
    used = widget.trained_bundle.provenance["training_config"]
    assert used["learning_rate"] == 1e-4 and used["batch_size"] == 2
    assert (used["w0"], used["sigma"], used["augment"]["enabled"]) == (3.0, 2.0, True)
    assert used["device"] == "auto"
    note = status.split("\n")[-1]
    assert note.startswith("resumed at step 2 with ")
    for change in (
        "learning rate 0.001 -> 0.0001",
        "batch size 1 -> 2",
        "border weight w0 10 -> 3",
        "border sigma 5 -> 2",
        "augmentation off -> on",
        "device cpu -> auto",
    ):
        assert change in note
    assert "steps" not in note  # the steps are per Start, not a change of the run

    _train(qtbot, widget)  # nothing changed: the note says only that it resumed
    assert widget.status.split("\n")[-1] == "resumed at step 5"


def test_another_base_model_starts_a_new_run_and_says_why(
    make_napari_viewer, qtbot, notifications, blobs, tiny_base_file, tiny_model_file
):
    viewer = make_napari_viewer()
    widget = _panel(viewer, blobs, tiny_base_file)
    _train(qtbot, widget)
    assert "finished at step 2" in widget.status

    widget.add_model_file(tiny_model_file)  # another base: its network, not the run's
    _train(qtbot, widget)

    assert notifications["error"] == []
    status = widget.status
    assert "finished at step 2" in status  # a new run, counted from 0
    assert status.split("\n")[-1] == (
        "new run: the base model changed, and a run keeps its network (the last run's "
        "model stays in the Segment widget)"
    )
    assert widget.trained_bundle.provenance["base"] == "tiny"

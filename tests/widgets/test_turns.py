"""Heavy GUI steps run one per event-loop turn, so the viewer stays responsive between;
our layers are added without taking the user's selection."""

from __future__ import annotations

import itertools
import logging

import numpy as np
from dock_fields import open_dock
from napari.layers import Labels
from qtpy.QtCore import QTimer

from napari_unet._widgets._layers import add_unselected, insert_unselected, show_layer
from napari_unet._widgets._lifetime import in_separate_turns


def test_steps_run_in_order_each_in_a_turn_of_its_own(qtbot):
    ticks = 0

    def tick() -> None:
        nonlocal ticks
        ticks += 1

    # A 1 ms timer stands for everything else the event loop serves (input, redraws):
    # it must get at least one turn between two steps.
    ticker = QTimer()
    ticker.setInterval(1)
    ticker.timeout.connect(tick)
    ticker.start()
    ran: list[tuple[str, int]] = []
    in_separate_turns(*(lambda name=name: ran.append((name, ticks)) for name in "abc"))
    assert ran == []  # nothing runs inside the caller's turn
    qtbot.waitUntil(lambda: len(ran) == 3, timeout=5_000)
    ticker.stop()

    assert [name for name, _ in ran] == ["a", "b", "c"]
    ticks_seen = [count for _, count in ran]
    assert all(later > earlier for earlier, later in itertools.pairwise(ticks_seen))


def test_a_failing_step_is_logged_and_the_next_still_runs(qtbot, caplog):
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("layer vanished")

    with caplog.at_level(logging.ERROR, logger="napari_unet._widgets._lifetime"):
        in_separate_turns(broken, lambda: ran.append("start the worker"))
        qtbot.waitUntil(lambda: ran == ["start the worker"], timeout=5_000)
    assert "layer vanished" in caplog.text


def test_show_layer_makes_a_hidden_layer_visible(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((8, 8), np.uint8), name="out", visible=False)
    in_separate_turns(show_layer(layer))
    assert not layer.visible
    qtbot.waitUntil(lambda: layer.visible, timeout=5_000)


def test_add_unselected_keeps_the_active_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((8, 8), np.uint8), name="image")
    output = add_unselected(viewer.add_labels, viewer, np.zeros((8, 8), np.uint8), name="out")
    assert output in viewer.layers and viewer.layers.selection.active is image
    # napari's own behaviour is back afterwards: the user's next layer is selected as usual
    user_layer = viewer.add_image(np.zeros((8, 8)), name="next")
    assert viewer.layers.selection.active is user_layer


def test_add_unselected_keeps_the_selection_and_tells_no_listener(make_napari_viewer):
    """A real viewer: the new layer is inserted, the user's selection never changes, and
    nothing listening to the selection (layer controls, layer list) is told otherwise."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((8, 8)), name="image")
    viewer.add_labels(np.zeros((8, 8), np.int32), name="annotations")
    viewer.layers.selection.active = image
    told = []
    viewer.layers.selection.events.active.connect(told.append)
    viewer.layers.selection.events.changed.connect(told.append)

    added = add_unselected(viewer.add_labels, viewer, np.zeros((8, 8), np.int32), name="out")

    assert [layer.name for layer in viewer.layers] == ["image", "annotations", "out"]
    assert added is viewer.layers["out"]
    assert viewer.layers.selection.active is image and set(viewer.layers.selection) == {image}
    assert told == []


def test_a_layer_built_earlier_is_named_when_inserted_and_left_unselected(make_napari_viewer):
    """The output layer is built a turn before it is added: a layer the user added in
    between keeps its name, ours takes the next free one, and the selection stays."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((8, 8)), name="image")
    built = Labels(np.zeros((8, 8), np.int32), visible=False)
    users = viewer.add_labels(np.zeros((8, 8), np.int32), name="image labels")  # meanwhile
    viewer.layers.selection.active = image

    added = insert_unselected(viewer, built, "image labels")

    assert added is built and added.name == "image labels [2]"
    assert users.name == "image labels"
    assert viewer.layers.selection.active is image and set(viewer.layers.selection) == {image}


def test_segment_click_adds_its_layer_in_a_later_turn_hidden_then_shown(
    make_napari_viewer, qtbot, blobs, tiny_model_file
):

    viewer = make_napari_viewer()
    image = viewer.add_image(blobs, name="blobs")
    widget = open_dock(viewer, "Segment")
    widget.add_model_file(tiny_model_file)
    widget.set_options(device="cpu")
    seen: list[tuple[bool, bool]] = []  # (layer visible, worker started) when the layer came

    def on_inserted(event) -> None:
        seen.append((event.value.visible, widget.progress_bar is not None))

    viewer.layers.events.inserted.connect(on_inserted)
    widget.segment_current_slice()
    # The click only checks the input and makes the worker: napari's costly layer
    # creation gets a turn of its own.
    assert "blobs labels" not in viewer.layers and widget.is_running
    qtbot.waitUntil(lambda: not widget.is_running, timeout=60_000)
    assert seen == [(False, False)]  # added hidden, before the worker started
    layer = viewer.layers["blobs labels"]
    assert layer.visible and layer.data.any()
    assert viewer.layers.selection.active is image

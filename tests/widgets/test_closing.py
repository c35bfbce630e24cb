"""Closing a panel or the viewer during a run, as a user does: the run stops, no exception.

The widgets are opened from the plugin menu entry (``add_plugin_dock_widget``) so they
sit in a real dock; closing the viewer deletes them with the window, and the panel's
close button unparents them (napari's ``remove_dock_widget``).
"""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core.events import Progress, TileDone, TrainStep
from napari_unet.core.largeimage import BlockStore

TIMEOUT_MS = 90_000


def _open(viewer, name: str):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    assert dock.widget() is widget.native or widget.native.parent() is not None
    return dock, widget


def _segment_panel(viewer, model: Path) -> tuple[object, SegmentWidget]:
    dock, widget = _open(viewer, "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.add_model_file(model)
    widget.set_options(device="cpu")
    widget.set_options(tile_size=60)  # many tiles: the run is surely in progress when closed
    return dock, widget


def _finetune_panel(viewer, base: Path) -> tuple[object, FinetuneWidget]:
    dock, widget = _open(viewer, "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    annotations = widget.new_annotations()
    annotations.data[2:10, 40:60] = 1
    annotations.data[15:25, 20:30] = 2
    annotations.data[45:55, 65:75] = 3
    widget.add_model_file(base)
    widget.set_options(steps=1000)
    widget.set_options(batch_size=1)
    widget.set_options(patch_size=60)
    widget.set_options(augment=False)
    widget.set_options(preview_every=2)
    widget.set_options(device="cpu")
    return dock, widget


def _track(worker) -> tuple[list, list]:
    """The worker's events and its `finished` signals, collected as they arrive."""
    events: list = []
    finished: list = []
    worker.yielded.connect(events.append)
    worker.finished.connect(lambda: finished.append(True))
    return events, finished


def _close_panel(dock) -> None:
    """What the panel's close button does."""
    dock.title.close_button.click()


def _big_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (1024, 1024), dtype=np.uint8)


@pytest.mark.parametrize("close", ["viewer", "panel"])
def test_closing_during_an_in_memory_segmentation_stops_it(
    make_napari_viewer, qtbot, notifications, tiny_model_file, close
):
    viewer = make_napari_viewer()
    viewer.add_image(_big_image(), name="big")
    dock, widget = _segment_panel(viewer, tiny_model_file)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.segment_current_slice()
        events, finished = _track(worker)
        qtbot.waitUntil(lambda: len(events) >= 3, timeout=TIMEOUT_MS)
        viewer.close() if close == "viewer" else _close_panel(dock)
        assert widget.is_closed and worker.abort_requested
        qtbot.waitUntil(lambda: bool(finished), timeout=TIMEOUT_MS)  # the worker ends...
        qtbot.wait(200)  # ...and its last queued signals are handled
    assert exceptions == []
    assert notifications["error"] == []
    assert not widget.is_running
    tiles = [e for e in events if isinstance(e, TileDone)]
    assert len(tiles) < tiles[0].total  # stopped early, not run to the end
    if close == "panel":
        # The viewer lives on and the closed widget no longer follows it.
        viewer.add_image(np.zeros((8, 8), np.uint8), name="after")
        viewer.layers.remove("big")
        assert widget.segment_current_slice() is None  # a closed widget starts nothing


def test_closing_the_viewer_right_after_the_click_never_starts_the_worker(
    make_napari_viewer, qtbot, notifications, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(_big_image(), name="big")
    _dock, widget = _segment_panel(viewer, tiny_model_file)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.segment_current_slice()
        events, _finished = _track(worker)
        viewer.close()  # in the click's turn: the worker starts two turns later
        qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)
        qtbot.wait(200)
    assert exceptions == [] and notifications["error"] == []
    assert events == [] and not worker.is_running


def test_closing_the_viewer_during_a_block_wise_segmentation_keeps_finished_blocks(
    make_napari_viewer, qtbot, notifications, tmp_path, tiny_model_file
):
    viewer = make_napari_viewer()
    image = np.random.default_rng(1).integers(0, 255, (600, 700), dtype=np.uint8)
    viewer.add_image(da.from_array(image, chunks=100), name="lazy", contrast_limits=(0, 255))
    _dock, widget = _segment_panel(viewer, tiny_model_file)
    widget.set_options(tile_size=92)
    widget.set_options(block_size=200)  # 3 x 4 blocks
    store = tmp_path / "closed.zarr"
    widget.set_options(output_store=store)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.segment_stack()
        events, finished = _track(worker)
        blocks = lambda: [e for e in events if isinstance(e, Progress) and e.message == "blocks"]  # noqa: E731
        qtbot.waitUntil(lambda: len(blocks()) >= 1, timeout=TIMEOUT_MS)
        viewer.close()
        qtbot.waitUntil(lambda: bool(finished), timeout=TIMEOUT_MS)
        qtbot.wait(200)
    assert exceptions == [] and notifications["error"] == []
    assert not widget.is_running
    kept = BlockStore(store).done()
    assert 1 <= len(kept) < 12  # finished blocks are kept for a resume; stopped early


@pytest.mark.slow  # trains a few steps
@pytest.mark.parametrize("close", ["viewer", "panel"])
def test_closing_during_fine_tuning_stops_it_and_saves_nothing(
    make_napari_viewer, qtbot, notifications, blobs, tiny_base_file, _user_models_dir, close
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    dock, widget = _finetune_panel(viewer, tiny_base_file)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.start()
        events, finished = _track(worker)
        qtbot.waitUntil(
            lambda: sum(isinstance(e, TrainStep) for e in events) >= 3, timeout=TIMEOUT_MS
        )
        viewer.close() if close == "viewer" else _close_panel(dock)
        assert widget.is_closed and worker.abort_requested
        qtbot.waitUntil(lambda: bool(finished), timeout=TIMEOUT_MS)
        qtbot.wait(200)
    assert exceptions == [] and notifications["error"] == []
    assert not widget.is_training
    assert sum(isinstance(e, TrainStep) for e in events) < 1000  # stopped early
    assert widget.trained_bundle is None  # nothing kept from a closed panel
    assert not _user_models_dir.exists() or not any(_user_models_dir.iterdir())
    if close == "panel":
        viewer.add_image(np.zeros((8, 8), np.uint8), name="after")  # no longer followed
        assert widget.start() is None

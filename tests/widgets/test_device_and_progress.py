"""Each job names its device and why; Fine-tune counts its steps in a napari progress bar.

The widgets are opened from the plugin's menu entries, as a user does. Runs are awaited
on the workers' real signals (``qtbot.waitUntil``), never with sleeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from dock_fields import field
from napari.utils import progress

from napari_unet._widgets import _common, _devices
from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core.device import describe_device
from napari_unet.core.events import TrainStep
from napari_unet.core.model import pick_device

TIMEOUT_MS = 90_000
#: What the dock must say on this machine, resolved as the core does.
EXPECTED = describe_device(pick_device("auto"), "auto")

needs_no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without a CUDA GPU"
)


def _offer_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The docks offer CUDA, as if a GPU had been there (e.g. one that is gone since)."""
    offer = lambda: ["auto", "cpu", "cuda"]  # noqa: E731
    monkeypatch.setattr(_devices, "device_choices", offer)
    monkeypatch.setattr(_common, "device_choices", offer)  # Fine-tune reads it here


def _open(viewer, name: str):
    """The dock widget ``name`` (its display name in napari.yaml), opened from the menu."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return dock, widget


def _wait(qtbot, predicate) -> None:
    qtbot.waitUntil(lambda: bool(predicate()), timeout=TIMEOUT_MS)


def _device_line(widget) -> str:
    """The line under a dock's buttons naming its device."""
    return widget.device_line


def _device_lines_seen(worker, widget) -> list[str]:
    """The dock's device line each time the worker named its device (connected after the
    widget's own handler, so it reads what the widget has just shown)."""
    seen: list[str] = []

    def on_event(event) -> None:
        if isinstance(event, _common.JobDevice):
            seen.append(_device_line(widget))

    worker.yielded.connect(on_event)
    return seen


# ------------------------------------------------------------------------------ Segment
def _segment_panel(viewer, model: Path) -> SegmentWidget:
    _dock, widget = _open(viewer, "Segment")
    assert isinstance(widget, SegmentWidget)
    widget.add_model_file(model)
    assert widget.options().device == "auto"  # the default the user gets
    return widget


@pytest.mark.parametrize("path", ["in memory", "block-wise"])
def test_a_segmentation_names_its_device_and_why(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file, path
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _segment_panel(viewer, tiny_model_file)
    if path == "block-wise":
        widget.set_options(to_zarr=True)
        widget.set_options(output_store=tmp_path / "out.zarr")
    assert widget.device_description == "" and widget.device_line == ""

    worker = widget.segment_current_slice()
    seen = _device_lines_seen(worker, widget)
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    assert seen == [f"running on {EXPECTED}"]  # shown while it ran, once
    assert widget.device_description == EXPECTED
    assert widget.device_line == f"ran on {EXPECTED}"
    assert widget.status.startswith("done")
    if path == "block-wise":
        assert (tmp_path / "out.zarr").is_dir()


@needs_no_cuda
def test_an_unavailable_device_for_segmenting_is_one_line_and_no_run(
    make_napari_viewer, qtbot, notifications, monkeypatch, blobs, tiny_model_file
):
    # As if the device list offered CUDA (e.g. a GPU that is gone since): the core's check.
    _offer_cuda(monkeypatch)
    with pytest.raises(ValueError) as refused:  # the core's error (an InputError)
        pick_device("cuda")
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _segment_panel(viewer, tiny_model_file)
    widget.set_options(device="cuda")
    layers = [layer.name for layer in viewer.layers]

    assert widget.segment_current_slice() is None
    assert widget.segment_stack() is None

    assert notifications["error"] == [str(refused.value)] * 2
    assert "cuda" in notifications["error"][0] and "\n" not in notifications["error"][0]
    assert not widget.is_running and field(widget, "Segment current slice").enabled
    assert [layer.name for layer in viewer.layers] == layers
    assert widget.device_description == ""


# ---------------------------------------------------------------------------- Fine-tune
def _paint(annotations) -> None:
    annotations.data[2:10, 40:60] = 1
    annotations.data[85:92, 50:90] = 1
    annotations.data[15:25, 20:30] = 2
    annotations.data[45:55, 65:75] = 3


def _finetune_panel(viewer, base: Path, steps: int):
    dock, widget = _open(viewer, "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    _paint(widget.new_annotations())
    widget.add_model_file(base)
    widget.set_options(steps=steps)
    widget.set_options(batch_size=1)
    widget.set_options(patch_size=60)
    widget.set_options(augment=False)
    widget.set_options(preview_every=0)
    assert widget.options().device == "auto"
    return dock, widget


def _steps_seen(worker, widget) -> list[tuple[int, object]]:
    """Per TrainStep: its step and the widget's progress bar once the widget handled it
    (``None`` when the run's end was handled first: napari's bar processes Qt events)."""
    seen: list[tuple[int, object]] = []

    def on_event(event) -> None:
        if isinstance(event, TrainStep):
            seen.append((event.step, widget.progress_bar))

    worker.yielded.connect(on_event)
    return seen


def _is_closed(bar: progress) -> bool:
    return bar.disable and bar not in progress._all_instances


@pytest.mark.slow  # trains 6 + 4 steps of a tiny network
def test_fine_tuning_names_its_device_and_counts_its_steps_resumed_too(
    make_napari_viewer, qtbot, notifications, bars, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _dock, widget = _finetune_panel(viewer, tiny_base_file, steps=6)
    assert widget.progress_bar is None

    worker = widget.start()
    assert widget.progress_bar is None  # built with the worker's start, a turn later
    devices = _device_lines_seen(worker, widget)
    steps = _steps_seen(worker, widget)
    _wait(qtbot, lambda: not widget.is_training)

    assert notifications["error"] == []
    assert devices == [f"running on {EXPECTED}"]
    assert widget.device_description == EXPECTED
    assert widget.device_line == f"ran on {EXPECTED}"
    assert len(bars) == 1
    bar = bars[0]
    assert [step for step, _bar in steps] == [1, 2, 3, 4, 5, 6]
    # The widget's bar during the run: this one (None only once the end was handled).
    assert steps[0][1] is bar and {id(b) for _s, b in steps} <= {id(bar), id(None)}
    assert bar.counts == [(s, 6) for s in range(1, 7)]  # one count per step, to the total
    assert bar.n == bar.total == 6
    assert _is_closed(bar) and widget.progress_bar is None
    assert "finished at step 6" in widget.status

    # Start again with the same layers and base: the run resumes and counts its own steps.
    widget.set_options(steps=4)
    worker = widget.start()
    steps = _steps_seen(worker, widget)
    _wait(qtbot, lambda: not widget.is_training)

    assert notifications["error"] == []
    assert len(bars) == 2
    resumed = bars[1]
    assert "resumed at step 6" in resumed.desc
    assert [step for step, _bar in steps] == [1, 2, 3, 4]
    assert resumed.counts == [(s, 4) for s in range(1, 5)]
    assert resumed.n == resumed.total == 4 and _is_closed(resumed)
    assert "finished at step 10" in widget.status
    assert widget.device_description == EXPECTED


@pytest.mark.slow  # trains a few steps
@pytest.mark.parametrize("end", ["stop", "close the panel", "close the viewer"])
def test_the_fine_tuning_bar_closes_when_the_run_is_ended_early(
    make_napari_viewer, qtbot, notifications, bars, blobs, tiny_base_file, end
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    dock, widget = _finetune_panel(viewer, tiny_base_file, steps=1000)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.start()
        steps = _steps_seen(worker, widget)
        finished: list[bool] = []
        worker.finished.connect(lambda: finished.append(True))
        _wait(qtbot, lambda: len(steps) >= 2)
        bar = widget.progress_bar
        assert bar is bars[0] and bar.total == 1000 and not _is_closed(bar)
        if end == "stop":
            widget.stop()
        elif end == "close the panel":
            dock.title.close_button.click()
        else:
            viewer.close()
        _wait(qtbot, lambda: finished)  # connected last: the widget has handled it
    assert exceptions == [] and notifications["error"] == []
    assert len(bars) == 1 and _is_closed(bar)
    assert 2 <= bar.n < 1000
    assert not widget.is_training


def test_the_fine_tuning_bar_closes_when_the_run_fails(
    make_napari_viewer, qtbot, notifications, bars, tmp_path, blobs
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    _dock, widget = _finetune_panel(viewer, bad, steps=5)

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert len(notifications["error"]) == 1 and "bad.safetensors" in notifications["error"][0]
    assert len(bars) == 1 and _is_closed(bars[0]) and bars[0].n == 0
    # The device was named before the model file failed to load.
    assert widget.device_line == f"ran on {EXPECTED}"
    assert widget.status == "failed (see the notification)"


@needs_no_cuda
def test_an_unavailable_device_for_fine_tuning_is_one_line_and_no_run(
    make_napari_viewer, qtbot, notifications, monkeypatch, bars, blobs, tiny_base_file
):
    _offer_cuda(monkeypatch)
    with pytest.raises(ValueError) as refused:
        pick_device("cuda")
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _dock, widget = _finetune_panel(viewer, tiny_base_file, steps=5)
    widget.set_options(device="cuda")
    widget.set_options(preview_every=2)  # a started run would add a preview layer
    layers = [layer.name for layer in viewer.layers]

    assert widget.start() is None

    assert notifications["error"] == [str(refused.value)]
    assert not widget.is_training and widget.can_start
    assert bars == [] and widget.progress_bar is None
    assert [layer.name for layer in viewer.layers] == layers
    assert widget.device_description == ""

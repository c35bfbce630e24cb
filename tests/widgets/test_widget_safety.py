"""The widgets never lose the user's data and say what went wrong in one line.

Replaced NaN pixels arrive as a warning, errors (out of memory included) as one-line
notifications; a diverging training run says so in the dock; Save model... never
replaces a file unasked; block-wise results never replace a store or folder the user owns.
"""

from __future__ import annotations

import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from dock_fields import open_dock

from napari_unet._widgets import _common, _dialogs, _notify, _segment_run
from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core.errors import InputError, NonFiniteWarning
from napari_unet.core.largeimage import BlockStore
from napari_unet.core.modelfile import load_model
from napari_unet.core.safety import TEMP_PREFIX
from napari_unet.core.train import TrainConfig

TIMEOUT_MS = 90_000


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _segment_widget(viewer, model: Path) -> SegmentWidget:
    widget = open_dock(viewer, "Segment")
    widget.add_model_file(model)
    widget.set_options(device="cpu")
    return widget


def _wait(qtbot, predicate) -> None:
    qtbot.waitUntil(lambda: bool(predicate()), timeout=TIMEOUT_MS)


# ----------------------------------------------------------------- warnings and errors
def test_nan_pixels_are_shown_as_one_warning(
    make_napari_viewer, qtbot, notifications, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    image = blobs.astype(np.float32)
    image[10, 10:13] = np.nan
    viewer.add_image(image, name="holes")
    widget = _segment_widget(viewer, tiny_model_file)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    assert len(notifications["warning"]) == 1
    assert "3 NaN/infinite pixels replaced" in notifications["warning"][0]
    assert "\n" not in notifications["warning"][0]
    assert "done" in widget.status


def test_out_of_memory_in_the_worker_is_one_line(
    make_napari_viewer, qtbot, notifications, monkeypatch, blobs, tiny_model_file
):
    def exhausted(*_args, **_kwargs):
        raise MemoryError
        yield  # a generator, as the pipeline's run is

    monkeypatch.setattr(_segment_run, "run", exhausted)
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _segment_widget(viewer, tiny_model_file)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == [_common.OUT_OF_MEMORY]
    assert widget.status.splitlines()[0] == "failed (see the notification)"


def test_a_bad_base_model_for_fine_tuning_is_one_line(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = open_dock(viewer, "Fine-tune")
    _paint(widget.new_annotations())
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    widget.add_model_file(bad)

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert len(notifications["error"]) == 1
    assert "bad.safetensors" in notifications["error"][0]
    assert "\n" not in notifications["error"][0]
    assert "Traceback" not in notifications["error"][0]


# ------------------------------------------------------------------------- fine-tuning
def _paint(annotations) -> None:
    annotations.data[2:10, 40:60] = 1
    annotations.data[85:92, 50:90] = 1
    annotations.data[15:25, 20:30] = 2
    annotations.data[45:55, 65:75] = 3


def _finetune(viewer, base: Path, monkeypatch, **config) -> FinetuneWidget:
    widget = open_dock(viewer, "Fine-tune")
    _paint(widget.new_annotations())
    widget.add_model_file(base)
    values = dict(steps=20, batch_size=1, patch_size=60, validation_every=5, device="cpu")
    values.update(config)
    # The dock's spin box stops at 1.0: a diverging rate is set the way a script would.
    monkeypatch.setattr(FinetuneWidget, "train_config", lambda _self: TrainConfig(**values))
    return widget


def test_a_diverging_run_says_so_and_keeps_finite_weights(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _finetune(viewer, tiny_base_file, monkeypatch, learning_rate=1e30)

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert len(notifications["warning"]) == 1
    found = re.fullmatch(
        r"training stopped: (the loss became NaN at step (\d+) \(learning rate too high\?\); "
        r"weights of step (\d+) restored)",
        notifications["warning"][0],
    )
    assert found, notifications["warning"]
    reason, failed, kept = found[1], int(found[2]), int(found[3])
    assert failed == kept + 1 and kept >= 1
    assert reason in widget.status and "lower the learning rate" in widget.status
    bundle = widget.trained_bundle
    assert bundle is not None and bundle.provenance["steps"] <= kept
    assert all(torch.isfinite(v).all() for v in bundle.state_dict.values() if v.is_floating_point())
    assert widget.can_save
    saved = widget.save_model(tmp_path / "diverged.safetensors")
    assert saved is not None
    assert load_model(saved).provenance["steps"] == bundle.provenance["steps"]
    assert not widget.can_resume  # Start begins a new run, with the new settings


def test_no_model_and_no_save_before_the_first_completed_step(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _finetune(viewer, tiny_base_file, monkeypatch, learning_rate=1e38)
    assert not widget.can_save

    widget.start()
    _wait(qtbot, lambda: not widget.is_training)

    assert widget.status == (
        "stopped: the update became infinite at step 1 (learning rate too high?); weights of "
        "step 0 (the starting weights) restored; no model"
    )
    assert widget.trained_bundle is None and not widget.can_save
    assert widget.save_model(tmp_path / "nothing.safetensors") is None
    assert notifications["error"] == ["no trained model yet: start a training run first"]
    assert not (tmp_path / "nothing.safetensors").exists()


def _save_dialog_answers(monkeypatch: pytest.MonkeyPatch, answer: Path) -> None:
    """Make the save dialog return ``answer``, as Qt's does once the user chose it (and,
    for an existing file with the dialog's suffix, confirmed replacing it)."""
    from qtpy.QtWidgets import QFileDialog

    def get_save_file_name(_parent, _caption, _proposed, filter_):
        return str(answer), filter_

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(get_save_file_name))


def test_save_model_never_replaces_a_file_unasked(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _finetune(viewer, tiny_base_file, monkeypatch, steps=2)
    widget.start()
    _wait(qtbot, lambda: not widget.is_training)
    folder = tmp_path / "models"
    folder.mkdir()
    existing = folder / "mine.safetensors"
    existing.write_bytes(b"the user's own model")

    assert widget.save_model(existing) is None  # a script without overwrite=True
    assert existing.read_bytes() == b"the user's own model"
    assert notifications["error"] == [
        f"{existing} already exists; choose another file name (Save model... asks before "
        "replacing a file)"
    ]

    # Save model...: the file dialog asked the user before returning an existing file.
    _save_dialog_answers(monkeypatch, existing)
    assert widget.save_model() == existing
    assert load_model(existing).name == widget.trained_bundle.name
    assert sorted(p.name for p in folder.iterdir()) == ["mine.safetensors"]  # no temp file
    assert not any(p.name.startswith(TEMP_PREFIX) for p in folder.iterdir())

    # A name the dialog did not confirm (".safetensors" added afterwards) is not replaced.
    before = existing.read_bytes()
    _save_dialog_answers(monkeypatch, existing.with_suffix(""))
    assert widget.save_model() is None
    assert existing.read_bytes() == before


# ------------------------------------------------------------------- block-wise stores
@pytest.fixture
def default_stores(monkeypatch, tmp_path) -> Path:
    """The Segment widget's default store folder, inside the test's folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempdir/napari-unet/<image>.zarr
    folder = tmp_path / "napari-unet"
    return folder


def _store_widget(viewer, model: Path, store: Path | None = None) -> SegmentWidget:
    widget = _segment_widget(viewer, model)
    widget.set_options(to_zarr=True)
    widget.set_options(output_store=store)
    return widget


def test_the_default_store_never_replaces_what_is_there(
    make_napari_viewer, qtbot, notifications, default_stores, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    foreign = default_stores / "blobs.zarr"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("the user's notes")
    widget = _store_widget(viewer, tiny_model_file)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert notifications["error"] == []
    assert _files(foreign) == {"notes.txt": b"the user's notes"}
    free = default_stores / "blobs-2.zarr"
    assert BlockStore(free).run_record()["complete"]
    assert str(free) in widget.status

    # The widget's own earlier result of the same image is replaced, not multiplied.
    widget.set_options(threshold=0.0)
    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)
    assert notifications["error"] == []
    assert sorted(p.name for p in default_stores.iterdir()) == ["blobs-2.zarr", "blobs.zarr"]
    assert (np.asarray(viewer.layers["blobs labels"].data) > 0).all()


@pytest.mark.parametrize("agreed", [False, True])
def test_a_chosen_store_with_an_earlier_result_is_replaced_only_if_the_user_agrees(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, blobs, tiny_model_file, agreed
):
    yesterday = make_napari_viewer()  # e.g. yesterday's session: another viewer, dock
    yesterday.add_image(blobs, name="blobs")
    store = tmp_path / "chosen.zarr"
    earlier = _store_widget(yesterday, tiny_model_file, store)
    earlier.segment_current_slice()
    _wait(qtbot, lambda: not earlier.is_running)
    before = _files(store)
    asked: list[Path] = []
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")

    def ask(_parent, path: Path) -> bool:
        asked.append(path)
        return agreed

    monkeypatch.setattr(_dialogs, "ask_replace", ask)
    widget = _store_widget(viewer, tiny_model_file, store)
    widget.set_options(threshold=0.0)  # everything foreground: differs from the earlier result
    worker = widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert asked == [store] and notifications["error"] == []
    if agreed:
        assert worker is not None and _files(store) != before
        assert (BlockStore(store).result(mode="r")[...] > 0).all()
    else:
        assert worker is None and _files(store) == before
        assert widget.status == "not started: the output store was kept"


def test_a_chosen_folder_that_is_not_a_store_is_refused_in_one_line(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, blobs, tiny_model_file
):
    monkeypatch.setattr(_dialogs, "ask_replace", pytest.fail)  # nothing to ask about
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2,3")
    widget = _store_widget(viewer, tiny_model_file, folder)

    widget.segment_current_slice()
    _wait(qtbot, lambda: not widget.is_running)

    assert _files(folder) == {"data.csv": b"1,2,3"}
    assert len(notifications["error"]) == 1
    message = notifications["error"][0]
    assert message.startswith(f"{folder} is a folder that is not a napari-unet result store")
    assert "\n" not in message


# ------------------------------------------------------------------ the worker wrapper
def test_worker_warnings_and_errors_become_events():
    @_common.reporting_errors
    def job():
        warnings.warn(NonFiniteWarning("2 NaN/infinite pixels replaced"), stacklevel=1)
        yield "tile"
        warnings.warn(UserWarning("not ours"), stacklevel=1)
        yield "tile"
        raise InputError("what is wrong; what to do")

    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        events = list(job())
    assert events == [
        _common.JobWarning("2 NaN/infinite pixels replaced"),
        "tile",
        "tile",
        _common.JobFailed(events[-1].error),
    ]
    assert str(events[-1].error) == "what is wrong; what to do"
    assert [str(w.message) for w in others] == ["not ours"]  # passed on, not swallowed
    assert not isinstance(warnings.showwarning, _notify._WarningRouter)  # put back


def test_two_workers_at_once_each_get_their_own_warnings():
    gate = threading.Barrier(2)

    @_common.reporting_errors
    def job(name: str):
        for index in range(20):
            gate.wait(timeout=10)  # both threads inside a step at the same time
            warnings.warn(NonFiniteWarning(f"{name} {index}"), stacklevel=1)
            yield index

    results: dict[str, list] = {}

    def run(name: str) -> None:
        results[name] = [e.message for e in job(name) if isinstance(e, _common.JobWarning)]

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert results == {name: [f"{name} {i}" for i in range(20)] for name in ("a", "b")}


def test_closing_the_wrapper_closes_the_job():
    closed = []

    @_common.reporting_errors
    def job():
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    events = job()
    assert next(events) == 1
    events.close()  # what a worker's quit does to its generator, in the end
    assert closed == [True]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (MemoryError(), _common.OUT_OF_MEMORY),
        (
            PermissionError(13, "Permission denied", "/data/out.zarr"),
            "Permission denied: /data/out.zarr",
        ),
        (OSError(28, "No space left on device"), "No space left on device"),
        (torch.OutOfMemoryError("CUDA out of memory"), _common.OUT_OF_MEMORY),
    ],
)
def test_worker_failures_become_one_line(error, message):
    @_common.reporting_errors
    def job():
        yield "started"
        raise error

    events = list(job())
    assert events[0] == "started" and isinstance(events[1], _common.JobFailed)
    assert str(events[1].error) == message


def test_a_runtime_error_in_a_worker_ends_the_run(
    make_napari_viewer, qtbot, tiny_model_file, blobs, monkeypatch
):
    """superqt swallows RuntimeErrors of generator workers: the dock must not stay busy."""

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep in torch")
        yield  # a generator, like the real one

    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.add_model_file(tiny_model_file)
    monkeypatch.setattr(_segment_run, "run", broken)
    with qtbot.capture_exceptions() as caught:
        for _attempt in range(2):  # the run ends, so the dock takes the next click
            assert widget.segment_current_slice() is not None
            qtbot.waitUntil(lambda: not widget.is_running, timeout=60_000)
    # napari shows the bug (with its traceback, as for any plugin bug) once per run.
    assert [type(error).__name__ for _kind, error, _tb in caught] == ["WorkerError"] * 2
    assert "a bug deep in torch" in str(caught[0][1])

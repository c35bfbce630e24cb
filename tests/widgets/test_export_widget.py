"""Export for bioimage.io... in the Fine-tune dock: a trained model becomes a package that
bioimageio.core loads offline, in a background worker, never replacing a file unasked.

The widget is opened from the plugin menu entry, as a user does; a model is trained for
two steps of a tiny network. Runs are awaited on the workers' real signals, never with
sleeps. Tests of the dialog and of errors replace the core export by a recording fake
(the real one is covered by tests/core/test_export.py and by the first test here).
"""

from __future__ import annotations

import socket
import threading
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
from painted_docks import painted_finetune_dock

pytest.importorskip("bioimageio.core")

import bioimageio.core as bioimageio_core
from bioimageio.spec import settings
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QPushButton

from napari_unet._widgets.finetune import FinetuneWidget
from napari_unet.core import export
from napari_unet.core.errors import InputError
from napari_unet.core.export import UNET_PAPER_URL

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

TIMEOUT_MS = 120_000
NAME = "blobs-tuned"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No network and a private bioimageio cache; the list of refused attempts."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(f"{args[:2]!r} from\n{''.join(traceback.format_stack(limit=12))}")
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(settings, "cache_path", tmp_path / "bioimageio-cache")
    return attempts


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """What napari itself would show from a worker: its relayed warnings and exceptions."""
    seen: list[tuple] = []
    for kind in ("warning", "error"):
        monkeypatch.setattr(
            notification_manager, f"receive_{kind}", lambda *a, **_k: seen.append(a)
        )
    return seen


def _wait(qtbot, predicate) -> None:
    qtbot.waitUntil(lambda: bool(predicate()), timeout=TIMEOUT_MS)


def _panel(viewer, blobs: np.ndarray, base: Path) -> tuple[object, FinetuneWidget]:
    """The Fine-tune dock opened from the menu, with painted annotations and tiny settings."""
    return painted_finetune_dock(viewer, blobs, base, name=NAME)


def _train(qtbot, widget: FinetuneWidget) -> None:
    assert widget.start() is not None
    _wait(qtbot, lambda: not widget.is_training)
    assert widget.trained_bundle is not None and widget.trained_bundle.name == NAME


@pytest.fixture
def trained(make_napari_viewer, qtbot, blobs, tiny_base_file):
    """(viewer, dock, widget) with a model trained for two steps."""
    viewer = make_napari_viewer()
    dock, widget = _panel(viewer, blobs, tiny_base_file)
    _train(qtbot, widget)
    return viewer, dock, widget


@pytest.fixture
def fake_export(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace the core export: record ``(bundle, path, overwrite)`` and write a stub."""
    calls: list[tuple] = []

    def fake(bundle, path, *, overwrite=False, **_options):
        calls.append((bundle, Path(path), overwrite))
        Path(path).write_bytes(b"package")
        return Path(path)

    monkeypatch.setattr(export, "export_bioimageio", fake)
    return calls


def _dialog(monkeypatch: pytest.MonkeyPatch, answer: str) -> list[str]:
    """Make the save dialog answer ``answer`` ("" = cancel); the defaults it proposed."""
    from qtpy.QtWidgets import QFileDialog

    proposed: list[str] = []

    def get_save_file_name(_parent, _caption, default, _filter):
        proposed.append(default)
        return answer, _filter

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(get_save_file_name))
    return proposed


# ------------------------------------------------------------------------- the real export
@pytest.mark.slow  # trains 2 steps, then imports bioimageio and exports (~10 s)
def test_a_trained_model_exports_to_a_package_bioimageio_loads(
    make_napari_viewer, qtbot, notifications, relayed, offline, tmp_path, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    _dock, widget = _panel(viewer, blobs, tiny_base_file)
    buttons = [button.text() for button in widget.native.findChildren(QPushButton)]
    assert "Export for bioimage.io..." in buttons
    assert not widget.can_export  # nothing to export before training
    assert widget.export_bioimageio(tmp_path / "early.zip") is None
    assert notifications["error"] == ["no trained model yet: start a training run first"]
    assert not (tmp_path / "early.zip").exists()
    notifications["error"].clear()

    _train(qtbot, widget)
    assert widget.can_export and widget.can_save  # after the first completed step
    target = tmp_path / "mine.zip"
    worker = widget.export_bioimageio(target)

    # Returned at once: the export runs in the worker, not on the GUI thread.
    assert worker is not None and widget.is_exporting
    assert not target.exists()
    assert widget.status == f"exporting {NAME} for bioimage.io..."
    assert not widget.can_export  # one export at a time
    assert widget.export_bioimageio(tmp_path / "twice.zip") is None
    assert notifications["info"] == ["an export is already running: wait until it has finished"]
    _wait(qtbot, lambda: not widget.is_exporting)

    assert notifications["error"] == [] and relayed == []  # no warning, no traceback
    assert widget.status == f"exported {target}"
    assert notifications["info"][1:] == [f"exported {NAME} for bioimage.io: {target}"]
    assert widget.can_export
    assert not (tmp_path / "twice.zip").exists()
    with zipfile.ZipFile(target) as archive:
        assert "rdf.yaml" in archive.namelist()
    description = bioimageio_core.load_description(
        target, perform_io_checks=True, known_files={UNET_PAPER_URL: None}
    )
    assert description.validation_summary.status == "valid-format", (
        description.validation_summary.format()
    )
    assert description.type == "model"
    assert description.name == f"napari-unet {NAME}"
    assert [str(tensor.id) for tensor in description.inputs] == ["raw"]
    assert [str(axis.id) for axis in description.inputs[0].axes] == ["batch", "channel", "y", "x"]
    assert [str(tensor.id) for tensor in description.outputs] == ["probabilities"]
    assert offline == []


# --------------------------------------------------------------------- never replaced unasked
@pytest.mark.slow  # trains 2 steps
def test_an_existing_target_with_a_scripted_path_is_refused_in_one_line(
    trained, notifications, fake_export, tmp_path
):
    _viewer, _dock, widget = trained
    target = tmp_path / "mine.zip"
    target.write_bytes(b"somebody's package")
    status = widget.status

    assert widget.export_bioimageio(target) is None

    assert notifications["error"] == [
        f"{target} already exists; choose another file name (Export for bioimage.io... asks "
        "before replacing a file)"
    ]
    assert "\n" not in notifications["error"][0]
    assert target.read_bytes() == b"somebody's package"
    assert fake_export == [] and not widget.is_exporting
    assert widget.status == status


@pytest.mark.slow  # trains 2 steps
def test_a_bug_in_the_export_reaches_napari_and_the_status_says_it_failed(
    trained, qtbot, notifications, relayed, monkeypatch, tmp_path
):
    """Not a user error: the worker re-raises it in napari's event loop, whose error
    notification keeps the traceback for a bug report, and the export still ends (a
    RuntimeError in superqt's generator workers never would)."""
    _viewer, _dock, widget = trained

    def buggy(*_args, **_kwargs):
        raise RuntimeError("napari-unet built an invalid bioimage.io description")

    monkeypatch.setattr(export, "export_bioimageio", buggy)
    with qtbot.capture_exceptions() as exceptions:
        assert widget.export_bioimageio(tmp_path / "mine.zip") is not None
        _wait(qtbot, lambda: not widget.is_exporting)

    # RuntimeErrors reach napari wrapped (superqt would take a bare one for "deleted").
    assert [(kind.__name__, str(error)) for kind, error, _trace in exceptions] == [
        ("WorkerError", "RuntimeError: napari-unet built an invalid bioimage.io description")
    ]
    assert relayed == []
    assert notifications["error"] == [] and notifications["info"] == []
    assert widget.status == "export failed (see the notification)"
    assert widget.can_export


@pytest.mark.slow  # trains 2 steps
def test_the_dialog_proposes_a_free_name_and_only_its_answer_replaces(
    trained, qtbot, notifications, fake_export, monkeypatch, tmp_path
):
    _viewer, _dock, widget = trained
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # Path.home() on POSIX
    monkeypatch.setenv("USERPROFILE", str(home))  # and on Windows
    (home / f"{NAME}.zip").write_bytes(b"an earlier export")

    # Cancelled: nothing starts.
    proposed = _dialog(monkeypatch, "")
    assert widget.export_bioimageio() is None
    assert proposed == [str(home / f"{NAME}-2.zip")]  # a free name: accepting it replaces nothing
    assert fake_export == []

    # A name typed without .zip gets it, and is not replaced unasked (the dialog did not
    # ask about that file).
    (home / "typed.zip").write_bytes(b"kept")
    _dialog(monkeypatch, str(home / "typed"))
    assert widget.export_bioimageio() is None
    assert notifications["error"] == [
        f"{home / 'typed.zip'} already exists; choose another file name (Export for "
        "bioimage.io... asks before replacing a file)"
    ]
    assert (home / "typed.zip").read_bytes() == b"kept" and fake_export == []

    # The dialog asked before replacing this file: the export may replace it.
    _dialog(monkeypatch, str(home / f"{NAME}.zip"))
    worker = widget.export_bioimageio()
    assert worker is not None
    _wait(qtbot, lambda: not widget.is_exporting)
    assert [(bundle.name, path, overwrite) for bundle, path, overwrite in fake_export] == [
        (NAME, home / f"{NAME}.zip", True)
    ]
    assert fake_export[0][0] is widget.trained_bundle
    assert widget.status == f"exported {home / f'{NAME}.zip'}"


# -------------------------------------------------------------------------------- errors
@pytest.mark.slow  # trains 2 steps
def test_an_export_error_is_one_notification_line(
    trained, qtbot, notifications, relayed, monkeypatch, tmp_path
):
    _viewer, _dock, widget = trained
    message = "bioimage.io export needs the bioimageio extra: pip install 'napari-unet[bioimageio]'"

    def broken(*_args, **_kwargs):
        raise InputError(message)

    monkeypatch.setattr(export, "export_bioimageio", broken)
    target = tmp_path / "mine.zip"

    with qtbot.capture_exceptions() as exceptions:
        assert widget.export_bioimageio(target) is not None
        _wait(qtbot, lambda: not widget.is_exporting)

    assert exceptions == [] and relayed == []  # our line only, no traceback
    assert notifications["error"] == [message]
    assert notifications["info"] == []
    assert widget.status == "export failed (see the notification)"
    assert widget.can_export  # the user may try again
    assert not target.exists()


# ------------------------------------------------------------------------------- closing
@pytest.mark.slow  # trains 2 steps and exports (~10 s)
@pytest.mark.parametrize("close", ["panel", "viewer"])
def test_closing_during_an_export_raises_nothing_and_completes_the_package(
    trained, qtbot, notifications, relayed, offline, monkeypatch, tmp_path, close
):
    viewer, dock, widget = trained
    target = tmp_path / "mine.zip"
    closed = threading.Event()
    real_export = export.export_bioimageio

    def after_the_close(*args, **kwargs):
        """The real export, started in the worker only once the panel or viewer is closed."""
        assert closed.wait(TIMEOUT_MS / 1000)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export, "export_bioimageio", after_the_close)
    with qtbot.capture_exceptions() as exceptions:
        worker = widget.export_bioimageio(target)
        finished: list[bool] = []
        worker.finished.connect(lambda: finished.append(True))  # after the widget's handler
        viewer.close() if close == "viewer" else dock.title.close_button.click()
        assert widget.is_closed and widget.is_exporting
        closed.set()
        _wait(qtbot, lambda: finished)
        qtbot.wait(200)  # any signal still queued is handled
    assert exceptions == [] and relayed == []
    assert notifications == {"error": [], "warning": [], "info": []}  # nothing shown once closed
    assert not widget.is_exporting
    # Asked for, and written atomically: the package is complete.
    with zipfile.ZipFile(target) as archive:
        assert "rdf.yaml" in archive.namelist()
    assert widget.export_bioimageio(tmp_path / "after.zip") is None  # a closed widget
    assert offline == []

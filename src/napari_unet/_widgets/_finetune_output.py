"""The Fine-tune dock's trained model, written out: Save model... and Export for bioimage.io...

**Save model...** writes the model file atomically (an interrupted save leaves no
partial file and an existing file intact); **Export for bioimage.io...** writes a
bioimage.io model package (``.zip``; :func:`napari_unet.core.export.export_bioimageio`)
in a background worker: the first export imports bioimageio (~5 s). Neither replaces a
file unasked: a scripted path that exists is refused in one line, a file dialog asks
before replacing. An export in progress is not interrupted by closing the dock: it
completes without touching the closed widget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.widgets import PushButton
from napari.qt.threading import thread_worker

from napari_unet._widgets._common import (
    DockLifetime,
    JobFailed,
    JobWarning,
    SessionModels,
    StatusLabel,
    notify_error,
    notify_info,
    notify_warning,
    reporting_errors,
)
from napari_unet.core import export as bioimageio_export
from napari_unet.core.errors import UNetError
from napari_unet.core.finetune_plan import file_stem
from napari_unet.core.modelfile import ModelBundle, save_user_model, user_models_dir
from napari_unet.core.modelfile import save_model as write_model_file
from napari_unet.core.safety import free_path

NO_MODEL = "no trained model yet: start a training run first"
#: ``ask()``: a file chosen in a dialog and whether the dialog confirmed replacing it.
Ask = Callable[[], "tuple[Path, bool] | None"]


@dataclass(frozen=True)
class Exported:
    """Yielded by :func:`export_events` once the package is written."""

    path: Path


@reporting_errors
def export_events(bundle: ModelBundle, path: Path, overwrite: bool):
    """Write ``bundle`` as a bioimage.io package at ``path``; yield :class:`Exported`
    (or, through :func:`reporting_errors`, a :class:`JobFailed` / :class:`JobWarning`).

    The core function is looked up on its module at call time (tests replace it).
    """
    yield Exported(bioimageio_export.export_bioimageio(bundle, path, overwrite=overwrite))


def export_job(bundle: ModelBundle, path: Path, overwrite: bool) -> list[Any]:
    """Worker function: the events of :func:`export_events`, returned together.

    A function worker, not a generator worker: superqt's generator worker takes any
    ``RuntimeError`` for a deleted worker and then never emits ``finished``, so a bug in
    the export (the core raises RuntimeError for those) would leave the dock exporting
    forever. A function worker relays it to napari (with its traceback) and finishes.
    """
    return list(export_events(bundle, path, overwrite))


@dataclass
class ExportRun:
    """State of one export, owned by the main thread."""

    name: str
    path: Path
    #: The package written; ``None`` until then, and after a failure.
    exported: Path | None = None


def write_target(
    path: str | Path | None, overwrite: bool, ask: Ask, action: str
) -> tuple[Path, bool] | None:
    """The file to write and whether it may be replaced; ``None`` to write nothing.

    Without ``path`` the user is asked (``ask``: a save dialog, which confirms a
    replacement itself). An existing file is refused in one line unless replacing it
    was asked for: nothing the user has is overwritten unasked.
    """
    if path is None:
        chosen = ask()
        if chosen is None:
            return None
        path, overwrite = chosen
    path = Path(path)
    if not overwrite and (path.exists() or path.is_symlink()):
        notify_error(
            f"{path} already exists; choose another file name ({action} asks before "
            "replacing a file)"
        )
        return None
    return path, overwrite


def ask_file(parent: Any, caption: str, proposed: Path, filter_: str, suffix: str) -> Any:
    """The file chosen in a save dialog proposing ``proposed``, and whether the dialog
    confirmed replacing it (not when ``suffix`` had to be added); None when cancelled."""
    from qtpy.QtWidgets import QFileDialog

    path, _ = QFileDialog.getSaveFileName(parent, caption, str(proposed), filter_)
    if not path:
        return None
    path = Path(path)
    if path.suffix.lower() == suffix:
        return path, True
    return path.with_name(f"{path.name}{suffix}"), False


class ModelOutput:
    """The Save and Export buttons of a dock, and the writing of its trained model.

    Parameters
    ----------
    session : SessionModels
        Told when a model file was saved (choosers list it).
    status : StatusLabel
        The dock's status line.
    lifetime : DockLifetime
        The dock's lifetime: nothing touches a closed dock.
    bundle : callable
        Returns the trained model (None before a run completed a step).
    """

    def __init__(
        self,
        session: SessionModels,
        status: StatusLabel,
        lifetime: DockLifetime,
        bundle: Callable[[], ModelBundle | None],
    ) -> None:
        self._session = session
        self._status = status
        self._lifetime = lifetime
        self._bundle = bundle
        self.export_worker: Any = None
        self.save_button = PushButton(text="Save model...", enabled=False)
        self.export_button = PushButton(
            text="Export for bioimage.io...",
            enabled=False,
            tooltip="write the trained model as a bioimage.io package (.zip) for deepImageJ, "
            "ilastik, QuPath and the BioImage Model Zoo",
        )

    def model_ready(self) -> None:
        """A run produced a model: it can be saved, and exported unless an export runs."""
        self.save_button.enabled = True
        self.export_button.enabled = self.export_worker is None

    # ------------------------------------------------------------------ saving
    def save(self, path: str | Path | None, overwrite: bool, ask: Ask) -> Path | None:
        """Write the trained model to ``path`` (``ask`` for it when None); see
        :meth:`~napari_unet._widgets.finetune.FinetuneWidget.save_model`."""
        bundle = self._bundle()
        if bundle is None:
            notify_error(NO_MODEL)
            return None
        target = write_target(path, overwrite, ask, "Save model...")
        if target is None:
            return None
        try:
            saved = write_model_file(bundle, target[0], overwrite=target[1])
        except (UNetError, OSError) as error:
            notify_error(error)
            return None
        return self._saved(saved)

    def save_by_name(self, name: str | None, overwrite: bool) -> Path | None:
        """Save the trained model by ``name`` (default: its own) in the user's model folder."""
        bundle = self._bundle()
        if bundle is None:
            notify_error(NO_MODEL)
            return None
        try:
            saved = save_user_model(bundle, name or bundle.name, overwrite=overwrite)
        except UNetError as error:
            notify_error(error)
            return None
        return self._saved(saved)

    def _saved(self, saved: Path) -> Path:
        self._session.files_changed()
        self._status.value = f"saved {saved}"
        return saved

    def ask_save_path(self, parent: Any) -> tuple[Path, bool] | None:
        """Ask for the model file, proposing ``<name>.safetensors`` in the user's models."""
        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        proposed = folder / f"{self._bundle().name}.safetensors"
        filter_ = "napari-unet models (*.safetensors)"
        return ask_file(parent, "Save the model", proposed, filter_, ".safetensors")

    # ------------------------------------------------------------------ exporting
    def export(self, path: str | Path | None, overwrite: bool, ask: Ask) -> Any:
        """Start exporting the trained model for bioimage.io; the worker, or None when
        nothing was started; see
        :meth:`~napari_unet._widgets.finetune.FinetuneWidget.export_bioimageio`."""
        if self._lifetime.closed:
            return None
        bundle = self._bundle()
        if bundle is None:
            notify_error(NO_MODEL)
            return None
        if self.export_worker is not None:
            notify_info("an export is already running: wait until it has finished")
            return None
        target = write_target(path, overwrite, ask, "Export for bioimage.io...")
        if target is None:
            return None
        run = ExportRun(bundle.name, target[0])
        worker = thread_worker(export_job, start_thread=False)(bundle, *target)
        worker.returned.connect(lambda events: self._on_export_events(run, events))
        worker.finished.connect(lambda: self._on_export_finished(run, worker))
        self.export_worker = worker
        self.export_button.enabled = False
        self._status.value = f"exporting {bundle.name} for bioimage.io..."
        worker.start()
        return worker

    def _on_export_events(self, run: ExportRun, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Exported):
                run.exported = event.path
            elif isinstance(event, JobFailed) and not self._lifetime.closed:
                notify_error(event.error)
            elif isinstance(event, JobWarning) and not self._lifetime.closed:
                notify_warning(event.message)

    def _on_export_finished(self, run: ExportRun, worker: Any) -> None:
        if self.export_worker is worker:
            self.export_worker = None
        if self._lifetime.closed:  # the package is complete (written atomically)
            return
        self.export_button.enabled = self._bundle() is not None
        if run.exported is not None:  # else a JobFailed, or a bug napari has shown
            self._status.value = f"exported {run.exported}"
            notify_info(f"exported {run.name} for bioimage.io: {run.exported}")
        else:
            self._status.value = "export failed (see the notification)"

    def ask_export_path(self, parent: Any) -> tuple[Path, bool] | None:
        """Ask for the package file, proposing ``<model name>.zip`` in the home folder, or
        the first free ``<model name>-2.zip``... there, so accepting it replaces nothing."""
        proposed = free_path(Path.home() / f"{file_stem(self._bundle().name)}.zip")
        filter_ = "bioimage.io model packages (*.zip)"
        return ask_file(parent, "Export the model for bioimage.io", proposed, filter_, ".zip")


__all__ = ["ModelOutput", "export_job"]

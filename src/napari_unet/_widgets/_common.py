"""Pieces shared by the dock widgets: the session's models, model choices, notifications,
and the small conversions between napari layers and the core's arrays.

Every widget shares one :class:`SessionModels` (see :func:`session_for`): the fine-tune
widget adds the models it trains, the segment widget lists them at once and, in the
viewer that trained it, selects the new one. It holds models and the model chosen for
each image layer, never widgets, and lives as long as the napari session (the process).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from magicgui.widgets import Label
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from psygnal import Signal

from napari_unet.core.device import describe_device
from napari_unet.core.errors import InputError, NonFiniteWarning, UNetError
from napari_unet.core.model import SMALL, pick_device
from napari_unet.core.modelfile import ModelBundle, list_models, load_model

#: Metadata key marking layers created by napari-unet (so they may be overwritten).
METADATA_KEY = "napari_unet"

_LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ warm-up
_WARM_UP_STARTED = threading.Event()
#: Longest wait at exit for an unfinished warm-up thread, in seconds.
WARM_UP_EXIT_WAIT_S = 30.0


def warm_up() -> None:
    """Pay one-off first-use costs when a widget opens instead of during the first run.

    On the GUI thread (about 0.3 s, once per process): napari's first Labels layer
    imports pandas and builds its layer machinery, vispy builds the dash patterns every
    Labels layer's polygon overlay uses, and napari's first progress bar builds its
    widgets. In a background thread: one tiny training step and segmentation
    (:func:`napari_unet.core.warmup.exercise_core`), whose lazy torch imports would
    otherwise freeze the viewer at the first click (benchmarks/bench_responsiveness.py
    measured 300-400 ms before this, 135-179 ms after; see also :func:`in_separate_turns`).
    """
    if _WARM_UP_STARTED.is_set():
        return
    _WARM_UP_STARTED.set()
    try:
        from napari.layers import Labels

        _ = Labels(np.zeros((1, 1), np.uint8)).features
        from vispy.visuals.line.dash_atlas import DashAtlas  # caches its patterns per class

        DashAtlas()
        from napari.utils import progress

        # The first progress bar builds the activity dock's bar widgets (~150 ms).
        progress(total=0, desc="napari-unet ready").close()
    except Exception:  # a warm-up must never break a widget (e.g. a changed vispy)
        _LOG.debug("napari-unet: GUI warm-up skipped", exc_info=True)
    thread = threading.Thread(target=_warm_up_core, name="napari-unet warm-up", daemon=True)
    thread.start()
    # A process ending while the thread is inside torch aborted ("terminate called without
    # an active exception") in a short test run: let it finish (a few seconds at most).
    atexit.register(thread.join, WARM_UP_EXIT_WAIT_S)


def _warm_up_core() -> None:
    from napari_unet.core.warmup import exercise_core

    try:
        exercise_core()
    except Exception:
        _LOG.debug("napari-unet: core warm-up failed", exc_info=True)


#: Delay between the steps of :func:`in_separate_turns`, in ms: a real timer, so the
#: paint and input events a step causes are served before the next step; unnoticeable.
TURN_GAP_MS = 15


def in_separate_turns(*steps: Callable[[], None]) -> None:
    """Run ``steps`` on the GUI thread one after the other, each in its own event-loop turn.

    Why: napari spends ~80 ms building a new layer, ~50 ms building a progress bar and
    ~50 ms on a new layer's first draw (shader compilation under Xvfb). In one turn they
    froze the viewer for their sum (135-310 ms in benchmarks/bench_responsiveness.py).
    A zero-delay timer is no help (Qt delivers it with the same turn's posted events),
    so each step is a short timer started when the previous step is done: the viewer
    redraws and takes input in between. A failing step is logged and the next still runs
    (a step that starts a worker must never be skipped).
    """
    from qtpy.QtCore import QTimer

    def run(index: int) -> None:
        try:
            steps[index]()
        except Exception:
            _LOG.exception("napari-unet: a GUI step failed")
        if index + 1 < len(steps):
            QTimer.singleShot(TURN_GAP_MS, lambda: run(index + 1))

    if steps:
        QTimer.singleShot(TURN_GAP_MS, lambda: run(0))


def add_unselected(add_layer: Callable[..., Any], viewer: Any, *args: Any, **kwargs: Any) -> Any:
    """Add a layer with ``add_layer`` (e.g. ``viewer.add_labels``) without selecting it.

    napari makes every new layer the active one. Our output and preview layers must not
    take the selection from the layer the user works with (the image the Segment widget
    follows, the annotations being painted). The selection's events are held while the
    layer is inserted and the previous selection is put back, so nothing that listens to
    the selection (the layer controls, the layer list) sees a change: switching the layer
    controls there and back cost a first run's longest stall 50-90 ms
    (benchmarks/bench_responsiveness.py). Only public API: napari's private
    ``_activate_on_insert`` switch warns in plugins and goes away in napari 0.10.
    """
    selection = viewer.layers.selection
    active, selected = selection.active, set(selection)
    with selection.events.blocker_all():
        layer = add_layer(*args, **kwargs)
        selection.clear()
        selection.update(selected)
        selection.active = active
    return layer


def choose_layer(chooser: Any, viewer: Any, layer: Any) -> None:
    """Pick ``layer`` (a layer of ``viewer`` or its name) in a layer chooser, as a user
    would: the choices are refreshed first, so a layer added just before is offered."""
    chooser.reset_choices()
    chooser.value = viewer.layers[layer] if isinstance(layer, str) else layer


def show_layer(layer: Any) -> Callable[[], None]:
    """A step for :func:`in_separate_turns` making a layer added with ``visible=False``
    visible: a hidden layer is not drawn, so its first draw gets a turn of its own."""
    return lambda: setattr(layer, "visible", True)


# ------------------------------------------------------------------------- session models
def viewer_key(viewer: Any) -> int | None:
    """A key telling viewers apart, the same for every object napari hands out for one
    viewer; None when ``viewer`` has none.

    napari gives each plugin dock widget its own proxy of the viewer
    (``napari.utils._proxies.PublicOnlyProxy``), so ``id(viewer)`` differs between the
    docks of one viewer. Its hash does not: napari defines a viewer's hash as its
    identity, and the proxy (a ``wrapt.ObjectProxy``) forwards ``hash()`` to the viewer.
    """
    try:
        return hash(viewer)
    except TypeError:
        return None


class SessionModels:
    """Models trained in this napari session, and the model the user gave each image.

    One per process (:func:`session_for`), so every dock sees every trained model
    whatever viewer object napari handed it, and a model outlives the dock that trained
    it (closing Fine-tune, then opening Segment). ``changed`` is emitted with
    ``(model, viewer key)``: the newest model and the :func:`viewer_key` of the viewer
    it was trained in (``(None, None)`` when only the saved model files changed), so
    model choosers refresh and the Segment docks of that viewer select it.
    """

    changed = Signal(object, object)

    def __init__(self) -> None:
        self._bundles: list[ModelBundle] = []
        self._choices: dict[Any, ModelSource] = {}

    @property
    def bundles(self) -> list[ModelBundle]:
        """Session models, oldest first."""
        return list(self._bundles)

    def add(self, bundle: ModelBundle, viewer: Any = None, layer: Any = None) -> None:
        """Add ``bundle`` (replacing a session model of the same name), trained in
        ``viewer`` on the image ``layer``: it becomes that layer's model."""
        self._bundles = [b for b in self._bundles if b.name != bundle.name] + [bundle]
        if layer is not None:
            self.remember(layer, ModelSource(f"{bundle.name} (this session)", "session", bundle))
        self.changed.emit(bundle, viewer_key(viewer))

    def files_changed(self) -> None:
        """Tell choosers that model files were saved (the registry changed)."""
        self.changed.emit(None, None)

    def remember(self, layer: Any, source: ModelSource) -> None:
        """``source`` is the model the user chose for the image ``layer``."""
        self._choices[_layer_key(layer)] = source

    def remembered(self, layer: Any) -> ModelSource | None:
        """The model last chosen for ``layer`` in this session, if any."""
        return self._choices.get(_layer_key(layer))


def _layer_key(layer: Any) -> Any:
    """napari's ``unique_id`` of a layer (the same through any proxy of it)."""
    return getattr(layer, "unique_id", None) or id(layer)


_SESSION = SessionModels()


def session_for(viewer: Any = None) -> SessionModels:
    """The :class:`SessionModels` every napari-unet widget shares (``viewer`` is not
    needed: the session is the process's; models say which viewer trained them)."""
    return _SESSION


# -------------------------------------------------------------------------- model choices
@dataclass(frozen=True, eq=False)
class ModelSource:
    """Where a model comes from: a session bundle, a file, or a new small network.

    Compares by identity of its target so choosers can keep a selection across refreshes.
    """

    label: str
    kind: Literal["session", "file", "scratch"]
    bundle: ModelBundle | None = None
    path: Path | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelSource):
            return NotImplemented
        return (self.kind, self.path, id(self.bundle)) == (
            other.kind,
            other.path,
            id(other.bundle),
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.path, id(self.bundle)))

    def load(self, cache: dict | None = None) -> ModelBundle | None:
        """The model (``None`` for scratch); files are read once per modification time.

        Call from a worker thread: reading a file takes a moment.
        """
        if self.kind == "session":
            return self.bundle
        if self.kind == "scratch":
            return None
        assert self.path is not None
        key = (str(self.path), self.path.stat().st_mtime_ns if self.path.exists() else 0)
        if cache is not None and key in cache:
            return cache[key]
        bundle = load_model(self.path)
        if cache is not None:
            cache[key] = bundle
        return bundle


#: Choice value that opens a file dialog.
BROWSE = "browse"
BROWSE_LABEL = "Browse..."
SCRATCH = ModelSource("scratch (small, untrained)", "scratch")


def model_sources(session: SessionModels, extra_files: list[Path]) -> list[ModelSource]:
    """Session models (newest first), built-in and user models, then browsed files."""
    sources = [
        ModelSource(f"{b.name} (this session)", "session", bundle=b)
        for b in reversed(session.bundles)
    ]
    for entry in list_models():
        suffix = "" if entry.source == "built-in" else " (saved)"
        sources.append(ModelSource(f"{entry.name}{suffix}", "file", path=entry.path))
    known = {s.path for s in sources}
    sources += [ModelSource(p.name, "file", path=p) for p in extra_files if p not in known]
    return sources


def model_choices(sources: list[ModelSource]) -> list[tuple[str, Any]]:
    """``(label, value)`` pairs for a magicgui ComboBox, ending with "Browse..."."""
    return [(s.label, s) for s in sources] + [(BROWSE_LABEL, BROWSE)]


def ask_model_file(parent: Any = None) -> Path | None:
    """Let the user pick a model file; ``None`` when cancelled."""
    from qtpy.QtWidgets import QFileDialog

    from napari_unet.core.modelfile import user_models_dir

    folder = user_models_dir()
    path, _ = QFileDialog.getOpenFileName(
        parent,
        "Open a napari-unet model",
        str(folder if folder.is_dir() else Path.home()),
        "napari-unet models (*.safetensors)",
    )
    return Path(path) if path else None


def device_choices() -> list[str]:
    """ "auto", "cpu", and the accelerators torch can see."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


SMALL_CONFIG = SMALL


# -------------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class JobDevice:
    """Yielded first by a worker generator: the device that runs the job and why, as
    :func:`~napari_unet.core.device.describe_device` says it (e.g. "CPU: no CUDA GPU found")."""

    description: str


def resolve_device(requested: str) -> Any:
    """The ``torch.device`` the core runs a job on for ``requested`` ("auto", "cpu"...).

    The core's own resolution (:func:`~napari_unet.core.model.pick_device`), so the
    dock names the device the job really uses. Cheap (torch remembers what it found
    when the widget listed the devices): the widgets call it on the GUI thread when a
    job is prepared, so an unavailable device is refused before anything starts.

    Raises
    ------
    InputError
        With the core's one line, e.g. "device 'cuda' requested but no CUDA GPU is
        available; use 'auto' or 'cpu'".
    """
    try:
        return pick_device(requested)
    except UNetError:
        raise
    except ValueError as error:  # a core that still raises a plain ValueError
        raise InputError(str(error)) from error


def job_device(requested: str, device: Any = None) -> JobDevice:
    """The :class:`JobDevice` event of a job on ``device`` (by default resolved from
    ``requested``). Call it in the worker: naming a CUDA GPU initialises CUDA, which
    can take a second."""
    device = resolve_device(requested) if device is None else device
    return JobDevice(describe_device(device, requested))


#: The dock's device line while a job runs, and after it ended.
RUNNING_ON = "running on {}"
RAN_ON = "ran on {}"


# --------------------------------------------------------------------------- text that wraps
#: Zero-width space: a line break Qt's word wrap may take, invisible when drawn.
BREAK = "\u200b"
#: Longest run of characters without a break opportunity in a :class:`StatusLabel`.
LONGEST_UNBROKEN = 20


def breakable(text: str, longest: int = LONGEST_UNBROKEN) -> str:
    """``text`` with invisible break opportunities (:data:`BREAK`) after path separators
    and underscores, and inside any longer run without one, so a long file path wraps
    instead of widening (or being cut off in) its dock."""
    pieces, run = [], 0
    for char in text:
        pieces.append(char)
        if char.isspace() or char == "-":  # Qt may break at these already
            run = 0
        elif char in "/\\_" or run + 1 >= longest:
            pieces.append(BREAK)
            run = 0
        else:
            run += 1
    return "".join(pieces).rstrip(BREAK)


def wrap_words(label: Label) -> Label:
    """Let ``label`` wrap its text within the width its dock gives it: word wrap on, and
    a size policy that takes the dock's width and the wrapped text's height (magicgui's
    labels are fixed to their unwrapped text's size, which cuts a long line off)."""
    from qtpy.QtWidgets import QSizePolicy

    native = label.native
    native.setWordWrap(True)
    policy = QSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
    policy.setHeightForWidth(True)
    native.setSizePolicy(policy)
    return label


class StatusLabel(Label):
    """A status line that wraps within its dock, file paths included.

    Its ``value`` is the text as set; what is shown has invisible break opportunities
    (:func:`breakable`) so that no part of it is cut off at the dock's width.
    """

    def __init__(self, value: str = "", **kwargs: Any) -> None:
        super().__init__(value=value, **kwargs)
        wrap_words(self)

    def get_value(self) -> str:
        return super().get_value().replace(BREAK, "")

    def set_value(self, value: Any) -> None:
        super().set_value(breakable(str(value)))


class DeviceLine:
    """A label under a dock's run buttons naming the device of the current or last job.

    Empty until a job's :class:`JobDevice` arrives: "running on CPU: no CUDA GPU
    found" while it runs, "ran on ..." after it ended.
    """

    def __init__(self) -> None:
        self.label = StatusLabel()
        #: describe_device's line of the current or last job ("" before any).
        self.description = ""

    def clear(self) -> None:
        """A new job is being prepared: its device is not known yet."""
        self.description = ""
        self.label.value = ""

    def running(self, description: str) -> None:
        self.description = description
        self.label.value = RUNNING_ON.format(description)

    def ended(self) -> None:
        if self.description:
            self.label.value = RAN_ON.format(self.description)


# --------------------------------------------------------------------------- progress bars
def open_progress(total: int, description: str) -> progress:
    """A napari progress bar (in the viewer's activity dock) over ``total`` units; 0 for
    a total not known yet. Main thread only: building it processes Qt events."""
    return progress(total=total, desc=description)


def close_progress(bar: progress | None) -> None:
    """Close ``bar`` (if any); safe twice, and after its viewer's activity dock is gone
    (closing the viewer deletes the dock's bar widgets before our worker ends)."""
    if bar is None:
        return
    with contextlib.suppress(RuntimeError, KeyError):
        bar.close()


# --------------------------------------------------------------------------- notifications
def notify_error(error: BaseException | str) -> None:
    """Show a user-facing error: the message alone for our errors, type and message otherwise."""
    if isinstance(error, UNetError) or isinstance(error, str):
        show_error(str(error))
    else:
        show_error(f"{type(error).__name__}: {error}")


def notify_warning(message: str) -> None:
    show_warning(message)


def notify_info(message: str) -> None:
    show_info(message)


@dataclass(frozen=True)
class JobFailed:
    """Yielded by a worker generator instead of raising a :class:`UNetError`.

    napari's thread workers relay raised exceptions as tracebacks; an expected,
    user-facing error is shown as its message alone by the widget instead.
    """

    error: UNetError


@dataclass(frozen=True)
class JobWarning:
    """Yielded by a worker generator for a warning meant for the user (e.g. replaced NaN
    pixels); the widget shows ``message`` as a napari warning, on the main thread."""

    message: str


#: What a worker that ran out of memory tells the user (one line, with what to try).
OUT_OF_MEMORY = (
    "out of memory; tick 'write to zarr store' to segment block by block, or use a "
    "smaller tile size (segmenting) or batch and patch size (fine-tuning)"
)


def os_error_message(error: OSError) -> str:
    """One line for a failed file operation: what the system said, and on which file."""
    reason = error.strerror or str(error) or type(error).__name__
    where = f": {error.filename}" if error.filename else ""
    return f"{reason}{where}"


class WorkerError(Exception):
    """A bug inside a worker, re-raised as a type that lets the worker finish normally."""


def reporting_errors(generator_function: Callable) -> Callable:
    """Wrap a worker generator function so the user gets one line, never a traceback.

    A :class:`UNetError` (or ``MemoryError``, or an ``OSError`` such as a full disk)
    ends the generator with a :class:`JobFailed`; a
    :class:`~napari_unet.core.errors.NonFiniteWarning` raised while it runs is yielded
    as a :class:`JobWarning` (other warnings go on to napari's usual relay). Closing the
    wrapper closes the wrapped generator.
    """

    def wrapped(*args: Any, **kwargs: Any):
        generator = generator_function(*args, **kwargs)
        try:
            while True:
                with _user_warnings() as warned:
                    try:
                        event, finished = next(generator), None
                    except StopIteration as stop:
                        event, finished = None, stop
                yield from warned
                if finished is not None:
                    return finished.value
                yield event
        except UNetError as error:
            yield JobFailed(error)
        except MemoryError:
            yield JobFailed(InputError(OUT_OF_MEMORY))
        except OSError as error:  # a file that vanished, a full disk, no permission...
            yield JobFailed(InputError(os_error_message(error)))
        except torch.OutOfMemoryError:  # a RuntimeError: the GPU's memory is full
            yield JobFailed(InputError(OUT_OF_MEMORY))
        except RuntimeError as error:
            # superqt takes any RuntimeError from a generator worker for "the worker was
            # deleted" and never emits `finished`: the dock would stay busy for good.
            raise WorkerError(f"{type(error).__name__}: {error}") from error
        finally:
            generator.close()
        return None

    wrapped.__name__ = generator_function.__name__
    wrapped.__doc__ = generator_function.__doc__
    return wrapped


#: Per thread: where the worker step running in it collects its NonFiniteWarnings.
_COLLECTING = threading.local()


class _WarningRouter:
    """A ``warnings.showwarning`` that hands NonFiniteWarnings to the step collecting
    them in the calling thread, and everything else to the display it replaced.

    Python's warning display is one for the whole process, and napari's workers replace
    it too (to relay warnings): the router decides by thread, not by the order in which
    workers install and restore it, so two workers at once never take each other's
    warnings, and a router left installed only passes warnings on.
    """

    def __init__(self, previous: Callable[..., Any]) -> None:
        self.previous = previous

    def __call__(self, message: Any, category: type, *args: Any, **kwargs: Any) -> None:
        collected = getattr(_COLLECTING, "events", None)
        if collected is not None and issubclass(category, NonFiniteWarning):
            collected.append(JobWarning(str(message)))
        else:
            self.previous(message, category, *args, **kwargs)


@contextlib.contextmanager
def _user_warnings() -> Iterator[list[JobWarning]]:
    """Collect the NonFiniteWarnings of one step of a worker as JobWarning events.

    Only around one ``next()``, so nothing stays changed while the worker waits;
    other warnings go on to the display in place (napari relays a worker's warnings).
    """
    events: list[JobWarning] = []
    installed = None
    if not isinstance(warnings.showwarning, _WarningRouter):
        installed = warnings.showwarning = _WarningRouter(warnings.showwarning)
    _COLLECTING.events = events
    try:
        yield events
    finally:
        _COLLECTING.events = None
        if installed is not None and warnings.showwarning is installed:
            warnings.showwarning = installed.previous


# ------------------------------------------------------------------------- dock lifetime
class DockLifetime:
    """Knows when a dock widget's panel is gone, and then ends what depends on it.

    napari closes a dock widget two ways: the panel's close button unparents it (and
    never shows it again), and closing the viewer deletes it with the window. After
    either, a worker that finishes later must not touch the widget: its Qt objects may
    be deleted ("wrapped C/C++ object of type QLabel has been deleted"). So ``on_close``
    runs once (to quit the worker), the viewer and session signals connected with
    :meth:`connect` are disconnected, and the worker's handlers check :attr:`closed`.

    Parameters
    ----------
    native : QWidget
        The widget put in the dock.
    on_close : callable
        Called once when the panel is gone; it must not touch Qt objects (they may be
        being deleted).
    """

    def __init__(self, native: Any, on_close: Callable[[], None]) -> None:
        self.closed = False
        self._on_close = on_close
        self._connections: list[tuple[Any, Callable]] = []
        self._watcher = _make_parent_watcher(native, self.close)
        native.destroyed.connect(self._destroyed)

    def connect(self, emitter: Any, callback: Callable) -> None:
        """``emitter.connect(callback)``, disconnected again when the panel is gone."""
        emitter.connect(callback)
        self._connections.append((emitter, callback))

    def unless_closed(self, step: Callable[[], None]) -> Callable[[], None]:
        """``step``, skipped when the panel is gone by the time it runs."""

        def guarded() -> None:
            if not self.closed:
                step()

        return guarded

    def close(self) -> None:
        """The panel is gone: disconnect, then tell the widget (once)."""
        if self.closed:
            return
        self.closed = True
        for emitter, callback in self._connections:
            with contextlib.suppress(Exception):  # already gone with its viewer
                emitter.disconnect(callback)
        self._connections.clear()
        self._on_close()

    def _destroyed(self, *_args: Any) -> None:
        self._watcher = None  # deleted with the widget
        self.close()


def _make_parent_watcher(native: Any, on_unparented: Callable[[], None]) -> Any:
    """An event filter on ``native`` calling ``on_unparented`` when a docked widget
    loses its parent (napari's ``remove_dock_widget``: the panel was closed)."""
    from qtpy.QtCore import QEvent, QObject

    class ParentWatcher(QObject):
        def __init__(self) -> None:
            super().__init__(native)  # deleted with the widget
            self.docked = native.parent() is not None

        def eventFilter(self, watched: Any, event: Any) -> bool:
            if event.type() == QEvent.Type.ParentChange:
                if watched.parent() is not None:
                    self.docked = True
                elif self.docked:
                    self.docked = False
                    try:
                        on_unparented()
                    except Exception:  # never let an event filter raise into Qt
                        _LOG.exception("napari-unet: closing a widget's run failed")
            return False

    watcher = ParentWatcher()
    native.installEventFilter(watcher)
    return watcher


def ask_replace(parent: Any, path: Path) -> bool:
    """Ask whether the napari-unet result store ``path`` may be replaced."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton
    answer = QMessageBox.question(
        parent,
        "Replace the result store?",
        f"{path} already holds a napari-unet result. Replace it with this run's result?",
        buttons.Yes | buttons.No,
        buttons.No,
    )
    return answer == buttons.Yes


# ---------------------------------------------------------------------- layers and arrays
def model_in_channels(source: Any) -> int | None:
    """The channel count of the model ``source`` names, when known without loading it
    (a session model's, or a file's description); None for scratch and unreadable files
    (a broken file is reported in full when the run loads it)."""
    if not isinstance(source, ModelSource):
        return None
    if source.bundle is not None:
        return int(source.bundle.config.in_channels)
    if source.path is None:
        return None
    from napari_unet.core.description import read_description

    try:
        return int(read_description(source.path)["config"]["in_channels"])
    except (UNetError, OSError, KeyError, TypeError, ValueError):
        return None


def spatial_transform(layer: Any) -> dict[str, Any]:
    """Scale and translate of ``layer``, to give a result layer the same placement."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}


def is_ours(layer: Any) -> bool:
    """Whether ``layer`` was created by napari-unet (so it may be overwritten)."""
    return METADATA_KEY in getattr(layer, "metadata", {})


def our_metadata(role: str, **details: Any) -> dict[str, Any]:
    """Layer metadata marking a layer as napari-unet's ``role`` (e.g. "EM stack/labels")."""
    return {METADATA_KEY: {"role": role, **details}}


def find_our_layer(viewer: Any, role: str, layer_type: type, shape: tuple, dtype: Any) -> Any:
    """Our layer playing ``role``, of this type, shape and dtype, or ``None``.

    Layers the user made (without our metadata) are never returned, so results never
    overwrite a layer somebody painted or loaded.
    """
    for layer in viewer.layers:
        marker = getattr(layer, "metadata", {}).get(METADATA_KEY)
        if not (isinstance(marker, dict) and marker.get("role") == role):
            continue
        if not isinstance(layer, layer_type):
            continue
        if tuple(layer.data.shape) == tuple(shape) and np.dtype(layer.data.dtype) == np.dtype(
            dtype
        ):
            return layer
    return None


def free_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... the first not used by a layer."""
    if name not in viewer.layers:
        return name
    index = 2
    while f"{name} [{index}]" in viewer.layers:
        index += 1
    return f"{name} [{index}]"

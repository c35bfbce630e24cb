"""How long a dock's work lives: the warm-up when a dock opens, GUI steps in separate
event-loop turns, and :class:`DockLifetime` (what happens when the panel is closed)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

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

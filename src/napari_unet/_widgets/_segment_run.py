"""One Segment run: the worker, its events, its status line, cancel.

A :class:`SegmentRun` drains the core's pipeline in a ``thread_worker`` (model loading
included, off the GUI thread) and hands each event to its output on the main thread:
a layer filled tile by tile (:class:`~napari_unet._widgets._layer_output.LayerOutput`)
or a zarr store shown lazily (:class:`~napari_unet._widgets._store_output.StoreOutput`).
What every run shares lives here: the device line, the progress bar, the scale the core
chose, notes and errors, redraws at most every :data:`REFRESH_INTERVAL_MS`, Cancel
(``worker.quit()``: finished tiles or blocks are kept), and the end of a run whose
panel was closed (nothing touches the closed dock).

The call into the core is :func:`_pipeline`: the core's one pipeline,
:func:`napari_unet.core.pipeline.run`, as the CLI calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer

from napari_unet._widgets._devices import DeviceLine, JobDevice, job_device
from napari_unet._widgets._lifetime import DockLifetime, in_separate_turns
from napari_unet._widgets._notify import (
    JobFailed,
    JobWarning,
    close_progress,
    notify_error,
    notify_info,
    notify_warning,
    open_progress,
    reporting_errors,
)
from napari_unet._widgets._scale import in_dock_words, scale_status
from napari_unet._widgets._sessions import ModelSource
from napari_unet.core.events import ScaleChosen
from napari_unet.core.frontend import round_tile
from napari_unet.core.io import plane_position
from napari_unet.core.pipeline import run

#: Minimum milliseconds between two redraws of the output layer while tiles stream in.
REFRESH_INTERVAL_MS = 100


@dataclass(frozen=True)
class Note:
    """A message for the user from the worker (e.g. the tile size was rounded)."""

    message: str


class RunOutput(Protocol):
    """Where a run's result goes (a layer, or a store shown in a layer)."""

    viewer: Any
    layer: Any
    image: Any
    options: Any
    planes: list[int]
    #: The block-wise run's store arguments; None in memory.
    store: Any

    def gui_steps(self, run: SegmentRun) -> list[Callable[[], None]]: ...
    def start_message(self, run: SegmentRun, source_label: str) -> str: ...
    def status_lines(self) -> list[str]: ...
    def on_event(self, run: SegmentRun, event: Any) -> bool: ...
    def on_returned(self, run: SegmentRun, result: Any) -> None: ...
    def finish(self, run: SegmentRun) -> str: ...


@dataclass
class RunHost:
    """What a run needs of its dock."""

    lifetime: DockLifetime
    device_line: DeviceLine
    #: Sets the dock's status line; reads it.
    set_status: Callable[[str], None]
    get_status: Callable[[], str]
    #: Called once when the run ended (or never started: the panel was closed first).
    ended: Callable[[SegmentRun], None]


def _pipeline(bundle: Any, image: Any, options: Any, planes: list[int], store: Any):
    """The core's one pipeline (:func:`~napari_unet.core.pipeline.run`): in memory (the
    chosen planes), or block-wise into ``store``'s zarr store (every plane)."""
    if store is None:
        return run(bundle, image, options=options, planes=planes)
    return run(
        bundle, image, options=options, out=store.target(bundle.config.num_classes, options.output)
    )


@reporting_errors
def _segment_job(
    source: ModelSource, cache: dict, image: Any, options: Any, planes: list[int], store: Any
):
    """Worker generator: name the device, load the model (off the GUI thread), round the
    tile size for it, then segment."""
    yield job_device(options.device)
    bundle = source.load(cache)
    options, note = round_tile(options, bundle.config)
    if note:
        yield Note(note)
    return (yield from _pipeline(bundle, image, options, planes, store))


@dataclass
class SegmentRun:
    """A run of the Segment dock, owned by the main thread.

    Parameters
    ----------
    host : RunHost
    source : ModelSource
        The model (loaded in the worker).
    cache : dict
        The dock's model cache (files read once per modification time).
    output : RunOutput
        Where the result goes, with what the core reads.
    leading : tuple of int
        The image's leading shape ((t, z) of a (t, z, y, x) stack; () for 2D), and
    axis_names : tuple of str
        the viewer's labels of those axes, for status lines.
    description : str
        The progress bar's text ("Segmenting blobs").
    """

    host: RunHost
    source: ModelSource
    cache: dict
    output: RunOutput
    leading: tuple[int, ...] = ()
    axis_names: tuple[str, ...] = ()
    description: str = ""
    worker: Any = None
    #: The napari progress bar, created when the worker starts (the turn after the click).
    progress: Any = None
    tiles_done: int = 0
    planes_done: set = field(default_factory=set)
    cancelled: bool = False
    failed: bool = False
    #: Set when the worker finished; tiles whose signal arrives later are still written.
    finished: bool = False
    #: The scale the core chose (:class:`~napari_unet.core.scaling.ScaleChoice`) and its
    #: status line, once its ScaleChosen event arrived.
    scale: Any = None
    scale_line: str = ""
    _refresh_pending: bool = False

    @property
    def stacked(self) -> bool:
        return bool(self.leading)

    @property
    def planes(self) -> list[int]:
        return self.output.planes

    @property
    def layer(self) -> Any:
        return self.output.layer

    # ------------------------------------------------------------- lifecycle
    def start(self) -> Any:
        """Build the worker and schedule the output's GUI steps, then the worker's start,
        each in an event-loop turn of its own; return the (not yet started) worker."""
        output = self.output
        worker = thread_worker(_segment_job, start_thread=False)(
            self.source, self.cache, output.image, output.options, output.planes, output.store
        )
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.show(output.start_message(self, self.source.label))
        # A new output layer is added (hidden) in the turn after the click, shown (its
        # first draw) in the next, and the progress bar is built and the worker started
        # in the last: napari's ~70-90 ms for a new layer then shares its turn with
        # nothing else (see in_separate_turns).
        steps = [self.unless_closed(step) for step in output.gui_steps(self)]
        in_separate_turns(*steps, self._begin)
        return worker

    def _begin(self) -> None:
        """Create the progress bar and start the worker; a run whose panel was closed
        in between ends here, never started."""
        if self.host.lifetime.closed:
            self.host.ended(self)
            return
        self.progress = open_progress(0, self.description)
        self.worker.start()

    def cancel(self) -> None:
        """Stop after the tile in progress; finished tiles or blocks are kept."""
        self.cancelled = True
        self.host.set_status("cancelling...")
        self.worker.quit()

    def close(self) -> None:
        """The panel was closed: stop without touching Qt."""
        self.cancelled = True
        self.worker.quit()

    def unless_closed(self, step: Callable[[], None]) -> Callable[[], None]:
        return self.host.lifetime.unless_closed(step)

    # ---------------------------------------------------------------- status
    def show(self, message: str) -> None:
        """Set the status: ``message``, the scale used and why, the output's lines."""
        lines = [message, self.scale_line, *self.output.status_lines()]
        self.host.set_status("\n".join(line for line in lines if line))

    def count(self, done: int, total: int | None = None) -> None:
        """Move the progress bar to ``done`` (of ``total`` when given). Call it last:
        napari's progress may process events, delivering ``finished`` right here."""
        bar = self.progress
        if total is not None and bar.total != total:
            bar.total = total
        if done != bar.n:
            bar.update(done - bar.n)

    def where(self, plane: int) -> str:
        """Where flat ``plane`` is: "t=1, z=2" with the viewer's axis labels, else its index."""
        position = tuple(plane_position(self.leading, plane)) if self.leading else ()
        names = self.axis_names
        named = len(names) == len(position) and all(
            n.strip() and not n.strip().lstrip("-").isdigit() for n in names
        )
        if named:
            return ", ".join(f"{n.strip()}={p}" for n, p in zip(names, position, strict=True))
        if len(position) > 1:
            return ", ".join(str(p) for p in position)
        return str(plane)

    def schedule_refresh(self, layer: Any) -> None:
        """Redraw at most every REFRESH_INTERVAL_MS: redrawing per tile would stall the GUI."""
        if self._refresh_pending or layer is None:
            return
        self._refresh_pending = True

        def refresh() -> None:
            self._refresh_pending = False
            if not self.host.lifetime.closed and layer in self.output.viewer.layers:
                layer.refresh()

        QTimer.singleShot(REFRESH_INTERVAL_MS, refresh)

    # ---------------------------------------------------------- worker events
    def _on_event(self, event: Any) -> None:
        if self.host.lifetime.closed or self.output.on_event(self, event):
            return
        if isinstance(event, ScaleChosen):
            self.scale = event.choice
            self.scale_line = scale_status(event.choice)
            self.show(self.host.get_status().split("\n")[0])
        elif isinstance(event, JobDevice):
            self.host.device_line.running(event.description)
        elif isinstance(event, Note):
            notify_info(event.message)
        elif isinstance(event, JobWarning):
            notify_warning(event.message)
        elif isinstance(event, JobFailed):
            self.failed = True
            notify_error(in_dock_words(str(event.error)))

    def _on_returned(self, result: Any) -> None:
        if not self.host.lifetime.closed:
            self.output.on_returned(self, result)

    def _on_error(self, error: Exception) -> None:
        # napari already shows unexpected errors with their traceback; just remember it.
        self.failed = True

    def _on_finished(self) -> None:
        self.finished = True
        close_progress(self.progress)  # its viewer's activity dock may be gone
        if not self.host.lifetime.closed:
            self.host.device_line.ended()
            self.show(self.output.finish(self))
        self.host.ended(self)


__all__ = ["REFRESH_INTERVAL_MS", "Note", "RunHost", "RunOutput", "SegmentRun"]

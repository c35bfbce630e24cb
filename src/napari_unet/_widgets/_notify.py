"""What a dock tells the user: notifications, worker errors as one line, progress bars.

A worker generator wrapped in :func:`reporting_errors` never shows a traceback for an
expected failure: it yields :class:`JobFailed` (and :class:`JobWarning` for replaced
NaN pixels), which the dock shows as one line on the main thread.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from napari_unet.core.errors import InputError, NonFiniteWarning, UNetError


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

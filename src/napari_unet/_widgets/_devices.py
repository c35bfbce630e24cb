"""Devices in the docks: the choices offered, the device a job runs on, the line naming it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from napari_unet._widgets._text import StatusLabel
from napari_unet.core.device import describe_device
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.model import pick_device


def device_choices() -> list[str]:
    """ "auto", "cpu", and the accelerators torch can see."""
    import torch

    choices = ["auto", "cpu"]
    if torch.cuda.is_available():
        choices.append("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


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

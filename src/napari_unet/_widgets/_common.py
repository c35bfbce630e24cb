"""The names the docks share, re-exported from the modules that hold them.

Kept so that code importing from here keeps working; new code imports from the topic
modules directly:

- :mod:`._sessions`: the session's models (:class:`SessionModels`), :class:`ModelSource`,
  the model choices;
- :mod:`._devices`: device choices, the device a job runs on, the dock's device line;
- :mod:`._notify`: notifications, worker errors as one line, progress bars;
- :mod:`._lifetime`: the warm-up, GUI steps in separate turns, :class:`DockLifetime`;
- :mod:`._layers`: our layers' metadata, free names, unselected adds;
- :mod:`._text`: status lines that wrap;
- :mod:`._dialogs`: the file and replace questions.
"""

from __future__ import annotations

from napari_unet._widgets._devices import (
    RAN_ON,
    RUNNING_ON,
    DeviceLine,
    JobDevice,
    device_choices,
    job_device,
    resolve_device,
)
from napari_unet._widgets._dialogs import ask_model_file, ask_replace
from napari_unet._widgets._layers import (
    METADATA_KEY,
    add_unselected,
    choose_layer,
    find_our_layer,
    free_name,
    is_ours,
    our_metadata,
    show_layer,
    spatial_transform,
)
from napari_unet._widgets._lifetime import (
    TURN_GAP_MS,
    WARM_UP_EXIT_WAIT_S,
    DockLifetime,
    in_separate_turns,
    warm_up,
)
from napari_unet._widgets._notify import (
    OUT_OF_MEMORY,
    JobFailed,
    JobWarning,
    WorkerError,
    close_progress,
    notify_error,
    notify_info,
    notify_warning,
    open_progress,
    os_error_message,
    reporting_errors,
)
from napari_unet._widgets._sessions import (
    BROWSE,
    BROWSE_LABEL,
    SCRATCH,
    SMALL_CONFIG,
    ModelSource,
    SessionModels,
    model_choices,
    model_in_channels,
    model_sources,
    session_for,
    viewer_key,
)
from napari_unet._widgets._text import BREAK, LONGEST_UNBROKEN, StatusLabel, breakable, wrap_words

__all__ = [
    "BREAK",
    "BROWSE",
    "BROWSE_LABEL",
    "LONGEST_UNBROKEN",
    "METADATA_KEY",
    "OUT_OF_MEMORY",
    "RAN_ON",
    "RUNNING_ON",
    "SCRATCH",
    "SMALL_CONFIG",
    "TURN_GAP_MS",
    "WARM_UP_EXIT_WAIT_S",
    "DeviceLine",
    "DockLifetime",
    "JobDevice",
    "JobFailed",
    "JobWarning",
    "ModelSource",
    "SessionModels",
    "StatusLabel",
    "WorkerError",
    "add_unselected",
    "ask_model_file",
    "ask_replace",
    "breakable",
    "choose_layer",
    "close_progress",
    "device_choices",
    "find_our_layer",
    "free_name",
    "in_separate_turns",
    "is_ours",
    "job_device",
    "model_choices",
    "model_in_channels",
    "model_sources",
    "notify_error",
    "notify_info",
    "notify_warning",
    "open_progress",
    "os_error_message",
    "our_metadata",
    "reporting_errors",
    "resolve_device",
    "session_for",
    "show_layer",
    "spatial_transform",
    "viewer_key",
    "warm_up",
    "wrap_words",
]

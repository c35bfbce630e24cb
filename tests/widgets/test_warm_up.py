"""Opening a widget warms napari's layer machinery and the core, once per process."""

from __future__ import annotations

import threading

from dock_fields import open_dock

from napari_unet._widgets import _lifetime
from napari_unet.core import warmup


def test_opening_a_widget_warms_up_the_core_in_the_background(
    make_napari_viewer, qtbot, monkeypatch
):
    monkeypatch.setattr(_lifetime, "_WARM_UP_STARTED", threading.Event())
    monkeypatch.setattr(warmup, "_DONE", threading.Event())
    runs: list[str] = []
    real_warm_up_core = _lifetime._warm_up_core

    def recording_warm_up_core() -> None:
        runs.append(threading.current_thread().name)
        real_warm_up_core()

    monkeypatch.setattr(_lifetime, "_warm_up_core", recording_warm_up_core)
    viewer = make_napari_viewer()
    open_dock(viewer, "Segment")
    open_dock(viewer, "Fine-tune")  # the second widget does not start another warm-up
    qtbot.waitUntil(warmup.is_warm, timeout=60_000)
    assert runs == ["napari-unet warm-up"]  # once, off the GUI thread

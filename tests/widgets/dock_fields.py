"""A dock's fields found as a user finds them: by their label or text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from magicgui.widgets import Container

from napari_unet._widgets._text import StatusLabel


def _widgets_of(container: Container) -> Iterator[Any]:
    """Every widget of a magicgui ``container``, nested containers included, in order."""
    for widget in container:
        yield widget
        if isinstance(widget, Container):
            yield from _widgets_of(widget)


def field(dock_widget: Container, label: str) -> Any:
    """The field labelled ``label``, or the button or checkbox reading ``label``, of a
    dock, found as a user finds it (through magicgui's public Container API)."""
    for widget in _widgets_of(dock_widget):
        if getattr(widget, "text", None) == label or widget.label == label:
            return widget
    raise LookupError(f"no field {label!r} in the dock")


def status_label(dock_widget: Container) -> StatusLabel:
    """The dock's status line: the last wrapping label in it."""
    return [w for w in _widgets_of(dock_widget) if isinstance(w, StatusLabel)][-1]


def open_dock(viewer: Any, name: str) -> Any:
    """The widget of the dock ``name`` ("Segment", "Fine-tune"), opened from the
    plugin's menu entry as a user opens it."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    return widget

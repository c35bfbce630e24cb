"""The docks read well at their default width: no clipped label, a readable loss scale.

The docks are opened from the plugin's menu entries in a shown viewer, as a user sees
them; what is checked is what Qt lays out and what the plot draws.
"""

from __future__ import annotations

import pytest
from dock_fields import status_label
from qtpy.QtCore import QPoint, QRect, QRectF, Qt
from qtpy.QtGui import QFontMetrics, QFontMetricsF
from qtpy.QtWidgets import QApplication

from napari_unet._widgets._loss_plot import compact_number
from napari_unet._widgets._text import BREAK, breakable


def _docked(make_napari_viewer, name: str):
    """The dock ``name`` opened from the menu in a shown viewer tall enough for all of it
    (this is about the dock's width: a window shorter than a dock cuts it at the bottom)."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1200, 1400)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    _settle()
    return dock, widget


def _settle() -> None:
    """Let Qt lay out and paint what changed (layouts settle over a few event rounds)."""
    for _ in range(3):
        QApplication.processEvents()


def _loss(step: int, steps: int, decades: float) -> float:
    """A loss falling steadily (geometrically) from 1 by ``decades`` decades."""
    return 10.0 ** (-decades * (step - 1) / (steps - 1))


def _drawn_labels_fit(plot, dock) -> list[str]:
    """Check every text the plot draws fits its rectangle, the plot and the dock, with
    no two overlapping; return the texts."""
    metrics = QFontMetricsF(plot.font())
    bounds = QRectF(plot.rect())
    labels = plot.tick_labels()
    for text, rect in labels:
        assert bounds.contains(rect), (text, rect, bounds)
        assert metrics.horizontalAdvance(text) <= rect.width(), (text, rect)
        assert metrics.height() <= rect.height() + 0.5, (text, rect)
    for index, (text, rect) in enumerate(labels):
        for other, other_rect in labels[index + 1 :]:
            assert not rect.intersects(other_rect), (text, other)
    right = plot.mapTo(dock, QPoint(plot.width(), 0)).x()
    assert 0 < right <= dock.width()
    return [text for text, _ in labels]


def test_a_loss_over_seven_decades_is_drawn_on_a_log_scale_with_every_label_whole(
    make_napari_viewer,
):
    dock, widget = _docked(make_napari_viewer, "Fine-tune")
    plot = widget.loss_plot
    steps = 300
    for step in range(1, steps + 1):
        plot.add_step(step, _loss(step, steps, 7))
        if step % 100 == 0:
            plot.add_validation(step, _loss(step, steps, 7), is_best=step == steps)
    _settle()
    plot.grab()  # paints it as the screen would

    assert plot.log_scale
    texts = _drawn_labels_fit(plot, dock)
    assert texts[:4] == ["1e-6", "1e-4", "0.01", "1"]  # every other decade, bottom to top
    assert "loss (log scale)" in texts and f"step {steps}" in texts


def test_a_loss_within_a_decade_stays_linear_with_round_ticks(make_napari_viewer):
    dock, widget = _docked(make_napari_viewer, "Fine-tune")
    plot = widget.loss_plot
    for step in range(1, 201):
        plot.add_step(step, 0.693 - 0.4 * step / 200)
    _settle()
    plot.grab()

    assert not plot.log_scale
    texts = _drawn_labels_fit(plot, dock)
    assert texts[:3] == ["0.3", "0.4", "0.5"] and "loss" in texts


@pytest.mark.parametrize(
    ("value", "resolution", "text"),
    [
        (9e-7, None, "9e-7"),
        (1e-7, None, "1e-7"),
        (2.5e-5, None, "2.5e-5"),
        (0.25, None, "0.25"),
        (0.001, None, "0.001"),
        (120.0, None, "120"),
        (0.6932, 0.0002, "0.6932"),
        (0.4, 0.1, "0.4"),
        (0.0, 0.1, "0"),
    ],
)
def test_tick_numbers_are_short(value, resolution, text):
    assert compact_number(value, resolution) == text


@pytest.mark.parametrize("name", ["Fine-tune", "Segment"])
def test_a_long_status_wraps_within_the_dock_and_shows_every_line(
    make_napari_viewer, tmp_path, name
):
    dock, widget = _docked(make_napari_viewer, name)
    status = status_label(widget)
    label = status.native
    status.value = "done"
    _settle()
    width_before, one_line = dock.width(), label.height()
    path = tmp_path / ("a_very_long_folder_name" * 4) / "cells-finetuned-2.safetensors"
    long = f"saved {path}; this line goes on with more words than fit in one line"

    status.value = long
    _settle()

    assert status.value == long  # the text as set; only its display may break
    assert dock.width() == width_before  # the dock did not widen for it
    right = label.mapTo(dock, QPoint(label.width(), 0)).x()
    assert right <= dock.width()
    needed = QFontMetrics(label.font()).boundingRect(
        QRect(0, 0, label.width(), 100_000), int(Qt.TextFlag.TextWordWrap), label.text()
    )
    assert needed.width() <= label.width()  # wrapped, file path included
    assert label.height() >= needed.height() > 2 * one_line  # every line shown


def test_break_opportunities_are_invisible_and_split_long_runs():
    text = breakable("saved /home/user/models/very_long_model_name.safetensors")
    assert text.replace(BREAK, "") == "saved /home/user/models/very_long_model_name.safetensors"
    pieces = text.replace(" ", BREAK).split(BREAK)
    assert max(len(piece) for piece in pieces) <= 20
    assert breakable("step 3/10  loss 0.1234") == f"step 3/{BREAK}10  loss 0.1234"

"""A tiny live loss curve drawn with QPainter: cheap enough to update every step.

matplotlib would work too, but a full canvas redraw per step costs tens of
milliseconds on the GUI thread; this widget only stores the points and lets Qt
coalesce repaints.
"""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 44, 8, 8, 18
_TRAIN_COLOUR = QColor(120, 170, 255)
_SMOOTH_COLOUR = QColor(255, 255, 255)
_VALIDATION_COLOUR = QColor(255, 170, 60)
_AXIS_COLOUR = QColor(150, 150, 150)


class LossPlot(QWidget):
    """Training loss per step (thin line), its running mean (thick), validation loss (dots)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.train: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.best_step: int | None = None

    def clear(self) -> None:
        """Forget all points (a new run)."""
        self.train, self.validation, self.best_step = [], [], None
        self.update()

    def add_step(self, step: int, loss: float) -> None:
        """Append a training loss; the widget repaints when Qt gets to it."""
        if math.isfinite(loss):
            self.train.append((step, loss))
            self.update()

    def add_validation(self, step: int, loss: float, is_best: bool) -> None:
        """Append a validation loss; ``is_best`` marks the kept weights."""
        if math.isfinite(loss):
            self.validation.append((step, loss))
            if is_best:
                self.best_step = step
            self.update()

    # ------------------------------------------------------------------ drawing
    def _ranges(self) -> tuple[float, float, float, float]:
        points = self.train + self.validation
        steps = [s for s, _ in points]
        losses = [v for _, v in points]
        low, high = min(losses), max(losses)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        return min(steps), max(max(steps), min(steps) + 1), low, high

    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        area = QRectF(
            _MARGIN_LEFT,
            _MARGIN_TOP,
            max(self.width() - _MARGIN_LEFT - _MARGIN_RIGHT, 1),
            max(self.height() - _MARGIN_TOP - _MARGIN_BOTTOM, 1),
        )
        painter.setPen(QPen(_AXIS_COLOUR, 1))
        painter.drawRect(area)
        if not self.train and not self.validation:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss curve appears here")
            return
        first, last, low, high = self._ranges()

        def to_point(step: float, loss: float) -> QPointF:
            x = area.left() + (step - first) / (last - first) * area.width()
            y = area.bottom() - (loss - low) / (high - low) * area.height()
            return QPointF(x, y)

        self._draw_labels(painter, area, first, last, low, high)
        self._draw_line(painter, [to_point(s, v) for s, v in self.train], _TRAIN_COLOUR, 1)
        smooth = _running_mean(self.train, window=max(len(self.train) // 20, 5))
        self._draw_line(painter, [to_point(s, v) for s, v in smooth], _SMOOTH_COLOUR, 2)
        for step, loss in self.validation:
            best = step == self.best_step
            painter.setPen(QPen(_VALIDATION_COLOUR, 1))
            painter.setBrush(_VALIDATION_COLOUR if best else Qt.BrushStyle.NoBrush)
            painter.drawEllipse(to_point(step, loss), 4 if best else 3, 4 if best else 3)
        painter.end()

    @staticmethod
    def _draw_line(painter: QPainter, points: list[QPointF], colour: QColor, width: int) -> None:
        if len(points) < 2:
            return
        path = QPainterPath(points[0])
        for point in points[1:]:
            path.lineTo(point)
        painter.setPen(QPen(colour, width))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(path)

    @staticmethod
    def _draw_labels(
        painter: QPainter, area: QRectF, first: int, last: int, low: float, high: float
    ) -> None:
        painter.setPen(QPen(_AXIS_COLOUR, 1))
        right = Qt.AlignmentFlag.AlignRight
        painter.drawText(QRectF(0, area.top() - 6, _MARGIN_LEFT - 4, 14), right, f"{high:.3g}")
        painter.drawText(QRectF(0, area.bottom() - 8, _MARGIN_LEFT - 4, 14), right, f"{low:.3g}")
        below = area.bottom() + 2
        painter.drawText(QRectF(area.left(), below, 60, 14), Qt.AlignmentFlag.AlignLeft, "loss")
        painter.drawText(QRectF(area.right() - 120, below, 120, 14), right, f"step {last}")


def _running_mean(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over ``window`` points: the trend under noisy per-batch losses."""
    smoothed, total = [], 0.0
    for index, (step, loss) in enumerate(points):
        total += loss
        if index >= window:
            total -= points[index - window][1]
        smoothed.append((step, total / min(index + 1, window)))
    return smoothed

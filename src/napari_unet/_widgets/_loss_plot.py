"""A tiny live loss curve drawn with QPainter: cheap enough to update every step.

matplotlib would work too, but a full canvas redraw per step costs tens of
milliseconds on the GUI thread; this widget only stores the points and lets Qt
coalesce repaints.

Readable at any dock width: tick labels are short ("0.25", "1e-7"), the margins are
measured from the labels' rendered text (``QFontMetricsF``), and labels that would
overlap are left out. A loss spanning more than a decade is drawn on a log scale, where
the end of a fine-tuning run stays visible next to its first steps.

A held-out score (0 to 1, higher is better) is drawn as green points on its own scale,
0 at the bottom of the plot and 1 at the top, titled top right (:attr:`LossPlot.score_name`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QFontMetricsF, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

_TRAIN_COLOUR = QColor(120, 170, 255)
_SMOOTH_COLOUR = QColor(255, 255, 255)
_VALIDATION_COLOUR = QColor(255, 170, 60)
_SCORE_COLOUR = QColor(90, 210, 120)
_AXIS_COLOUR = QColor(150, 150, 150)
#: Space (px) between a label and the plot area or the widget's edge.
_GAP = 4
#: Largest ratio of the highest to the lowest loss still drawn on a linear scale.
LOG_SCALE_ABOVE = 10.0
#: Tick labels aimed at on the loss axis (fewer when they would overlap).
_TICKS = 4


@dataclass(frozen=True)
class _Layout:
    """Where everything goes at the widget's current size."""

    area: QRectF
    log: bool
    low: float  # loss (its log10 on a log scale) at the bottom of the area
    high: float  # ... at the top
    first: int
    last: int
    labels: list[tuple[str, QRectF, Qt.AlignmentFlag]]


class LossPlot(QWidget):
    """Training loss per step (thin line), its running mean (thick), validation loss (dots)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.train: list[tuple[int, float]] = []
        self.validation: list[tuple[int, float]] = []
        self.best_step: int | None = None
        #: Held-out scores ``(step, score)`` in [0, 1], and the title of their scale.
        self.scores: list[tuple[int, float]] = []
        self.score_name = "held-out score"

    def clear(self) -> None:
        """Forget all points (a new run)."""
        self.train, self.validation, self.best_step, self.scores = [], [], None, []
        self.update()

    def add_step(self, step: int, loss: float) -> None:
        """Append a training loss; the widget repaints when Qt gets to it."""
        if math.isfinite(loss):
            self.train.append((step, loss))
            self.update()

    def add_validation(
        self, step: int, loss: float, is_best: bool, score: float | None = None
    ) -> None:
        """Append a validation loss and held-out ``score`` (in [0, 1], if any);
        ``is_best`` marks the kept weights."""
        if score is not None and math.isfinite(score):
            self.scores.append((step, min(max(score, 0.0), 1.0)))
        if math.isfinite(loss):
            self.validation.append((step, loss))
            if is_best:
                self.best_step = step
        self.update()

    @property
    def log_scale(self) -> bool:
        """Whether the loss axis is logarithmic (the losses span more than
        :data:`LOG_SCALE_ABOVE`, all of them positive)."""
        losses = [loss for _, loss in self.train + self.validation]
        return bool(losses) and min(losses) > 0 and max(losses) > LOG_SCALE_ABOVE * min(losses)

    def tick_labels(self) -> list[tuple[str, QRectF]]:
        """Every text the plot draws at its current size, with the rectangle it is drawn
        in (widget coordinates): the loss ticks, the axis title and the step range."""
        return [(text, rect) for text, rect, _align in self._layout().labels]

    # ------------------------------------------------------------------ layout
    def _ranges(self) -> tuple[int, int, float, float, bool]:
        """First and last step, lowest and highest loss (log10 of them on a log scale)."""
        points = self.train + self.validation
        steps = [s for s, _ in points]
        log = self.log_scale
        losses = [math.log10(v) if log else v for _, v in points]
        low, high = min(losses), max(losses)
        if high - low < 1e-9:
            low, high = low - 0.5, high + 0.5
        return min(steps), max(max(steps), min(steps) + 1), low, high, log

    def _layout(self) -> _Layout:
        metrics = QFontMetricsF(self.font())
        height = metrics.height()
        if not self.train and not self.validation:
            area = QRectF(_GAP, _GAP, self.width() - 2 * _GAP, self.height() - 2 * _GAP)
            return _Layout(area, False, 0.0, 1.0, 0, 1, [])
        first, last, low, high, log = self._ranges()
        ticks = _log_ticks(low, high) if log else _linear_ticks(low, high)
        texts = [(value, _tick_text(value, ticks, log)) for value in ticks]
        left = max([metrics.horizontalAdvance(text) for _, text in texts] + [0.0]) + 2 * _GAP + 1
        top, bottom = height + _GAP, height + 2 * _GAP
        area = QRectF(
            left,
            top,
            max(self.width() - left - 2 * _GAP, 1.0),
            max(self.height() - top - bottom, 1.0),
        )
        right_align = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
        left_align = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter
        labels: list[tuple[str, QRectF, Qt.AlignmentFlag]] = []
        for value, text in texts:
            y = area.bottom() - (value - low) / (high - low) * area.height()
            rect = QRectF(_GAP, y - height / 2, left - 2 * _GAP, height)
            if all(not rect.intersects(placed) for _, placed, _ in labels):
                labels.append((text, rect, right_align))
        title = "loss (log scale)" if log else "loss"
        labels.append((title, _text_rect(metrics, title, area.left(), 0), left_align))
        if self.scores:  # the score's title at the top right, unless it would overlap
            text = f"{self.score_name} (0-1)"
            width = metrics.horizontalAdvance(text)
            rect = _text_rect(metrics, text, area.right() - width, 0)
            if rect.left() >= 0 and not rect.intersects(labels[-1][1]):
                labels.append((text, rect, right_align))
        below = area.bottom() + _GAP
        start = f"{first}"
        labels.append((start, _text_rect(metrics, start, area.left(), below), left_align))
        end = f"step {last}"
        end_rect = _text_rect(metrics, end, area.right() - metrics.horizontalAdvance(end), below)
        if not end_rect.intersects(labels[-1][1]):
            labels.append((end, end_rect, right_align))
        return _Layout(area, log, low, high, first, last, labels)

    # ------------------------------------------------------------------ drawing
    def paintEvent(self, _event: object) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        layout = self._layout()
        area = layout.area
        painter.setPen(QPen(_AXIS_COLOUR, 1))
        painter.drawRect(area)
        if not self.train and not self.validation:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss curve appears here")
            painter.end()
            return
        for text, rect, align in layout.labels:
            painter.drawText(rect, align, text)
        span = layout.last - layout.first

        def to_point(step: float, loss: float) -> QPointF:
            value = math.log10(loss) if layout.log else loss
            x = area.left() + (step - layout.first) / span * area.width()
            y = area.bottom() - (value - layout.low) / (layout.high - layout.low) * area.height()
            return QPointF(x, y)

        self._draw_line(painter, [to_point(s, v) for s, v in self.train], _TRAIN_COLOUR, 1)
        smooth = _running_mean(self.train, window=max(len(self.train) // 20, 5))
        self._draw_line(painter, [to_point(s, v) for s, v in smooth], _SMOOTH_COLOUR, 2)
        painter.setPen(QPen(_SCORE_COLOUR, 1))
        painter.setBrush(_SCORE_COLOUR)
        for step, score in self.scores:  # its own 0-1 scale over the plot's height
            x = area.left() + (step - layout.first) / span * area.width()
            painter.drawEllipse(QPointF(x, area.bottom() - score * area.height()), 3, 3)
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


def _text_rect(metrics: QFontMetricsF, text: str, left: float, top: float) -> QRectF:
    """The rectangle ``text`` needs, with its top-left corner at ``(left, top)``."""
    return QRectF(left, top, metrics.horizontalAdvance(text) + 1, metrics.height())


def _nice_step(span: float, count: int) -> float:
    """A step of 1, 2 or 5 times a power of ten giving about ``count`` ticks over ``span``."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next((m * power for m in (1, 2, 5) if m * power >= raw), 10 * power)


def _linear_ticks(low: float, high: float) -> list[float]:
    """Round values (multiples of a 1-2-5 step) inside ``[low, high]``, at least two."""
    step = _nice_step(high - low, _TICKS)
    start = math.ceil(low / step - 1e-9)
    values = [k * step for k in range(start, math.floor(high / step + 1e-9) + 1)]
    return values if len(values) >= 2 else [low, high]


def _log_ticks(low: float, high: float) -> list[float]:
    """log10 of round losses inside ``[low, high]`` (log10 units): every n-th decade,
    with 2 and 5 times them when the range is short; at least two values."""
    decades = range(math.ceil(low - 1e-9), math.floor(high + 1e-9) + 1)
    if len(decades) >= 3:
        every = math.ceil(len(decades) / (_TICKS + 1))
        return [float(d) for d in decades if d % every == 0]
    values = [
        d + math.log10(m)
        for d in range(math.floor(low), math.ceil(high) + 1)
        for m in (1, 2, 5)
        if low - 1e-9 <= d + math.log10(m) <= high + 1e-9
    ]
    return values if len(values) >= 2 else [low, high]


def _tick_text(value: float, ticks: list[float], log: bool) -> str:
    """A short label for the tick ``value`` (a log10 on a log scale) among ``ticks``."""
    if log:
        return compact_number(10.0**value)
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=1.0)
    return compact_number(value, resolution=step)


def compact_number(value: float, resolution: float | None = None) -> str:
    """``value`` in few characters: "0.25", "120", "1e-7", "2.5e-5".

    Parameters
    ----------
    value : float
        The number.
    resolution : float, optional
        The difference the text must still show (a tick step), which decides the digits;
        by default three significant digits.
    """
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    exponent = math.floor(math.log10(abs(value)) + 1e-12)
    if resolution is None:
        finest = exponent - 2
    else:
        finest = math.floor(math.log10(abs(resolution)) + 1e-12)
    if -3 <= exponent < 5 and finest >= -5:
        return _strip_zeros(f"{value:.{max(-finest, 0)}f}")
    mantissa, power = f"{value:.{max(exponent - finest, 0)}e}".split("e")
    return f"{_strip_zeros(mantissa)}e{int(power)}"


def _strip_zeros(text: str) -> str:
    """ "0.2500" -> "0.25", "3.0" -> "3"; integers stay as they are."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _running_mean(points: list[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over ``window`` points: the trend under noisy per-batch losses."""
    smoothed, total = [], 0.0
    for index, (step, loss) in enumerate(points):
        total += loss
        if index >= window:
            total -= points[index - window][1]
        smoothed.append((step, total / min(index + 1, window)))
    return smoothed

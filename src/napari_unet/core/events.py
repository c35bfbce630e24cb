"""Small, immutable progress events yielded by the core's long-running generators.

The GUI receives them through ``thread_worker``'s ``yielded`` signal and the CLI
drains them into a progress bar; neither needs to know how the work is done.
Arrays inside events are never written to by the core after being yielded.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from napari_unet.core.scaling import ScaleChoice

Result = TypeVar("Result")


def drain(generator: Generator[Any, None, Result]) -> Result:
    """Run a progress generator to the end, ignoring its events; return its result."""
    while True:
        try:
            next(generator)
        except StopIteration as finished:
            return finished.value


@dataclass(frozen=True)
class ScaleChosen:
    """The scale an image is segmented at, and why: the first event of a segmentation.

    ``choice.factor_yx`` resamples the image to the model's scale (model grid = input
    grid x factor; ``(1.0, 1.0)``: not resampled); ``choice.reason`` is one line for the
    user, e.g. ``"auto: objects measure 41.2 px (8 objects on a central 720 x 720 px crop,
    seen at x0.5), the model's 21.6 px -> x0.524"``. Tiles and planes that follow are
    reported on the input grid.
    """

    choice: ScaleChoice


@dataclass(frozen=True)
class TileDone:
    """One overlap-tile finished.

    Attributes
    ----------
    plane : int
        Index of the plane in the stack (0 for a 2D image).
    index, total : int
        Tile number within this plane and the plane's tile count.
    region : tuple of slice
        ``(rows, cols)`` the tile covers in image coordinates.
    data : ndarray
        The tile's result: ``(h, w)`` mask/labels or ``(K, h, w)`` probabilities.
    """

    plane: int
    index: int
    total: int
    region: tuple[slice, slice]
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PlaneDone:
    """A whole plane is finished; ``data`` is its final result (e.g. instance labels)."""

    plane: int
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Progress:
    """Generic progress: ``done`` of ``total`` units, with a short message."""

    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class TrainStep:
    """One optimisation step finished.

    Attributes
    ----------
    step, total_steps : int
        Steps done so far in this run (1-based) and the run's planned total.
    loss : float
        Weighted cross-entropy of this step's batch.
    learning_rate : float
        Learning rate used for this step.
    elapsed, eta : float
        Seconds since the run started, and the estimated seconds left.
    """

    step: int
    total_steps: int
    loss: float
    learning_rate: float
    elapsed: float
    eta: float


@dataclass(frozen=True)
class Validation:
    """Periodic validation on fixed, un-augmented patches, and on the held-out part.

    ``loss`` is the weighted loss on the patches, ``accuracy`` the fraction of their
    annotated pixels classified correctly, ``score`` the score on the annotations held
    out of training (:mod:`napari_unet.core.holdout`; ``score_name`` "F1@0.5" or "IoU"),
    None when nothing is held out. The score decides the kept best weights when there is
    one (ties: the lower loss), else the loss does; ``is_best`` says whether these
    weights are now the kept best.
    """

    step: int
    loss: float
    accuracy: float
    is_best: bool
    score: float | None = None
    score_name: str = ""


@dataclass(frozen=True)
class Preview:
    """The current model's prediction on the preview plane: ``(K, H, W)`` probabilities."""

    step: int
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class TrainingFinished:
    """The run ended; best/last steps for the record.

    ``reason`` is "completed", "stopped" (closed early), or, when a step produced NaN
    or infinite numbers and was undone, one line saying so, e.g. "the loss became NaN
    at step 12 (learning rate too high?); weights of step 11 restored" (the same text
    as :attr:`napari_unet.core.train.Trainer.diverged`).
    """

    step: int
    best_step: int
    best_loss: float
    reason: str
    #: The kept weights' held-out score (None without a held-out part), and one line on
    #: the re-tuned post-processing ("" when not tuned), e.g. "held-out F1@0.5 0.84 at
    #: the base's threshold 0.5 -> 0.88 with re-tuned threshold 0.65, min size 30".
    best_score: float | None = None
    tuning: str = ""

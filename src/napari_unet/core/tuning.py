"""Post-processing re-tuned for a trained model on its own annotations.

A fine-tuned network's probabilities are not calibrated like its base's: after
fine-tuning, even the images it was tuned on scored lower at the base model's
threshold (F1 0.934 -> 0.911 in issue 18). :func:`tune_postprocess` therefore chooses
the threshold, the minimum object size and, for grow-and-merge models
(``merge_boundaries``, e.g. EM membranes), the merge level again, maximising the score
of :func:`~napari_unet.core.holdout.score_targets` (F1 at IoU 0.5 of instances, or IoU
of a mask) on annotations.

Which annotations: the :class:`~napari_unet.core.train.Trainer` tunes on the
*training* part, never on the held-out part, so the held-out score reported with the
tuned settings stays an honest estimate (the held-out part is also small: one plane or
a few cells, on which a grid of settings would overfit). The settings are searched one
at a time (coordinate ascent; the first of equal scores kept, the base's value tried
first), which keeps it to about twenty post-processings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_unet.core.holdout import F1, IOU, score_targets

#: Thresholds tried (foreground probability).
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.3, 0.851, 0.05), 2))
#: Merge levels tried for grow-and-merge models (mean boundary probability).
MERGE_LEVELS = tuple(float(t) for t in np.round(np.arange(0.3, 0.91, 0.1), 2))
#: Minimum sizes tried, as fractions of the median annotated cell's area.
MIN_SIZE_FRACTIONS = (0.0, 0.1, 0.25, 0.5)
#: The settings tuned (the others keep the base's values).
TUNED_KEYS = ("threshold", "min_size", "merge_boundaries")


@dataclass(frozen=True)
class Tuning:
    """The result of :func:`tune_postprocess`.

    Attributes
    ----------
    options : dict
        The base's post-processing with the tuned values (``threshold``, ``min_size``
        and for grow-and-merge models ``merge_boundaries``).
    score, base_score : float
        Score on the tuning annotations with the tuned and with the base's settings.
    base_options : dict
        The settings the tuning started from.
    score_name : str
        ``"F1@0.5"`` or ``"IoU"``.
    on : str
        What it was tuned on, e.g. "the training annotations (18 cells)".
    """

    options: dict[str, Any]
    score: float
    base_options: dict[str, Any]
    base_score: float
    score_name: str
    on: str = ""
    tried: int = field(default=0, compare=False)

    def changed(self) -> dict[str, Any]:
        """The tuned settings that differ from the base's."""
        return {
            key: value
            for key, value in self.options.items()
            if key in TUNED_KEYS and self.base_options.get(key, _DEFAULTS[key]) != value
        }

    def describe(self) -> str:
        """One line: "threshold 0.65, min size 30 (F1@0.5 0.91 -> 0.94 on ...)"."""
        values = ", ".join(_setting(k, v) for k, v in self.options.items() if k in TUNED_KEYS)
        scores = f"{self.score_name} {self.base_score:.3f} -> {self.score:.3f}"
        return f"{values} ({scores} on {self.on})" if self.on else f"{values} ({scores})"


_DEFAULTS = {"threshold": 0.5, "min_size": 0, "merge_boundaries": 0.0}


def _setting(key: str, value: Any) -> str:
    name = {"min_size": "min size", "merge_boundaries": "merge level"}.get(key, key)
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def tune_postprocess(
    probabilities: Sequence[np.ndarray],
    targets: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    score_name: str = F1,
    base: Mapping[str, Any] | None = None,
    on: str = "",
) -> Tuning:
    """Choose the post-processing that scores best on annotated planes.

    Parameters
    ----------
    probabilities : sequence of (K, H, W) ndarray
        The model's probabilities, one per annotated plane (or region).
    targets : sequence of ((H, W) classes, (H, W) instances)
        Their annotations: classes 0 background, 1 cell, -1 not annotated; instances
        one id per cell (:class:`~napari_unet.core.annotations.Targets`).
    score_name : {"F1@0.5", "IoU"}
        What to maximise (see :func:`~napari_unet.core.holdout.score_targets`). For a
        mask only the threshold matters.
    base : mapping, optional
        The settings to start from (the base model's recommendation); ``threshold``
        of a grow-and-merge model (``merge_boundaries`` > 0) is its seed threshold,
        fixed high by design, so its merge level is tuned instead.
    on : str
        What the annotations are, for :meth:`Tuning.describe`.

    Returns
    -------
    Tuning
    """
    base_options = dict(base or {})
    current = {**_DEFAULTS, **{k: v for k, v in base_options.items() if k in _DEFAULTS}}
    if float(current["merge_boundaries"]) <= 0:
        current.pop("merge_boundaries")
    tried = 0

    def score(options: Mapping[str, Any]) -> float:
        nonlocal tried
        tried += 1
        return score_targets(probabilities, targets, score_name, {**base_options, **options})

    base_score = score(current)
    best = base_score
    searches = [("threshold", THRESHOLDS)]
    if "merge_boundaries" in current:
        searches = [("merge_boundaries", MERGE_LEVELS)]
    if score_name != IOU:
        searches.append(("min_size", _min_sizes(targets, int(current["min_size"]))))
    for key, candidates in searches:
        for value in candidates:
            if value == current[key]:
                continue
            candidate = {**current, key: value}
            value_score = score(candidate)
            if value_score > best:
                best, current = value_score, candidate
    options = {**base_options, **current}
    return Tuning(options, best, base_options, base_score, score_name, on, tried)


def _min_sizes(targets: Sequence[tuple[np.ndarray, np.ndarray]], base: int) -> tuple[int, ...]:
    """Minimum sizes to try: fractions of the median annotated cell area (px)."""
    areas = np.concatenate(
        [np.bincount(instances.ravel())[1:] for _, instances in targets] + [np.zeros(0)]
    )
    areas = areas[areas > 0]
    median = float(np.median(areas)) if areas.size else 0.0
    sizes = {round(fraction * median) for fraction in MIN_SIZE_FRACTIONS}
    return tuple(sorted(sizes - {base}))


__all__ = ["MERGE_LEVELS", "THRESHOLDS", "Tuning", "tune_postprocess"]

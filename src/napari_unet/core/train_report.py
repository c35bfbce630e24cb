"""What a training run measures on the held-out part and records in the trained model.

:func:`predict_region` predicts only the tiles covering an annotated region, each as a
whole-plane prediction (and Segment, at the training scale) computes it, so held-out
scores and re-tuning see what a user will see. The ``*_record`` functions give the
JSON a model's provenance keeps; :func:`tuning_summary` the one line a front end shows.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from . import normalise
from .holdout import IOU, HoldOut
from .model import UNetConfig
from .predictor import make_predictor
from .tiling import iter_tiles, plan_tiles
from .tuning import TUNED_KEYS, Tuning


def predict_region(
    network: torch.nn.Module,
    device: torch.device,
    image: np.ndarray,
    stats: dict[str, float],
    region: tuple[slice, slice],
    *,
    channels_last: bool,
) -> np.ndarray:
    """Probabilities of ``region`` of one plane from the whole plane's tiles covering it.

    Parameters
    ----------
    network : UNet
        In eval mode.
    image : (H, W) or (C, H, W) ndarray
        The plane, raw; ``stats`` normalise it.
    region : (rows, columns) slices

    Returns
    -------
    (K, h, w) ndarray
        float32 class probabilities of the region.
    """
    config: UNetConfig = network.config
    grid = plan_tiles(image.shape, config)
    rows, cols = region
    wanted = [
        index
        for index in range(grid.total)
        if _overlaps(grid.region(index)[0], rows) and _overlaps(grid.region(index)[1], cols)
    ]
    predictor = make_predictor(network, device, channels_last=channels_last)
    out = np.zeros((config.num_classes, rows.stop - rows.start, cols.stop - cols.start), np.float32)
    tiles = iter_tiles(
        image, predictor, grid, transform=lambda t: normalise.apply(t, stats), tiles=wanted
    )
    for done in tiles:
        (tile_rows, tile_cols), (r, c) = done.region, _overlap(done.region, region)
        out[:, _shift(r, rows.start), _shift(c, cols.start)] = done.data[
            :, _shift(r, tile_rows.start), _shift(c, tile_cols.start)
        ]
    return out


def _overlaps(a: slice, b: slice) -> bool:
    return a.start < b.stop and b.start < a.stop


def _overlap(a: tuple[slice, slice], b: tuple[slice, slice]) -> tuple[slice, slice]:
    """The intersection of two (rows, columns) regions (assumed to overlap)."""
    return tuple(
        slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def _shift(part: slice, origin: int) -> slice:
    """``part`` in the coordinates of an array starting at ``origin``."""
    return slice(part.start - origin, part.stop - origin)


def with_tuned(postprocess: dict[str, Any], tuning: Tuning) -> dict[str, Any]:
    """A model's post-processing recommendation with ``tuning``'s values: for labels
    (instances) where labels read them (``per_output["labels"]`` when the base had one),
    for a mask the threshold of both outputs."""
    values = {k: tuning.options[k] for k in TUNED_KEYS if k in tuning.options}
    per_output = postprocess.get("per_output") or {}
    if tuning.score_name == IOU:
        postprocess["threshold"] = values["threshold"]
        per_output.get("mask", {}).pop("threshold", None)
        return postprocess
    target = per_output.get("labels")
    (postprocess if target is None else target).update(values)
    return postprocess


def holdout_record(
    holdout: HoldOut | None,
    note: str,
    *,
    setting: str,
    score: float | None,
    step: int,
    recommendation: dict[str, Any],
) -> dict[str, Any]:
    """What was held out and the score (None: not measured) of the weights of ``step``
    there, as JSON."""
    if holdout is None:
        return {"held_out": None, "note": note}
    return {
        "held_out": holdout.description,
        "setting": setting,
        "score_name": holdout.score_name,
        "score": score,
        "step": step,
        "postprocess": recommendation,
    }


def tuning_record(
    tuning: Tuning, *, held_out_base: float | None, held_out_tuned: float | None, summary: str
) -> dict[str, Any]:
    """How the recommended post-processing was re-tuned, with the scores (JSON)."""
    return {
        "on": tuning.on,
        "score_name": tuning.score_name,
        "base": {"postprocess": tuning.base_options, "score": tuning.base_score},
        "tuned": {"postprocess": tuning.options, "score": tuning.score},
        "held_out_base_score": held_out_base,
        "held_out_tuned_score": held_out_tuned,
        "summary": summary,
    }


def tuning_summary(
    tuning: Tuning | None,
    holdout: HoldOut | None,
    *,
    held_out_base: float | None,
    held_out_tuned: float | None,
    note: str,
) -> str:
    """One line on the held-out score and the re-tuned post-processing, e.g.
    "held-out F1@0.5 0.840 at the base's settings -> 0.880 with re-tuned threshold
    0.65, min size 30 (4 of 21 cells held out)"; "" without a tuning."""
    if tuning is None:
        return ""
    changed = tuning.changed()
    settings = Tuning.describe(replace(tuning, options=changed, on="")).split(" (")[0]
    tuned = f"re-tuned {settings}" if changed else "the same settings after re-tuning"
    if holdout is None or held_out_tuned is None:
        return (
            f"post-processing: {tuned} ({tuning.score_name} on the training annotations "
            f"{tuning.base_score:.3f} -> {tuning.score:.3f}); {note}"
        )
    return (
        f"held-out {holdout.score_name} {held_out_base:.3f} at the base's "
        f"settings -> {held_out_tuned:.3f} with {tuned} ({holdout.description} "
        "held out)"
    )

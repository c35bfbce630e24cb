"""A held-out part of the annotations, and the score of a model on it.

Fine-tuning on a few painted cells gives no honest number by itself: the training loss
falls on the very pixels it is measured on. :func:`split_holdout` (or
:func:`split_targets` on prepared targets) therefore keeps part of the annotations out
of training, and :func:`holdout_score` scores a model's probabilities there. The
:class:`~napari_unet.core.train.Trainer` calls the same function at every validation
(and chooses its kept weights by it), so a score computed offline from a saved model's
probabilities on the held-out part equals the one the dock showed.

What is held out (:func:`~napari_unet.core.holdout_spec.parse_holdout` reads the setting):

``"auto"`` (default)
    With two or more annotated planes, one plane (the last annotated one holding a
    cell; the training part must keep a cell and background). With one plane,
    ``"20%"``.
``"20%"`` (any fraction of objects)
    About that fraction of the annotated cells of the plane with the most cells
    (chosen at random with the run's seed, at least one), each with the annotated
    background around it: its bounding box grown by half its diameter (at least
    :data:`MIN_PAD` px), so the held-out part holds both classes. Pixels of other
    cells inside those boxes stay in training. At least :data:`MIN_CELLS` annotated
    cells are needed; with fewer, nothing is held out and there is no score.
``"1 plane"`` (any number of planes)
    That many annotated planes, the last ones holding a cell.
``"off"``
    Everything trains; no score.

Held-out pixels become unannotated (``IGNORE``) in the training targets. This works on
:class:`~napari_unet.core.annotations.Targets`, so sparse, dense and binary annotations
are split alike.

The score (:func:`holdout_score`, :func:`score_targets`):

- **instances** (sparse and dense annotations): F1 at IoU 0.5. The probabilities are
  post-processed as Segment does for labels (:func:`labels_from_probabilities`, with
  the options given, by default threshold 0.5). Each predicted object lying for more
  than half of its pixels on pixels that are not held-out annotations (unannotated,
  outside the held-out region's annotations, or a training cell) is ignored; every
  other predicted object is scored: matched one-to-one to a held-out cell at IoU >= 0.5
  (a true positive) or a false positive (it lies mostly on annotated background).
  Unmatched held-out cells are false negatives. IoU is computed over whole objects.
  Counts are summed over the held-out parts: F1 = 2 TP / (2 TP + FP + FN), 1.0 when
  there is nothing to find and nothing was found.
- **mask** (binary annotations): IoU of the foreground (probability above the
  threshold) with the annotated foreground, over held-out annotated pixels only,
  summed over the parts (1.0 when both are empty).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.annotations import (
    BACKGROUND,
    FOREGROUND,
    IGNORE,
    Targets,
    check_both_classes,
    detect_convention,
    targets_from_annotation,
)
from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.holdout_spec import HoldoutSpec, parse_holdout
from napari_unet.core.metrics import iou_matrix, match_counts
from napari_unet.core.postprocess import (
    foreground_probability,
    grow_and_merge,
    instance_labels,
    semantic_mask,
)

#: Names of the two scores.
F1 = "F1@0.5"
IOU = "IoU"
#: Fewest annotated cells of a plane that a fraction of objects is held out from.
MIN_CELLS = 5
#: Smallest margin (px) of annotated background kept around a held-out cell.
MIN_PAD = 4


@dataclass(frozen=True)
class HeldOutPart:
    """The held-out annotations of one plane.

    Attributes
    ----------
    plane : int
        Index of the plane among the annotated planes that were split.
    region : (slice, slice)
        Rows and columns of the plane that hold the held-out annotations (with a
        margin); scores are computed on this region.
    classes : (h, w) ndarray of int64
        The region's held-out annotations: 0 background, 1 cell, ``IGNORE`` elsewhere.
    instances : (h, w) ndarray of int32
        The held-out cells, 1..n; 0 elsewhere.
    """

    plane: int
    region: tuple[slice, slice]
    classes: np.ndarray
    instances: np.ndarray

    @property
    def cells(self) -> int:
        """Number of held-out cells."""
        return int(np.unique(self.instances[self.instances > 0]).size)


@dataclass(frozen=True)
class HoldOut:
    """What was held out from training, and how it is scored.

    Attributes
    ----------
    parts : tuple of HeldOutPart
        One per plane holding held-out annotations.
    score_name : {"F1@0.5", "IoU"}
        F1 at IoU 0.5 of instances, or IoU of a binary mask.
    description : str
        For people: "annotated plane 3 of 3 (12 cells)", "4 of 21 cells".
    """

    parts: tuple[HeldOutPart, ...]
    score_name: str
    description: str


@dataclass(frozen=True)
class Split:
    """Training targets and the held-out part (None when nothing is held out, and why)."""

    training: list[Targets]
    holdout: HoldOut | None
    note: str = ""


def split_holdout(
    annotations: Sequence[np.ndarray],
    convention: str = "sparse",
    holdout: Any = "auto",
    *,
    seed: int = 0,
) -> Split:
    """Split annotated planes into training targets and a held-out part.

    Parameters
    ----------
    annotations : sequence of (H, W) ndarray
        Annotated planes in ``convention`` (see
        :func:`~napari_unet.core.annotations.targets_from_annotation`).
    convention : {"sparse", "dense", "binary", "auto"}
        How to read them ("auto" resolves over the whole set: binary only if every
        plane looks binary).
    holdout : str, float, int or HoldoutSpec
        What to hold out (:func:`parse_holdout`).
    seed : int
        Chooses the held-out cells of a fraction.

    Returns
    -------
    Split
        ``training`` has one :class:`Targets` per plane.
    """
    planes = [np.asarray(a) for a in annotations]
    if convention == "auto":
        kinds = {detect_convention(p) for p in planes}
        convention = "binary" if kinds == {"binary"} else "sparse"
    targets = [targets_from_annotation(p, convention, require_both_classes=False) for p in planes]
    return split_targets(targets, holdout, binary=convention == "binary", seed=seed)


def split_targets(
    targets: Sequence[Targets], holdout: Any = "auto", *, binary: bool = False, seed: int = 0
) -> Split:
    """:func:`split_holdout` on prepared targets (one (H, W) :class:`Targets` per plane).

    ``binary`` scores the held-out part as a mask (IoU) rather than instances (F1).
    ``Split.training`` has one target per given plane, held-out pixels unannotated
    (a held-out plane has nothing annotated left).
    Nothing is held out (``Split.holdout`` None, ``note`` says why) when the setting is
    off or the annotations are too few; the training part always keeps both classes.
    """
    spec = parse_holdout(holdout)
    targets = list(targets)
    score_name = IOU if binary else F1
    if spec.mode == "off":
        return Split(targets, None, "hold-out off")
    if spec.mode == "planes" or (spec.mode == "auto" and len(targets) >= 2):
        count = spec.planes if spec.mode == "planes" else 1
        split = _hold_out_planes(targets, count, score_name)
        if split is not None or spec.mode == "planes":
            return split or Split(targets, None, _NOT_ENOUGH_PLANES.format(count=count))
    return _hold_out_cells(targets, spec.fraction, score_name, seed)


_NOT_ENOUGH_PLANES = (
    "no score: holding out {count} plane(s) would leave no plane with both a cell and "
    "background to train on"
)


def _has_cell(target: Targets) -> bool:
    return bool((target.classes == FOREGROUND).any())


def _trains(targets: list[Targets]) -> bool:
    try:
        check_both_classes(targets)
    except AnnotationError:
        return False
    return True


def _hold_out_planes(targets: list[Targets], count: int, score_name: str) -> Split | None:
    """The last ``count`` planes holding a cell, if the rest still trains."""
    chosen = [i for i, t in enumerate(targets) if _has_cell(t)][-count:]
    if len(chosen) < count:
        return None
    training = [_nothing_annotated(t) if i in chosen else t for i, t in enumerate(targets)]
    if not _trains(training):
        return None
    parts = tuple(_whole_plane_part(i, targets[i]) for i in chosen)
    cells = sum(p.cells for p in parts)
    where = ", ".join(str(i + 1) for i in chosen)
    noun = "plane" if count == 1 else "planes"
    description = f"annotated {noun} {where} of {len(targets)} ({cells} cells)"
    return Split(training, HoldOut(parts, score_name, description))


def _nothing_annotated(target: Targets) -> Targets:
    """``target`` with every pixel unannotated (a held-out plane's training targets)."""
    return Targets(np.full_like(target.classes, IGNORE), np.zeros_like(target.instances))


def _whole_plane_part(index: int, target: Targets) -> HeldOutPart:
    region = _bounding_region(target.classes != IGNORE, MIN_PAD)
    return HeldOutPart(index, region, target.classes[region], target.instances[region])


def _hold_out_cells(targets: list[Targets], fraction: float, score_name: str, seed: int) -> Split:
    counts = [int(t.instances.max()) for t in targets]
    plane = int(np.argmax(counts)) if counts else 0
    if not counts or counts[plane] < MIN_CELLS:
        most = max(counts, default=0)
        return Split(
            targets,
            None,
            f"no score: {most} annotated cell(s) in a plane, at least {MIN_CELLS} are "
            "needed to hold some out (or annotate a second plane)",
        )
    target = targets[plane]
    ids = np.unique(target.instances[target.instances > 0])
    count = max(1, round(fraction * len(ids)))
    rng = np.random.default_rng(seed)
    held_ids = np.sort(rng.choice(ids, size=count, replace=False))
    held_pixels = _neighbourhoods(target, held_ids)
    training_classes = np.where(held_pixels, IGNORE, target.classes)
    training_instances = np.where(held_pixels, 0, target.instances).astype(np.int32)
    training = list(targets)
    training[plane] = Targets(training_classes, training_instances)
    if not _trains(training):
        return Split(targets, None, "no score: the held-out cells hold all the background")
    region = _bounding_region(held_pixels, 0)
    classes = np.where(held_pixels, target.classes, IGNORE)[region]
    instances = np.where(held_pixels, target.instances, 0)[region].astype(np.int32)
    part = HeldOutPart(plane, region, classes, instances)
    description = f"{count} of {len(ids)} cells"
    if len(targets) > 1:
        description += f" of annotated plane {plane + 1}"
    return Split(training, HoldOut((part,), score_name, description))


def _neighbourhoods(target: Targets, held_ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: the held-out cells and the annotated background in their grown
    bounding boxes (pixels of other cells excluded)."""
    held = np.zeros(target.classes.shape, bool)
    instances = target.instances
    background = target.classes == BACKGROUND
    for cell in held_ids:
        pixels = instances == cell
        diameter = 2 * math.sqrt(pixels.sum() / math.pi)
        box = _bounding_region(pixels, max(MIN_PAD, round(diameter / 2)))
        held[box] |= background[box]
        held |= pixels
    return held


def _bounding_region(where: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of ``where`` grown by ``pad`` px, clipped to the plane."""
    rows, cols = np.nonzero(where)
    if rows.size == 0:
        return slice(0, where.shape[0]), slice(0, where.shape[1])
    height, width = where.shape
    return (
        slice(max(int(rows.min()) - pad, 0), min(int(rows.max()) + 1 + pad, height)),
        slice(max(int(cols.min()) - pad, 0), min(int(cols.max()) + 1 + pad, width)),
    )


# ----------------------------------------------------------------------- scoring
def labels_from_probabilities(
    probabilities: np.ndarray, options: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Instance labels as Segment makes them from a plane's probabilities.

    Parameters
    ----------
    probabilities : (K, H, W) ndarray
        Class probabilities.
    options : mapping, optional
        Post-processing (``threshold``, ``min_size``, ``split_touching``,
        ``fill_boundaries``, ``merge_boundaries``), e.g. a model's
        :func:`~napari_unet.core.segment.recommended_options`; defaults as
        :class:`~napari_unet.core.segment.SegmentOptions`.

    Returns
    -------
    (H, W) int32
    """
    options = dict(options or {})
    threshold = float(options.get("threshold", 0.5))
    min_size = int(options.get("min_size", 0))
    if float(options.get("merge_boundaries", 0.0)) > 0:
        return grow_and_merge(
            foreground_probability(probabilities),
            seed_threshold=threshold,
            merge_below=float(options["merge_boundaries"]),
            min_size=min_size,
        )
    return instance_labels(
        semantic_mask(probabilities, threshold=threshold),
        min_size=min_size,
        split_touching=bool(options.get("split_touching", False)),
        fill_boundaries=bool(options.get("fill_boundaries", False)),
    )


def instance_counts(
    labels: np.ndarray, classes: np.ndarray, instances: np.ndarray
) -> tuple[int, int, int]:
    """TP, FP, FN at IoU 0.5 of predicted ``labels`` against annotated ``instances``.

    Parameters
    ----------
    labels : (H, W) int
        Predicted objects (0 = none).
    classes : (H, W) int
        Annotations: 0 background, 1 cell, ``IGNORE`` not annotated.
    instances : (H, W) int
        Annotated cells (0 = none).

    Returns
    -------
    (int, int, int)
        Predicted objects lying for more than half of their pixels on unannotated
        pixels are left out; see the module docstring.
    """
    labels = np.asarray(labels)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    annotated = np.bincount(
        inverse.ravel(), weights=(classes != IGNORE).ravel(), minlength=ids.size
    )
    sizes = np.bincount(inverse.ravel(), minlength=ids.size)
    scored = (ids != 0) & (annotated * 2 >= sizes)
    kept = np.where(scored[inverse], labels, 0)
    return match_counts(iou_matrix(np.asarray(instances), kept), 0.5)


def mask_counts(
    probabilities: np.ndarray, classes: np.ndarray, threshold: float = 0.5
) -> tuple[int, int]:
    """Intersection and union of the predicted foreground (``(K, H, W)`` probabilities
    above ``threshold``) with the annotated foreground, over annotated pixels of the
    ``(H, W)`` ``classes``."""
    predicted = semantic_mask(probabilities, threshold=threshold) > 0
    annotated = classes != IGNORE
    truth = classes == FOREGROUND
    return int((predicted & truth).sum()), int(((predicted | truth) & annotated).sum())


def score_targets(
    probabilities: Sequence[np.ndarray],
    targets: Sequence[tuple[np.ndarray, np.ndarray]],
    score_name: str = F1,
    options: Mapping[str, Any] | None = None,
) -> float:
    """F1 at IoU 0.5 (``"F1@0.5"``) or foreground IoU (``"IoU"``) over several planes.

    Parameters
    ----------
    probabilities : sequence of (K, H, W) ndarray
        One per plane.
    targets : sequence of ((H, W) classes, (H, W) instances)
        The annotations of each plane (see :class:`HeldOutPart`).
    score_name : {"F1@0.5", "IoU"}
        Which score; counts are summed over the planes before dividing.
    options : mapping, optional
        Post-processing (see :func:`labels_from_probabilities`).

    Returns
    -------
    float
    """
    if score_name == IOU:
        threshold = float((options or {}).get("threshold", 0.5))
        counts = [
            mask_counts(p, c, threshold) for p, (c, _) in zip(probabilities, targets, strict=True)
        ]
        intersection, union = (sum(values) for values in zip(*counts, strict=True))
        return 1.0 if union == 0 else intersection / union
    if score_name != F1:
        raise InputError(f"score must be {F1!r} or {IOU!r}, got {score_name!r}")
    tp = fp = fn = 0
    for p, (classes, instances) in zip(probabilities, targets, strict=True):
        a, b, c = instance_counts(labels_from_probabilities(p, options), classes, instances)
        tp, fp, fn = tp + a, fp + b, fn + c
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def holdout_score(
    probabilities: Sequence[np.ndarray] | np.ndarray,
    holdout: HoldOut,
    options: Mapping[str, Any] | None = None,
) -> float:
    """The score of a model on the held-out part: what the trainer and the dock report.

    Parameters
    ----------
    probabilities : (K, H, W) ndarray or a sequence of them
        The model's probabilities, one array per held-out part (in ``holdout.parts``
        order): of the whole annotated plane (cropped here to the part's region) or of
        the region alone.
    holdout : HoldOut
        From :func:`split_holdout` (or ``Trainer.holdout``).
    options : mapping, optional
        Post-processing, e.g. the model's
        :func:`~napari_unet.core.segment.recommended_options` for ``"labels"``.

    Returns
    -------
    float
        F1 at IoU 0.5, or foreground IoU for a mask (see the module docstring).
    """
    if isinstance(probabilities, np.ndarray) and probabilities.ndim == 3:
        probabilities = [probabilities]
    if len(probabilities) != len(holdout.parts):
        raise InputError(
            f"{len(probabilities)} probability maps for {len(holdout.parts)} held-out parts"
        )
    cropped = [
        _crop(np.asarray(p), part) for p, part in zip(probabilities, holdout.parts, strict=True)
    ]
    targets = [(part.classes, part.instances) for part in holdout.parts]
    return score_targets(cropped, targets, holdout.score_name, options)


def _crop(probabilities: np.ndarray, part: HeldOutPart) -> np.ndarray:
    """The part's region of a plane's probabilities (as is when already that size)."""
    if probabilities.shape[-2:] == part.classes.shape:
        return probabilities
    rows, cols = part.region
    if probabilities.shape[-2] < rows.stop or probabilities.shape[-1] < cols.stop:
        raise InputError(
            f"probabilities of shape {probabilities.shape} do not cover the held-out region "
            f"rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}"
        )
    return probabilities[:, rows, cols]


__all__ = [
    "F1",
    "IOU",
    "MIN_CELLS",
    "HeldOutPart",
    "HoldOut",
    "HoldoutSpec",
    "Split",
    "holdout_score",
    "instance_counts",
    "labels_from_probabilities",
    "mask_counts",
    "parse_holdout",
    "score_targets",
    "split_holdout",
    "split_targets",
]

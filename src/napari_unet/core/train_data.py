"""A training run's data: annotated planes, their targets and weight maps, the held-out
part, and the patches cut from them.

:func:`prepare_data` turns ``(image plane, annotation plane)`` pairs into
:class:`PreparedData`: targets (:func:`~napari_unet.core.annotations.targets_from_annotation`),
the paper's weight maps (:func:`~napari_unet.core.weights.weight_map`), normalised and
mirror-padded :class:`TrainingPlane` s, the held-out part
(:func:`~napari_unet.core.holdout.split_targets`) and fixed validation patches.
:func:`sample_patches` cuts a batch of input-sized patches centred near annotated
pixels, so a few painted cells in a large image are found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from . import normalise
from .annotations import (
    Targets,
    check_annotation_matches,
    check_both_classes,
    detect_convention,
    targets_from_annotation,
)
from .errors import AnnotationError
from .holdout import F1, IOU, HoldOut, split_targets
from .io import as_planes
from .weights import weight_map

Convention = Literal["sparse", "dense", "binary", "auto"]
#: ``(image plane, annotation plane)``: ``(H, W)`` or ``(C, H, W)``, and ``(H, W)``.
Pair = tuple[np.ndarray, np.ndarray]
#: ``(images (N, C, h, w) float32, labels (N, h, w) int64, weights (N, h, w) float32)``.
Patches = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: Label value of pixels the loss ignores (unannotated, or outside the image).
IGNORE = -1

#: Patch centres kept per plane; a random subset keeps memory small for dense masks.
MAX_CENTRES = 4096


@dataclass
class TrainingPlane:
    """One annotated plane, mirror-padded so any patch centred inside it can be cut."""

    image: np.ndarray  # ([C,] H + 2p, W + 2p) float32, normalised
    labels: np.ndarray  # (H + 2p, W + 2p) int64, IGNORE outside annotations
    weights: np.ndarray  # (H + 2p, W + 2p) float32, 0 where ignored
    centres: np.ndarray  # (M, 2) annotated pixel coordinates in padded coordinates
    annotated_count: int  # all annotated pixels (centres may be a subsample)


@dataclass(frozen=True)
class PatchGeometry:
    """Sizes of the training patches (pixels): the network's input, its valid output,
    and the margin between them on each side."""

    input: int
    output: int
    margin: int


@dataclass
class PreparedData:
    """Everything a run trains and validates on (see :func:`prepare_data`)."""

    pairs: list[Pair]  # the training pairs as given (held-out parts included)
    validation_pairs: list[Pair] | None  # explicit validation data, if any
    targets: list[Targets]  # of every training pair
    training_targets: list[Targets]  # the same without the held-out parts
    planes: list[TrainingPlane]  # the planes with anything left to train on
    validation_batch: Patches  # fixed patches the validation loss is measured on
    holdout: HoldOut | None
    holdout_note: str
    score_name: str  # F1 (instances) or IOU (binary masks)
    holdout_stats: list[dict[str, float]]  # normalisation statistics of the held-out planes

    @property
    def holdout_parts(self) -> tuple:
        return self.holdout.parts if self.holdout is not None else ()


def as_list(arrays: Sequence[Any] | Any) -> list[Any]:
    """One array (anything with a shape) or a sequence of arrays, as a list."""
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "shape"):
        return [arrays]
    return list(arrays)


def annotated_planes(
    images: Sequence[Any] | Any,
    annotations: Sequence[Any] | Any,
    *,
    in_channels: int,
    channel_axis: int | None,
    channels: Sequence[int] | None,
    skip_empty: bool,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(image plane, annotation plane)`` pairs of every plane with any annotation.

    Images of any layout :func:`~napari_unet.core.io.as_planes` accepts (leading t, z
    axes; a channel axis); each annotation has its image's shape without the channel
    axis. Only the planes whose annotation is not all zero are read from the image
    (lazily for zarr or dask images).

    Returns
    -------
    list of ((H, W) or (C, H, W) ndarray, (H, W) ndarray)
    """
    images, annotations = as_list(images), as_list(annotations)
    stacks = [
        as_planes(image, in_channels=in_channels, channel_axis=channel_axis, channels=channels)
        for image in images
    ]
    if len(images) != len(annotations):
        image_planes = sum(int(stack.shape[0]) for stack, _ in stacks)
        label_planes = sum(
            math.prod(np.shape(a)[:-2]) if np.ndim(a) > 2 else 1 for a in annotations
        )
        raise AnnotationError(
            f"{image_planes} image planes but {label_planes} annotation planes; give one "
            "annotation plane per image plane"
        )
    pairs = []
    for (stack, restore), annotation in zip(stacks, annotations, strict=True):
        annotation = np.asarray(annotation)
        expected = (*restore.leading, *stack.shape[-2:])
        check_annotation_matches(expected, annotation.shape, without_channels=stack.ndim == 4)
        flat = annotation.reshape((-1, *annotation.shape[-2:]))
        for index, plane_labels in enumerate(flat):
            if skip_empty and not np.any(plane_labels):
                continue
            pairs.append((np.asarray(stack[index]), plane_labels))
    return pairs


def resolve_convention(convention: Convention, annotations: list[np.ndarray]) -> Convention:
    """Resolve "auto" once for the whole set: binary only if every plane looks binary."""
    if convention != "auto" or not annotations:
        return convention
    kinds = {detect_convention(np.asarray(annotation)) for annotation in annotations}
    return "binary" if kinds == {"binary"} else "sparse"


def pair_targets(pairs: list[Pair], convention: Convention) -> list[Targets]:
    """The training targets of each annotated plane.

    Classes are checked over the whole set: one plane may hold only background strokes.
    """
    convention = resolve_convention(convention, [a for _, a in pairs])
    targets = [
        targets_from_annotation(annotation, convention, require_both_classes=False)
        for _, annotation in pairs
    ]
    if targets:
        check_both_classes(targets)
    return targets


def plane_stats(image: np.ndarray, normalisation: dict[str, Any]) -> dict[str, float]:
    """Normalisation statistics of one ``(H, W)`` or ``(C, H, W)`` plane."""
    return normalise.compute_stats(image, normalisation, per_channel=image.ndim == 3)


def prepare_data(
    pairs: list[Pair],
    validation_pairs: list[Pair] | None,
    *,
    convention: Convention,
    config: Any,
    normalisation: dict[str, Any],
    geometry: PatchGeometry,
    rng: np.random.Generator,
) -> PreparedData:
    """Targets, weight maps, padded planes and validation patches of ``pairs``.

    Parameters
    ----------
    pairs : list of ((H, W) or (C, H, W) ndarray, (H, W) ndarray)
        Annotated planes (see :func:`annotated_planes`).
    validation_pairs : list of pairs, optional
        Explicit validation data; by default fixed patches of the training planes, and
        ``config.holdout`` decides what is held out and scored.
    convention : {"sparse", "dense", "binary", "auto"}
        How to read the annotations.
    config : TrainConfig
        ``holdout``, ``seed``, ``w0``, ``sigma`` and ``validation_patches`` are read.
    normalisation : dict
        The model's normalisation spec.
    geometry : PatchGeometry
        Patch sizes (the planes are padded by ``margin + output``).
    rng : numpy.random.Generator
        Draws the patch centres kept of large annotations.

    Raises
    ------
    AnnotationError
        When nothing is left to train on.
    """
    targets = pair_targets(pairs, convention)
    holdout = "off" if validation_pairs is not None else config.holdout
    binary = resolve_convention(convention, [a for _, a in pairs]) == "binary"
    split = split_targets(targets, holdout, binary=binary, seed=config.seed)
    planes = _planes(pairs, split.training, config, normalisation, geometry, rng)
    if not planes:
        raise AnnotationError(
            "nothing is annotated: paint some background with label 1 and at least one "
            "cell with label 2 or higher"
        )
    validation_planes = planes
    if validation_pairs is not None:
        validation_targets = pair_targets(validation_pairs, convention)
        validation_planes = _planes(
            validation_pairs, validation_targets, config, normalisation, geometry, rng
        )
    patch_rng = np.random.default_rng(config.seed + 1)
    parts = split.holdout.parts if split.holdout is not None else ()
    return PreparedData(
        pairs=pairs,
        validation_pairs=validation_pairs,
        targets=targets,
        training_targets=split.training,
        planes=planes,
        validation_batch=sample_patches(
            validation_planes, config.validation_patches, patch_rng, geometry
        ),
        holdout=split.holdout,
        holdout_note=split.note,
        score_name=IOU if binary else F1,
        holdout_stats=[plane_stats(pairs[p.plane][0], normalisation) for p in parts],
    )


def _planes(
    pairs: list[Pair],
    targets: list[Targets],
    config: Any,
    normalisation: dict[str, Any],
    geometry: PatchGeometry,
    rng: np.random.Generator,
) -> list[TrainingPlane]:
    """Normalised, padded planes with their labels and weight maps."""
    pad = geometry.margin + geometry.output
    planes = []
    for (image, _), target in zip(pairs, targets, strict=True):
        if not target.annotated.any():  # a held-out plane has nothing left to train on
            continue
        weights = weight_map(
            target.instances, classes=target.classes, w0=config.w0, sigma=config.sigma
        )
        normalised = normalise.apply(image, plane_stats(image, normalisation))
        labels = target.classes.astype(np.int64, copy=False)
        planes.append(pad_plane(normalised, labels, weights, pad, rng))
    return planes


def pad_plane(
    image: np.ndarray, labels: np.ndarray, weights: np.ndarray, pad: int, rng: np.random.Generator
) -> TrainingPlane:
    """Mirror-pad the image (context, as in the paper) and pad targets as ignored."""
    spatial = [(0, 0)] * (image.ndim - 2) + [(pad, pad)] * 2  # channels are not padded
    padded_image = np.pad(image, spatial, mode="symmetric").astype(np.float32, copy=False)
    padded_labels = np.pad(labels, pad, mode="constant", constant_values=IGNORE)
    padded_weights = np.pad(weights.astype(np.float32), pad, mode="constant")
    centres = np.argwhere(labels != IGNORE)
    count = len(centres)
    if count > MAX_CENTRES:
        centres = centres[rng.choice(count, MAX_CENTRES, replace=False)]
    return TrainingPlane(padded_image, padded_labels, padded_weights, centres + pad, count)


def sample_patches(
    planes: list[TrainingPlane], count: int, rng: np.random.Generator, geometry: PatchGeometry
) -> Patches:
    """Cut ``count`` input-sized patches centred near annotated pixels.

    A plane is chosen in proportion to its annotated pixels, then one of its annotated
    pixels, moved by up to a quarter of the output size (so patches do not always
    centre on the same pixels).

    Returns
    -------
    images : (count, C, h, w) float32 tensor
    labels : (count, h, w) int64 tensor
        :data:`IGNORE` where nothing is annotated.
    weights : (count, h, w) float32 tensor
    """
    sizes = np.array([p.annotated_count for p in planes], dtype=np.float64)
    choice = rng.choice(len(planes), size=count, p=sizes / sizes.sum())
    half = geometry.input // 2
    jitter = geometry.output // 4
    images, labels, weights = [], [], []
    for index in choice:
        plane = planes[index]
        row, col = plane.centres[rng.integers(len(plane.centres))]
        row = _clip(row + rng.integers(-jitter, jitter + 1), half, plane.image.shape[-2])
        col = _clip(col + rng.integers(-jitter, jitter + 1), half, plane.image.shape[-1])
        window = (
            slice(row - half, row - half + geometry.input),
            slice(col - half, col - half + geometry.input),
        )
        images.append(plane.image[(..., *window)])
        labels.append(plane.labels[window])
        weights.append(plane.weights[window])
    batch = np.stack(images)
    return (
        torch.from_numpy(batch[:, None] if batch.ndim == 3 else batch),
        torch.from_numpy(np.stack(labels)),
        torch.from_numpy(np.stack(weights)),
    )


def _clip(centre: int, half: int, size: int) -> int:
    """A patch centre moved inside an axis of ``size`` so the patch fits."""
    return int(np.clip(centre, half, size - half - 1))


def crop_to_output(tensor: torch.Tensor, geometry: PatchGeometry) -> torch.Tensor:
    """The part of patch targets ``(..., h, w)`` the network's valid output covers."""
    m = geometry.margin
    return tensor[..., m : m + geometry.output, m : m + geometry.output]


def annotated_region(target: Targets) -> tuple[slice, slice] | None:
    """The bounding box of a plane's annotated pixels, or None when there are none."""
    rows, cols = np.nonzero(target.classes != IGNORE)
    if rows.size == 0:
        return None
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)

"""Training and fine-tuning as a cancellable generator of progress events.

A :class:`Trainer` owns the network, the optimiser and the prepared data. Its
:meth:`Trainer.run` generator yields :mod:`~napari_unet.core.events` (``TrainStep``,
``Validation``, ``Preview``, ``TrainingFinished``) so the napari widget (in a
``thread_worker``) and the CLI (with a progress bar) share one loop.

Cancel is ``generator.close()``: the trainer keeps the best and the last weights
(:meth:`Trainer.best_bundle`, :meth:`Trainer.last_bundle`). Pause is the same; after
:meth:`Trainer.update_annotations` a new :meth:`Trainer.run` resumes the same run
(same network, optimiser state and step counter). :attr:`Trainer.has_progress` says
whether any step has completed: front ends save nothing before that.

Settings changed between two runs take effect through :meth:`Trainer.update_config`
(learning rate, batch size, w0/sigma, augmentation, device...); it returns a
:class:`ConfigUpdate` saying what changed and which settings a run keeps, and why
(:data:`FIXED_MID_RUN`). The kept best weights are re-scored whenever the validation
patches change (new annotations, w0/sigma, patch size), so "best" always compares
losses measured the same way.

Non-finite numbers never end up in the weights: every step is checked (loss, network
weights and statistics, optimiser state) and a step that produced NaN or infinity is
undone (the network and optimiser get back the state they had before it) and ends the
run; the final :class:`~napari_unet.core.events.TrainingFinished` says what happened
(:attr:`Trainer.diverged`). An exception or Ctrl+C inside a step undoes it the same way,
so a half-applied update is never kept.

Data flow per step: sample patches centred on annotated pixels (so a few painted
cells in a large image are found) from mirror-padded planes, deform them together
with their labels and the precomputed weight map (paper eq. 2) on the training
device, crop the targets to the valid network output, and minimise the weighted
cross-entropy.

Scale: the trained model records the pixel size of its training images
(:attr:`TrainConfig.pixel_size`) and the median diameter of the annotated cells, in
training pixels (:func:`~napari_unet.core.metrics.median_object_diameter`, border-cut
cells left out), so that segmenting can later bring other images to that scale. A
fine-tuned model without a given pixel size inherits its base model's.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, fields, replace
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
from .augment import AugmentConfig, augment_batch
from .calibration import PixelSize, parse_pixel_size
from .device import amp_context
from .errors import AnnotationError, InputError, ModelFileError
from .events import Preview, TrainingFinished, TrainStep, Validation
from .holdout import F1, IOU, HoldOut, holdout_score, parse_holdout, split_targets
from .io import as_planes
from .losses import weighted_cross_entropy
from .metrics import median_object_diameter
from .model import UNet, UNetConfig, margin, nearest_valid_input_size, pick_device
from .modelfile import ModelBundle
from .predictor import make_predictor
from .segment import recommended_options
from .tiling import iter_tiles, plan_tiles, predict_plane
from .tuning import TUNED_KEYS, Tuning, tune_postprocess
from .weights import weight_map

Convention = Literal["sparse", "dense", "binary", "auto"]
TrainEvent = TrainStep | Validation | Preview | TrainingFinished

#: Largest float32: the optimisers cannot apply a larger learning rate.
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Label value of pixels the loss ignores (unannotated, or outside the image).
IGNORE = -1


@dataclass(frozen=True)
class TrainConfig:
    """Options of a training run.

    Parameters
    ----------
    steps : int
        Optimisation steps of one :meth:`Trainer.run` call.
    batch_size : int
        Patches per step.
    patch_size : int or None
        Network input patch size in pixels (rounded to a valid size); ``None`` picks
        an output patch of about 128 px.
    learning_rate : float
        Peak learning rate.
    optimizer : {"adam", "sgd"}
        Adam (default) or the paper's SGD with momentum 0.99.
    schedule : {"constant", "cosine"}
        Learning-rate schedule over ``steps``.
    w0, sigma : float
        Border-weight amplitude and width of paper eq. 2 (10 and 5 px).
    augment : AugmentConfig
        Elastic deformation, flips, rotations, intensity changes (and, when asked,
        blur and contrast inversion for transmitted light).
    validation_every : int
        Steps between validations (which decide the kept best weights).
    preview_every : int
        Steps between previews on the preview plane (0 disables previews).
    freeze_norm : bool
        Keep BatchNorm statistics fixed while fine-tuning (their scale and shift still
        learn). Off by default: in benchmarks/bench_builtin.py freezing them did not help.
    seed : int
        Seeds patch sampling, augmentation and (for new networks) initialisation.
    device : str
        "auto", "cpu", "cuda" or "mps".
    amp : bool or None
        Mixed precision (float16 autocast with a gradient scaler); ``None`` means on
        CUDA only. Never used on other devices, where our torch range may not support it.
    pixel_size : PixelSize or None
        Pixel size of the training images, recorded in the trained model; also accepts
        what :func:`~napari_unet.core.calibration.parse_pixel_size` reads (``"4 nm"``,
        ``0.325`` for µm, ``(y, x)``). ``None``: unknown (a base model's is kept).
    holdout : str, float or int
        Annotations held out of training and scored at every validation, which then
        decides the kept best weights (:mod:`~napari_unet.core.holdout`): ``"auto"``
        (one plane of several, else 20 % of the cells), ``"off"``, a fraction of the
        cells (``"20%"``, 0.2) or a number of planes (``"1 plane"``, 1). Stored as the
        canonical text. Ignored when explicit validation data is given.
    tune_postprocess : bool
        When a run ends (completed, or stopped with :meth:`Trainer.request_stop`),
        re-tune the post-processing for the best weights on the training annotations
        (:func:`~napari_unet.core.tuning.tune_postprocess`); the model recommends it.
    """

    steps: int = 200
    batch_size: int = 4
    patch_size: int | None = None
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    w0: float = 10.0
    sigma: float = 5.0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    validation_every: int = 25
    validation_patches: int = 8
    preview_every: int = 0
    freeze_norm: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    pixel_size: PixelSize | None = None
    holdout: str | float | int = "auto"
    tune_postprocess: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "holdout", parse_holdout(self.holdout).text)
        if self.pixel_size is not None and not isinstance(self.pixel_size, PixelSize):
            # frozen: the parsed value is set through object.__setattr__
            object.__setattr__(self, "pixel_size", parse_pixel_size(self.pixel_size))
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("steps and batch size must be at least 1")
        if not 0 < self.learning_rate <= FLOAT32_MAX:  # NaN fails too
            raise InputError(
                f"learning rate must be positive and at most {FLOAT32_MAX:.3g}, got "
                f"{self.learning_rate}"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


#: Settings a run keeps when resumed with other values (:meth:`Trainer.update_config`),
#: and why; the architecture and the base model are not settings of a run at all.
FIXED_MID_RUN = {
    "optimizer": "the run's optimiser state (its momentum) belongs to it; start a new run "
    "to switch",
    "seed": "the run's random streams continue; start a new run to reseed",
}

#: Settings that change the prepared data (weight maps, padding, validation patches).
_DATA_SETTINGS = frozenset({"w0", "sigma", "patch_size", "validation_patches", "holdout"})

#: How settings are named in messages (others: the field name with spaces).
_SETTING_NAMES = {"w0": "border weight w0", "sigma": "border sigma", "augment": "augmentation"}


def _setting_value(name: str, value: Any) -> str:
    """A setting's value as a message shows it."""
    if name == "augment":
        return "on" if value.enabled else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class ConfigUpdate:
    """What :meth:`Trainer.update_config` changed in a run, and what the run kept.

    Parameters
    ----------
    changed : dict of str to (old, new)
        :class:`TrainConfig` fields now in effect with a new value.
    kept : dict of str to str
        Fields given another value that the run keeps (see :data:`FIXED_MID_RUN`),
        with the reason.
    """

    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: "learning rate 0.001 -> 0.0001, batch size 4 -> 2; kept optimizer
        adam: ..."; "" when nothing was asked to change."""
        parts = []
        if self.changed:
            parts.append(
                ", ".join(
                    f"{_SETTING_NAMES.get(name, name.replace('_', ' '))} "
                    + (
                        f"{_setting_value(name, old)} -> {_setting_value(name, new)}"
                        if name != "augment" or old.enabled != new.enabled
                        else "changed"
                    )
                    for name, (old, new) in self.changed.items()
                )
            )
        parts.extend(f"kept {name.replace('_', ' ')}: {why}" for name, why in self.kept.items())
        return "; ".join(parts)


@dataclass
class _Plane:
    """One annotated plane, mirror-padded so any patch centred inside it can be cut."""

    image: np.ndarray  # ([C,] H + 2p, W + 2p) float32, normalised
    labels: np.ndarray  # (H + 2p, W + 2p) int64, IGNORE outside annotations
    weights: np.ndarray  # (H + 2p, W + 2p) float32, 0 where ignored
    centres: np.ndarray  # (M, 2) annotated pixel coordinates in padded coordinates
    annotated_count: int  # all annotated pixels (centres may be a subsample)


def _as_list(arrays: Sequence[Any] | Any) -> list[Any]:
    """One array (anything with a shape) or a sequence of arrays, as a list."""
    if isinstance(arrays, np.ndarray) or hasattr(arrays, "shape"):
        return [arrays]
    return list(arrays)


def _annotated_planes(
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
    images, annotations = _as_list(images), _as_list(annotations)
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


class Trainer:
    """A resumable training run on images and their annotations.

    Parameters
    ----------
    base : ModelBundle or UNetConfig
        Model to fine-tune, or the architecture of a network trained from scratch.
    images : array-like or sequence of array-likes
        ``(H, W)`` images or stacks with up to two leading axes (``(Z, H, W)``,
        ``(T, Z, H, W)``), with a channel axis for multichannel models (see
        ``channel_axis``); numpy, zarr or dask (only annotated planes are read).
    annotations : array-like or sequence of array-likes
        Matching label arrays in the given ``convention`` (see
        :func:`~napari_unet.core.annotations.targets_from_annotation`), each with its
        image's shape without the channel axis. Planes with nothing annotated are skipped.
    convention : {"sparse", "dense", "binary", "auto"}
        How to read the annotations.
    config : TrainConfig
        Options of the run.
    validation : tuple of (images, annotations), optional
        Held-out data for validation; by default fixed patches of the training data.
    preview_image : ndarray, optional
        ``(H, W)`` plane (``(C, H, W)`` for a multichannel model) predicted every
        ``config.preview_every`` steps.
    name : str
        Name of the resulting model.
    channel_axis : int, optional
        The images' channel axis (as in :func:`~napari_unet.core.io.as_planes`); by
        default none for one-channel models and axis ``-3`` for ``C``-channel models.
    channels : sequence of int, optional
        Channels to use, in order; their count must be the network's ``in_channels``
        (for a new network: ``UNetConfig(in_channels=C)``).
    """

    def __init__(
        self,
        base: ModelBundle | UNetConfig,
        images: Sequence[np.ndarray] | np.ndarray,
        annotations: Sequence[np.ndarray] | np.ndarray,
        *,
        convention: Convention = "auto",
        config: TrainConfig | None = None,
        validation: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
        preview_image: np.ndarray | None = None,
        name: str = "fine-tuned",
        channel_axis: int | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.device = pick_device(self.config.device)
        self._rng = np.random.default_rng(self.config.seed)
        self._torch_gen = torch.Generator(device="cpu").manual_seed(self.config.seed)
        self.base = base if isinstance(base, ModelBundle) else None
        self.network = self._build_network(base)
        self.unet_config: UNetConfig = self.network.config
        self.normalisation = (
            dict(self.base.normalisation) if self.base else normalise.validate_spec(None)
        )
        self.class_names = list(self.base.class_names) if self.base else ["background", "cell"]
        self.name = name
        self.patch_input = self._patch_input_size()
        self.patch_output = self.patch_input - 2 * margin(self.unet_config)
        self.optimizer = self._make_optimizer()
        self.step = 0
        #: Why the last run stopped early because of non-finite numbers, else None.
        self.diverged: str | None = None
        self._before_step = _Snapshot()
        self.history: list[tuple[int, float]] = []
        self.validation_history: list[tuple[int, float, float]] = []
        self.best_loss = math.inf
        self.best_step = 0
        self._best_state = self._state_copy()
        #: The held-out score of the kept best weights (None without a held-out part).
        self.best_score: float | None = None
        #: What is held out of training and scored (None: nothing; see holdout_note).
        self.holdout: HoldOut | None = None
        self.holdout_note = ""
        #: The post-processing re-tuned for the best weights at the end of a run, and
        #: the held-out score with it; None until then (or after new annotations).
        self.tuning: Tuning | None = None
        self.tuned_score: float | None = None
        self._tuned_step: int | None = None
        self._tuned_holdout: float | None = None
        self._stop_requested = False
        self.convention: Convention = convention
        self.preview_image = preview_image
        self._preview_stats: tuple[np.ndarray | None, dict[str, float]] = (None, {})
        self._validation_source = validation
        self.channel_axis = channel_axis
        self.channels = None if channels is None else tuple(channels)
        self.update_annotations(images, annotations)

    # ----------------------------------------------------------------- setup
    def _build_network(self, base: ModelBundle | UNetConfig) -> UNet:
        if isinstance(base, ModelBundle):
            network = base.build(device="cpu")
        elif isinstance(base, UNetConfig):
            torch.manual_seed(self.config.seed)
            network = UNet(base)
        else:
            raise InputError(f"base must be a model bundle or a UNetConfig, got {type(base)}")
        if not _all_finite(_tensors(network)):
            name = base.name if isinstance(base, ModelBundle) else "the new network"
            raise ModelFileError(
                f"the base model {name!r} has NaN or infinite weights; choose another base model"
            )
        network = network.to(self.device)
        if self._channels_last(network.config):
            network = network.to(memory_format=torch.channels_last)
        return network

    def _channels_last(self, config: UNetConfig) -> bool:
        # oneDNN's channels_last kernels are faster for real widths on CPU, slower for
        # the few channels of tiny test networks.
        return self.device.type == "cpu" and config.base_width >= 16

    def _patch_input_size(self) -> int:
        requested = self.config.patch_size
        if requested is None:
            requested = 128 + 2 * margin(self.unet_config)
        return nearest_valid_input_size(self.unet_config, requested)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.network.parameters()
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.config.learning_rate,
                momentum=0.99,
                weight_decay=self.config.weight_decay,
            )
        return torch.optim.Adam(
            params, lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )

    def update_annotations(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        annotations: Sequence[np.ndarray] | np.ndarray,
    ) -> None:
        """Replace the training data (e.g. after the user painted more); keeps the run.

        The kept best weights are re-scored on the new validation patches.

        Raises
        ------
        AnnotationError
            If shapes differ or nothing usable is annotated anywhere.
        """
        pairs = _annotated_planes(images, annotations, **self._layout())
        validation_pairs = None
        if self._validation_source is not None:
            val_images, val_labels = self._validation_source
            validation_pairs = _annotated_planes(val_images, val_labels, **self._layout())
        self._prepare(pairs, validation_pairs)

    def _prepare(
        self,
        pairs: list[tuple[np.ndarray, np.ndarray]],
        validation_pairs: list[tuple[np.ndarray, np.ndarray]] | None,
    ) -> None:
        """Targets, weight maps and padded planes of ``pairs`` (and of the validation
        pairs, else fixed patches of the training planes) with the current settings.

        Nothing changes when it raises. ``pairs`` are kept, so a change of settings can
        prepare them again (:meth:`update_config`).
        """
        targets = self._targets(pairs)
        holdout = "off" if validation_pairs is not None else self.config.holdout
        binary = _resolve_convention(self.convention, [a for _, a in pairs]) == "binary"
        split = split_targets(targets, holdout, binary=binary, seed=self.config.seed)
        planes = self._planes(pairs, split.training)
        if not planes:
            raise AnnotationError(
                "nothing is annotated: paint some background with label 1 and at least one "
                "cell with label 2 or higher"
            )
        validation_planes = planes
        if validation_pairs is not None:
            validation_planes = self._planes(validation_pairs, self._targets(validation_pairs))
        self._validation_batch = self._fixed_patches(validation_planes)
        self.planes = planes
        self._pairs, self._validation_pairs = pairs, validation_pairs
        self._training_targets = split.training
        self.holdout, self.holdout_note = split.holdout, split.note
        self._score_name = IOU if binary else F1
        self._holdout_stats = [self._plane_stats(pairs[p.plane][0]) for p in self._parts()]
        self.tuning, self.tuned_score, self._tuned_step = None, None, None
        #: Median diameter of the annotated cells (pixels), None if none could be measured.
        self.measured_diameter = _cell_diameter(targets)
        self._rescore_best()

    def update_config(self, config: TrainConfig) -> ConfigUpdate:
        """Make ``config`` the settings of this run from its next step on (a resume).

        The learning rate and weight decay go to the optimiser, the batch size,
        augmentation, schedule and validation/preview intervals to the next steps; a
        new w0, sigma, patch size or validation patch count prepares the data again
        (weight maps, padding, validation patches; the kept best weights are
        re-scored); a new device moves the network and the optimiser's state there. The
        settings of :data:`FIXED_MID_RUN` keep their old values.

        Parameters
        ----------
        config : TrainConfig
            The new settings.

        Returns
        -------
        ConfigUpdate
            What changed (old and new values) and what was kept, and why.

        Raises
        ------
        InputError
            If the new device is not available; nothing changes then.
        """
        old = self.config
        kept = {
            name: why
            for name, why in FIXED_MID_RUN.items()
            if getattr(config, name) != getattr(old, name)
        }
        config = replace(config, **{name: getattr(old, name) for name in kept})
        changed = {
            f.name: (getattr(old, f.name), getattr(config, f.name))
            for f in fields(TrainConfig)
            if getattr(old, f.name) != getattr(config, f.name)
        }
        # An unavailable device raises here, before anything changed.
        device = pick_device(config.device) if "device" in changed else self.device
        if changed.keys() & _DATA_SETTINGS:
            self._reprepare(config)
        self.config = config
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate
            group["weight_decay"] = config.weight_decay
        if device != self.device:
            self._move_to(device)
        return ConfigUpdate(changed, kept)

    def _reprepare(self, config: TrainConfig) -> None:
        """Prepare the kept annotations again with ``config``'s weight map, patch size
        and validation patches; the old settings stay when this raises."""
        old = self.config, self.patch_input, self.patch_output
        self.config = config
        try:
            self.patch_input = self._patch_input_size()
            self.patch_output = self.patch_input - 2 * margin(self.unet_config)
            self._prepare(self._pairs, self._validation_pairs)
        except BaseException:
            self.config, self.patch_input, self.patch_output = old
            raise

    def _move_to(self, device: torch.device) -> None:
        """Move the network and the optimiser's state to ``device``."""
        self.network.to(device)  # in place: the optimiser keeps the same parameters
        if self._channels_last(self.unet_config):
            self.network.to(memory_format=torch.channels_last)
        self.device = device
        # load_state_dict casts the state (Adam's moments, SGD's momentum) to the
        # device of the parameters it belongs to.
        self.optimizer.load_state_dict(self.optimizer.state_dict())
        self._before_step = _Snapshot()

    def _layout(self) -> dict[str, Any]:
        """How images are read (see :func:`_annotated_planes`)."""
        return {
            "in_channels": self.unet_config.in_channels,
            "channel_axis": self.channel_axis,
            "channels": self.channels,
            "skip_empty": True,
        }

    def _targets(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[Targets]:
        """The training targets of each annotated plane."""
        convention = _resolve_convention(self.convention, [a for _, a in pairs])
        # Classes are checked over the whole set: one plane may hold only background strokes.
        targets = [
            targets_from_annotation(annotation, convention, require_both_classes=False)
            for _, annotation in pairs
        ]
        if targets:
            check_both_classes(targets)
        return targets

    def _parts(self) -> tuple:
        return self.holdout.parts if self.holdout is not None else ()

    def _plane_stats(self, image: np.ndarray) -> dict[str, float]:
        return normalise.compute_stats(image, self.normalisation, per_channel=image.ndim == 3)

    def _planes(
        self, pairs: list[tuple[np.ndarray, np.ndarray]], targets: list[Targets]
    ) -> list[_Plane]:
        """Normalised, padded planes with their labels and weight maps."""
        pad = margin(self.unet_config) + self.patch_output
        return [
            self._prepared_plane(image, target, pad)
            for (image, _), target in zip(pairs, targets, strict=True)
            if target.annotated.any()  # a held-out plane has nothing left to train on
        ]

    def _prepared_plane(self, image: np.ndarray, targets: Targets, pad: int) -> _Plane:
        weights = weight_map(
            targets.instances, classes=targets.classes, w0=self.config.w0, sigma=self.config.sigma
        )
        stats = normalise.compute_stats(image, self.normalisation, per_channel=image.ndim == 3)
        normalised = normalise.apply(image, stats)
        labels = targets.classes.astype(np.int64, copy=False)
        return _pad_plane(normalised, labels, weights, pad, self._rng)

    # -------------------------------------------------------------- sampling
    def _sample_batch(
        self, planes: list[_Plane], count: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cut ``count`` input-sized patches ``(count, C, h, w)`` centred near annotated pixels."""
        sizes = np.array([p.annotated_count for p in planes], dtype=np.float64)
        choice = rng.choice(len(planes), size=count, p=sizes / sizes.sum())
        half = self.patch_input // 2
        jitter = self.patch_output // 4
        images, labels, weights = [], [], []
        for index in choice:
            plane = planes[index]
            row, col = plane.centres[rng.integers(len(plane.centres))]
            row = int(
                np.clip(
                    row + rng.integers(-jitter, jitter + 1), half, plane.image.shape[-2] - half - 1
                )
            )
            col = int(
                np.clip(
                    col + rng.integers(-jitter, jitter + 1), half, plane.image.shape[-1] - half - 1
                )
            )
            window = (
                slice(row - half, row - half + self.patch_input),
                slice(col - half, col - half + self.patch_input),
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

    def _fixed_patches(self, planes: list[_Plane]) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng(self.config.seed + 1)
        return self._sample_batch(planes, self.config.validation_patches, rng)

    def _to_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.device.type == "cuda":
            return [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
        return [t.to(self.device) for t in tensors]

    def _crop_targets(self, tensor: torch.Tensor) -> torch.Tensor:
        m = margin(self.unet_config)
        return tensor[..., m : m + self.patch_output, m : m + self.patch_output]

    # --------------------------------------------------------------- running
    @property
    def has_progress(self) -> bool:
        """Whether at least one step has completed (so the weights hold something learnt)."""
        return self.step > 0

    def run(self, steps: int | None = None) -> Generator[TrainEvent, None, None]:
        """Train for ``steps`` more steps (default ``config.steps``), yielding events.

        Closing the generator stops after the current step; best and last weights stay
        available, and calling :meth:`run` again resumes. A step whose loss, weights or
        optimiser state become NaN or infinite is undone and ends the run: the last
        event is then a :class:`TrainingFinished` whose ``reason`` says so (also in
        :attr:`diverged`).
        """
        total = steps if steps is not None else self.config.steps
        first_step = self.step
        started = time.perf_counter()
        mixed = self.config.amp is not False and self.device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if mixed else None
        reason = "stopped"
        self.diverged = None
        try:
            for done in range(1, total + 1):
                if self._stop_requested:
                    break
                lr = self._learning_rate(done - 1, total)
                loss = self._checked_step(lr, scaler)
                if self.diverged is not None:
                    reason = self.diverged
                    break
                self.step += 1
                self.history.append((self.step, loss))
                elapsed = time.perf_counter() - started
                yield TrainStep(
                    step=self.step - first_step,
                    total_steps=total,
                    loss=loss,
                    learning_rate=lr,
                    elapsed=elapsed,
                    eta=elapsed / done * (total - done),
                )
                if done % self.config.validation_every == 0 or done == total:
                    yield self._validate()
                if (
                    self.config.preview_every
                    and self.preview_image is not None
                    and (done % self.config.preview_every == 0 or done == total)
                ):
                    yield Preview(self.step, self._predict_preview())
            else:
                reason = "completed"
        finally:
            self.network.eval()
            self._stop_requested = False  # consumed: the next run starts afresh
        summary = ""
        if self.config.tune_postprocess and self.has_progress:
            self.tune()
            summary = self.tuning_summary()
        score = self.best_score if self.best_score is not None else self.tuned_score
        yield TrainingFinished(
            self.step, self.best_step, self.best_loss, reason, best_score=score, tuning=summary
        )

    def request_stop(self) -> None:
        """Ask :meth:`run` to stop before its next step (from any thread; asked before
        a run starts, that run stops before its first step).

        Unlike closing the generator, the run then ends as a completed one does: the
        post-processing is re-tuned for the kept weights and :class:`TrainingFinished`
        is yielded (with ``reason`` "stopped").
        """
        self._stop_requested = True

    def _kept(self) -> tuple[dict[str, torch.Tensor], int]:
        """The weights :meth:`best_bundle` returns, and their step."""
        if math.isinf(self.best_loss):
            return self._state_copy(), self.step
        return self._best_state, self.best_step

    def tune(self) -> Tuning | None:
        """Re-tune the post-processing for the kept weights on the training annotations.

        The threshold, minimum size and (grow-and-merge models) merge level are chosen by
        :func:`~napari_unet.core.tuning.tune_postprocess` on the training part of the
        annotations (never the held-out part, whose score with the tuned settings,
        :attr:`tuned_score`, stays honest). :meth:`best_bundle` then recommends them.
        Called at the end of every run (``config.tune_postprocess``); cached per kept step.

        Returns
        -------
        Tuning or None
            None before any step.
        """
        if not self.has_progress:
            return None
        state, step = self._kept()
        if self.tuning is not None and self._tuned_step == step:
            return self.tuning
        current = self._state_copy()
        self.network.load_state_dict(state)
        try:
            probabilities, targets = [], []
            for (image, _), target in zip(self._pairs, self._training_targets, strict=True):
                region = _annotated_region(target)
                if region is None:
                    continue
                stats = self._plane_stats(image)
                probabilities.append(self._predict_region(image, stats, region))
                targets.append((target.classes[region], target.instances[region]))
            cells = sum(int(np.unique(t[1][t[1] > 0]).size) for t in targets)
            tuning = tune_postprocess(
                probabilities,
                targets,
                score_name=self._score_name,
                base=self.recommendation(),
                on=f"the training annotations ({cells} cells)",
            )
            held_out = self._holdout_probabilities() if self.holdout is not None else None
        finally:
            self.network.load_state_dict(current)
        self.tuning, self._tuned_step = tuning, step
        self.tuned_score = self._tuned_holdout = None
        if held_out is not None:
            self._tuned_holdout = holdout_score(held_out, self.holdout, self.recommendation())
            self.tuned_score = holdout_score(held_out, self.holdout, tuning.options)
        return tuning

    def tuning_summary(self) -> str:
        """One line on the held-out score and the re-tuned post-processing, e.g.
        "held-out F1@0.5 0.840 at the base's settings -> 0.880 with re-tuned threshold
        0.65, min size 30 (4 of 21 cells held out)"; "" before :meth:`tune`."""
        tuning = self.tuning
        if tuning is None:
            return ""
        changed = tuning.changed()
        settings = Tuning.describe(replace(tuning, options=changed, on="")).split(" (")[0]
        tuned = f"re-tuned {settings}" if changed else "the same settings after re-tuning"
        if self.holdout is None or self.tuned_score is None:
            return (
                f"post-processing: {tuned} ({tuning.score_name} on the training annotations "
                f"{tuning.base_score:.3f} -> {tuning.score:.3f}); {self.holdout_note}"
            )
        return (
            f"held-out {self.holdout.score_name} {self._tuned_holdout:.3f} at the base's "
            f"settings -> {self.tuned_score:.3f} with {tuned} ({self.holdout.description} "
            "held out)"
        )

    def _checked_step(self, lr: float, scaler: torch.amp.GradScaler | None) -> float:
        """One step that is undone when it fails or produces non-finite numbers.

        Sets :attr:`diverged` (and restores the state of before the step) when the loss,
        the network's weights or statistics, or the optimiser's state are NaN or infinite
        afterwards; re-raises any exception (Ctrl+C included) after the same restore.
        """
        self._before_step.take(self.network, self.optimizer)
        try:
            loss = self._train_step(lr, scaler)
        except RuntimeError as error:
            self._before_step.restore(self.network, self.optimizer)
            # torch refuses an update it cannot represent in float32 (Adam's first steps
            # divide the learning rate by a small bias correction).
            if "overflow" not in str(error):
                raise
            loss, what = math.nan, "the update became infinite"
        except BaseException:
            self._before_step.restore(self.network, self.optimizer)
            raise
        else:
            if math.isfinite(loss) and _all_finite(_tensors(self.network, self.optimizer)):
                return loss
            self._before_step.restore(self.network, self.optimizer)
            if math.isfinite(loss):
                what = "the weights became NaN or infinite"
            else:
                what = "the loss became " + ("NaN" if math.isnan(loss) else "infinite")
        kept = f"weights of step {self.step}" + (" (the starting weights)" if not self.step else "")
        self.diverged = f"{what} at step {self.step + 1} (learning rate too high?); {kept} restored"
        return loss

    def _learning_rate(self, index: int, total: int) -> float:
        peak = self.config.learning_rate
        if self.config.schedule == "cosine":
            return 0.5 * peak * (1 + math.cos(math.pi * index / max(total, 1)))
        return peak

    def _train_step(self, lr: float, scaler: torch.amp.GradScaler | None) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self._sample_batch(self.planes, self.config.batch_size, self._rng)
        image, labels, weights = self._to_device(*batch)
        image, labels, weights = augment_batch(
            image,
            labels,
            weights,
            self.config.augment,
            generator=self._torch_gen,
            crop_targets_to=(self.patch_output, self.patch_output),
            ignore_index=IGNORE,
        )
        if self._channels_last(self.unet_config):
            image = image.contiguous(memory_format=torch.channels_last)
        self._set_training_mode()
        self.optimizer.zero_grad(set_to_none=True)
        with amp_context(self.device, scaler is not None):
            logits = self.network(image)
            loss = weighted_cross_entropy(logits.float(), labels, weights)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _set_training_mode(self) -> None:
        self.network.train()
        if self.config.freeze_norm:
            for module in self.network.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _validation_scores(self) -> tuple[float, float]:
        """The current network's loss and pixel accuracy on the validation patches."""
        image, labels, weights = self._to_device(*self._validation_batch)
        labels, weights = self._crop_targets(labels), self._crop_targets(weights)
        self.network.eval()
        with torch.inference_mode():
            if self._channels_last(self.unet_config):
                image = image.contiguous(memory_format=torch.channels_last)
            logits = self.network(image).float()
            loss = float(weighted_cross_entropy(logits, labels, weights))
            annotated = labels != IGNORE
            correct = (logits.argmax(1) == labels) & annotated
            accuracy = float(correct.sum()) / max(int(annotated.sum()), 1)
        return loss, accuracy

    def _rescore_best(self) -> None:
        """The kept best weights' loss (and held-out score) on the current validation
        patches and held-out part: after new annotations or weight maps, numbers
        measured on the old ones compare nothing."""
        if math.isinf(self.best_loss):
            return
        current = self._state_copy()
        self.network.load_state_dict(self._best_state)  # copies in place: same tensors
        try:
            self.best_loss = self._validation_scores()[0]
            self.best_score = self.holdout_score()
        finally:
            self.network.load_state_dict(current)

    def _validate(self) -> Validation:
        loss, accuracy = self._validation_scores()
        score = self.holdout_score()
        if score is None or self.best_score is None:
            is_best = loss < self.best_loss
        else:  # the held-out score decides; the loss breaks ties
            is_best = score > self.best_score or (
                score == self.best_score and loss < self.best_loss
            )
        if is_best:
            self.best_loss, self.best_step, self.best_score = loss, self.step, score
            self._best_state = self._state_copy()
        self.validation_history.append((self.step, loss, accuracy))
        name = self.holdout.score_name if self.holdout is not None else ""
        return Validation(self.step, loss, accuracy, is_best, score=score, score_name=name)

    def recommendation(self) -> dict[str, Any]:
        """The post-processing of instance labels the held-out score uses during the
        run: the base model's recommendation (defaults for a new network)."""
        output = "mask" if self._score_name == IOU else "labels"
        return recommended_options(self.base, output) if self.base else {}

    def holdout_score(self, options: dict[str, Any] | None = None) -> float | None:
        """The current network's score on the held-out part (None without one).

        Only the tiles of the held-out regions are predicted, exactly as Segment predicts
        them at the training scale, and scored by
        :func:`~napari_unet.core.holdout.holdout_score` with ``options`` (default
        :meth:`recommendation`).
        """
        if self.holdout is None:
            return None
        probabilities = self._holdout_probabilities()
        options = self.recommendation() if options is None else options
        return holdout_score(probabilities, self.holdout, options)

    def _holdout_probabilities(self) -> list[np.ndarray]:
        return [
            self._predict_region(self._pairs[part.plane][0], stats, part.region)
            for part, stats in zip(self._parts(), self._holdout_stats, strict=True)
        ]

    def _predict_region(
        self, image: np.ndarray, stats: dict[str, float], region: tuple[slice, slice]
    ) -> np.ndarray:
        """``(K, h, w)`` probabilities of ``region`` of a plane: the whole plane's tiles
        that cover it, each computed as in a whole-plane prediction."""
        self.network.eval()
        grid = plan_tiles(image.shape, self.unet_config)
        rows, cols = region
        wanted = [
            index
            for index in range(grid.total)
            if _overlaps(grid.region(index)[0], rows) and _overlaps(grid.region(index)[1], cols)
        ]
        predictor = make_predictor(
            self.network, self.device, channels_last=self._channels_last(self.unet_config)
        )
        out = np.zeros(
            (self.unet_config.num_classes, rows.stop - rows.start, cols.stop - cols.start),
            np.float32,
        )
        tiles = iter_tiles(
            image, predictor, grid, transform=lambda t: normalise.apply(t, stats), tiles=wanted
        )
        for done in tiles:
            (tile_rows, tile_cols), (r, c) = done.region, _overlap(done.region, region)
            out[:, _shift(r, rows.start), _shift(c, cols.start)] = done.data[
                :, _shift(r, tile_rows.start), _shift(c, tile_cols.start)
            ]
        return out

    def predict(self, image: np.ndarray, stats: dict[str, float] | None = None) -> np.ndarray:
        """``(K, H, W)`` probabilities of the current network on one ``(H, W)`` plane
        (``(C, H, W)`` for a multichannel network).

        ``stats`` are the plane's normalisation statistics, computed when omitted.
        """
        self.network.eval()
        if stats is None:
            stats = normalise.compute_stats(
                image, self.normalisation, per_channel=np.ndim(image) == 3
            )
        grid = plan_tiles(image.shape, self.unet_config)
        predictor = make_predictor(
            self.network, self.device, channels_last=self._channels_last(self.unet_config)
        )
        return predict_plane(image, predictor, grid, transform=lambda t: normalise.apply(t, stats))

    def _predict_preview(self) -> np.ndarray:
        # Stats once per preview plane: a plane with NaN pixels warns once, not per preview.
        image = self.preview_image
        cached_image, stats = self._preview_stats
        if cached_image is not image:
            stats = normalise.compute_stats(
                image, self.normalisation, where="preview plane", per_channel=image.ndim == 3
            )
            self._preview_stats = (image, stats)
        return self.predict(image, stats)

    # --------------------------------------------------------------- results
    def _state_copy(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.network.state_dict().items()}

    def _bundle(self, state: dict[str, torch.Tensor], step: int) -> ModelBundle:
        # Guaranteed by _checked_step; checked again because a saved NaN model is lost work.
        if not _all_finite(list(state.values())):
            raise ModelFileError(
                "the trained weights hold NaN or infinite values; train again with a lower "
                "learning rate"
            )
        # Only the base's post-processing carries over (re-tuned when it was for these
        # weights): its scores and data do not describe the fine-tuned weights.
        inherited = self.base.provenance.get("postprocess") if self.base else None
        postprocess = copy.deepcopy(dict(inherited or {}))
        tuned = self.tuning if self._tuned_step == step else None
        if tuned is not None:
            postprocess = _with_tuned(postprocess, tuned)
        provenance = {
            **({"postprocess": postprocess} if postprocess else {}),
            "holdout": self._holdout_record(step),
            **({"postprocess_tuning": self._tuning_record(tuned)} if tuned else {}),
            "base": self.base.name if self.base else "scratch",
            "steps": step,
            "trained": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "best_validation_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "training_config": _jsonable_config(self.config),
        }
        return ModelBundle(
            name=self.name,
            config=self.unet_config,
            state_dict=copy.deepcopy(state),
            normalisation=dict(self.normalisation),
            class_names=list(self.class_names),
            provenance=provenance,
            pixel_size=self.pixel_size,
            object_diameter=self.object_diameter,
        )

    def _holdout_record(self, step: int) -> dict[str, Any]:
        """What was held out and the score of the weights of ``step`` there (JSON)."""
        if self.holdout is None:
            return {"held_out": None, "note": self.holdout_note}
        scored = step == self.best_step and self.best_score is not None
        return {
            "held_out": self.holdout.description,
            "setting": self.config.holdout,
            "score_name": self.holdout.score_name,
            "score": self.best_score if scored else None,
            "step": step,
            "postprocess": self.recommendation(),
        }

    def _tuning_record(self, tuning: Tuning) -> dict[str, Any]:
        """How the recommended post-processing was re-tuned, with the scores (JSON)."""
        return {
            "on": tuning.on,
            "score_name": tuning.score_name,
            "base": {"postprocess": tuning.base_options, "score": tuning.base_score},
            "tuned": {"postprocess": tuning.options, "score": tuning.score},
            "held_out_base_score": self._tuned_holdout,
            "held_out_tuned_score": self.tuned_score,
            "summary": self.tuning_summary(),
        }

    @property
    def pixel_size(self) -> PixelSize | None:
        """The pixel size the trained model records: the given one, else the base's."""
        if self.config.pixel_size is not None:
            return self.config.pixel_size
        return self.base.pixel_size if self.base else None

    @property
    def object_diameter(self) -> float | None:
        """The object diameter the trained model records (pixels): the annotated cells'
        median, else (nothing measurable) the base model's."""
        if self.measured_diameter is not None:
            return self.measured_diameter
        return self.base.object_diameter if self.base else None

    def best_bundle(self) -> ModelBundle:
        """Model with the weights of the lowest validation loss so far."""
        if math.isinf(self.best_loss):
            return self.last_bundle()
        return self._bundle(self._best_state, self.best_step)

    def last_bundle(self) -> ModelBundle:
        """Model with the current weights."""
        return self._bundle(self._state_copy(), self.step)


def _annotated_region(target: Targets) -> tuple[slice, slice] | None:
    """The bounding box of a plane's annotated pixels, or None when there are none."""
    rows, cols = np.nonzero(target.classes != IGNORE)
    if rows.size == 0:
        return None
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


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


def _tensors(
    network: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> list[torch.Tensor]:
    """The network's parameters and buffers, then the optimiser's state tensors.

    The same tensor objects from one step to the next (training updates them in place),
    except that the optimiser's state appears at its first step.
    """
    tensors = [*network.parameters(), *network.buffers()]
    if optimizer is not None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                state = optimizer.state.get(parameter, {})
                tensors.extend(v for v in state.values() if isinstance(v, torch.Tensor))
    return tensors


def _all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every floating-point element of ``tensors`` is finite (one device sync)."""
    checks = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


class _Snapshot:
    """Copies of the network's and optimiser's tensors as they were before a step.

    The copies are refreshed in place before every step (a few milliseconds for the
    small network, no allocation after the first steps), so a failed or non-finite step
    can be undone exactly.
    """

    def __init__(self) -> None:
        self._sources: list[torch.Tensor] = []
        self._copies: list[torch.Tensor] = []
        self._optimizer_keys: set[int] = set()

    def take(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        sources = _tensors(network, optimizer)
        with torch.no_grad():
            if len(sources) != len(self._sources) or any(
                a is not b for a, b in zip(sources, self._sources, strict=True)
            ):
                self._copies = [t.detach().clone() for t in sources]
            else:
                for copy_, source in zip(self._copies, sources, strict=True):
                    copy_.copy_(source)
        self._sources = sources
        # Parameters with optimiser state: a step may create it (Adam's first step).
        self._optimizer_keys = {id(p) for p in optimizer.state}

    def restore(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        # State the step created did not exist before it: drop it (a fresh optimiser).
        for parameter in [p for p in optimizer.state if id(p) not in self._optimizer_keys]:
            del optimizer.state[parameter]
        with torch.no_grad():
            for source, copy_ in zip(self._sources, self._copies, strict=True):
                source.copy_(copy_)


#: Patch centres kept per plane; a random subset keeps memory small for dense masks.
MAX_CENTRES = 4096


def _pad_plane(
    image: np.ndarray, labels: np.ndarray, weights: np.ndarray, pad: int, rng: np.random.Generator
) -> _Plane:
    """Mirror-pad the image (context, as in the paper) and pad targets as ignored."""
    spatial = [(0, 0)] * (image.ndim - 2) + [(pad, pad)] * 2  # channels are not padded
    padded_image = np.pad(image, spatial, mode="symmetric").astype(np.float32, copy=False)
    padded_labels = np.pad(labels, pad, mode="constant", constant_values=IGNORE)
    padded_weights = np.pad(weights.astype(np.float32), pad, mode="constant")
    centres = np.argwhere(labels != IGNORE)
    count = len(centres)
    if count > MAX_CENTRES:
        centres = centres[rng.choice(count, MAX_CENTRES, replace=False)]
    return _Plane(padded_image, padded_labels, padded_weights, centres + pad, count)


def _resolve_convention(convention: Convention, annotations: list[np.ndarray]) -> Convention:
    """Resolve "auto" once for the whole set: binary only if every plane looks binary."""
    if convention != "auto" or not annotations:
        return convention
    kinds = {detect_convention(np.asarray(annotation)) for annotation in annotations}
    return "binary" if kinds == {"binary"} else "sparse"


def _cell_diameter(targets: list[Targets]) -> float | None:
    """Median equivalent diameter (pixels) of the cells of ``targets``.

    Cells cut by their plane's border are left out (unless all are): they look smaller
    than they are, and segmenting measures an image's objects the same way.
    """
    return median_object_diameter([target.instances for target in targets], exclude_border=True)


def annotated_object_diameter(
    annotations: Sequence[np.ndarray] | np.ndarray, convention: Convention = "auto"
) -> float | None:
    """The object diameter a :class:`Trainer` records for these annotations, in pixels.

    For measuring a training set without training on it (e.g. to record the scale of a
    model trained before models recorded one).

    Parameters
    ----------
    annotations : array or sequence of arrays
        ``(H, W)`` or ``(..., H, W)`` labels in ``convention``, as :class:`Trainer` takes
        them; planes with nothing annotated are skipped.
    convention : {"sparse", "dense", "binary", "auto"}
        How to read them (see :func:`~napari_unet.core.annotations.targets_from_annotation`).

    Returns
    -------
    float or None
        The median equivalent diameter of the annotated cells; None without any.
    """
    planes = [
        plane
        for annotation in _as_list(annotations)
        for plane in np.asarray(annotation).reshape((-1, *np.shape(annotation)[-2:]))
        if plane.any()
    ]
    resolved = _resolve_convention(convention, planes)
    return _cell_diameter(
        [targets_from_annotation(plane, resolved, require_both_classes=False) for plane in planes]
    )


def _with_tuned(postprocess: dict[str, Any], tuning: Tuning) -> dict[str, Any]:
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


def _jsonable_config(config: TrainConfig) -> dict:
    values = {k: getattr(config, k) for k in config.__dataclass_fields__ if k != "augment"}
    if config.pixel_size is not None:  # JSON: the model's "scale" holds it in full
        values["pixel_size"] = str(config.pixel_size)
    values["augment"] = {k: getattr(config.augment, k) for k in config.augment.__dataclass_fields__}
    return values


def train(
    base: ModelBundle | UNetConfig,
    images: Sequence[np.ndarray] | np.ndarray,
    annotations: Sequence[np.ndarray] | np.ndarray,
    **kwargs,
) -> ModelBundle:
    """Train to completion and return the best model (script-friendly wrapper)."""
    trainer = Trainer(base, images, annotations, **kwargs)
    for _ in trainer.run():
        pass
    return trainer.best_bundle()


__all__ = [
    "FIXED_MID_RUN",
    "IGNORE",
    "ConfigUpdate",
    "TrainConfig",
    "Trainer",
    "annotated_object_diameter",
    "train",
]

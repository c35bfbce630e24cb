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

Modules: :mod:`~napari_unet.core.train_config` (the settings and what a resume
changes), :mod:`~napari_unet.core.train_data` (annotated planes, weight maps, the
held-out part, patches), :mod:`~napari_unet.core.train_guard` (undoing a failed step),
:mod:`~napari_unet.core.train_report` (held-out predictions and what the model records),
:mod:`~napari_unet.core.train_step` (one optimisation step, :class:`TrainerStep`),
:mod:`~napari_unet.core.train_evaluation` (validation, scores, tuning, the model made),
:mod:`~napari_unet.core.train_scale` (the object diameter recorded).

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

import math
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch

from . import normalise
from .errors import InputError, ModelFileError
from .events import Preview, TrainingFinished, TrainStep, Validation
from .model import UNet, UNetConfig, margin, nearest_valid_input_size, pick_device
from .modelfile import ModelBundle
from .train_config import (
    FIXED_MID_RUN,
    ConfigUpdate,
    TrainConfig,
    changes_data,
    config_update,
)
from .train_data import (
    IGNORE,
    Convention,
    PatchGeometry,
    PreparedData,
    annotated_planes,
    prepare_data,
)
from .train_evaluation import TrainerEvaluation
from .train_guard import StepSnapshot, all_finite, training_tensors
from .train_scale import _cell_diameter, annotated_object_diameter
from .train_step import TrainerStep
from .tuning import Tuning

TrainEvent = TrainStep | Validation | Preview | TrainingFinished


class Trainer(TrainerStep, TrainerEvaluation):
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
        self.geometry = self._patch_geometry(self.config)
        self.optimizer = self._make_optimizer()
        self.step = 0
        #: Why the last run stopped early because of non-finite numbers, else None.
        self.diverged: str | None = None
        self._before_step = StepSnapshot()
        self.history: list[tuple[int, float]] = []
        self.validation_history: list[tuple[int, float, float]] = []
        self.best_loss = math.inf
        self.best_step = 0
        self._best_state = self._state_copy()
        #: The held-out score of the kept best weights (None without a held-out part).
        self.best_score: float | None = None
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
        self.data: PreparedData
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
        if not all_finite(training_tensors(network)):
            name = base.name if isinstance(base, ModelBundle) else "the new network"
            raise ModelFileError(
                f"the base model {name!r} has NaN or infinite weights; choose another base model"
            )
        network = network.to(self.device)
        if self._channels_last(network.config):
            network = network.to(memory_format=torch.channels_last)
        return network

    def _patch_geometry(self, config: TrainConfig) -> PatchGeometry:
        """Patch sizes for ``config.patch_size`` (``None``: an output of about 128 px)."""
        context = margin(self.unet_config)
        requested = config.patch_size if config.patch_size is not None else 128 + 2 * context
        size = nearest_valid_input_size(self.unet_config, requested)
        return PatchGeometry(input=size, output=size - 2 * context, margin=context)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params, config = self.network.parameters(), self.config
        if config.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=config.learning_rate, momentum=0.99, weight_decay=config.weight_decay
            )
        return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    # ------------------------------------------------------------------ data
    @property
    def patch_input(self) -> int:
        """Network input patch size in pixels."""
        return self.geometry.input

    @property
    def patch_output(self) -> int:
        """Valid network output size of a patch in pixels."""
        return self.geometry.output

    @property
    def planes(self) -> list:
        """The prepared (normalised, padded) planes the run trains on."""
        return self.data.planes

    @property
    def holdout(self):
        """What is held out of training and scored (None: nothing; see holdout_note)."""
        return self.data.holdout

    @property
    def holdout_note(self) -> str:
        """Why nothing is held out, when nothing is."""
        return self.data.holdout_note

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
        pairs = annotated_planes(images, annotations, **self._layout())
        validation_pairs = None
        if self._validation_source is not None:
            val_images, val_labels = self._validation_source
            validation_pairs = annotated_planes(val_images, val_labels, **self._layout())
        self._prepare(pairs, validation_pairs, self.config, self.geometry)

    def _prepare(self, pairs, validation_pairs, config: TrainConfig, geometry) -> None:
        """Prepare ``pairs`` with ``config`` and ``geometry`` (see
        :func:`~napari_unet.core.train_data.prepare_data`); nothing changes when it raises."""
        self.data = prepare_data(
            pairs,
            validation_pairs,
            convention=self.convention,
            config=config,
            normalisation=self.normalisation,
            geometry=geometry,
            rng=self._rng,
        )
        self.config, self.geometry = config, geometry
        #: Median diameter of the annotated cells (pixels), None if none could be measured.
        self.measured_diameter = _cell_diameter(self.data.targets)
        self.tuning, self.tuned_score, self._tuned_step = None, None, None
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
        config, update = config_update(self.config, config)
        # An unavailable device raises here, before anything changed.
        device = pick_device(config.device) if "device" in update.changed else self.device
        if changes_data(update):
            data = self.data
            self._prepare(data.pairs, data.validation_pairs, config, self._patch_geometry(config))
        self.config = config
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate
            group["weight_decay"] = config.weight_decay
        if device != self.device:
            self._move_to(device)
        return update

    def _move_to(self, device: torch.device) -> None:
        """Move the network and the optimiser's state to ``device``."""
        self.network.to(device)  # in place: the optimiser keeps the same parameters
        if self._channels_last(self.unet_config):
            self.network.to(memory_format=torch.channels_last)
        self.device = device
        # load_state_dict casts the state (Adam's moments, SGD's momentum) to the
        # device of the parameters it belongs to.
        self.optimizer.load_state_dict(self.optimizer.state_dict())
        self._before_step = StepSnapshot()

    def _layout(self) -> dict[str, Any]:
        """How images are read (see :func:`~napari_unet.core.train_data.annotated_planes`)."""
        return {
            "in_channels": self.unet_config.in_channels,
            "channel_axis": self.channel_axis,
            "channels": self.channels,
            "skip_empty": True,
        }

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
                yield from self._checkpoints(done, total)
            else:
                reason = "completed"
        finally:
            self.network.eval()
            self._stop_requested = False  # consumed: the next run starts afresh
        yield self._finish(reason)

    def _checkpoints(self, done: int, total: int) -> Generator[Validation | Preview, None, None]:
        """The validation and preview due after step ``done`` of ``total``."""
        if done % self.config.validation_every == 0 or done == total:
            yield self._validate()
        if (
            self.config.preview_every
            and self.preview_image is not None
            and (done % self.config.preview_every == 0 or done == total)
        ):
            yield Preview(self.step, self._predict_preview())

    def _finish(self, reason: str) -> TrainingFinished:
        """Re-tune the post-processing (when asked) and say how the run ended."""
        summary = ""
        if self.config.tune_postprocess and self.has_progress:
            self.tune()
            summary = self.tuning_summary()
        score = self.best_score if self.best_score is not None else self.tuned_score
        return TrainingFinished(
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
    "annotated_object_diameter",  # from train_scale: the model cards name it here
    "train",
]

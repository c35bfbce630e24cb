"""The measuring half of :class:`~napari_unet.core.train.Trainer`: validation loss,
held-out score, the kept best weights, post-processing tuning, prediction, and the model
(:class:`~napari_unet.core.modelfile.ModelBundle`) a run produces.

:class:`TrainerEvaluation` is a base class of ``Trainer`` only, kept in its own module so
each part of the trainer reads in one sitting: it uses the trainer's ``network``,
``device``, ``data`` (:class:`~napari_unet.core.train_data.PreparedData`), ``geometry``,
``config``, ``base`` and best-weights attributes, all set by ``Trainer.__init__``.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch

from . import normalise
from .calibration import PixelSize
from .errors import ModelFileError
from .events import Validation
from .holdout import IOU, holdout_score
from .losses import weighted_cross_entropy
from .model import UNetConfig
from .modelfile import ModelBundle
from .predictor import make_predictor
from .segment import recommended_options
from .tiling import plan_tiles, predict_plane
from .train_config import jsonable_config
from .train_data import IGNORE, annotated_region, crop_to_output, plane_stats
from .train_guard import all_finite
from .train_report import (
    holdout_record,
    predict_region,
    tuning_record,
    tuning_summary,
    with_tuned,
)
from .tuning import Tuning, tune_postprocess


class TrainerEvaluation:
    """Validation, held-out scoring, tuning, prediction and results of a
    :class:`~napari_unet.core.train.Trainer` (see the module's docstring)."""

    def _channels_last(self, config: UNetConfig) -> bool:
        # oneDNN's channels_last kernels are faster for real widths on CPU, slower for
        # the few channels of tiny test networks.
        return self.device.type == "cpu" and config.base_width >= 16

    def _to_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.device.type == "cuda":
            return [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
        return [t.to(self.device) for t in tensors]

    # ------------------------------------------------------------ validation
    def validation_scores(self) -> tuple[float, float]:
        """The current network's weighted loss and pixel accuracy on the validation
        patches (fixed patches of the training data, or of the validation data given)."""
        image, labels, weights = self._to_device(*self.data.validation_batch)
        labels = crop_to_output(labels, self.geometry)
        weights = crop_to_output(weights, self.geometry)
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
            self.best_loss = self.validation_scores()[0]
            self.best_score = self.holdout_score()
        finally:
            self.network.load_state_dict(current)

    def _validate(self) -> Validation:
        loss, accuracy = self.validation_scores()
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
        output = "mask" if self.data.score_name == IOU else "labels"
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
        data = self.data
        return [
            self._predict_region(data.pairs[part.plane][0], stats, part.region)
            for part, stats in zip(data.holdout_parts, data.holdout_stats, strict=True)
        ]

    # ---------------------------------------------------------------- tuning
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
            tuning = self._tune_on_training_annotations()
            held_out = self._holdout_probabilities() if self.holdout is not None else None
        finally:
            self.network.load_state_dict(current)
        self.tuning, self._tuned_step = tuning, step
        self.tuned_score = self._tuned_holdout = None
        if held_out is not None:
            self._tuned_holdout = holdout_score(held_out, self.holdout, self.recommendation())
            self.tuned_score = holdout_score(held_out, self.holdout, tuning.options)
        return tuning

    def _tune_on_training_annotations(self) -> Tuning:
        """The current network's best post-processing on the annotated regions of the
        training part."""
        probabilities, targets = [], []
        for (image, _), target in zip(self.data.pairs, self.data.training_targets, strict=True):
            region = annotated_region(target)
            if region is None:
                continue
            stats = plane_stats(image, self.normalisation)
            probabilities.append(self._predict_region(image, stats, region))
            targets.append((target.classes[region], target.instances[region]))
        cells = sum(int(np.unique(t[1][t[1] > 0]).size) for t in targets)
        return tune_postprocess(
            probabilities,
            targets,
            score_name=self.data.score_name,
            base=self.recommendation(),
            on=f"the training annotations ({cells} cells)",
        )

    def tuning_summary(self) -> str:
        """One line on the held-out score and the re-tuned post-processing, e.g.
        "held-out F1@0.5 0.840 at the base's settings -> 0.880 with re-tuned threshold
        0.65, min size 30 (4 of 21 cells held out)"; "" before :meth:`tune`."""
        return tuning_summary(
            self.tuning,
            self.holdout,
            held_out_base=self._tuned_holdout,
            held_out_tuned=self.tuned_score,
            note=self.holdout_note,
        )

    # ------------------------------------------------------------ prediction
    def _predict_region(
        self, image: np.ndarray, stats: dict[str, float], region: tuple[slice, slice]
    ) -> np.ndarray:
        """``(K, h, w)`` probabilities of ``region`` of a plane (see
        :func:`~napari_unet.core.train_report.predict_region`)."""
        self.network.eval()
        channels_last = self._channels_last(self.unet_config)
        return predict_region(
            self.network, self.device, image, stats, region, channels_last=channels_last
        )

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
        if not all_finite(list(state.values())):
            raise ModelFileError(
                "the trained weights hold NaN or infinite values; train again with a lower "
                "learning rate"
            )
        return ModelBundle(
            name=self.name,
            config=self.unet_config,
            state_dict=copy.deepcopy(state),
            normalisation=dict(self.normalisation),
            class_names=list(self.class_names),
            provenance=self._provenance(step),
            pixel_size=self.pixel_size,
            object_diameter=self.object_diameter,
        )

    def _provenance(self, step: int) -> dict[str, Any]:
        """What the model of the weights of ``step`` records of its training (JSON)."""
        # Only the base's post-processing carries over (re-tuned when it was for these
        # weights): its scores and data do not describe the fine-tuned weights.
        inherited = self.base.provenance.get("postprocess") if self.base else None
        postprocess = copy.deepcopy(dict(inherited or {}))
        tuned = self.tuning if self._tuned_step == step else None
        if tuned is not None:
            postprocess = with_tuned(postprocess, tuned)
        scored = step == self.best_step and self.best_score is not None
        held_out = holdout_record(
            self.holdout,
            self.holdout_note,
            setting=self.config.holdout,
            score=self.best_score if scored else None,
            step=step,
            recommendation=self.recommendation(),
        )
        tuning = {}
        if tuned is not None:
            tuning["postprocess_tuning"] = tuning_record(
                tuned,
                held_out_base=self._tuned_holdout,
                held_out_tuned=self.tuned_score,
                summary=self.tuning_summary(),
            )
        return {
            **({"postprocess": postprocess} if postprocess else {}),
            "holdout": held_out,
            **tuning,
            "base": self.base.name if self.base else "scratch",
            "steps": step,
            "trained": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "best_validation_loss": None if math.isinf(self.best_loss) else self.best_loss,
            "training_config": jsonable_config(self.config),
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

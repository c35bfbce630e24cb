"""One optimisation step of :class:`~napari_unet.core.train.Trainer`, undone when it fails.

:class:`TrainerStep` is a base class of ``Trainer`` only, kept in its own module (as
:class:`~napari_unet.core.train_evaluation.TrainerEvaluation` is) so that ``train``
reads as the run: its state, its data and settings, and the loop. A step samples a batch
of patches (:func:`~napari_unet.core.train_data.sample_patches`), augments it on the
training device (:func:`~napari_unet.core.augment.augment_batch`), minimises the
weighted cross-entropy (paper eq. 1) and is undone when it raises or produces
non-finite numbers (:func:`~napari_unet.core.train_guard.guarded_step`). It uses the
trainer's ``network``, ``optimizer``, ``config``, ``geometry``, ``planes``, ``device``,
``step`` and random generators, all set by ``Trainer.__init__``.
"""

from __future__ import annotations

import math

import torch

from .augment import augment_batch
from .device import amp_context
from .losses import weighted_cross_entropy
from .train_data import IGNORE, sample_patches
from .train_guard import guarded_step


class TrainerStep:
    """The guarded optimisation step of a :class:`~napari_unet.core.train.Trainer`
    (see the module's docstring)."""

    def _checked_step(self, lr: float, scaler: torch.amp.GradScaler | None) -> float:
        """One step that is undone when it fails or produces non-finite numbers (see
        :func:`~napari_unet.core.train_guard.guarded_step`); sets
        :attr:`~napari_unet.core.train.Trainer.diverged` then."""
        loss, failure = guarded_step(
            lambda: self._train_step(lr, scaler), self.network, self.optimizer, self._before_step
        )
        if failure is not None:
            kept = f"weights of step {self.step}" + (
                " (the starting weights)" if not self.step else ""
            )
            self.diverged = (
                f"{failure} at step {self.step + 1} (learning rate too high?); {kept} restored"
            )
        return loss

    def _learning_rate(self, index: int, total: int) -> float:
        peak = self.config.learning_rate
        if self.config.schedule == "cosine":
            return 0.5 * peak * (1 + math.cos(math.pi * index / max(total, 1)))
        return peak

    def _train_step(self, lr: float, scaler: torch.amp.GradScaler | None) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = sample_patches(self.planes, self.config.batch_size, self._rng, self.geometry)
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

"""Resuming a run with changed settings: Trainer.update_config."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_unet.core import train as train_module
from napari_unet.core import train_step
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import InputError
from napari_unet.core.events import TrainStep
from napari_unet.core.model import UNetConfig
from napari_unet.core.train import FIXED_MID_RUN, ConfigUpdate, TrainConfig, Trainer

TINY = UNetConfig(depth=2, base_width=4)


def _cells(shape=(96, 96), centres=((30, 30), (30, 51), (70, 60)), radius=10):
    """Bright touching disks on a noisy background, sparsely annotated: two cells
    (ids 2, 3, touching, so the border weights matter) and a band of background (1)."""
    rows, cols = np.indices(shape)
    dense = np.zeros(shape, np.uint16)
    for i, (r, c) in enumerate(centres, start=1):
        dense[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = i
    noise = np.random.default_rng(0).normal(0, 10, shape)
    image = np.clip(40 + 150 * (dense > 0) + noise, 0, 255).astype(np.uint8)
    sparse = np.where(np.isin(dense, (1, 2)), dense + 1, 0).astype(np.uint16)
    sparse[:8] = 1
    return image, sparse


def _config(**changes) -> TrainConfig:
    values = dict(steps=2, batch_size=2, validation_every=2, device="cpu", seed=0)
    values.update(changes)
    return TrainConfig(**values)


def _trained(config: TrainConfig) -> tuple[Trainer, np.ndarray, np.ndarray]:
    image, sparse = _cells()
    trainer = Trainer(TINY, image, sparse, convention="sparse", config=config)
    list(trainer.run())
    return trainer, image, sparse


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, AugmentConfig]]:
    """(patches, patch size, augmentation) of every training batch, as augmented."""
    seen = []
    augment_batch = train_step.augment_batch

    def recording(image, labels, weights, config, **kwargs):
        seen.append((image.shape[0], image.shape[-1], config))
        return augment_batch(image, labels, weights, config, **kwargs)

    monkeypatch.setattr(train_step, "augment_batch", recording)
    return seen


def test_a_resumed_run_takes_the_changed_settings(batches):
    first = _config(augment=AugmentConfig(enabled=False))
    trainer, image, sparse = _trained(first)
    assert [(n, cfg.enabled) for n, _size, cfg in batches] == [(2, False)] * 2
    weights_before = [plane.weights.copy() for plane in trainer.planes]
    patch_before = trainer.patch_input
    changed = _config(
        steps=3,
        learning_rate=1e-4,
        weight_decay=1e-5,
        batch_size=3,
        w0=2.0,
        sigma=3.0,
        augment=AugmentConfig(enabled=True),
        patch_size=100,
    )

    update = trainer.update_config(changed)

    assert update.changed == {
        "steps": (2, 3),
        "batch_size": (2, 3),
        "patch_size": (None, 100),
        "learning_rate": (1e-3, 1e-4),
        "weight_decay": (0.0, 1e-5),
        "w0": (10.0, 2.0),
        "sigma": (5.0, 3.0),
        "augment": (AugmentConfig(enabled=False), AugmentConfig(enabled=True)),
    }
    assert update.kept == {}
    assert trainer.config == changed
    assert [(g["lr"], g["weight_decay"]) for g in trainer.optimizer.param_groups] == [(1e-4, 1e-5)]
    # The weight maps are those a new run with these settings prepares, not the old ones.
    fresh = Trainer(TINY, image, sparse, convention="sparse", config=changed)
    assert trainer.patch_input == fresh.patch_input != patch_before
    for plane, new, old in zip(trainer.planes, fresh.planes, weights_before, strict=True):
        np.testing.assert_array_equal(plane.weights, new.weights)
        assert plane.weights.shape != old.shape or not np.array_equal(plane.weights, old)

    batches.clear()
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert [e.learning_rate for e in steps] == [1e-4] * 3
    assert trainer.step == 5
    assert [(n, size, cfg.enabled) for n, size, cfg in batches] == [
        (3, fresh.patch_input, True)
    ] * 3

    described = update.describe()
    assert "learning rate 0.001 -> 0.0001" in described
    assert "batch size 2 -> 3" in described and "border weight w0 10 -> 2" in described
    assert "augmentation off -> on" in described


def test_settings_a_run_cannot_change_are_kept_and_said(batches):
    trainer, _image, _sparse = _trained(_config())
    update = trainer.update_config(_config(optimizer="sgd", seed=5, learning_rate=2e-3))

    assert update.changed == {"learning_rate": (1e-3, 2e-3)}
    assert update.kept == {name: FIXED_MID_RUN[name] for name in ("optimizer", "seed")}
    assert trainer.config.optimizer == "adam" and trainer.config.seed == 0
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert "kept optimizer: the run's optimiser state" in update.describe()
    assert "kept seed" in update.describe()
    assert trainer.update_config(trainer.config) == ConfigUpdate()  # nothing to change
    assert ConfigUpdate().describe() == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_changes_nothing():
    trainer, _image, _sparse = _trained(_config())
    before = trainer.config
    with pytest.raises(InputError, match="no CUDA GPU is available"):
        trainer.update_config(_config(device="cuda", learning_rate=5e-4, w0=1.0))
    assert trainer.config is before
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [1e-3]
    assert trainer.update_config(_config(device="auto")).changed == {"device": ("cpu", "auto")}
    assert trainer.device == torch.device("cpu")


def test_a_new_device_takes_the_network_and_the_optimiser_state(monkeypatch):
    """Without a GPU here: "cpu:0" stands in for another device, and float64 parameters
    for parameters moved there (the optimiser's state follows its parameters' device and
    dtype alike)."""
    trainer, _image, _sparse = _trained(_config())
    moments = [v.clone() for s in trainer.optimizer.state.values() for v in s.values()]
    other = torch.device("cpu", 0)
    assert other != trainer.device
    monkeypatch.setattr(train_module, "pick_device", lambda _name: other)
    trainer.network.double()  # in place, as a move to another device changes them

    update = trainer.update_config(_config(device="auto"))

    assert update.changed == {"device": ("cpu", "auto")} and trainer.device == other
    after = [v for s in trainer.optimizer.state.values() for v in s.values()]
    assert len(after) == len(moments)
    for old, new in zip(moments, after, strict=True):
        if old.is_floating_point() and old.ndim:  # the moments, not Adam's step count
            assert new.dtype == torch.float64
        torch.testing.assert_close(new.to(old.dtype), old)


def test_the_kept_best_weights_are_rescored_on_new_weight_maps():
    trainer, image, sparse = _trained(_config(validation_every=1))
    best_state = trainer.best_bundle().state_dict
    old_best = trainer.best_loss
    trainer.update_config(replace(trainer.config, w0=40.0))  # much larger border weights

    # The best weights' loss as a new run with w0 = 40 measures it on the same patches.
    rescored = Trainer(
        trainer.best_bundle(), image, sparse, convention="sparse", config=trainer.config
    )
    for key, value in rescored.network.state_dict().items():
        torch.testing.assert_close(value.cpu(), best_state[key])
    assert trainer.best_loss == pytest.approx(rescored.validation_scores()[0], rel=1e-5)
    assert trainer.best_loss != pytest.approx(old_best)  # measured on the new weight maps

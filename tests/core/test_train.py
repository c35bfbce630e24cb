"""The training generator: events, cancel/resume, sampling, errors, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.events import Preview, TrainingFinished, TrainStep, Validation
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.train import IGNORE, TrainConfig, Trainer, train

TINY = UNetConfig(depth=2, base_width=4)


def disks(shape=(96, 96), centres=((30, 30), (30, 52), (70, 60)), radius=10, seed=0):
    """Bright disks on a noisy dark background, and their dense instance labels."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    for i, (r, c) in enumerate(centres, start=1):
        labels[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = i
    noise = np.random.default_rng(seed).normal(0, 10, shape)
    image = np.clip(40 + 150 * (labels > 0) + noise, 0, 255).astype(np.uint8)
    return image, labels


def sparse_from_dense(labels: np.ndarray, keep=(1, 2)) -> np.ndarray:
    """Paint some cells (ids + 1) and a band of background (1); the rest unannotated."""
    sparse = np.zeros_like(labels)
    for cell in keep:
        sparse[labels == cell] = cell + 1
    sparse[:8, :] = 1
    return sparse


def quick(**changes) -> TrainConfig:
    values = dict(steps=4, batch_size=2, validation_every=2, device="cpu", augment=AugmentConfig())
    values.update(changes)
    return TrainConfig(**values)


def test_events_of_a_run_and_best_weights():
    image, labels = disks()
    trainer = Trainer(
        TINY, image, labels, convention="dense", config=quick(preview_every=2), preview_image=image
    )
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(e.total_steps == 4 and np.isfinite(e.loss) and e.eta >= 0 for e in steps)
    assert [e.step for e in events if isinstance(e, Validation)] == [2, 4]
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 2 and previews[0].probabilities.shape == (2, 96, 96)
    np.testing.assert_allclose(previews[0].probabilities.sum(0), 1, atol=1e-5)
    assert isinstance(events[-1], TrainingFinished) and events[-1].reason == "completed"
    best_step = events[-1].best_step
    assert best_step in (2, 4)
    assert trainer.best_bundle().provenance["steps"] == best_step


def test_training_learns_a_simple_task():
    image, labels = disks()
    config = quick(
        steps=60, learning_rate=5e-3, validation_every=20, augment=AugmentConfig(enabled=False)
    )
    trainer = Trainer(TINY, image, labels, convention="dense", config=config)
    list(trainer.run())
    losses = [loss for _, loss in trainer.history]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    probabilities = trainer.predict(image)
    accuracy = np.mean((probabilities[1] > 0.5) == (labels > 0))
    assert accuracy > 0.9


def test_stop_keeps_weights_and_resume_continues_the_same_run(tmp_path):
    image, labels = disks()
    trainer = Trainer(
        TINY, image, sparse_from_dense(labels), convention="sparse", config=quick(steps=10)
    )
    run = trainer.run()
    for event in run:
        if isinstance(event, TrainStep) and event.step == 3:
            run.close()  # what Stop / Cancel does
    assert trainer.step == 3
    last = trainer.last_bundle()
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(last.state_dict[key], value.cpu())
    assert last.provenance["steps"] == 3
    # the best weights are the last validated ones (validation every 2 steps)
    save_model(trainer.best_bundle(), tmp_path / "stopped.safetensors")
    assert (
        load_model(tmp_path / "stopped.safetensors").provenance["steps"] == trainer.best_step == 2
    )

    # pause, paint one more cell, resume: the same optimiser and step counter
    more = sparse_from_dense(labels, keep=(1, 2, 3))
    trainer.update_annotations(image, more)
    events = list(trainer.run(steps=2))
    assert trainer.step == 5
    assert events[-1].reason == "completed"


def test_same_seed_same_losses():
    image, labels = disks()
    losses = []
    for _ in range(2):
        trainer = Trainer(TINY, image, labels, convention="dense", config=quick(seed=7))
        list(trainer.run())
        losses.append([loss for _, loss in trainer.history])
    assert losses[0] == losses[1]


def test_patches_are_cut_where_annotations_are():
    # A large image with two painted cells in one corner: every patch must see them.
    image = np.random.default_rng(0).integers(0, 50, (700, 700)).astype(np.uint8)
    sparse = np.zeros((700, 700), np.uint16)
    sparse[620:640, 620:640] = 2
    sparse[650:660, 600:690] = 1
    trainer = Trainer(TINY, image, sparse, convention="sparse", config=quick())
    _, labels, _ = trainer._sample_batch(trainer.planes, 16, np.random.default_rng(1))
    targets = trainer._crop_targets(labels)
    assert all((t != IGNORE).any() for t in targets)


def test_small_image_is_mirrored_up_to_the_patch():
    image, labels = disks(shape=(40, 50), centres=((20, 20),), radius=8)
    trainer = Trainer(TINY, image, labels, convention="dense", config=quick())
    assert trainer.patch_input > 50
    assert isinstance(list(trainer.run())[-1], TrainingFinished)


def test_fine_tuning_keeps_model_metadata():
    base = random_model(TINY, name="base-model")
    base.normalisation = {"method": "minmax"}
    base.provenance.update(
        {"postprocess": {"threshold": 0.6}, "validation_scores": {"f1_iou50": 0.9}}
    )
    image, labels = disks()
    bundle = train(base, image, labels, convention="dense", config=quick(), name="tuned")
    assert bundle.name == "tuned"
    assert bundle.normalisation == {"method": "minmax"}
    assert bundle.provenance["base"] == "base-model"
    assert bundle.provenance["postprocess"] == {"threshold": 0.6}
    assert "validation_scores" not in bundle.provenance  # the base's scores are not ours
    assert bundle.config == TINY


def test_sgd_option_is_the_papers_momentum():
    image, labels = disks()
    trainer = Trainer(TINY, image, labels, convention="dense", config=quick(optimizer="sgd"))
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.param_groups[0]["momentum"] == 0.99


def test_stacks_use_every_annotated_plane():
    image, labels = disks()
    stack = np.stack([image, image, image])
    annotations = np.stack([labels, np.zeros_like(labels), labels])
    trainer = Trainer(TINY, stack, annotations, convention="dense", config=quick())
    assert len(trainer.planes) == 2


def test_bad_annotations_are_explained():
    image, labels = disks()
    with pytest.raises(AnnotationError, match="nothing is annotated"):
        Trainer(TINY, image, np.zeros_like(labels), convention="sparse", config=quick())
    with pytest.raises(AnnotationError, match="shape"):
        Trainer(TINY, image, labels[:50], convention="dense", config=quick())
    with pytest.raises(AnnotationError, match="2 image planes but 1 annotation planes"):
        Trainer(TINY, [image, image], [labels], convention="dense", config=quick())
    only_background = np.ones_like(labels)
    with pytest.raises(AnnotationError, match="label 2 or higher"):
        Trainer(TINY, image, only_background, convention="sparse", config=quick())
    with pytest.raises(InputError, match=r"2D .* or a 3D stack"):
        Trainer(TINY, image[None, None], labels[None, None], convention="dense", config=quick())
    with pytest.raises(InputError, match="learning rate must be positive"):
        TrainConfig(learning_rate=0)


def test_a_plane_with_only_background_strokes_still_trains():
    # Users often paint background on one plane and cells on another.
    image, labels = disks()
    background_only = np.zeros_like(labels)
    background_only[:8] = 1
    cells_only = np.where(labels == 1, 2, 0).astype(labels.dtype)
    trainer = Trainer(
        TINY,
        np.stack([image, image]),
        np.stack([background_only, cells_only]),
        convention="auto",
        config=quick(),
    )
    assert len(trainer.planes) == 2
    with pytest.raises(AnnotationError, match="No background is annotated"):
        Trainer(TINY, image, cells_only, convention="sparse", config=quick())


def test_batchnorm_statistics_learn_unless_frozen():
    image, labels = disks()
    base = random_model(TINY, name="base")

    def running_stats_changed(config):
        trainer = Trainer(base, image, labels, convention="dense", config=config)
        list(trainer.run())
        state = trainer.network.state_dict()
        return any(
            not torch.equal(state[k].cpu(), v) for k, v in base.state_dict.items() if "running" in k
        )

    assert running_stats_changed(quick())
    assert not running_stats_changed(quick(freeze_norm=True))

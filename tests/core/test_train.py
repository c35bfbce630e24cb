"""The training generator: events, cancel/resume, sampling, errors, fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import AnnotationError, InputError, ModelFileError
from napari_unet.core.events import Preview, TrainingFinished, TrainStep, Validation
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.train import IGNORE, TrainConfig, Trainer, train
from napari_unet.core.train_data import crop_to_output, sample_patches
from napari_unet.core.warmup import synthetic_cells

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


@pytest.mark.slow  # trains a network (~5-12 s on a busy 2-core machine)
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


@pytest.mark.slow  # trains a network (~5-12 s on a busy 2-core machine)
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


@pytest.mark.slow  # trains a network (~5-12 s on a busy 2-core machine)
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
    _, labels, _ = sample_patches(trainer.planes, 16, np.random.default_rng(1), trainer.geometry)
    targets = crop_to_output(labels, trainer.geometry)
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
    # Without re-tuning the base's recommendation carries over as it is
    # (tests/core/test_holdout.py covers the re-tuned one).
    config = quick(tune_postprocess=False)
    bundle = train(base, image, labels, convention="dense", config=config, name="tuned")
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
    trainer = Trainer(TINY, stack, annotations, convention="dense", config=quick(holdout="off"))
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
    # (t, z, y, x) stacks train now (tests/core/test_dims_channels.py); 6 axes never do
    six_d = image[None, None, None, None]
    with pytest.raises(InputError, match=r"6-D images are not supported"):
        Trainer(TINY, six_d, labels[None, None, None, None], convention="dense", config=quick())
    for rate in (0, float("nan"), float("inf"), 1e39):
        with pytest.raises(InputError, match=r"learning rate must be positive and at most 3\.4"):
            TrainConfig(learning_rate=rate)


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


def _state(trainer: Trainer) -> tuple[dict, list]:
    """Copies of the network's state and of the optimiser's state tensors."""
    network = {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}
    optimizer = [
        value.detach().clone()
        for state in trainer.optimizer.state_dict()["state"].values()
        for value in state.values()
        if torch.is_tensor(value)
    ]
    return network, optimizer


def _all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_diverging_loss_stops_and_restores_the_last_good_weights(optimizer):
    image, labels = disks()
    config = quick(steps=20, learning_rate=1e30, optimizer=optimizer)
    trainer = Trainer(TINY, image, labels, convention="dense", config=config)
    assert not trainer.has_progress
    after_step: dict[int, tuple[dict, list]] = {}
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, TrainStep):
            after_step[trainer.step] = _state(trainer)

    finished = events[-1]
    assert isinstance(finished, TrainingFinished)
    last_good = max(after_step)
    assert last_good == trainer.step < 20  # ended early
    assert (
        finished.reason
        == trainer.diverged
        == (
            f"the loss became NaN at step {last_good + 1} (learning rate too high?); "
            f"weights of step {last_good} restored"
        )
    )
    assert not any(isinstance(e, TrainStep) and not np.isfinite(e.loss) for e in events)
    assert trainer.has_progress
    network, optimizer_state = _state(trainer)
    expected_network, expected_optimizer = after_step[last_good]
    for key, value in expected_network.items():
        assert torch.equal(network[key], value), key
    assert len(optimizer_state) == len(expected_optimizer) > 0
    assert all(torch.equal(a, b) for a, b in zip(optimizer_state, expected_optimizer, strict=True))
    for bundle in (trainer.last_bundle(), trainer.best_bundle()):
        assert _all_finite(bundle.state_dict)
        assert bundle.provenance["steps"] == last_good
        for key, value in expected_network.items():
            assert torch.equal(bundle.state_dict[key], value.cpu()), key


def test_an_update_that_overflows_at_the_first_step_keeps_the_starting_weights():
    image, labels = disks()
    base = random_model(TINY, name="base")
    config = quick(learning_rate=1e38)  # Adam's first update overflows float32
    trainer = Trainer(base, image, labels, convention="dense", config=config)
    events = list(trainer.run())

    assert [type(e) for e in events] == [TrainingFinished]
    assert events[0].reason == (
        "the update became infinite at step 1 (learning rate too high?); "
        "weights of step 0 (the starting weights) restored"
    )
    assert trainer.step == 0 and not trainer.has_progress
    assert trainer.optimizer.state_dict()["state"] == {}  # as fresh as before the step
    last = trainer.last_bundle()
    for key, value in base.state_dict.items():
        assert torch.equal(last.state_dict[key], value), key


def test_has_progress_after_the_first_completed_step():
    image, labels = disks()
    trainer = Trainer(TINY, image, labels, convention="dense", config=quick())
    run = trainer.run()
    assert not trainer.has_progress  # a run that has not stepped yet
    first = next(run)
    assert isinstance(first, TrainStep) and trainer.has_progress
    run.close()
    assert trainer.has_progress and trainer.diverged is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_annotations_with_non_finite_values_are_refused_in_one_line(bad):
    image, labels = disks()
    annotation = labels.astype(np.float32)
    annotation[5, 5] = bad
    annotation[6, 6] = bad
    with pytest.raises(AnnotationError) as caught:
        Trainer(TINY, image, annotation, convention="dense", config=quick())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("The annotation holds 2 NaN or infinite values")


def test_a_base_model_with_non_finite_weights_is_refused():
    base = random_model(TINY, name="broken")
    key = next(k for k, v in base.state_dict.items() if v.is_floating_point())
    base.state_dict[key][...] = float("nan")
    image, labels = disks()
    with pytest.raises(ModelFileError, match="'broken' has NaN or infinite weights"):
        Trainer(base, image, labels, convention="dense", config=quick())


def test_mixed_precision_is_never_entered_off_cuda(monkeypatch):
    """amp=True on the CPU trains in float32: torch.autocast is not even called."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch.autocast entered on the CPU")

    monkeypatch.setattr(torch, "autocast", refuse)
    image, labels = synthetic_cells(64)
    config = TrainConfig(steps=2, batch_size=1, device="cpu", amp=True, validation_every=2)
    trainer = Trainer(UNetConfig(depth=2, base_width=4), [image], [labels],
                      convention="dense", config=config)  # fmt: skip
    events = list(trainer.run())
    assert trainer.step == 2 and trainer.diverged is None and events

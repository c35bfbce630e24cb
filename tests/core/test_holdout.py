"""Held-out annotations (issue 18 item 2) and post-processing re-tuned (item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.annotations import IGNORE, targets_from_annotation
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import InputError
from napari_unet.core.events import TrainingFinished, Validation
from napari_unet.core.holdout import (
    F1,
    IOU,
    holdout_score,
    instance_counts,
    split_holdout,
)
from napari_unet.core.holdout_spec import parse_holdout
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, save_model
from napari_unet.core.segment import recommended_options, segment
from napari_unet.core.train import TrainConfig, Trainer
from napari_unet.core.tuning import tune_postprocess

TINY = UNetConfig(depth=2, base_width=4)


def grid_of_disks(shape=(96, 128), rows=3, cols=4, radius=7, seed=0):
    """(image, dense labels): ``rows * cols`` bright disks on a grid, noisy background."""
    r, c = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    ys = np.linspace(radius + 6, shape[0] - radius - 6, rows).round().astype(int)
    xs = np.linspace(radius + 6, shape[1] - radius - 6, cols).round().astype(int)
    for i, (y, x) in enumerate(((y, x) for y in ys for x in xs), start=1):
        labels[(r - y) ** 2 + (c - x) ** 2 <= radius**2] = i
    noise = np.random.default_rng(seed).normal(0, 10, shape)
    image = np.clip(40 + 150 * (labels > 0) + noise, 0, 255).astype(np.uint8)
    return image, labels


def sparse(labels: np.ndarray) -> np.ndarray:
    """Every cell painted (id + 1) with a 3 px ring of background around it (1)."""
    from scipy import ndimage

    painted = np.where(labels > 0, labels + 1, 0)
    ring = ndimage.binary_dilation(labels > 0, iterations=3) & (labels == 0)
    painted[ring] = 1
    return painted


def quick(**changes) -> TrainConfig:
    values = dict(
        steps=20, batch_size=2, validation_every=4, device="cpu", learning_rate=5e-3,
        augment=AugmentConfig(enabled=False), patch_size=60,
    )  # fmt: skip
    return TrainConfig(**{**values, **changes})


# ------------------------------------------------------------------ split rules
def test_holdout_settings_are_read_and_bad_ones_refused():
    assert parse_holdout("auto").text == "auto"
    assert parse_holdout(None).text == parse_holdout("none").text == "off"
    assert parse_holdout(0.2).text == parse_holdout("20%").text == "20%"
    assert parse_holdout(2).text == parse_holdout("2 planes").text == "2 planes"
    assert TrainConfig(holdout=0.3).holdout == "30%"
    for bad in ("150%", "some", -1, 1.5):
        with pytest.raises(InputError, match="hold out"):
            parse_holdout(bad)


def test_auto_holds_out_the_last_annotated_plane_of_several():
    _, labels = grid_of_disks()
    background_only = np.where(sparse(labels) == 1, 1, 0)
    planes = [sparse(labels), sparse(np.where(labels <= 6, labels, 0)), background_only]
    split = split_holdout(planes, "sparse")
    assert split.holdout is not None and split.holdout.score_name == F1
    (part,) = split.holdout.parts
    assert part.plane == 1 and part.cells == 6  # the last plane holding a cell
    assert split.holdout.description == "annotated plane 2 of 3 (6 cells)"
    assert not split.training[1].annotated.any()  # nothing of it trains
    for kept in (0, 2):
        assert split.training[kept].annotated.sum() == (planes[kept] > 0).sum()
    two = split_holdout([planes[0], *planes], "sparse", "2 planes")
    assert [p.plane for p in two.holdout.parts] == [1, 2]
    # holding out every plane with a cell would leave no cell to train on
    refused = split_holdout(planes, "sparse", "2 planes")
    assert refused.holdout is None and "no score" in refused.note


def test_one_plane_holds_out_a_fifth_of_its_cells_with_background_around_them():
    _, labels = grid_of_disks()
    annotation = sparse(labels)
    split = split_holdout([annotation], "sparse", "auto", seed=3)
    (part,) = split.holdout.parts
    assert split.holdout.description == "2 of 12 cells"  # round(0.2 * 12)
    assert part.cells == 2
    assert set(np.unique(part.classes)) == {IGNORE, 0, 1}  # both classes held out
    rows, cols = part.region
    training = split.training[0]
    held = part.classes != IGNORE
    # held-out pixels are unannotated in training, the rest trains as annotated
    assert (training.classes[rows, cols][held] == IGNORE).all()
    full = targets_from_annotation(annotation, "sparse")
    assert training.annotated.sum() == full.annotated.sum() - held.sum()
    assert training.instances.max() > 0 and len(np.unique(training.instances)) == 11


def test_too_few_cells_trains_on_everything_without_a_score():
    _, labels = grid_of_disks(rows=1, cols=4)
    split = split_holdout([sparse(labels)], "sparse")
    assert split.holdout is None and "no score" in split.note and "4 annotated" in split.note
    assert split.training[0].annotated.sum() == (sparse(labels) > 0).sum()
    off = split_holdout([sparse(labels)], "sparse", "off")
    assert off.holdout is None


def test_binary_masks_are_scored_by_iou_and_dense_by_f1():
    _, labels = grid_of_disks()
    binary = split_holdout([(labels > 0).astype(np.uint8)], "auto")
    assert binary.holdout.score_name == IOU
    dense = split_holdout([labels], "dense", "25%")
    assert dense.holdout.score_name == F1 and dense.holdout.description == "3 of 12 cells"


# ------------------------------------------------------------------ score rule
def test_f1_counts_background_objects_and_ignores_unannotated_ones():
    classes = np.full((40, 60), IGNORE, np.int64)
    classes[:, :30] = 0  # annotated background on the left half
    instances = np.zeros((40, 60), np.int32)
    instances[5:15, 5:15] = 1  # found
    instances[25:35, 5:15] = 2  # missed
    classes[instances > 0] = 1
    predicted = np.zeros((40, 60), np.int32)
    predicted[5:15, 6:16] = 1  # IoU 90/110 with cell 1: true positive
    predicted[20:24, 18:26] = 2  # on annotated background: false positive
    predicted[5:15, 40:50] = 3  # on unannotated pixels: ignored
    predicted[25:35, 27:35] = 4  # 3 of 8 columns annotated (mostly unannotated): ignored
    assert instance_counts(predicted, classes, instances) == (1, 1, 1)
    probabilities = np.stack([1 - 0.9 * (predicted > 0), 0.9 * (predicted > 0)])
    split_part = _part(classes, instances)
    assert holdout_score(probabilities, split_part) == pytest.approx(2 / 4)


def test_mask_iou_uses_annotated_pixels_only():
    classes = np.full((20, 20), IGNORE, np.int64)
    classes[:, :10] = 0
    classes[5:15, 2:8] = 1  # 60 px of foreground
    foreground = np.zeros((20, 20))
    foreground[5:15, 4:8] = 0.9  # 40 px inside the truth
    foreground[0:5, 12:20] = 0.9  # unannotated: not counted
    probabilities = np.stack([1 - foreground, foreground])
    holdout = _part(classes, (classes == 1).astype(np.int32), score_name=IOU)
    assert holdout_score(probabilities, holdout) == pytest.approx(40 / 60)


def _part(classes, instances, score_name=F1):
    from napari_unet.core.holdout import HeldOutPart, HoldOut

    region = (slice(0, classes.shape[0]), slice(0, classes.shape[1]))
    return HoldOut((HeldOutPart(0, region, classes, instances),), score_name, "test")


# --------------------------------------------------------------------- tuning
def test_retuning_beats_a_deliberately_bad_threshold():
    _, labels = grid_of_disks()
    rng = np.random.default_rng(1)
    # cells at 0.7, background at 0.4 with noise: a threshold of 0.35 merges everything
    foreground = np.where(labels > 0, 0.7, 0.4) + rng.normal(0, 0.02, labels.shape)
    probabilities = np.stack([1 - foreground, foreground]).astype(np.float32)
    target = targets_from_annotation(labels, "dense")
    tuning = tune_postprocess(
        [probabilities], [(target.classes, target.instances)], base={"threshold": 0.35}
    )
    assert tuning.base_score < 0.2
    assert tuning.score == 1.0 and 0.45 <= tuning.options["threshold"] <= 0.65
    assert "threshold" in tuning.changed()


# ---------------------------------------------------------------- the trainer
def test_best_weights_are_chosen_by_the_held_out_score():
    image, labels = grid_of_disks()
    trainer = Trainer(TINY, image, sparse(labels), convention="sparse", config=quick())
    assert trainer.holdout is not None and trainer.holdout.description == "2 of 12 cells"
    events = list(trainer.run())
    validations = [e for e in events if isinstance(e, Validation)]
    assert all(e.score is not None and e.score_name == F1 for e in validations)
    best = max(validations, key=lambda e: (e.score, -e.loss))
    # the first of equal (score, loss) pairs is kept
    first_best = next(e for e in validations if (e.score, e.loss) == (best.score, best.loss))
    assert trainer.best_step == first_best.step and trainer.best_score == best.score
    finished = events[-1]
    assert isinstance(finished, TrainingFinished) and finished.best_score == best.score
    assert "held-out F1@0.5" in finished.tuning


def test_held_out_score_offline_equals_the_reported_one(tmp_path):
    """The "Measured" check of issue 18: the score of the saved model, computed offline
    on the held-out part, equals the one reported during training."""
    image, labels = grid_of_disks()
    trainer = Trainer(TINY, image, sparse(labels), convention="sparse", config=quick())
    finished = list(trainer.run())[-1]
    path = save_model(trainer.best_bundle(), tmp_path / "tuned.safetensors")
    model = load_model(path)
    record = model.provenance["holdout"]
    assert record["held_out"] == "2 of 12 cells" and record["score_name"] == F1
    assert record["score"] == pytest.approx(finished.best_score)
    assert record["step"] == trainer.best_step
    tuning = model.provenance["postprocess_tuning"]
    assert tuning["held_out_tuned_score"] == pytest.approx(trainer.tuned_score)
    # segmented offline at the training scale, with the public segment path
    probabilities = segment(
        model, image, output="probabilities", device="cpu", diameter=model.object_diameter
    )
    offline_base = holdout_score(probabilities, trainer.holdout, record["postprocess"])
    assert offline_base == pytest.approx(finished.best_score, abs=1e-9)
    recommended = recommended_options(model, "labels")
    assert recommended["threshold"] == trainer.tuning.options["threshold"]
    offline_tuned = holdout_score(probabilities, trainer.holdout, recommended)
    assert offline_tuned == pytest.approx(trainer.tuned_score, abs=1e-9)


def test_new_annotations_resplit_and_rescore_the_kept_best():
    image, labels = grid_of_disks()
    trainer = Trainer(TINY, image, sparse(labels), convention="sparse", config=quick(steps=8))
    list(trainer.run())
    assert trainer.best_score is not None and trainer.tuning is not None
    fewer = sparse(np.where(labels <= 3, labels, 0))
    trainer.update_annotations(image, fewer)
    assert trainer.holdout is None and trainer.best_score is None
    assert "no score" in trainer.holdout_note
    trainer.update_annotations(image, sparse(labels))
    assert trainer.best_score is not None and trainer.tuning is None  # tuned for the old ones

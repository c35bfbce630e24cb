"""The background warm-up: one tiny training step and segmentation, nothing global touched."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from napari_unet.core import warmup


@pytest.fixture
def cold(monkeypatch):
    """A process in which the warm-up has not run yet."""
    monkeypatch.setattr(warmup, "_DONE", threading.Event())


def test_synthetic_cells_are_two_touching_discs():
    image, labels = warmup.synthetic_cells(64)
    assert image.shape == labels.shape == (64, 64)
    assert set(np.unique(labels)) == {0, 1, 2}
    touching = (labels[:, :-1] == 1) & (labels[:, 1:] == 2)
    assert touching.any()
    assert image[labels > 0].min() > image[labels == 0].max()


def test_tiny_model_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(1)
    torch.manual_seed(3)
    first, second = warmup.tiny_model(seed=1), warmup.tiny_model(seed=1)
    assert torch.equal(torch.rand(1), expected)
    other = warmup.tiny_model(seed=2)
    key = "head.weight"
    assert torch.equal(first.state_dict[key], second.state_dict[key])
    assert not torch.equal(first.state_dict[key], other.state_dict[key])
    assert all(torch.isfinite(v).all() for v in first.state_dict.values() if v.is_floating_point())


def test_exercise_core_runs_once_without_touching_global_state(cold):
    # The legacy global numpy generator is what user scripts often seed.
    torch.manual_seed(11)
    np.random.seed(11)  # noqa: NPY002
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()  # noqa: NPY002
    assert not warmup.is_warm()
    warmup.exercise_core()
    assert warmup.is_warm()
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)  # noqa: NPY002


def test_exercise_core_ends_with_a_full_garbage_collection(cold):
    # So that the first real run does not pay for the next full collection (see warmup).
    full_before = gc.get_stats()[2]["collections"]
    warmup.exercise_core()
    assert gc.get_stats()[2]["collections"] > full_before
    assert gc.get_count()[2] == 0  # nothing pending for the oldest generation


FIRST_RUN = """
import sys, torch
torch.set_num_threads(1)
from napari_unet.core import warmup
from napari_unet.core.model import UNetConfig
from napari_unet.core.segment import segment
from napari_unet.core.train import TrainConfig, Trainer
if sys.argv[1] == "warm":
    warmup.exercise_core()
before = set(sys.modules)
image, labels = warmup.synthetic_cells(96)
config = TrainConfig(steps=1, batch_size=1, validation_every=1, preview_every=1)
trainer = Trainer(
    UNetConfig(depth=2, base_width=4), [image], [labels], convention="dense",
    config=config, preview_image=image,
)
for _event in trainer.run():
    pass
segment(trainer.last_bundle(), image)
print(len(set(sys.modules) - before))
"""


def _modules_imported_by_a_first_run(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FIRST_RUN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


def test_exercise_core_loads_what_a_first_training_step_needs():
    """In a fresh process, a first training step and segmentation import modules
    (the stall the warm-up exists for); after the warm-up they import none."""
    assert _modules_imported_by_a_first_run("cold") > 0
    assert _modules_imported_by_a_first_run("warm") == 0

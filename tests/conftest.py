"""Shared fixtures: deterministic single-threaded CPU torch, and the real data when present.

One torch thread: two threads spin badly when the cores are shared (e.g. with a training
run), and the tests' small networks gain nothing from more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

#: ../shared/data beside the repository (as in CI); tests needing it skip when absent.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic_cpu_torch():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (clone beside ../shared to run)")
    return SHARED_DATA

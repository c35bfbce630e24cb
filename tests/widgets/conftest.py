"""Fixtures for the widget tests: an isolated model folder, tiny models, captured notifications."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.utils import progress

from napari_unet._widgets import _common, _devices, _notify, _sessions
from napari_unet._widgets._model_choice import SETTINGS_DIR_ENV
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import MODELS_DIR_ENV, random_model, save_model

#: A tiny valid U-Net (margin 20 px): fast enough for many tiles in a test.
TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


@pytest.fixture(autouse=True)
def _user_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets an empty user model folder."""
    folder = tmp_path / "user-models"
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    return folder


@pytest.fixture(autouse=True)
def _settings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets an empty settings folder (the user's own is never touched)."""
    folder = tmp_path / "settings"
    monkeypatch.setenv(SETTINGS_DIR_ENV, str(folder))
    return folder


@pytest.fixture(autouse=True)
def _fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts a new napari session: no models trained, no choices made."""
    monkeypatch.setattr(_sessions, "_SESSION", _sessions.SessionModels())


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Widgets offer only "auto" and "cpu", so tests never touch an accelerator."""
    cpu_only = lambda: ["auto", "cpu"]  # noqa: E731
    monkeypatch.setattr(_devices, "device_choices", cpu_only)
    monkeypatch.setattr(_common, "device_choices", cpu_only)  # re-exported: Fine-tune's


@pytest.fixture
def notifications(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Messages the widgets show, by kind ("error", "warning", "info")."""
    shown: dict[str, list[str]] = {"error": [], "warning": [], "info": []}
    for kind in shown:
        monkeypatch.setattr(_notify, f"show_{kind}", shown[kind].append)
    return shown


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    """A random-weight tiny model saved to a file."""
    return save_model(random_model(TINY, seed=1, name="tiny"), tmp_path / "tiny.safetensors")


@pytest.fixture
def blobs() -> np.ndarray:
    """(96, 128) uint8: bright discs on a dark, slightly noisy background."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:96, :128]
    image = rng.normal(20, 5, (96, 128))
    for r, c in [(20, 25), (50, 70), (70, 30), (30, 100), (75, 105)]:
        image[(rows - r) ** 2 + (cols - c) ** 2 < 100] += 150
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def tiny_base_file(tmp_path: Path) -> Path:
    """Another random tiny model file, a quick base for fine-tuning."""
    return save_model(
        random_model(TINY, seed=2, name="tinybase"), tmp_path / "tinybase.safetensors"
    )


class Recorded(progress):
    """napari's progress bar, remembering ``(n, total)`` after each of its updates."""

    def __init__(self, *args, **kwargs) -> None:
        self.counts: list[tuple[int, int]] = []
        super().__init__(*args, **kwargs)

    def update(self, n: int = 1) -> None:
        super().update(n)
        self.counts.append((self.n, self.total))


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[Recorded]:
    """Every napari progress bar the widgets open, in order."""
    opened: list[Recorded] = []

    def open_bar(*args, **kwargs) -> Recorded:
        bar = Recorded(*args, **kwargs)
        opened.append(bar)
        return bar

    monkeypatch.setattr(_notify, "progress", open_bar)
    return opened

"""The docks' questions to the user: a model file to open, a result store to replace."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ask_model_file(parent: Any = None) -> Path | None:
    """Let the user pick a model file; ``None`` when cancelled."""
    from qtpy.QtWidgets import QFileDialog

    from napari_unet.core.modelfile import user_models_dir

    folder = user_models_dir()
    path, _ = QFileDialog.getOpenFileName(
        parent,
        "Open a napari-unet model",
        str(folder if folder.is_dir() else Path.home()),
        "napari-unet models (*.safetensors)",
    )
    return Path(path) if path else None


def ask_replace(parent: Any, path: Path) -> bool:
    """Ask whether the napari-unet result store ``path`` may be replaced."""
    from qtpy.QtWidgets import QMessageBox

    buttons = QMessageBox.StandardButton
    answer = QMessageBox.question(
        parent,
        "Replace the result store?",
        f"{path} already holds a napari-unet result. Replace it with this run's result?",
        buttons.Yes | buttons.No,
        buttons.No,
    )
    return answer == buttons.Yes

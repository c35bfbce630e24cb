"""The registry of named models: built-in models and the user's models, found by name.

Models are found by name in two folders:

* built-in models shipped in the package (``napari_unet/models/NAME.safetensors``, each
  with a ``NAME.md`` model card);
* user models in ``platformdirs.user_data_dir("napari-unet")/models``, or in the folder
  named by the environment variable ``NAPARI_UNET_MODELS_DIR``.

A built-in name always means the built-in model. Listing reads only the files' headers,
without torch, so ``napari-unet models`` and the widgets' model choosers stay quick.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import platformdirs

from napari_unet.core.description import (
    SUFFIX,
    checked_description,
    scale_summary,
    short_description,
)
from napari_unet.core.errors import ModelFileError, ModelNotFoundError
from napari_unet.core.safety import TEMP_PREFIX

#: Environment variable that overrides the per-user model folder.
MODELS_DIR_ENV = "NAPARI_UNET_MODELS_DIR"
#: Preferred default built-in model (the first built-in alphabetically otherwise).
DEFAULT_MODEL_NAME = "nuclei"
#: Folder of the built-in models; a module attribute so tests can point it elsewhere.
BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class ModelEntry:
    """One model in :func:`list_models`.

    ``description`` is the listing's line: the model's own description, then its scale
    (``"4 nm/px, objects ~22 px"``) when recorded; ``scale`` is that scale alone.
    """

    name: str
    path: Path
    source: Literal["built-in", "user"]
    description: str = ""
    scale: str = ""


def builtin_models_dir() -> Path:
    """Folder of the models shipped with the package."""
    return Path(BUILTIN_MODELS_DIR)


def user_models_dir() -> Path:
    """Per-user model folder (``$NAPARI_UNET_MODELS_DIR`` when set); may not exist yet."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("napari-unet")) / "models"


def list_models() -> list[ModelEntry]:
    """Built-in models, then user models, each sorted by name.

    A user file with a built-in name is left out: the name means the built-in model.
    An unreadable file is listed with the reason as its description.
    """
    entries = [_entry(path, "built-in") for path in _model_files(builtin_models_dir())]
    builtin_names = {entry.name for entry in entries}
    entries += [
        _entry(path, "user")
        for path in _model_files(user_models_dir())
        if path.stem not in builtin_names
    ]
    return entries


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The file of a model given by path or by name.

    An existing file wins; otherwise the name is looked up among built-in models,
    then user models.

    Raises
    ------
    ModelNotFoundError
        Naming the available models, when neither a file nor a known name matches.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    text = str(name_or_path)
    for entry in list_models():
        if entry.name == text:
            return entry.path
    available = ", ".join(entry.name for entry in list_models()) or "none installed"
    if candidate.suffix == SUFFIX or os.sep in text or "/" in text:
        raise ModelNotFoundError(f"model file not found: {text} (known models: {available})")
    raise ModelNotFoundError(
        f"unknown model {text!r}; available models: {available}. "
        f"Give a model name or a path to a {SUFFIX} file"
    )


def default_model_name() -> str | None:
    """The built-in model used when none is named: ``nuclei`` if shipped, else the first."""
    names = [entry.name for entry in list_models() if entry.source == "built-in"]
    if DEFAULT_MODEL_NAME in names:
        return DEFAULT_MODEL_NAME
    return names[0] if names else None


def _model_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    # A leftover temporary file of an interrupted save is not a model.
    return sorted(
        path for path in folder.glob(f"*{SUFFIX}") if not path.name.startswith(TEMP_PREFIX)
    )


def _entry(path: Path, source: Literal["built-in", "user"]) -> ModelEntry:
    try:
        stat = path.stat()
    except OSError as error:
        description, scale = f"(unreadable: {error})", ""
    else:
        description, scale = _cached_description(path, stat.st_mtime_ns, stat.st_size)
    return ModelEntry(
        name=path.stem, path=path, source=source, description=description, scale=scale
    )


# Model choosers list the models whenever napari's layer list changes; reading every
# file's header each time would stall the GUI. A changed file has a new mtime or size.
@functools.lru_cache(maxsize=512)
def _cached_description(path: Path, _mtime_ns: int, _size: int) -> tuple[str, str]:
    """``(listing line, scale)`` of a model file."""
    try:
        parsed = checked_description(path)
    except ModelFileError as error:
        return f"(unreadable: {error})", ""
    scale = scale_summary(parsed.pixel_size, parsed.object_diameter)
    text = short_description(parsed.provenance)
    return "; ".join(part for part in (text, scale) if part), scale


__all__ = [
    "BUILTIN_MODELS_DIR",
    "DEFAULT_MODEL_NAME",
    "MODELS_DIR_ENV",
    "ModelEntry",
    "builtin_models_dir",
    "default_model_name",
    "list_models",
    "resolve_model",
    "user_models_dir",
]

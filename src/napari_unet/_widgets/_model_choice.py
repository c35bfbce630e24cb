"""Which model the Segment dock offers for an image layer, and what it remembers.

The model offered when an image is chosen is, in this order:

1. the model the user chose for that layer earlier in the session (or the model
   Fine-tune trained on it), kept by the session (:class:`SessionModels`);
2. the model the user last chose, in any session, for an image of the same kind
   (:func:`~napari_unet.core.imagekind.image_kind`: fluorescence, transmitted light or
   EM), read from
   ``settings.json`` in ``platformdirs.user_config_dir("napari-unet")`` (or the folder
   ``$NAPARI_UNET_CONFIG_DIR``); an unreadable file is ignored, never an error;
3. a built-in model whose recorded pixel size is within :data:`SCALE_MATCH` times the
   layer's (``em-membranes``: 4 nm), when the layer's scale has length units;
4. the built-in model for the image's kind (:data:`KIND_MODELS`);
5. the default built-in model (``nuclei``).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import platformdirs

from napari_unet._widgets._scale import layer_pixel_size, model_scale
from napari_unet._widgets._sessions import ModelSource, SessionModels
from napari_unet.core.errors import UNetError
from napari_unet.core.imagekind import ImageKind, image_kind, plane_sample
from napari_unet.core.registry import default_model_name, list_models
from napari_unet.core.safety import atomic_write

_LOG = logging.getLogger(__name__)

#: Environment variable naming the folder of napari-unet's settings file.
SETTINGS_DIR_ENV = "NAPARI_UNET_CONFIG_DIR"
SETTINGS_FILE = "settings.json"
#: The built-in model for each image kind.
KIND_MODELS: dict[str, str] = {
    "em": "em-membranes",
    "fluorescence": "nuclei",
    "transmitted": "dic-cells",
}
#: A built-in model recording a pixel size within this factor of the layer's is offered
#: (the core resamples by that factor; beyond it the model's scale is likely another
#: modality's: 4 nm EM vs 300 nm light microscopy).
SCALE_MATCH = 4.0
#: Settings key of an image whose kind is unknown (no image, RGB, flat).
UNKNOWN_KIND = "unknown"


# ------------------------------------------------------------------------ image kind
def layer_kind(layer: Any) -> ImageKind | None:
    """The kind of the image ``layer`` holds, from a small sample of its middle plane
    (the lowest resolution of a multiscale layer); None for RGB layers and on any
    failure to read (a lazy array that cannot be read now is no reason to fail)."""
    if layer is None or getattr(layer, "rgb", False):
        return None
    try:
        data = layer.data[-1] if getattr(layer, "multiscale", False) else layer.data
        return image_kind(plane_sample(data))
    except Exception:
        _LOG.debug("napari-unet: could not sample layer %r", layer, exc_info=True)
        return None


# -------------------------------------------------------------------------- settings
def settings_path() -> Path:
    """The settings file (it may not exist)."""
    override = os.environ.get(SETTINGS_DIR_ENV)
    folder = Path(override).expanduser() if override else None
    folder = folder or Path(platformdirs.user_config_dir("napari-unet"))
    return folder / SETTINGS_FILE


def read_settings() -> dict[str, Any]:
    """The settings, ``{}`` when the file is missing, unreadable or not a JSON object."""
    try:
        settings = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        return {}
    return settings if isinstance(settings, dict) else {}


def source_ref(source: Any) -> dict[str, str] | None:
    """How ``source`` is written in the settings: ``{"name": ...}`` for a registry model,
    ``{"path": ...}`` for another file; None for session models and scratch."""
    if not isinstance(source, ModelSource) or source.kind != "file" or source.path is None:
        return None
    for entry in list_models():
        if entry.path == source.path:
            return {"name": entry.name}
    return {"path": str(source.path)}


def remember_last_choice(kind: str | None, source: Any) -> None:
    """Write ``source`` as the last model chosen for images of ``kind`` (never raises:
    a settings file that cannot be written only loses the memory)."""
    ref = source_ref(source)
    if ref is None:
        return
    settings = read_settings()
    last = settings.get("last_model")
    last = dict(last) if isinstance(last, dict) else {}
    last[kind or UNKNOWN_KIND] = ref
    settings["last_model"] = last
    try:
        with atomic_write(settings_path()) as temporary:
            temporary.write_text(json.dumps(settings, indent=1), encoding="utf-8")
    except (OSError, UNetError):
        _LOG.debug("napari-unet: could not write the settings", exc_info=True)


def _last_choice(kind: str | None, sources: list[ModelSource]) -> ModelSource | None:
    """The last model chosen for ``kind`` in an earlier session, if it still exists."""
    last = read_settings().get("last_model")
    ref = last.get(kind or UNKNOWN_KIND) if isinstance(last, dict) else None
    if not isinstance(ref, dict):
        return None
    name, path = ref.get("name"), ref.get("path")
    if isinstance(name, str):
        return _registry_model(name, sources)
    if isinstance(path, str) and Path(path).is_file():
        offered = [s for s in sources if s.path == Path(path)]
        return offered[0] if offered else ModelSource(Path(path).name, "file", path=Path(path))
    return None


# ------------------------------------------------------------------------- the default
def default_model(
    layer: Any, sources: list[ModelSource], session: SessionModels
) -> ModelSource | None:
    """The model to offer for the image ``layer`` (None: no image) among ``sources``
    (a file found in the settings may be another: the caller offers it too)."""
    if layer is not None:
        chosen = session.remembered(layer)
        if chosen is not None and chosen in sources:
            return chosen
    kind = layer_kind(layer)
    return (
        _last_choice(kind, sources)
        or _by_pixel_size(layer, sources)
        or _registry_model(KIND_MODELS.get(kind or "") or default_model_name(), sources)
    )


def _registry_model(name: str | None, sources: Iterable[ModelSource]) -> ModelSource | None:
    """The offered built-in or user model called ``name``."""
    paths = {entry.path for entry in list_models() if entry.name == name}
    return next((s for s in sources if s.kind == "file" and s.path in paths), None)


def _by_pixel_size(layer: Any, sources: list[ModelSource]) -> ModelSource | None:
    """The built-in model whose recorded pixel size is nearest the layer's, within
    :data:`SCALE_MATCH` times; None when the layer's units are pixels."""
    pixel_size = layer_pixel_size(layer) if layer is not None else None
    if pixel_size is None:
        return None
    builtins = {entry.path for entry in list_models() if entry.source == "built-in"}
    best, best_distance = None, math.log(SCALE_MATCH)
    for source in sources:
        if source.kind != "file" or source.path not in builtins:
            continue
        recorded = model_scale(source)[0]
        if recorded is None:
            continue
        ratio_y, ratio_x = pixel_size.ratio_to(recorded)
        distance = abs(math.log(math.sqrt(ratio_y * ratio_x)))
        if distance <= best_distance:
            best, best_distance = source, distance
    return best


__all__ = [
    "KIND_MODELS",
    "SCALE_MATCH",
    "SETTINGS_DIR_ENV",
    "default_model",
    "layer_kind",
    "read_settings",
    "remember_last_choice",
    "settings_path",
]

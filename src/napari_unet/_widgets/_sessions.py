"""The session's models and the model choices every dock offers.

Every dock shares one :class:`SessionModels` (see :func:`session_for`): the Fine-tune
dock adds the models it trains, the Segment dock lists them at once and, in the viewer
that trained it, selects the new one. It holds models and the model chosen for each
image layer, never widgets, and lives as long as the napari session (the process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from psygnal import Signal

from napari_unet.core.description import read_description
from napari_unet.core.errors import UNetError
from napari_unet.core.model import SMALL
from napari_unet.core.modelfile import ModelBundle, list_models, load_model
from napari_unet.core.segment import recommended_options


# ------------------------------------------------------------------------- session models
def viewer_key(viewer: Any) -> int | None:
    """A key telling viewers apart, the same for every object napari hands out for one
    viewer; None when ``viewer`` has none.

    napari gives each plugin dock widget its own proxy of the viewer
    (``napari.utils._proxies.PublicOnlyProxy``), so ``id(viewer)`` differs between the
    docks of one viewer. Its hash does not: napari defines a viewer's hash as its
    identity, and the proxy (a ``wrapt.ObjectProxy``) forwards ``hash()`` to the viewer.
    """
    try:
        return hash(viewer)
    except TypeError:
        return None


class SessionModels:
    """Models trained in this napari session, and the model the user gave each image.

    One per process (:func:`session_for`), so every dock sees every trained model
    whatever viewer object napari handed it, and a model outlives the dock that trained
    it (closing Fine-tune, then opening Segment). ``changed`` is emitted with
    ``(model, viewer key)``: the newest model and the :func:`viewer_key` of the viewer
    it was trained in (``(None, None)`` when only the saved model files changed), so
    model choosers refresh and the Segment docks of that viewer select it.
    """

    changed = Signal(object, object)

    def __init__(self) -> None:
        self._bundles: list[ModelBundle] = []
        self._choices: dict[Any, ModelSource] = {}

    @property
    def bundles(self) -> list[ModelBundle]:
        """Session models, oldest first."""
        return list(self._bundles)

    def add(self, bundle: ModelBundle, viewer: Any = None, layer: Any = None) -> None:
        """Add ``bundle`` (replacing a session model of the same name), trained in
        ``viewer`` on the image ``layer``: it becomes that layer's model."""
        self._bundles = [b for b in self._bundles if b.name != bundle.name] + [bundle]
        if layer is not None:
            self.remember(layer, ModelSource(f"{bundle.name} (this session)", "session", bundle))
        self.changed.emit(bundle, viewer_key(viewer))

    def files_changed(self) -> None:
        """Tell choosers that model files were saved (the registry changed)."""
        self.changed.emit(None, None)

    def remember(self, layer: Any, source: ModelSource) -> None:
        """``source`` is the model the user chose for the image ``layer``."""
        self._choices[_layer_key(layer)] = source

    def remembered(self, layer: Any) -> ModelSource | None:
        """The model last chosen for ``layer`` in this session, if any."""
        return self._choices.get(_layer_key(layer))


def _layer_key(layer: Any) -> Any:
    """napari's ``unique_id`` of a layer (the same through any proxy of it)."""
    return getattr(layer, "unique_id", None) or id(layer)


_SESSION = SessionModels()


def session_for(viewer: Any = None) -> SessionModels:
    """The :class:`SessionModels` every napari-unet widget shares (``viewer`` is not
    needed: the session is the process's; models say which viewer trained them)."""
    return _SESSION


# -------------------------------------------------------------------------- model choices
@dataclass(frozen=True, eq=False)
class ModelSource:
    """Where a model comes from: a session bundle, a file, or a new small network.

    Compares by identity of its target so choosers can keep a selection across refreshes.
    """

    label: str
    kind: Literal["session", "file", "scratch"]
    bundle: ModelBundle | None = None
    path: Path | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelSource):
            return NotImplemented
        return (self.kind, self.path, id(self.bundle)) == (
            other.kind,
            other.path,
            id(other.bundle),
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.path, id(self.bundle)))

    def load(self, cache: dict | None = None) -> ModelBundle | None:
        """The model (``None`` for scratch); files are read once per modification time.

        Call from a worker thread: reading a file takes a moment.
        """
        if self.kind == "session":
            return self.bundle
        if self.kind == "scratch":
            return None
        assert self.path is not None
        key = (str(self.path), self.path.stat().st_mtime_ns if self.path.exists() else 0)
        if cache is not None and key in cache:
            return cache[key]
        bundle = load_model(self.path)
        if cache is not None:
            cache[key] = bundle
        return bundle


#: Choice value that opens a file dialog.
BROWSE = "browse"
BROWSE_LABEL = "Browse..."
SCRATCH = ModelSource("scratch (small, untrained)", "scratch")


def model_sources(session: SessionModels, extra_files: list[Path]) -> list[ModelSource]:
    """Session models (newest first), built-in and user models, then browsed files."""
    sources = [
        ModelSource(f"{b.name} (this session)", "session", bundle=b)
        for b in reversed(session.bundles)
    ]
    for entry in list_models():
        suffix = "" if entry.source == "built-in" else " (saved)"
        sources.append(ModelSource(f"{entry.name}{suffix}", "file", path=entry.path))
    known = {s.path for s in sources}
    sources += [ModelSource(p.name, "file", path=p) for p in extra_files if p not in known]
    return sources


def model_choices(sources: list[ModelSource]) -> list[tuple[str, Any]]:
    """``(label, value)`` pairs for a magicgui ComboBox, ending with "Browse..."."""
    return [(s.label, s) for s in sources] + [(BROWSE_LABEL, BROWSE)]


SMALL_CONFIG = SMALL


# ---------------------------------------------------------------------- layers and arrays
def model_in_channels(source: Any) -> int | None:
    """The channel count of the model ``source`` names, when known without loading it
    (a session model's, or a file's description); None for scratch and unreadable files
    (a broken file is reported in full when the run loads it)."""
    if not isinstance(source, ModelSource):
        return None
    if source.bundle is not None:
        return int(source.bundle.config.in_channels)
    if source.path is None:
        return None
    try:
        return int(read_description(source.path)["config"]["in_channels"])
    except (UNetError, OSError, KeyError, TypeError, ValueError):
        return None


def model_recommendation(source: Any, output: str) -> dict[str, Any] | None:
    """The post-processing the model ``source`` recommends for ``output``
    (:func:`~napari_unet.core.segment.recommended_options`), read without loading it;
    ``{}`` for a model without one, None for scratch and unreadable files (a broken file
    is reported in full when a run loads it)."""
    if not isinstance(source, ModelSource):
        return None
    provenance: dict = {}
    if source.bundle is not None:
        provenance = source.bundle.provenance
    elif source.path is not None:
        try:
            provenance = read_description(source.path).get("provenance") or {}
        except UNetError:
            return None
    return recommended_options(SimpleNamespace(provenance=provenance), output)

"""The image and model choosers a dock starts with, as one component.

:class:`ImageModelChoosers` owns two combo boxes and what they do for the user:

- **image**: the viewer's image layers, kept current as layers come and go; it follows
  the active layer (never one of our own results);
- **model**: the session's models (newest first), the built-in and saved models, files
  opened with "Browse..." (a file dialog; cancelling it keeps the previous choice), and
  any ``extra`` sources (Fine-tune's "scratch"); it follows the session, and with
  ``select_trained`` selects a model trained in the same viewer when its run ends;
- with ``per_image``: choosing an image selects the model for it
  (:func:`~napari_unet._widgets._model_choice.default_model`: the user's earlier choice for
  it, else the last choice for its kind of image, else one fitting its pixel size or
  kind), and a model the user chooses is remembered for that image (this session) and
  for its kind (across sessions); an ``extra`` source ("scratch") is not a model to
  remember.

A dock lays out :attr:`ImageModelChoosers.image` and :attr:`ImageModelChoosers.model`,
connects to :attr:`ImageModelChoosers.model_changed` (emitted with each model chosen,
never "Browse..."), and calls :meth:`ImageModelChoosers.start` once its own handlers
are connected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox
from napari.layers import Image
from psygnal import Signal

from napari_unet._widgets import _dialogs
from napari_unet._widgets._layers import choose_layer, is_ours
from napari_unet._widgets._model_choice import default_model, layer_kind, remember_last_choice
from napari_unet._widgets._sessions import (
    BROWSE,
    ModelSource,
    SessionModels,
    model_choices,
    model_sources,
    viewer_key,
)
from napari_unet.core.errors import InputError


class ImageModelChoosers:
    """A dock's image chooser and model chooser, and the logic between them.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose image layers are offered (any proxy napari hands a dock).
    session : SessionModels
        The session's models and the choices remembered per image.
    parent : QWidget
        The dock's widget, parent of the "Browse..." file dialog.
    connect : callable
        ``connect(emitter, callback)`` for the viewer's and session's signals, e.g.
        :meth:`~napari_unet._widgets._lifetime.DockLifetime.connect` (disconnected when
        the panel is gone).
    model_label : str
        The model chooser's label ("model", "base model").
    extra : sequence of ModelSource
        Offered after the models, before "Browse..." (e.g. ``SCRATCH``); choosing one
        is never remembered.
    per_image : bool
        Select a model for each chosen image, and remember the user's choices.
    select_trained : bool
        Select a model trained in this viewer when it joins the session.
    """

    #: Emitted with the chosen model (a ModelSource) whenever the model chooser changes
    #: to a model, by the user or by the component.
    model_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        session: SessionModels,
        *,
        parent: Any,
        connect: Callable[[Any, Callable], None],
        model_label: str = "model",
        extra: Sequence[ModelSource] = (),
        per_image: bool = True,
        select_trained: bool = True,
    ) -> None:
        self._viewer = viewer
        self._session = session
        self._parent = parent
        self._connect = connect
        self._label = model_label
        self._extra = tuple(extra)
        self._per_image = per_image
        self._select_trained = select_trained
        self._browsed: list[Path] = []
        #: The model chosen before the current one (restored when Browse... is cancelled).
        self._last_model: Any = None
        #: True while the component selects a model itself (not the user's choice).
        self._choosing = False
        #: The user's choice made while no image was chosen: it goes to the next images.
        self._choice_without_image: ModelSource | None = None
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.model = ComboBox(label=model_label, choices=self._model_choices)
        self.model.changed.connect(self._on_model_chosen)
        if per_image:
            self.image.changed.connect(self._offer_default_model)
        self._last_model = self.model.value

    def start(self) -> None:
        """Follow the viewer and the session from now on, and make the first choices
        (the active image layer, its model)."""
        self._connect(self._session.changed, self._on_session_changed)
        self._connect(self._viewer.layers.events.inserted, self.refresh_layers)
        self._connect(self._viewer.layers.events.removed, self.refresh_layers)
        self._connect(self._viewer.layers.selection.events.active, self.follow_active_layer)
        self.follow_active_layer()
        if self._per_image:
            self._offer_default_model()
        self._last_model = self.model.value

    # ----------------------------------------------------------------- values
    @property
    def image_layer(self) -> Any:
        """The chosen image layer, or None."""
        return self.image.value

    @property
    def source(self) -> ModelSource | None:
        """The chosen model, or None (nothing chosen yet)."""
        value = self.model.value
        return value if isinstance(value, ModelSource) else None

    @property
    def model_labels(self) -> list[str]:
        """Labels of the models offered (without "Browse...")."""
        return [label for label, value in self._model_choices() if value != BROWSE]

    @property
    def model_label(self) -> str | None:
        """Label of the chosen model, as the chooser shows it (e.g. "nuclei")."""
        return None if self.source is None else self.model.current_choice

    # ---------------------------------------------------------------- choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        choices = model_choices(model_sources(self._session, self._browsed))
        return [*choices[:-1], *((s.label, s) for s in self._extra), choices[-1]]

    def refresh_layers(self, _event: Any = None) -> None:
        """Layers were added or removed: offer the current ones."""
        self.image.reset_choices()
        self.follow_active_layer()

    def follow_active_layer(self, _event: Any = None) -> None:
        """Choose the active layer when it is an image (not one of our results)."""
        active = self._viewer.layers.selection.active
        if isinstance(active, Image) and active in self._viewer.layers and not is_ours(active):
            self.image.reset_choices()
            self.image.value = active

    def choose_image(self, layer: Any) -> None:
        """Choose the image ``layer`` (a layer or its name) as the user would."""
        choose_layer(self.image, self._viewer, layer)

    # ------------------------------------------------------------------ models
    @contextlib.contextmanager
    def _choosing_model(self) -> Iterator[None]:
        """The component selects a model itself: not a choice of the user's to remember."""
        self._choosing = True
        try:
            yield
        finally:
            self._choosing = False
            self._last_model = self.model.value

    def _offer_default_model(self, _value: Any = None) -> None:
        """Select the model for the chosen image (see :mod:`._model_choice`)."""
        layer = self.image.value
        if layer is not None and self._choice_without_image is not None:
            if self._session.remembered(layer) is None:
                self._session.remember(layer, self._choice_without_image)
        sources = model_sources(self._session, self._browsed)
        source = default_model(layer, sources, self._session)
        if source is None:
            return
        if source not in sources and source.path is not None:  # a file of an earlier session
            self._browsed.append(source.path)
            self.model.reset_choices()
        with self._choosing_model():
            self.model.value = source

    def _remember_choice(self, source: ModelSource) -> None:
        """The user chose ``source`` for the chosen image: keep it for the session, and
        as the last choice for images of its kind."""
        if source in self._extra:
            return
        layer = self.image.value
        if layer is not None:
            self._session.remember(layer, source)
        else:
            self._choice_without_image = source
        remember_last_choice(layer_kind(layer), source)

    def _on_session_changed(self, bundle: Any = None, origin: Any = None) -> None:
        """Refresh the models; one just trained in this viewer is selected."""
        previous = self.model.value
        with self._choosing_model():
            self.model.reset_choices()
            trained_here = bundle is not None and origin == viewer_key(self._viewer)
            if self._select_trained and trained_here:
                self.model.value = ModelSource("", "session", bundle=bundle)
            elif previous is not None and previous != BROWSE:
                with contextlib.suppress(ValueError):  # a session model replaced since
                    self.model.value = previous

    def _on_model_chosen(self, value: Any) -> None:
        if value == BROWSE:
            path = _dialogs.ask_model_file(self._parent)
            if path is None:
                self.model.value = self._last_model
            else:
                self.add_model_file(path)
            return
        self._last_model = value
        if self._per_image and not self._choosing and isinstance(value, ModelSource):
            self._remember_choice(value)
        if isinstance(value, ModelSource):
            self.model_changed.emit(value)

    def add_model_file(self, path: str | Path) -> None:
        """Offer the model file ``path`` and select it."""
        path = Path(path)
        if path not in self._browsed:
            self._browsed.append(path)
        self.model.reset_choices()
        self.model.value = ModelSource("", "file", path=path)
        self._last_model = self.model.value

    def choose_model(self, model: Any) -> None:
        """Select ``model`` as the user would (remembered for the chosen image): a label
        of the chooser, a model name ("em-membranes"), a model file, or a ModelSource.

        Raises
        ------
        InputError
            When no offered model has that label or name.
        """
        if isinstance(model, Path):
            self.add_model_file(model)
            return
        if not isinstance(model, ModelSource):
            model = self._offered(str(model))
        if model == self.model.value and self._per_image:  # no change signal: remember here
            self._remember_choice(model)
        self.model.value = model

    def _offered(self, name: str) -> ModelSource:
        """The offered model labelled ``name``, or whose label starts with it."""
        offered = [(label, value) for label, value in self._model_choices() if value != BROWSE]
        matches = [value for label, value in offered if label == name]
        matches += [value for label, value in offered if label.split(" (")[0] == name]
        if not matches:
            labels = ", ".join(label for label, _ in offered)
            raise InputError(f"unknown {self._label} {name!r}: choose one of {labels}")
        return matches[0]


__all__ = ["ImageModelChoosers"]

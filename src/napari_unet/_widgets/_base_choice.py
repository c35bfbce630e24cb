"""The Fine-tune dock's base-model chooser: the models Segment offers, "scratch", Browse...

Choosing an image selects a base for it the way the Segment dock selects a model
(:func:`~napari_unet._widgets._model_choice.default_model`): the model chosen for that
image earlier in the session (or trained on it), else the last choice for an image of
its kind, else a built-in model recording the image's pixel size, else the one for its
kind. A base the user chooses is remembered the same way
(:func:`~napari_unet._widgets._model_choice.remember_last_choice`); "scratch" is not a
model to remember.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox

from napari_unet._widgets._common import (
    BROWSE,
    SCRATCH,
    ModelSource,
    SessionModels,
    ask_model_file,
    model_choices,
    model_sources,
)
from napari_unet._widgets._model_choice import default_model, layer_kind, remember_last_choice
from napari_unet.core.errors import InputError


class BaseModelChooser:
    """The "base model" combo box of a dock, following the dock's image chooser.

    Parameters
    ----------
    session : SessionModels
        The session's models and the per-image choices.
    image_combo : ComboBox
        The dock's image chooser: a new image gets its default base.
    parent : callable
        Returns the Qt parent of the Browse... dialog.
    """

    def __init__(
        self, session: SessionModels, image_combo: ComboBox, parent: Callable[[], Any]
    ) -> None:
        self._session = session
        self._image_combo = image_combo
        self._parent = parent
        self._browsed: list[Path] = []
        #: Selected by the dock itself (a default): not the user's choice to remember.
        self._choosing = False
        self._choice_without_image: ModelSource | None = None
        self.combo = ComboBox(label="base model", choices=self.choices)
        self._last = self.combo.value
        self.combo.changed.connect(self._on_chosen)
        image_combo.changed.connect(self.offer_default)

    # ------------------------------------------------------------------ choices
    def sources(self) -> list[ModelSource]:
        """The bases offered: session models, built-in and user models, browsed files
        and "scratch"."""
        return [*model_sources(self._session, self._browsed), SCRATCH]

    def choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """``(label, value)`` pairs of the combo box, "scratch" before "Browse..."."""
        choices = model_choices(model_sources(self._session, self._browsed))
        return [*choices[:-1], (SCRATCH.label, SCRATCH), choices[-1]]

    @property
    def value(self) -> ModelSource | None:
        """The chosen base."""
        value = self.combo.value
        return value if isinstance(value, ModelSource) else None

    @property
    def label(self) -> str | None:
        """The chosen base's label as the chooser shows it ("nuclei", "scratch ...")."""
        return None if self.value is None else self.combo.current_choice

    @property
    def labels(self) -> list[str]:
        """Labels of every base offered (without "Browse...")."""
        return [label for label, value in self.choices() if value != BROWSE]

    @contextlib.contextmanager
    def _dock_choice(self) -> Iterator[None]:
        """The dock selects a base itself: not a choice of the user's to remember."""
        self._choosing = True
        try:
            yield
        finally:
            self._choosing = False
            self._last = self.combo.value

    def _select(self, source: Any) -> None:
        """Select ``source`` as the dock's own choice (not remembered)."""
        with self._dock_choice():
            self.combo.value = source

    # ------------------------------------------------------------------ defaults
    def offer_default(self, _value: Any = None) -> None:
        """Select the base for the chosen image (see the module's docstring)."""
        layer = self._image_combo.value
        if layer is not None and self._choice_without_image is not None:
            if self._session.remembered(layer) is None:
                self._session.remember(layer, self._choice_without_image)
        sources = self.sources()
        source = default_model(layer, sources, self._session)
        if source is None:
            return
        if source not in sources and source.path is not None:  # a file of an earlier session
            self._browsed.append(source.path)
            self.combo.reset_choices()
        self._select(source)

    def _remember(self, source: ModelSource) -> None:
        """The user chose ``source`` for the chosen image: kept for the session, and as
        the last choice for images of its kind."""
        if source.kind == "scratch":
            return
        layer = self._image_combo.value
        if layer is not None:
            self._session.remember(layer, source)
        else:
            self._choice_without_image = source
        remember_last_choice(layer_kind(layer), source)

    def _on_chosen(self, value: Any) -> None:
        if value != BROWSE:
            self._last = value
            if not self._choosing and isinstance(value, ModelSource):
                self._remember(value)
            return
        path = ask_model_file(self._parent())
        if path is None:
            self._select(self._last)
        else:
            self.add_file(path)

    # ------------------------------------------------------------------ choosing
    def add_file(self, path: str | Path) -> None:
        """Offer the model file ``path`` and select it (the user's choice)."""
        path = Path(path)
        if path not in self._browsed:
            self._browsed.append(path)
        self.combo.reset_choices()
        self.choose(ModelSource("", "file", path=path))

    def choose(self, model: Any) -> None:
        """Select ``model`` as the user would: a label of the chooser, a model name
        ("em-membranes", "scratch"), a model file's Path, or a ModelSource.

        Raises
        ------
        InputError
            When no offered base has that name.
        """
        if isinstance(model, Path):
            self.add_file(model)
            return
        if not isinstance(model, ModelSource):
            offered = [(label, value) for label, value in self.choices() if value != BROWSE]
            matches = [value for label, value in offered if label == str(model)]
            matches += [value for label, value in offered if label.split(" (")[0] == str(model)]
            if not matches:
                labels = ", ".join(label for label, _ in offered)
                raise InputError(f"unknown base model {str(model)!r}: choose one of {labels}")
            model = matches[0]
        if model == self.combo.value:  # no change signal: remember it here
            self._remember(model)
        self.combo.value = model
        self._last = self.combo.value

    def session_changed(self, _bundle: Any = None, _origin: Any = None) -> None:
        """Refresh the choices (a model trained or saved); the chosen base stays."""
        previous = self.combo.value
        with self._dock_choice():
            self.combo.reset_choices()
            if previous is not None and previous != BROWSE:
                with contextlib.suppress(ValueError):  # that model is gone
                    self.combo.value = previous


__all__ = ["BaseModelChooser"]

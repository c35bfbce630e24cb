"""The Fine-tune dock's annotation layers: new ones to paint, or a result to correct.

"New annotations" (:func:`new_annotation_layer`) adds an empty uint16 Labels layer of the
image's shape without its channel axis (every plane of an nD stack can be painted), its
brush ready to paint a first cell.

"Correct a result" (:class:`ResultCorrection`): a result (a Segment result, or labels
loaded from disk; chosen in "result to correct", the newest by default) becomes a new
"<result> corrections" layer for the plane in view (or all planes): its objects become
cells (2, 3, ...), the rest of the plane background (1), other planes stay unannotated
(0), and a band of "unsure boundary" pixels around the objects stays 0
(:func:`~napari_unet.core.annotations.annotations_from_labels`). The user fixes it with
napari's label tools and trains on it; the result layer itself is never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, PushButton, SpinBox
from napari.layers import Labels

from napari_unet._widgets import _common
from napari_unet._widgets._channels import ImageInput
from napari_unet._widgets._common import (
    choose_layer,
    free_name,
    is_ours,
    notify_error,
    our_metadata,
)
from napari_unet.core.annotations import RESULT_BOUNDARY_BAND, annotations_from_labels
from napari_unet.core.errors import UNetError
from napari_unet.core.finetune_plan import corrections_status, next_label, plane_words

#: Brush size of new annotation layers, and the label it paints first: a first cell.
BRUSH_SIZE = 8
FIRST_CELL_LABEL = 2


def is_annotation_layer(layer: Any) -> bool:
    """Whether ``layer`` is annotations the dock made (new, or corrections of a result)."""
    marker = layer.metadata.get(_common.METADATA_KEY) if is_ours(layer) else None
    role = marker.get("role") if isinstance(marker, dict) else None
    return isinstance(role, str) and role.endswith(("/annotations", "/corrections"))


def new_annotation_layer(viewer: Any, image_input: ImageInput) -> Labels:
    """Add "<image> annotations" to ``viewer``: an empty uint16 Labels layer of
    ``image_input``'s shape (without its channel axis), with its layer's scale and
    translate for those axes, in paint mode with label :data:`FIRST_CELL_LABEL`."""
    layer = viewer.add_labels(
        np.zeros(image_input.shape, dtype=np.uint16),
        name=free_name(viewer, f"{image_input.name} annotations"),
        metadata=our_metadata(f"{image_input.name}/annotations"),
        **image_input.placement(),
    )
    layer.brush_size = BRUSH_SIZE
    layer.selected_label = FIRST_CELL_LABEL
    layer.mode = "paint"
    return layer


class ResultCorrection:
    """The "Correct a result" controls of a dock and what the button does.

    Its settings are the dock options :attr:`KEYS`.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    image : callable
        ``image()``: the dock's chosen image as ``(name, shape)`` (the shape without
        its channel axis; None when it cannot be read), or None when none is chosen.
    """

    KEYS = frozenset({"result", "result_planes", "boundary_band"})

    def __init__(
        self, viewer: Any, image: Callable[[], tuple[str, tuple[int, ...] | None] | None]
    ) -> None:
        self._viewer = viewer
        self._image = image
        self.result = ComboBox(label="result to correct", choices=self.choices, nullable=True)
        self.planes = ComboBox(
            label="correct", choices=[("plane in view", "view"), ("all planes", "all")]
        )
        self.boundary_band = SpinBox(
            label="unsure boundary (px)",
            value=RESULT_BOUNDARY_BAND,
            min=0,
            max=20,
            tooltip="leave this many px around the result's object boundaries unannotated, so "
            "training does not learn the result's own boundary placement (0: keep them)",
        )
        self.button = PushButton(
            text="Correct a result",
            tooltip="copy the result as annotations (objects = cells, the rest background) "
            "to fix with the label tools and train on",
        )

    @property
    def widgets(self) -> list[Any]:
        return [self.result, self.planes, self.boundary_band, self.button]

    def values(self) -> dict[str, Any]:
        """The settings by option key: ``result``, ``result_planes``, ``boundary_band``."""
        return {
            "result": self.result.value,
            "result_planes": self.planes.value,
            "boundary_band": int(self.boundary_band.value),
        }

    def set(self, **values: Any) -> None:
        """Set the :attr:`KEYS` settings as a user would (``result``: a layer or its name)."""
        if "result" in values:
            choose_layer(self.result, self._viewer, values["result"])
        if "result_planes" in values:
            self.planes.value = values["result_planes"]
        if "boundary_band" in values:
            self.boundary_band.value = values["boundary_band"]

    def choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """Labels layers but our annotations, newest (top) first: the default."""
        return [
            (layer.name, layer)
            for layer in reversed(self._viewer.layers)
            if isinstance(layer, Labels) and not is_annotation_layer(layer)
        ]

    def offer(self, event: Any = None) -> None:
        """A newly added result (a Segment result, a labels file) becomes the one to
        correct; with none chosen, the newest result."""
        layer = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        self.result.reset_choices()
        if isinstance(layer, Labels) and not is_annotation_layer(layer):
            self.result.value = layer
        elif self.result.value is None:
            results = [choice for choice in self.result.choices if choice is not None]
            self.result.value = results[0] if results else None

    def correct(self, layer: Labels | str | None = None) -> tuple[Labels, str] | None:
        """Add "<result> corrections" for ``layer`` (default: the chosen result); return
        it and the status line saying what it holds, or None (refused, in one line).

        The new layer has the result's shape, scale, translate and units, and its brush
        paints a new id.
        """
        if isinstance(layer, str):
            layer = self._viewer.layers[layer] if layer in self._viewer.layers else layer
        result = self.result.value if layer is None else layer
        if not isinstance(result, Labels):
            notify_error(
                "no result to correct: segment an image or open a labels file, and choose "
                "it in 'result to correct'"
            )
            return None
        source = ImageInput((result,), result.data[0] if result.multiscale else result.data)
        try:
            position = self._position(source)
            annotations = annotations_from_labels(
                source.data,
                None if position is None else [position],
                boundary_band=int(self.boundary_band.value),
            )
        except UNetError as error:
            notify_error(error)
            return None
        added = self._viewer.add_labels(
            annotations,
            name=free_name(self._viewer, f"{result.name} corrections"),
            metadata=our_metadata(f"{result.name}/corrections"),
            **source.placement(),
        )
        added.brush_size = BRUSH_SIZE
        added.selected_label = next_label(annotations)
        return added, self._status(source, position, annotations.max(), annotations.shape)

    def _position(self, source: ImageInput) -> tuple[int, ...] | None:
        """The plane to correct: the one in view; None for all planes (or a 2D result)."""
        if self.planes.value == "all" or not source.leading_shape:
            return None
        return source.position_in_view(self._viewer)

    def _status(
        self,
        source: ImageInput,
        position: tuple[int, ...] | None,
        largest: int,
        shape: tuple[int, ...],
    ) -> str:
        """What "Correct a result" made, and whether it fits the chosen image."""
        plane = None
        if position is not None:
            names = self._viewer.dims.axis_labels[-len(source.shape) :]
            plane = plane_words(names, position)
        image = self._image()
        return corrections_status(
            max(int(largest) - 1, 0),
            plane=plane,
            plane_count=source.plane_count,
            image_name=None if image is None else image[0],
            image_shape=None if image is None else image[1],
            result_shape=shape,
        )


__all__ = [
    "BRUSH_SIZE",
    "FIRST_CELL_LABEL",
    "ResultCorrection",
    "is_annotation_layer",
    "new_annotation_layer",
]

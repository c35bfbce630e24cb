"""The Fine-tune dock's preview layer: the current model's foreground on the plane in view.

"<image> preview" is built and then added hidden at Start, each in a turn of its own
(napari's ~80 ms for a new layer would otherwise freeze the viewer along with the first
preview's own work), shown a turn later
(its first draw), filled at each :class:`~napari_unet.core.events.Preview`, and
re-created when the user deleted it during a run. It is never selected: the user keeps
painting where they were painting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image

from napari_unet._widgets import _common
from napari_unet._widgets._channels import ImageInput
from napari_unet._widgets._common import in_separate_turns, our_metadata, show_layer
from napari_unet._widgets._layers import insert_unselected


class PreviewLayer:
    """The preview of one run: a one-plane image placed at the previewed plane.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    image_input : ImageInput
        The run's input; the preview overlays its first layer.
    position : tuple of int
        The previewed plane's position among the input's leading axes (``()`` for 2D).
    unless_closed : callable
        Wraps a deferred step so it does nothing once the dock is closed
        (:meth:`~napari_unet._widgets._common.DockLifetime.unless_closed`).
    """

    def __init__(
        self,
        viewer: Any,
        image_input: ImageInput,
        position: tuple[int, ...],
        unless_closed: Callable[[Callable[[], None]], Callable[[], None]],
    ) -> None:
        self._viewer = viewer
        self._input = image_input
        self._position = position
        self._unless_closed = unless_closed
        self.role = f"{image_input.name}/preview"

    def placement(self) -> dict[str, Any]:
        """Scale, translate and units of the preview: a one-plane stack placed at the
        previewed plane's position when the image has leading axes."""
        placement = self._input.placement()
        translate = list(placement["translate"])
        for axis, index in enumerate(self._position):
            translate[axis] += index * placement["scale"][axis]
        placement["translate"] = tuple(translate)
        return placement

    def layer(self) -> Any:
        """Our preview layer of this role in the viewer, or None."""
        key = _common.METADATA_KEY
        return next(
            (
                layer
                for layer in self._viewer.layers
                if _common.is_ours(layer) and layer.metadata[key]["role"] == self.role
            ),
            None,
        )

    def steps_to_add(self, plane_shape: tuple[int, ...]) -> list[Callable[[], None]]:
        """Unless ours exists: the steps (for :func:`in_separate_turns`) that add
        "<image> preview" (hidden, empty, not selected) and then show it."""
        if self.layer() is not None:
            return []
        shape = (1,) * len(self._position) + tuple(plane_shape)
        built: list[Any] = []
        added: list[Any] = []

        def build() -> None:  # constructing the layer is a turn of its own
            built.append(
                Image(
                    np.zeros(shape, np.float32),
                    metadata=our_metadata(self.role),
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0.0, 1.0),
                    opacity=0.6,
                    visible=False,
                    **self.placement(),
                )
            )

        def add() -> None:
            base_name = f"{self._input.name} preview"
            added.append(insert_unselected(self._viewer, built.pop(), base_name))

        def show() -> None:  # its first draw, a turn after it was added
            for layer in added:
                show_layer(layer)()

        return [build, add, show]

    def show(self, foreground: np.ndarray) -> None:
        """Show ``foreground`` (H, W), the current model's foreground probability on the
        previewed plane (the layer is re-created if the user deleted it)."""
        layer = self.layer()
        if layer is None:  # deleted during the run: added now, shown a turn later
            build, add, show = self.steps_to_add(foreground.shape)
            build()
            add()
            in_separate_turns(self._unless_closed(show))
            layer = self.layer()
        layer.data = foreground.reshape((1,) * len(self._position) + foreground.shape)
        layer.translate = self.placement()["translate"]


__all__ = ["PreviewLayer"]

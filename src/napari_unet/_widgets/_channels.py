"""What a dock widget hands the core: the pixels, their channel axis, and the plane in view.

Both docks take their input the same way (:class:`ChannelControls`):

- one image layer, of any number of leading axes before (y, x): (t, z, y, x)...;
- optionally a **channel axis** of that layer, chosen in "channel axis" (set by default to
  the axis whose viewer axis label is "c" or "channel"), and the **channels** to use on
  it, in the model's order ("0,2"; empty: all);
- or several one-channel image layers chosen as the **channel layers** of one input:
  stacked lazily (``dask.array.stack``) along a new first axis, which is the channel axis;
- an **RGB layer** is refused, as the core refuses it, until the user chooses "as
  channels" (its colour axis is the channel axis) or "as grey" (luminance), never silently.

:meth:`ChannelControls.input` turns the controls into an
:class:`~napari_unet._widgets._image_input.ImageInput` (re-exported here).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, LineEdit, Select
from napari.layers import Image

from napari_unet._widgets._image_input import (
    ImageInput,
    PlaneView,
    axis_labels,
    is_lazy,
    layer_data,
)
from napari_unet._widgets._layers import is_ours
from napari_unet.core.errors import InputError
from napari_unet.core.io import as_planes, rgb_to_grey

#: Viewer axis labels that name a channel axis (compared in lower case).
CHANNEL_AXIS_LABELS = frozenset({"c", "ch", "channel", "channels"})
#: The "channel axis" choice meaning "no channel axis".
NO_AXIS = -1
#: What to do with an RGB layer: refuse until the user chooses, or read it as channels or grey.
RGB_ASK, RGB_CHANNELS, RGB_GREY = "ask", "channels", "grey"
RGB_CHOICES = (
    ("not chosen (refused)", RGB_ASK),
    ("as channels (R, G, B)", RGB_CHANNELS),
    ("as grey (luminance)", RGB_GREY),
)
#: Rows of the channel-layers list shown without scrolling.
LAYER_LIST_ROWS = 3

_UNSET: Any = object()


def default_channel_axis(viewer: Any, layer: Any) -> int | None:
    """The axis of ``layer`` whose viewer axis label is "c" or "channel", else None."""
    if layer is None or getattr(layer, "rgb", False) or layer.ndim < 3:
        return None
    for axis, label in enumerate(axis_labels(viewer, layer)):
        if label.strip().lower() in CHANNEL_AXIS_LABELS:
            return axis
    return None


def default_link(viewer: Any, layer: Any, channel_axis: int | None = None) -> bool:
    """Whether "link labels through z" is on by default: the axis before y is labelled "z".

    ``channel_axis`` (an axis of ``layer``) is left out first: in (z, c, y, x) the axis
    before y is z.
    """
    if layer is None:
        return False
    labels = list(axis_labels(viewer, layer))
    if channel_axis is not None and 0 <= channel_axis < len(labels):
        del labels[channel_axis]
    return len(labels) >= 3 and labels[-3].strip().lower() == "z"


def parse_channels(text: str) -> tuple[int, ...] | None:
    """``"0,2"`` -> ``(0, 2)``; empty -> None (all channels).

    Raises
    ------
    InputError
        For anything but non-negative integers separated by commas or spaces.
    """
    text = (text or "").strip()
    if not text:
        return None
    parts = [part for part in re.split(r"[,;\s]+", text) if part]
    if not parts or not all(part.isdigit() for part in parts):
        raise InputError(
            f"channels must be channel indices separated by commas, e.g. 0,2 (first channel "
            f"is 0); got {text!r}"
        )
    return tuple(int(part) for part in parts)


def format_channels(channels: Sequence[int] | str | None) -> str:
    """The text of the "channels" field for ``channels`` (None: empty, all channels)."""
    if channels is None:
        return ""
    if isinstance(channels, str):
        return channels
    return ",".join(str(int(c)) for c in channels)


class ChannelControls:
    """The channel controls of a dock: RGB choice, channel axis, channels, channel layers.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    image_combo : ComboBox
        The dock's image chooser; the controls follow its layer.
    on_defaults : callable, optional
        Called after the defaults were set for a new layer or new axis labels (the Segment
        dock then sets its "link" default).
    """

    def __init__(
        self,
        viewer: Any,
        image_combo: ComboBox,
        on_defaults: Callable[[], None] | None = None,
    ) -> None:
        self._viewer = viewer
        self._image_combo = image_combo
        self._on_defaults = on_defaults
        self.rgb = ComboBox(
            label="RGB",
            choices=list(RGB_CHOICES),
            value=RGB_ASK,
            visible=False,
            tooltip="how to read an RGB layer: its three colours as three channels (for a "
            "model trained on colour images), or one grey channel (luminance); never guessed",
        )
        self.axis = ComboBox(
            label="channel axis",
            choices=self._axis_choices,
            value=NO_AXIS,
            tooltip="the axis of the image that holds its channels (set from the viewer's "
            "axis labels when one is 'c' or 'channel'); none: one channel",
        )
        self.channels = LineEdit(
            label="channels",
            value="",
            tooltip="channels to use on the channel axis, in the model's order, e.g. 0,2 "
            "(first is 0); empty: all",
        )
        self.layers = Select(
            label="channel layers",
            choices=self._layer_choices,
            value=[],
            tooltip="several one-channel image layers used together as the channels of one "
            "input, in the layer list's order (the image above is then not used); none "
            "selected: the image above",
        )
        rows = self.layers.native  # a short list: the dock stays compact
        row = rows.fontMetrics().height() + 4
        rows.setMaximumHeight(row * LAYER_LIST_ROWS + 2 * rows.frameWidth())
        self._rgb_offered = False
        self._image_combo.changed.connect(self._on_image_changed)
        self.layers.changed.connect(self._update_enabled)
        self._on_defaults = None  # the dock sets its own defaults once it is built
        self._on_image_changed()
        self._on_defaults = on_defaults

    @property
    def widgets(self) -> list[Any]:
        """The controls, to put in the dock (then call :meth:`sync`)."""
        return [self.rgb, self.axis, self.channels, self.layers]

    def sync(self) -> None:
        """Show or hide the controls for the current image (once they are in the dock)."""
        self._update_enabled()

    # ---------------------------------------------------------------- choices
    def _axis_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        choices = [("none", NO_AXIS)]
        layer = self._image_combo.value
        if layer is None or getattr(layer, "rgb", False) or layer.ndim < 3:
            return choices
        shape = layer_data(layer).shape
        for axis, label in enumerate(axis_labels(self._viewer, layer)):
            named = label.strip() and not label.strip().lstrip("-").isdigit()
            choices.append(
                (f"{axis}: {label} ({shape[axis]})" if named else f"{axis} ({shape[axis]})", axis)
            )
        return choices

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not layer.rgb and not is_ours(layer)
        ]

    def refresh_layers(self) -> None:
        """Layers were added or removed: offer the current ones."""
        self.layers.reset_choices()
        self.axis.reset_choices()
        self._update_enabled()

    def axis_labels_changed(self) -> None:
        """The viewer's axis labels changed: relabel the axes, take a labelled channel axis."""
        self.axis.reset_choices()
        default = default_channel_axis(self._viewer, self._image_combo.value)
        if default is not None:
            self.axis.value = default
        if self._on_defaults is not None:
            self._on_defaults()

    def _on_image_changed(self, _value: Any = None) -> None:
        layer = self._image_combo.value
        self.axis.reset_choices()
        default = default_channel_axis(self._viewer, layer)
        self.axis.value = NO_AXIS if default is None else default
        self._update_enabled()
        if self._on_defaults is not None:
            self._on_defaults()

    @property
    def rgb_offered(self) -> bool:
        """Whether the "RGB" choice is offered (shown): the image is an RGB layer."""
        return self._rgb_offered

    def _update_enabled(self, _value: Any = None) -> None:
        layer = self._image_combo.value
        stacked = bool(self.layers.value)
        rgb = bool(getattr(layer, "rgb", False)) and not stacked
        # Shown only once in the dock: a parentless Qt widget made visible is a window.
        if self.rgb.native.parent() is not None and rgb != self._rgb_offered:
            self.rgb.visible = rgb
            self._rgb_offered = rgb
        self.axis.enabled = not stacked and not rgb

    # ------------------------------------------------------------------ values
    def layer_axis(self) -> int | None:
        """The channel axis chosen on the image layer (None: none)."""
        value = self.axis.value
        return None if value is None or value == NO_AXIS else int(value)

    def channel_layers(self) -> list[Any]:
        """The chosen channel layers in the layer list's order."""
        chosen = list(self.layers.value or [])
        return [layer for layer in self._viewer.layers if any(layer is c for c in chosen)]

    def values(self) -> dict[str, Any]:
        """The controls' settings: channel_axis, channels, channel_layers, rgb."""
        try:
            channels = parse_channels(self.channels.value)
        except InputError:
            channels = self.channels.value
        return {
            "channel_axis": self.layer_axis(),
            "channels": channels,
            "channel_layers": self.channel_layers(),
            "rgb": None if self.rgb.value == RGB_ASK else self.rgb.value,
        }

    def set(
        self,
        *,
        channel_axis: Any = _UNSET,
        channels: Any = _UNSET,
        channel_layers: Any = _UNSET,
        rgb: Any = _UNSET,
    ) -> None:
        """Set controls; ``channel_layers`` are layers or layer names, ``rgb`` None, "channels"
        or "grey", ``channel_axis`` None or an axis of the image layer."""
        if channel_layers is not _UNSET:
            layers = [
                self._viewer.layers[x] if isinstance(x, str) else x for x in channel_layers or ()
            ]
            self.layers.reset_choices()
            self.layers.value = layers
        if channel_axis is not _UNSET:
            self.axis.reset_choices()
            self.axis.value = NO_AXIS if channel_axis is None else int(channel_axis)
        if channels is not _UNSET:
            self.channels.value = format_channels(channels)
        if rgb is not _UNSET:
            self.rgb.value = RGB_ASK if rgb is None else rgb
        self._update_enabled()

    # ------------------------------------------------------------------- input
    def input(self, in_channels: int | None = None) -> ImageInput:
        """The input the controls describe.

        ``in_channels``: the model's channel count when known. A multichannel model
        without a chosen channel axis reads axis -3 as channels, as the core does.

        Raises
        ------
        InputError
            No image layer, an RGB layer without a choice, channel layers of different
            shapes, unreadable channel indices, channels without a channel axis.
        """
        channels = parse_channels(self.channels.value)
        stacked = self.channel_layers()
        if stacked:
            return self._stacked(stacked, channels)
        layer = self._image_combo.value
        if layer is None:
            raise InputError("no image layer: open an image (or a sample) and choose it first")
        data = layer_data(layer)
        if getattr(layer, "rgb", False):
            return self._rgb(layer, data, channels)
        axis = self.layer_axis()
        if axis is not None and axis >= len(data.shape):
            axis = None  # the layer changed under the choice: refreshed on the next change
        if axis is None and in_channels is not None and in_channels > 1 and data.ndim >= 3:
            axis = data.ndim - 3  # the core's layout for a C-channel model: (..., C, H, W)
        if axis is None and channels is not None:
            raise InputError(
                "channels are chosen but no channel axis: choose the image's channel axis, "
                "or clear the channels field"
            )
        return ImageInput((layer,), data, axis, channels, axis)

    def _rgb(self, layer: Any, data: Any, channels: tuple[int, ...] | None) -> ImageInput:
        choice = self.rgb.value
        if choice == RGB_CHANNELS:
            if channels is None and int(data.shape[-1]) == 4:
                channels = (0, 1, 2)  # RGBA: the colours, not the transparency
            return ImageInput((layer,), data, len(data.shape) - 1, channels, None, RGB_CHANNELS)
        if choice == RGB_GREY:
            return ImageInput((layer,), rgb_to_grey(data), None, None, None, RGB_GREY)
        as_planes(data, rgb=True)  # raises the core's message, which names the choice
        raise AssertionError("as_planes accepted an RGB image without a channel axis")

    @staticmethod
    def _stacked(layers: list[Any], channels: tuple[int, ...] | None) -> ImageInput:
        import dask.array as da

        arrays = [layer_data(layer) for layer in layers]
        shapes = [tuple(int(n) for n in array.shape) for array in arrays]
        for layer, shape in zip(layers[1:], shapes[1:], strict=True):
            if shape != shapes[0]:
                raise InputError(
                    f"the channel layers must have the same shape: {layers[0].name!r} is "
                    f"{shapes[0]}, {layer.name!r} is {shape}; choose layers of one image"
                )
        lazy = [
            array if isinstance(array, da.Array)
            # name=False: no hashing of the pixels on the GUI thread
            else da.from_array(array, chunks=_native_chunks(array), name=False)
            for array in arrays
        ]  # fmt: skip
        data = da.stack(lazy, axis=0)
        return ImageInput(tuple(layers), data, 0, channels, None)


def _native_chunks(array: Any) -> Any:
    """A zarr array's own chunks (reads stay chunk-aligned), else dask's choice."""
    chunks = getattr(array, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(c, (int, np.integer)) for c in chunks):
        return chunks
    return "auto"


__all__ = [
    "ChannelControls",
    "ImageInput",
    "PlaneView",
    "axis_labels",
    "default_channel_axis",
    "default_link",
    "is_lazy",
    "layer_data",
    "parse_channels",
]

"""The input of a run as the core takes it: :class:`ImageInput`, built by the channel
controls (:class:`~napari_unet._widgets._channels.ChannelControls`).

An :class:`ImageInput` holds the array the core reads, ``channel_axis`` and ``channels``
for the core, the shape of a result (the image's shape without the channel axis), where
a result layer goes (the image layer's scale, translate and units without the channel
axis), and the flat index of the plane the viewer's sliders show
(:meth:`ImageInput.plane_in_view`, through the layer's public world-to-data mapping and
:func:`napari_unet.core.io.plane_index`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.io import as_planes, plane_index, plane_position
from napari_unet.core.largeimage import full_resolution
from napari_unet.core.planeview import PlaneView


def layer_data(layer: Any) -> Any:
    """The data of an image layer as the core reads it (a multiscale layer's level 0)."""
    return full_resolution(layer.data, multiscale=bool(getattr(layer, "multiscale", False)))


def is_lazy(layer: Any) -> bool:
    """Whether ``layer``'s data must not be loaded whole (dask, zarr, multiscale...)."""
    return bool(getattr(layer, "multiscale", False)) or not isinstance(layer.data, np.ndarray)


def axis_labels(viewer: Any, layer: Any) -> tuple[str, ...]:
    """The viewer's axis labels of ``layer``'s axes (an RGB layer's without its colour axis).

    napari aligns a layer's axes with the viewer's last ones.
    """
    labels = [str(label) for label in viewer.dims.axis_labels]
    ndim = int(layer.ndim)
    if len(labels) < ndim:
        labels = [""] * (ndim - len(labels)) + labels
    return tuple(labels[len(labels) - ndim :])


@dataclass(frozen=True, eq=False)
class ImageInput:
    """The input of a run, as the core takes it, and where its results go in the viewer.

    Attributes
    ----------
    layers : tuple of Image
        The image layer, or the channel layers in channel order; results follow the
        first one's placement and the viewer position is read through it.
    data : array-like
        What the core reads: ``(*leading, H, W)`` with at most one channel axis anywhere.
    channel_axis : int or None
        The channel axis of ``data`` (non-negative), for the core.
    channels : tuple of int or None
        Channels to use on it, in order; None: all.
    layer_channel_axis : int or None
        The channel axis among the first layer's own axes (a channel axis inside a
        non-RGB layer); None when the layer has none (RGB colour axes and stacked channel
        layers are not axes of the layer in napari).
    rgb : {"channels", "grey"} or None
        How an RGB layer was read.
    """

    layers: tuple[Any, ...]
    data: Any
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    layer_channel_axis: int | None = None
    rgb: str | None = None

    @property
    def layer(self) -> Any:
        return self.layers[0]

    @property
    def name(self) -> str:
        """The layer's name, or the channel layers' names joined with "+"."""
        return "+".join(layer.name for layer in self.layers)

    @property
    def lazy(self) -> bool:
        return any(is_lazy(layer) for layer in self.layers)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(*leading, H, W)``: the image's shape without the channel axis (of a result)."""
        return tuple(int(n) for axis, n in enumerate(self.data.shape) if axis != self.channel_axis)

    @property
    def leading_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    @property
    def plane_count(self) -> int:
        return int(np.prod(self.leading_shape, dtype=np.int64))

    @property
    def channel_count(self) -> int:
        """Channels the core reads after the selection (1 without a channel axis)."""
        if self.channel_axis is None:
            return 1
        if self.channels is not None:
            return len(self.channels)
        return int(self.data.shape[self.channel_axis])

    def key(self) -> tuple:
        """What makes two inputs the same run's input (layers and channel settings)."""
        layers = tuple(id(layer) for layer in self.layers)
        return (layers, self.channel_axis, self.channels, self.rgb)

    def check(self, in_channels: int | None = None) -> None:
        """Let the core check the input (shape, axes, channel indices) without reading it.

        ``in_channels``: the model's channel count when known, else the selected count.
        """
        as_planes(
            self.data,
            in_channels=in_channels or self.channel_count,
            channel_axis=self.channel_axis,
            channels=self.channels,
            rgb=False,
        )

    def placement(self) -> dict[str, tuple[Any, ...]]:
        """Scale, translate and units of a result layer: the first layer's, without the
        channel axis, so the result overlays the image (anisotropic z included) and
        shares its physical units."""
        layer = self.layer
        placement = {
            "scale": tuple(layer.scale),
            "translate": tuple(layer.translate),
            "units": tuple(str(unit) for unit in layer.units),
        }
        drop = self.layer_channel_axis
        if drop is None:
            return placement
        return {key: tuple(v for i, v in enumerate(values) if i != drop)
                for key, values in placement.items()}  # fmt: skip

    def position_in_view(self, viewer: Any) -> tuple[int, ...]:
        """Leading-axes position of the plane the viewer's sliders show (clipped to the image)."""
        leading = self.leading_shape
        if not leading:
            return ()
        position = [float(p) for p in self.layer.world_to_data(viewer.dims.point)]
        if self.layer_channel_axis is not None:
            del position[self.layer_channel_axis]
        return tuple(
            int(np.clip(np.round(p), 0, n - 1))
            for p, n in zip(position[: len(leading)], leading, strict=True)
        )

    def plane_in_view(self, viewer: Any) -> int:
        """Flat index (row-major over the leading axes) of the plane in view; 0 for 2D."""
        leading = self.leading_shape
        return plane_index(leading, self.position_in_view(viewer)) if leading else 0

    def position(self, index: int) -> tuple[int, ...]:
        """Leading-axes position of flat plane ``index``."""
        leading = self.leading_shape
        return tuple(plane_position(leading, index)) if leading else ()

    def plane(self, index: int) -> Any:
        """Plane ``index`` of ``data`` with its channel axis, lazily (numpy: a view)."""
        leading = self.position(index)
        if not leading:
            return self.data
        values = iter(leading)
        key, spatial = [], 0
        for axis in range(len(self.data.shape)):
            if axis == self.channel_axis:
                key.append(slice(None))
                continue
            key.append(next(values) if spatial < len(leading) else slice(None))
            spatial += 1
        key = tuple(key)
        if isinstance(self.data, np.ndarray):
            return self.data[key]
        return PlaneView(self.data, key)

    @property
    def plane_channel_axis(self) -> int | None:
        """The channel axis of :meth:`plane`'s views."""
        if self.channel_axis is None:
            return None
        return self.channel_axis - min(len(self.leading_shape), self.channel_axis)

    def axis_names(self, viewer: Any) -> tuple[str, ...]:
        """The viewer's labels of the leading axes ("t", "z"...), for status lines."""
        labels = list(axis_labels(viewer, self.layer))
        if self.layer_channel_axis is not None:
            del labels[self.layer_channel_axis]
        return tuple(labels[: len(self.leading_shape)])


__all__ = ["ImageInput", "PlaneView", "axis_labels", "is_lazy", "layer_data"]

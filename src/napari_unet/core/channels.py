"""Channels and colour: which axis holds channels, which channels are chosen, and RGB.

:func:`~napari_unet.core.planes.as_planes` uses these checks; :func:`rgb_to_grey` reads
colour as grey (lazily for zarr and dask).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.planeview import full_key

#: Most channels an image's channel axis (and a model) may have.
MAX_CHANNELS = 8


#: Luminance weights of :func:`rgb_to_grey` (ITU-R BT.601, as PIL and scikit-image's
#: ``rgb2gray`` of old).
LUMINANCE = (0.299, 0.587, 0.114)


RGB_MESSAGE = (
    "RGB image{where}: the model expects one grayscale channel; read it as grey or as "
    "channels (--rgb grey or --rgb channels; in napari the RGB choice), convert it to "
    "grayscale, or split the channels and segment one (napari: right-click the layer > "
    "Split RGB)"
)


def rgb_message(where: str = "", in_channels: int = 1) -> str:
    """The one-line refusal of an RGB image, ``where`` naming it (e.g. ``" (x.png)"``)."""
    expects = "one grayscale channel" if in_channels == 1 else f"{in_channels} channels"
    return RGB_MESSAGE.format(where=where).replace("one grayscale channel", expects)


def _channel_axis(
    shape: tuple[int, ...], in_channels: int, channel_axis: int | None, channels: Any
) -> int | None:
    """The channel axis as a non-negative index, or ``None`` for one-channel planes."""
    ndim = len(shape)
    if channel_axis is None:
        if in_channels == 1:
            if channels is not None:
                raise InputError(
                    f"channels {_list(channels)} were chosen but the image of shape {shape} "
                    "has no channel axis; name it (--channel-axis / the channel axis field)"
                )
            return None
        if ndim < 3:
            raise InputError(
                f"the model expects {_channel_count(in_channels)} but the image of shape "
                f"{shape} has no channel axis; give a (C, H, W) image or name its channel "
                "axis (--channel-axis / the channel axis field)"
            )
        return ndim - 3
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise InputError(f"the channel axis must be an axis number, got {channel_axis!r}")
    if not -ndim <= channel_axis < ndim:
        raise InputError(
            f"channel axis {channel_axis} does not exist in an image of shape {shape}; "
            f"choose an axis from {-ndim} to {ndim - 1} (--channel-axis / the channel axis field)"
        )
    if ndim < 3:
        raise InputError(
            f"an image with a channel axis needs 3 axes or more (C, H, W), got shape {shape}; "
            "give no channel axis for a 2-D image"
        )
    return int(channel_axis) % ndim


def _chosen_channels(
    shape: tuple[int, ...], axis: int | None, channels: Any, in_channels: int
) -> tuple[int, ...] | None:
    """Checked channel selection (``None``: all channels, or no channel axis)."""
    if axis is None:
        return None
    count = shape[axis]
    if count > MAX_CHANNELS:
        raise InputError(
            f"the channel axis (axis {axis}) of the image of shape {shape} has {count} "
            f"entries, more than the {MAX_CHANNELS} channels supported; name the right "
            "channel axis (--channel-axis / the channel axis field) or keep fewer channels "
            "per file"
        )
    chosen = None
    if channels is not None:
        chosen = _channel_indices(channels)
        for index in chosen:
            if not 0 <= index < count:
                raise InputError(
                    f"channel {index} is out of range: the channel axis (axis {axis}) has "
                    f"{count} channel{'s' if count > 1 else ''} (0 to {count - 1}); choose "
                    f"channels from 0 to {count - 1} (--channels / the Channels field)"
                )
    selected = count if chosen is None else len(chosen)
    if selected != in_channels:
        if chosen is None:
            raise InputError(
                f"the model expects {_channel_count(in_channels)} but the image of shape "
                f"{shape} has {count} on its channel axis (axis {axis}); choose channels "
                "with --channels / the Channels field"
            )
        raise InputError(
            f"the model expects {_channel_count(in_channels)} but {selected} "
            f"{'are' if selected > 1 else 'is'} chosen (channels {_list(chosen)} of axis "
            f"{axis}); choose {in_channels} with --channels / the Channels field"
        )
    if chosen == tuple(range(count)):
        return None  # all, in order: a plain view
    return chosen


def _channel_indices(channels: Any) -> tuple[int, ...]:
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        channels = [channels]
    chosen = []
    for value in channels:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"channels are numbers like 0,2; got {_list(channels)}")
        chosen.append(int(value))
    if not chosen:
        raise InputError("no channel is chosen; choose at least one (--channels / Channels)")
    return tuple(chosen)


def _channel_count(count: int) -> str:
    return f"{count} channel{'s' if count != 1 else ''}"


def _list(values: Any) -> str:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        return str(values)
    return ",".join(str(v) for v in values)


def looks_rgb(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is taken as RGB(A) when nothing says: ``(..., H, W, 3|4)``
    with ``H`` and ``W`` above 4 pixels."""
    # A "stack" of planes 3 or 4 pixels wide is not a plausible microscopy image,
    # whereas (..., H, W, 3|4) is what every RGB reader returns.
    return len(shape) >= 3 and shape[-1] in (3, 4) and min(shape[-3:-1]) > 4


def leading_axes(ndim: int, *, in_channels: int = 1, channel_axis: int | None = None) -> tuple:
    """Which axes of an ``ndim``-D image are leading axes (as :func:`as_planes` reads them).

    Returns
    -------
    tuple of int
        Axis numbers, e.g. ``(0, 1)`` for ``(T, Z, Y, X)``, ``(0, 2)`` for ``(T, C, Z, Y, X)``
        with ``channel_axis=1``, ``(0,)`` for ``(Z, C, Y, X)`` with ``in_channels=2``.
    """
    if channel_axis is None and in_channels > 1 and ndim >= 3:
        channel_axis = ndim - 3
    axis = None if channel_axis is None else int(channel_axis) % ndim
    spatial = [a for a in range(ndim) if a != axis]
    return tuple(spatial[:-2])


def rgb_to_grey(image: Any) -> Any:
    """Luminance ``0.299 R + 0.587 G + 0.114 B`` of an ``(..., 3|4)`` RGB(A) image.

    Alpha is dropped. numpy images are converted at once; zarr and dask images are
    converted lazily, region by region, as they are read.

    Parameters
    ----------
    image : (..., 3) or (..., 4) array-like

    Returns
    -------
    (...) float32 ndarray, or a lazy array-like of that shape and dtype

    Raises
    ------
    InputError
        If the last axis is not 3 or 4 long.
    """
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 3 or shape[-1] not in (3, 4):
        raise InputError(
            f"cannot read an image of shape {shape} as RGB: its last axis should hold 3 "
            "(RGB) or 4 (RGBA) colours"
        )
    if isinstance(image, np.ndarray):
        return _grey(image)
    return _GreyView(image)


def _grey(colour: np.ndarray) -> np.ndarray:
    red, green, blue = (np.float32(w) for w in LUMINANCE)
    grey = colour[..., 0].astype(np.float32) * red
    grey += colour[..., 1].astype(np.float32) * green
    grey += colour[..., 2].astype(np.float32) * blue
    return grey


class _GreyView:
    """:func:`rgb_to_grey` of a lazy image, computed on the regions read."""

    def __init__(self, colour: Any) -> None:
        self.colour = colour
        self.shape = tuple(int(s) for s in colour.shape[:-1])
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = full_key(key, self.ndim, what="planes")
        return _grey(np.asarray(self.colour[(*key, slice(0, 3))]))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

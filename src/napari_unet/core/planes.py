"""Any accepted image as a stack of 2-D planes: :func:`as_planes` and :class:`Restore`.

An image with up to two leading axes (t, z) and a channel axis anywhere becomes
``(N, [C,] H, W)`` planes (a view for numpy, lazy for zarr and dask), and per-plane
results go back into the image's layout with :class:`Restore`. :func:`plane_index` and
:func:`plane_position` convert between a position on the leading axes and a flat index.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from napari_unet.core.channels import (
    _channel_axis,
    _chosen_channels,
    looks_rgb,
    rgb_message,
)
from napari_unet.core.errors import InputError
from napari_unet.core.planeview import PlaneView, full_key

#: Most axes besides a channel axis: t, z, y, x.
MAX_NON_CHANNEL_AXES = 4


class Restore:
    """Puts per-plane results ``(N, ...)`` back in the layout ``(*leading, ...)`` of the image.

    Attributes
    ----------
    leading : tuple of int
        Shape of the image's leading axes (every axis but the channel axis and the
        last two), ``()`` for a single 2-D plane; ``N = prod(leading)``.
    """

    def __init__(self, leading: tuple[int, ...]) -> None:
        self.leading = tuple(int(s) for s in leading)

    def __call__(self, result: Any) -> Any:
        if not self.leading:
            return result[0]  # a single plane: no plane axis
        if len(self.leading) == 1:
            return result
        shape = (*self.leading, *tuple(result.shape)[1:])
        if not hasattr(result, "reshape"):  # e.g. zarr: read it (a result fits in memory)
            result = np.asarray(result)
        return result.reshape(shape)

    def __repr__(self) -> str:
        return f"Restore(leading={self.leading})"


def as_planes(
    image: Any,
    *,
    in_channels: int = 1,
    channel_axis: int | None = None,
    channels: Any = None,
    rgb: bool | None = None,
) -> tuple[Any, Restore]:
    """Check ``image`` can be segmented and view it as a stack of 2-D planes.

    The last two axes that are not the channel axis are ``(H, W)``; every other axis
    but the channel axis is a *leading* axis (t, z...), flattened row-major into the
    plane index ``N``.

    Parameters
    ----------
    image : array-like
        numpy, zarr or dask, up to 5-D: at most 4 axes besides the channel axis
        (t, z, y, x) and one channel axis anywhere. numpy input is viewed, not copied
        (unless the axes cannot be viewed that way: then, as for zarr and dask, planes
        are read lazily, one at a time). bool is read as uint8 (0/1).
    in_channels : int
        Channels the model expects.
    channel_axis : int, optional
        The image's channel axis (negative counts from the end), e.g. ``0`` for
        ``(C, Z, Y, X)``, ``-1`` for ``(Y, X, C)``. By default a one-channel model reads
        every axis but the last two as leading axes, and a model of ``C > 1`` channels
        reads axis ``-3`` as channels (``(C, H, W)``, ``(N, C, H, W)``, ``(T, Z, C, H, W)``).
    channels : sequence of int, optional
        Channels to use, in this order (indices on the channel axis); default all.
    rgb : bool, optional
        Whether the image is known to be RGB(A) (e.g. napari's ``layer.rgb``); by
        default an image whose last axis is 3 or 4 long after two axes longer than 4
        pixels is taken as RGB. RGB is refused unless ``channel_axis`` is given (then it
        is just 3 or 4 channels); for grey, convert it first with :func:`rgb_to_grey`.

    Returns
    -------
    planes : (N, H, W) or (N, C, H, W) array-like
        ``(N, H, W)`` for one-channel models, ``(N, C, H, W)`` with ``C = in_channels``
        otherwise. ``planes[p]`` is plane ``p`` (lazy for zarr/dask).
    restore : Restore
        Maps a per-plane result ``(N, ...)`` back to ``(*leading, ...)``: drops the
        plane axis for a single 2-D plane, is the identity for ``(N, H, W)`` stacks.
        ``restore.leading`` is the shape of the leading axes.

    Raises
    ------
    InputError
        In one line, for RGB without a channel axis, empty, 1-D, 6-D (or more) images,
        5 axes without a channel axis, an unsupported dtype, a channel axis that does not
        exist or is longer than :data:`MAX_CHANNELS`, a channel index out of range, and a
        channel count that is not the model's.
    """
    shape = tuple(int(s) for s in image.shape)
    ndim = len(shape)
    _check_dtype(image.dtype)
    if ndim > MAX_NON_CHANNEL_AXES + 1:
        raise InputError(
            f"cannot segment an image of shape {shape}: {ndim}-D images are not supported "
            "(at most 5 axes: t, z, c, y, x); save fewer axes per file"
        )
    if channel_axis is None and (rgb or (rgb is None and looks_rgb(shape))):
        raise InputError(rgb_message(f" (shape {shape})", in_channels))
    if 0 in shape:
        raise InputError(f"the image is empty: shape {shape}")
    if ndim < 2:
        raise InputError(
            f"cannot segment an image of shape {shape} ({ndim}D): expected (H, W) or a "
            "stack (N, H, W)"
        )
    axis = _channel_axis(shape, in_channels, channel_axis, channels)
    chosen = _chosen_channels(shape, axis, channels, in_channels)
    spatial = [a for a in range(ndim) if a != axis]
    if len(spatial) > MAX_NON_CHANNEL_AXES:
        raise InputError(
            f"cannot segment an image of shape {shape} ({ndim}D) without a channel axis: at "
            "most t, z, y, x; name its channel axis (--channel-axis / the channel axis field)"
        )
    leading = tuple(shape[a] for a in spatial[:-2])
    restore = Restore(leading)
    if np.dtype(image.dtype) == bool and isinstance(image, np.ndarray):
        image = image.view(np.uint8)
    if isinstance(image, np.ndarray):
        planes = _numpy_planes(image, axis, chosen, leading, in_channels)
        if planes is not None:
            return planes, restore
    elif axis in (None, ndim - 3) and chosen is None and len(leading) <= 1:
        # Already (N, [C,] H, W) or a single (C, H, W) / (H, W) plane: kept as it is.
        if np.dtype(image.dtype) == bool:
            image = image.astype(np.uint8) if hasattr(image, "astype") else _AsUint8(image)
        return (_add_plane_axis(image) if not leading else image), restore
    return _PlaneStack(image, axis, chosen, leading, keep_channels=in_channels > 1), restore


def _numpy_planes(
    image: np.ndarray,
    axis: int | None,
    chosen: tuple[int, ...] | None,
    leading: tuple[int, ...],
    in_channels: int,
) -> np.ndarray | None:
    """``(N, [C,] H, W)`` view of a numpy image, or ``None`` when no view can express it."""
    array = image
    if axis is not None:
        array = np.moveaxis(array, axis, -3)
        if chosen is not None:
            picked = _as_slice(chosen)
            if picked is None:
                return None  # an irregular selection: read plane by plane instead
            array = array[..., picked, :, :]
        if in_channels == 1:
            array = array[..., 0, :, :]
    target = (math.prod(leading), *array.shape[len(leading) :])
    unchanged = axis in (None, image.ndim - 3) and chosen is None
    if unchanged and target == image.shape:
        return image  # already (N, [C,] H, W): the image itself
    try:
        return np.reshape(array, target, copy=False)
    except ValueError:  # leading axes interleaved with the channel axis in memory
        return None


def _as_slice(chosen: tuple[int, ...]) -> slice | None:
    """The channels as a slice (a view), or ``None`` if they are not evenly spaced."""
    if len(chosen) == 1:
        return slice(chosen[0], chosen[0] + 1)
    step = chosen[1] - chosen[0]
    if step == 0 or any(b - a != step for a, b in itertools.pairwise(chosen)):
        return None
    stop = chosen[-1] + step
    return slice(chosen[0], stop if stop >= 0 else None, step)


def plane_index(leading_shape: tuple[int, ...], position: tuple[int, ...]) -> int:
    """Flat plane index of a position on the leading axes (row-major).

    Parameters
    ----------
    leading_shape : tuple of int
        Shape of the leading axes (``Restore.leading``), e.g. ``(T, Z)``; ``()`` for
        one plane.
    position : tuple of int
        Index on each leading axis, e.g. ``(t, z)``.

    Returns
    -------
    int
        ``t * Z + z`` for ``(T, Z)``; ``0`` for ``()``.

    Raises
    ------
    InputError
        If the position has the wrong length or lies outside the leading axes.
    """
    leading = tuple(int(s) for s in leading_shape)
    position = tuple(int(p) for p in position)
    if len(position) != len(leading) or not all(
        0 <= p < s for p, s in zip(position, leading, strict=True)
    ):
        raise InputError(f"position {position} is outside the leading axes {leading}")
    return int(np.ravel_multi_index(position, leading)) if leading else 0


def plane_position(leading_shape: tuple[int, ...], index: int) -> tuple[int, ...]:
    """Position on the leading axes of flat plane ``index``: the inverse of :func:`plane_index`.

    Raises
    ------
    InputError
        If ``index`` is not in ``0 .. prod(leading_shape) - 1``.
    """
    leading = tuple(int(s) for s in leading_shape)
    count = math.prod(leading)
    if not 0 <= int(index) < count:
        raise InputError(f"plane {index} is out of range for {count} plane(s)")
    return tuple(int(i) for i in np.unravel_index(int(index), leading)) if leading else ()


class _AsUint8:
    """A lazy bool image read as uint8 (0/1)."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = tuple(int(s) for s in image.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.image[key]).astype(np.uint8)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


class _PlaneStack:
    """``(N, [C,] H, W)`` planes of an image of any layout, read lazily.

    ``stack[p]`` is a lazy view of plane ``p``; ``stack[p, ...region]`` reads only that
    region of that plane from the image (the selected channels' span of the channel
    axis, then the chosen channels in order).

    Parameters
    ----------
    image : array-like
        The image (numpy, zarr, dask...).
    axis : int or None
        Its channel axis (non-negative).
    chosen : tuple of int or None
        Channels to keep, in order (``None``: all).
    leading : tuple of int
        Shape of the leading axes.
    keep_channels : bool
        Whether planes have a channel axis (``C > 1`` models); else the one chosen
        channel is dropped.
    """

    def __init__(
        self,
        image: Any,
        axis: int | None,
        chosen: tuple[int, ...] | None,
        leading: tuple[int, ...],
        *,
        keep_channels: bool,
    ) -> None:
        self.image = image
        self.axis = axis
        shape = tuple(int(s) for s in image.shape)
        self.spatial = [a for a in range(len(shape)) if a != axis]
        self.leading = leading
        if axis is not None:
            self.chosen = chosen if chosen is not None else tuple(range(shape[axis]))
        else:
            self.chosen = None
        self.keep_channels = keep_channels and axis is not None
        height, width = shape[self.spatial[-2]], shape[self.spatial[-1]]
        plane = (len(self.chosen), height, width) if self.keep_channels else (height, width)
        self.shape = (math.prod(leading), *plane)
        boolean = np.dtype(image.dtype) == bool
        self.dtype = np.dtype(np.uint8) if boolean else np.dtype(image.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        key = full_key(key, self.ndim, what="planes")
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            index = int(first)
            if index < 0:
                index += len(self)
            if not 0 <= index < len(self):
                raise IndexError(f"plane {first} is out of range for {len(self)} plane(s)")
            if all(isinstance(k, slice) and k == slice(None) for k in rest):
                # Read lazily through _read (indexing self would return a view again).
                return PlaneView.at(self, (index,), read=lambda full: self._read(full[0], full[1:]))
            return self._read(index, rest)
        indices = range(len(self))[first] if isinstance(first, slice) else np.asarray(first)
        return np.stack([self._read(int(i), rest) for i in np.atleast_1d(indices)])

    def _read(self, index: int, rest: tuple) -> np.ndarray:
        """Plane ``index`` indexed by ``rest`` (keys of ``([C,] H, W)``) as numpy."""
        channel_key = rest[0] if self.keep_channels else slice(None)
        source: list[Any] = [slice(None)] * len(self.image.shape)
        position = plane_position(self.leading, index)
        for axis, value in zip(self.spatial[:-2], position, strict=True):
            source[axis] = value
        for axis, value in zip(self.spatial[-2:], rest[-2:], strict=True):
            if not isinstance(value, (slice, int, np.integer)):
                raise IndexError("planes are indexed with integers and slices only")
            source[axis] = value
        if self.axis is not None:
            # The span of the chosen channels: at most 8, each read once.
            source[self.axis] = slice(min(self.chosen), max(self.chosen) + 1)
        block = np.asarray(self.image[tuple(source)])
        if block.dtype == bool:
            block = block.view(np.uint8)
        if self.axis is not None:
            remaining = [a for a, k in enumerate(source) if isinstance(k, slice)]
            block = np.moveaxis(block, remaining.index(self.axis), 0)
            block = block[[c - min(self.chosen) for c in self.chosen]]
            block = block[channel_key] if self.keep_channels else block[0]
        return block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)

    def __repr__(self) -> str:
        return f"<planes {self.shape} of {type(self.image).__name__} {tuple(self.image.shape)}>"


def _check_dtype(dtype: Any) -> None:
    dtype = np.dtype(dtype)
    if (
        dtype == np.dtype(bool)
        or np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.floating)
    ):
        return
    raise InputError(
        f"cannot segment an image of dtype {dtype}: use integer, float or bool intensities "
        "(take the magnitude or real part of complex data first)"
    )


def _add_plane_axis(image: Any) -> Any:
    module = type(image).__module__
    if isinstance(image, np.ndarray) or module.startswith("dask"):
        return image[np.newaxis]
    return _OnePlaneStack(image)  # array-likes without newaxis indexing (zarr)


class _OnePlaneStack:
    """``image[np.newaxis]`` for array-likes that cannot do it, without reading ``image``.

    ``stack[0]`` is ``image`` itself (still lazy); other keys index ``image`` after the
    plane index.
    """

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = (1, *image.shape)
        self.dtype = image.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if key and isinstance(key[0], (int, np.integer)) and int(key[0]) in (0, -1):
            return self.image if len(key) == 1 else self.image[key[1:]]
        return np.asarray(self.image)[np.newaxis][key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.image, dtype=dtype)[np.newaxis]

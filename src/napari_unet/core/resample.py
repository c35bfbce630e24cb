"""Resampling images to a model's scale, with operators that also map results back.

A model sees objects at the size it was trained at; an image taken at another
magnification is resampled to that scale before segmentation and the result mapped back.
Both directions work on any region, so the tiled and block-wise pipelines can resample
tile by tile with bounded memory.

Grids
-----
An axis of ``n`` input pixels becomes ``m = max(1, round(n * factor))`` pixels (see
:func:`resampled_size`); every mapping uses the effective factor ``m / n``, so both grids
cover the same extent: output pixel ``j`` covers input coordinates
``[j * n / m, (j + 1) * n / m)`` (pixel ``i`` covers ``[i, i + 1)``).

Operators
---------
Each axis is resampled by a linear operator (:class:`AxisOperator`): **area averaging**
when shrinking (each output pixel is the mean of the input it covers, weighted by
overlap: no aliasing), **linear interpolation** between pixel centres when enlarging
(edges repeated), the identity when ``m == n``. An operator is stored as a few taps per
output pixel (indices and weights), so any output region needs only the input rows and
columns under its taps.

Exactness
---------
Every output value is computed by the same float32 operations in the same order,
whichever region is asked for: rows first, then columns, taps summed in order. A region
of a :class:`Resampled` view is therefore bitwise equal to that region of the whole
resampled image, and tiles cut from it are exact.

Public API
----------
- :func:`resampled_size` ``(n, factor) -> int``
- :func:`axis_operator` ``(size_in, size_out) -> AxisOperator`` (cached)
- :class:`Resampled` ``(image, factor=None, yx_axes=(-2, -1), *, size=None)``: lazy float32
  view (numpy, zarr, dask, the lazy readers of :mod:`~napari_unet.core.io` and
  :mod:`~napari_unet.core.largeimage`); picklable.

Results are mapped back to the image's grid by :mod:`~napari_unet.core.resample_back`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from napari_unet.core.planeview import full_key

#: Most input pixels along one axis read at once by a strided or large request (plus the
#: kernel width): a strided subsample of a huge lazy plane is read block by block.
MAX_READ_SPAN = 512

Kind = Literal["labels", "mask", "probabilities"]


def resampled_size(n: int, factor: float) -> int:
    """Length of an axis of ``n`` pixels resampled by ``factor``: ``max(1, round(n * factor))``."""
    return max(1, round(int(n) * float(factor)))


@dataclass(frozen=True, eq=False)
class AxisOperator:
    """Linear resampling of one axis from ``size_in`` to ``size_out`` pixels.

    Output pixel ``j`` is ``sum_k weights[j, k] * input[taps[j, k]]``. Taps never
    decrease, along ``k`` or ``j``; unused taps repeat the last used index with weight 0.

    Attributes
    ----------
    size_in, size_out : int
    taps : (size_out, K) ndarray of int64
    weights : (size_out, K) ndarray of float32
    """

    size_in: int
    size_out: int
    taps: np.ndarray
    weights: np.ndarray

    @property
    def identity(self) -> bool:
        """Whether the operator copies its input (same size)."""
        return self.size_in == self.size_out

    def span(self, indices: np.ndarray) -> tuple[int, int]:
        """``(start, stop)`` input range the outputs ``indices`` (ascending) read."""
        return int(self.taps[indices[0], 0]), int(self.taps[indices[-1], -1]) + 1

    def apply(self, data: np.ndarray, axis: int, indices: np.ndarray, offset: int) -> np.ndarray:
        """Outputs ``indices`` along ``axis`` of ``data``, whose first element is input ``offset``.

        Parameters
        ----------
        data : ndarray
            Any dtype; each tap is gathered, then converted to float32 (a strided
            selection never converts more than it uses).
        axis : int
            The axis to resample.
        indices : (L,) ndarray of int
            Output pixels to compute.
        offset : int
            Input index of ``data``'s first element along ``axis``.

        Returns
        -------
        ndarray of float32
            ``data`` with ``axis`` replaced by the ``L`` outputs.
        """
        if self.identity:
            return np.take(data, indices - offset, axis=axis).astype(np.float32, copy=False)
        return apply_taps(data, axis, self.taps[indices] - offset, self.weights[indices])


def apply_taps(data: np.ndarray, axis: int, taps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_k weights[:, k] * data[taps[:, k]]`` along ``axis``, in float32, taps in order."""
    shape = [1] * data.ndim
    shape[axis] = len(taps)
    result = np.take(data, taps[:, 0], axis=axis).astype(np.float32, copy=False)
    result *= weights[:, 0].reshape(shape)
    for k in range(1, taps.shape[1]):
        term = np.take(data, taps[:, k], axis=axis).astype(np.float32, copy=False)
        term *= weights[:, k].reshape(shape)
        result += term
    return result


@functools.lru_cache(maxsize=64)
def axis_operator(size_in: int, size_out: int) -> AxisOperator:
    """The operator resampling ``size_in`` pixels to ``size_out`` (cached, read-only arrays).

    Area averaging when shrinking, linear interpolation when enlarging, identity when the
    sizes are equal (see the module docstring). Weights are computed from exact integer
    positions, so they do not depend on float rounding of the factor.
    """
    size_in, size_out = int(size_in), int(size_out)
    if size_in < 1 or size_out < 1:
        raise ValueError(f"axis sizes must be >= 1, got {size_in} -> {size_out}")
    if size_out == size_in:
        taps = np.arange(size_in, dtype=np.int64)[:, None]
        weights = np.ones((size_in, 1), np.float32)
    elif size_out < size_in:
        taps, weights = _area_taps(size_in, size_out)
    else:
        taps, weights = _linear_taps(size_in, size_out)
    taps.setflags(write=False)
    weights.setflags(write=False)
    return AxisOperator(size_in, size_out, taps, weights)


def _area_taps(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Area averaging: output ``j`` covers input ``[j n / m, (j + 1) n / m)``.

    In units of ``1 / m`` input pixels every bound is an integer: input pixel ``i``
    covers ``[i m, (i + 1) m)`` and output ``j`` covers ``[j n, (j + 1) n)``.
    """
    j = np.arange(m, dtype=np.int64)
    first = j * n // m
    last = -(-(j + 1) * n // m) - 1  # ceil((j + 1) n / m) - 1
    width = int((last - first).max()) + 1
    taps = first[:, None] + np.arange(width)
    used = taps <= last[:, None]
    overlap = np.minimum((taps + 1) * m, ((j + 1) * n)[:, None]) - np.maximum(
        taps * m, (j * n)[:, None]
    )
    weights = np.where(used, overlap / n, 0.0).astype(np.float32)
    return np.minimum(taps, last[:, None]), weights


def _linear_taps(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation at output centres ``(j + 1/2) n / m - 1/2`` (input pixel units).

    Centres before the first input centre or after the last take the edge pixel.
    """
    j = np.arange(m, dtype=np.int64)
    numerator, denominator = (2 * j + 1) * n - m, 2 * m  # centre = numerator / denominator
    left = numerator // denominator
    fraction = (numerator - left * denominator) / denominator
    fraction = np.where((left < 0) | (left >= n - 1), 0.0, fraction)
    left = np.clip(left, 0, n - 1)
    taps = np.stack([left, np.minimum(left + 1, n - 1)], axis=1)
    weights = np.stack([1.0 - fraction, fraction], axis=1).astype(np.float32)
    return taps, weights


class Resampled:
    """A lazy view of ``image`` resampled along its y and x axes; float32.

    Parameters
    ----------
    image : array-like
        numpy, zarr, dask or any object with ``shape``, ``dtype`` and slicing
        (``image[key]`` with ints and slices). Only the region a request needs is read.
    factor : float or (float, float), optional
        Per-axis factor ``(y, x)`` (one number for both): the view's y and x sizes are
        :func:`resampled_size` of the image's. Give ``factor`` or ``size``.
    yx_axes : (int, int)
        The image's y and x axes; every other axis (channels, planes) is untouched.
    size : (int, int), optional
        The view's y and x sizes, instead of ``factor`` (e.g. to map a model-grid result
        back onto an input grid of known size).

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
        Always float32.
    ndim : int

    Notes
    -----
    Indexing takes ints, slices (any positive or negative step) and Ellipsis. A request
    reads the input under its taps, in blocks of at most :data:`MAX_READ_SPAN` pixels per
    axis (a strided subsample of a huge plane never reads it whole at once).
    """

    def __init__(
        self,
        image: Any,
        factor: float | Sequence[float] | None = None,
        yx_axes: tuple[int, int] = (-2, -1),
        *,
        size: tuple[int, int] | None = None,
    ) -> None:
        shape = tuple(int(s) for s in image.shape)
        ndim = len(shape)
        axes = tuple(int(a) % ndim for a in yx_axes) if ndim >= 2 else ()
        if len(axes) != 2 or axes[0] == axes[1]:
            raise ValueError(f"yx_axes {yx_axes} are not two axes of a {ndim}-D image")
        if size is None:
            if factor is None:
                raise ValueError("give a factor or a size")
            fy, fx = (factor, factor) if np.isscalar(factor) else tuple(factor)
            size = (resampled_size(shape[axes[0]], fy), resampled_size(shape[axes[1]], fx))
        self.image = image
        self.yx_axes = axes
        self.operators = (
            axis_operator(shape[axes[0]], int(size[0])),
            axis_operator(shape[axes[1]], int(size[1])),
        )
        out = list(shape)
        out[axes[0]], out[axes[1]] = int(size[0]), int(size[1])
        self.shape = tuple(out)
        self.dtype = np.dtype(np.float32)
        self.ndim = ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<Resampled {self.shape} float32 of {type(self.image).__name__}>"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key, self.ndim)
        selections, reverse = [], []
        for axis, operator in zip(self.yx_axes, self.operators, strict=True):
            indices, flip = _selected(key[axis], operator.size_out)
            selections.append(indices)
            reverse.append(flip)
        # where y and x land in the block read: integer keys on other axes drop them
        dropped = [
            isinstance(k, (int, np.integer)) and axis not in self.yx_axes
            for axis, k in enumerate(key)
        ]
        positions = [axis - sum(dropped[:axis]) for axis in self.yx_axes]
        result = self._read(key, selections, positions)
        # flip, then drop integer-indexed y / x, the later axis first
        order = sorted(range(2), key=lambda i: -positions[i])
        for i in order:
            if reverse[i]:
                result = np.flip(result, axis=positions[i])
            if isinstance(key[self.yx_axes[i]], (int, np.integer)):
                result = np.take(result, 0, axis=positions[i])
        return result

    def _read(self, key: tuple, selections: list[np.ndarray], positions: list[int]) -> np.ndarray:
        """The selected outputs, read and resampled block by block into one array."""
        row_groups, col_groups = (
            _groups(op, indices) for op, indices in zip(self.operators, selections, strict=True)
        )
        if len(row_groups) == 1 and len(col_groups) == 1:
            return self._block(key, row_groups[0], col_groups[0], positions)
        result = None
        row_start = 0
        for rows in row_groups:
            col_start = 0
            for cols in col_groups:
                block = self._block(key, rows, cols, positions)
                if result is None:
                    shape = list(block.shape)
                    shape[positions[0]], shape[positions[1]] = (len(s) for s in selections)
                    result = np.empty(shape, np.float32)
                at = [slice(None)] * block.ndim
                at[positions[0]] = slice(row_start, row_start + len(rows))
                at[positions[1]] = slice(col_start, col_start + len(cols))
                result[tuple(at)] = block
                col_start += len(cols)
            row_start += len(rows)
        return result

    def _block(
        self, key: tuple, rows: np.ndarray, cols: np.ndarray, positions: list[int]
    ) -> np.ndarray:
        """Outputs ``rows`` x ``cols``: read the input under their taps and apply both axes."""
        row_op, col_op = self.operators
        (r0, r1), (c0, c1) = row_op.span(rows), col_op.span(cols)
        source = list(key)
        source[self.yx_axes[0]] = slice(r0, r1)
        source[self.yx_axes[1]] = slice(c0, c1)
        block = np.asarray(self.image[tuple(source)])
        if block.dtype == bool:
            block = block.view(np.uint8)
        block = row_op.apply(block, positions[0], rows, r0)
        return col_op.apply(block, positions[1], cols, c0)


def _full_key(key: Any, ndim: int) -> tuple:
    """``key`` as one int or slice per axis (:func:`~napari_unet.core.planeview.full_key`);
    a resampled view computes what it reads, so it takes no index arrays."""
    key = full_key(key, ndim, what="a resampled view")
    if not all(isinstance(k, (slice, int, np.integer)) for k in key):
        raise IndexError("a resampled view is indexed with ints and slices only")
    return key


def _selected(selector: Any, size: int) -> tuple[np.ndarray, bool]:
    """Ascending output indices a selector picks, and whether to flip them afterwards."""
    if isinstance(selector, (int, np.integer)):
        index = int(selector)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of bounds for an axis of size {size}")
        return np.array([index % size]), False
    indices = np.arange(size)[selector]
    if len(indices) == 0:
        raise IndexError("a resampled view cannot return an empty selection")
    if len(indices) > 1 and indices[1] < indices[0]:
        return indices[::-1].copy(), True
    return indices, False


def _groups(operator: AxisOperator, indices: np.ndarray) -> list[np.ndarray]:
    """``indices`` cut so that each group reads at most ~:data:`MAX_READ_SPAN` input pixels."""
    starts = operator.taps[indices, 0]
    group = (starts - starts[0]) // MAX_READ_SPAN
    cuts = np.flatnonzero(np.diff(group)) + 1
    return np.split(indices, cuts)


__all__ = [
    "MAX_READ_SPAN",
    "AxisOperator",
    "Resampled",
    "axis_operator",
    "resampled_size",
]

"""Results at a model's scale mapped back onto the image's grid, whole, by region or by tile.

:mod:`~napari_unet.core.resample` resamples an image to the model's scale; this module
takes a result computed there back to the input grid (same grids and operators, see
that module's docstring): labels and masks by nearest neighbour, so every id is kept
(:func:`nearest_indices`), probabilities by the linear operator. A region of the
mapping equals that region of the whole mapping exactly, so blocks map back chunk by
chunk (:func:`to_input_grid`); :func:`input_region` and :func:`tile_to_input_grid`
place one finished tile on the input grid, for a layer filled as tiles finish.

Separate from :mod:`~napari_unet.core.resample` (the operators and the lazy
:class:`~napari_unet.core.resample.Resampled` view) because it is the way back, used
only once a result exists.

Public API
----------
- :func:`nearest_indices` ``(model_size, input_size)``: the model pixel under each input
  pixel's centre.
- :func:`to_input_grid` ``(data, input_size, *, kind, region=None)``: a model-grid result
  (or a region of it) on the input grid: labels and masks by nearest neighbour (ids
  kept), probabilities by the linear operator.
- :func:`input_region` ``(model_region, model_size, input_size)`` and
  :func:`tile_to_input_grid`: a tile's region and data on the input grid.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.core.resample import Kind, Resampled, apply_taps, axis_operator


def nearest_indices(model_size: int, input_size: int) -> np.ndarray:
    """For each of ``input_size`` pixels, the model pixel under its centre (int64, ascending).

    Input pixel ``i``'s centre ``i + 1/2`` lies in model pixel
    ``floor((i + 1/2) * model_size / input_size)``, computed in integers.
    """
    i = np.arange(int(input_size), dtype=np.int64)
    return np.minimum((2 * i + 1) * int(model_size) // (2 * int(input_size)), model_size - 1)


def to_input_grid(
    data: Any,
    input_size: tuple[int, int],
    *,
    kind: Kind,
    region: tuple[slice, slice] | None = None,
    yx_axes: tuple[int, int] = (-2, -1),
) -> np.ndarray:
    """A model-grid result on the input grid, whole or for one region.

    Parameters
    ----------
    data : (..., m_h, m_w) array-like
        The result at the model's scale (numpy or zarr; only the part the region needs
        is read).
    input_size : (int, int)
        ``(H, W)`` of the input grid.
    kind : {"labels", "mask", "probabilities"}
        Labels and masks by nearest neighbour (every value is one of ``data``'s: ids are
        kept); probabilities by the linear operator (area averaging or interpolation).
    region : (slice, slice), optional
        Rows and columns of the input grid (steps of 1); default the whole grid.
    yx_axes : (int, int)
        The y and x axes of ``data``.

    Returns
    -------
    ndarray
        ``data``'s dtype for labels and masks, float32 for probabilities; y and x sized
        as ``region``. A region equals the same region of the whole mapping exactly.
    """
    ndim = len(data.shape)
    axes = tuple(int(a) % ndim for a in yx_axes)
    model_size = (int(data.shape[axes[0]]), int(data.shape[axes[1]]))
    region = region or (slice(None), slice(None))
    if kind == "probabilities":
        key = [slice(None)] * ndim
        key[axes[0]], key[axes[1]] = region
        return Resampled(data, yx_axes=axes, size=input_size)[tuple(key)]
    if kind not in ("labels", "mask"):
        raise ValueError(f"kind must be labels, mask or probabilities, got {kind!r}")
    picks = [
        nearest_indices(m, n)[part]
        for m, n, part in zip(model_size, input_size, region, strict=True)
    ]
    key = [slice(None)] * ndim
    for axis, pick in zip(axes, picks, strict=True):
        key[axis] = slice(int(pick[0]), int(pick[-1]) + 1)
    window = np.asarray(data[tuple(key)])
    window = np.take(window, picks[0] - picks[0][0], axis=axes[0])
    return np.take(window, picks[1] - picks[1][0], axis=axes[1])


def input_region(
    model_region: tuple[slice, slice],
    model_size: tuple[int, int],
    input_size: tuple[int, int],
) -> tuple[slice, slice]:
    """The input pixels whose nearest model pixel lies in ``model_region``.

    Regions that tile the model grid give regions that tile the input grid (some may be
    empty when the model grid is the finer one).
    """
    slices = []
    for part, m, n in zip(model_region, model_size, input_size, strict=True):
        nearest = nearest_indices(m, n)
        start, stop, _ = part.indices(m)
        slices.append(
            slice(
                int(np.searchsorted(nearest, start, "left")),
                int(np.searchsorted(nearest, stop, "left")),
            )
        )
    return slices[0], slices[1]


def tile_to_input_grid(
    tile: np.ndarray,
    model_region: tuple[slice, slice],
    model_size: tuple[int, int],
    input_size: tuple[int, int],
    *,
    kind: Kind,
) -> tuple[tuple[slice, slice], np.ndarray]:
    """A finished tile's region and data on the input grid, from the tile alone.

    Parameters
    ----------
    tile : (h, w) or (K, h, w) ndarray
        The tile's result on the model grid, covering ``model_region``.
    model_region : (slice, slice)
        Where the tile lies on the model grid (steps of 1).
    model_size, input_size : (int, int)
        The two grids.
    kind : {"labels", "mask", "probabilities"}
        Labels and masks are exact (nearest neighbour). Probabilities use the linear
        operator with the tile's edge repeated where its taps reach the neighbouring
        tiles: a preview, exact away from the tile's border only.

    Returns
    -------
    region : (slice, slice)
        The tile's input-grid region (see :func:`input_region`; may be empty).
    data : ndarray
        ``tile`` on that region.
    """
    region = input_region(model_region, model_size, input_size)
    result = tile
    for axis, part, inside, m, n in zip(
        (-2, -1), region, model_region, model_size, input_size, strict=True
    ):
        outputs = np.arange(part.start, part.stop)
        first, stop = inside.start, inside.stop
        if kind == "probabilities":
            operator = axis_operator(m, n)
            taps = np.clip(operator.taps[outputs], first, stop - 1) - first
            result = apply_taps(result, result.ndim + axis, taps, operator.weights[outputs])
        else:
            result = np.take(result, nearest_indices(m, n)[outputs] - first, axis=axis)
    return region, result


__all__ = ["input_region", "nearest_indices", "tile_to_input_grid", "to_input_grid"]

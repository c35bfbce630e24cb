"""Overlap-tile inference (Ronneberger et al. 2015, Fig. 2): images of any size, bounded memory.

The image is extended by mirroring, cut into input tiles whose size keeps every 2x2
pooling on even sizes, each tile is predicted, and only its valid centre is kept. For a
``valid`` network the stitched result equals one forward pass over the whole mirrored
image (to float rounding); for a ``same`` network tiles overlap by a ``halo`` that is
cropped, which hides the zero-padding artefacts at tile borders.

Public API
----------
- :func:`plan_tiles` ``(image_shape, config, *, tile_size=None, halo=None) -> TileGrid``
- :class:`TileGrid` / :class:`AxisTiles`: the pure geometry (frozen dataclasses).
- :func:`iter_tiles` ``(image, predictor, grid, *, plane=0, batch_size=1, transform=None)``
  yields one :class:`~napari_unet.core.events.TileDone` per finished tile.
- :func:`predict_plane` ``(image, predictor, grid, *, out=None, batch_size=1, transform=None)``
  drains :func:`iter_tiles` into a ``(K, H, W)`` float32 array (or into ``out``).
- :func:`default_tile_size` ``(config) -> int`` and
  :func:`round_tile_size` ``(config, requested) -> (int, str | None)``.
- :func:`reflect_indices` / :func:`read_region`: lazy mirror padding of any array-like.
- ``Predictor = Callable[[ndarray], ndarray]``: ``(B, C, h, w)`` float32 in,
  ``(B, K, h', w')`` float32 probabilities out (see ``core/predictor.py``).

Conventions
-----------
*Mirroring* uses numpy's ``"symmetric"`` semantics (the edge pixel is repeated:
``d c b a | a b c d | d c b a``), extended periodically, so padding wider than the image
works and even a 1-pixel image can be mirrored. Every function here uses the same rule.

*Tile stride.* A valid U-Net is translation-equivariant only for shifts that are multiples
of ``2**depth`` (the pooling grid). Tiles therefore advance by a ``stride`` that is a
multiple of ``2**depth``; a valid tile's output is ``stride + 4`` pixels (the smallest valid
output is ``2**depth * k + 4``) and the last 4 are dropped. This is what makes tiled equal
whole-image inference, at a cost of 4 pixels per tile and axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.events import TileDone
from napari_unet.core.model import (
    UNetConfig,
    is_valid_input_size,
    margin,
    nearest_valid_input_size,
)

#: ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]
#: Applied to each tile as read (``(h, w)`` or ``(C, h, w)``), e.g. normalisation.
Transform = Callable[[np.ndarray], np.ndarray]

#: Largest tile input (pixels per side) for CPU inference of valid networks. Memory grows
#: with the tile and time shrinks with it (less overlap). Measured (SMALL preset, 2
#: threads, output streamed to a zarr array, peak above baseline, 2048 px image): 1212 px
#: tiles 122-132 MB in 3.6-4.9 s, 700 px tiles 90-91 MB in 4.5-5.5 s; at 4096 px 118-133
#: MB in 14.6-15.0 s vs 91 MB in 20.4 s. 1212 px left no margin on the memory target
#: (a third of MONAI's sliding window at roi 512: 0.33); 700 px keeps both the memory and
#: the speed target with room (benchmarks/bench_tiling.py), streams results in finer
#: steps, and a 512 px image is still one tile.
DEFAULT_VALID_TILE_SIZE = 700
#: Same, for ``same`` networks (a multiple of every usual ``2**depth``).
DEFAULT_SAME_TILE_SIZE = 1024


@dataclass(frozen=True)
class AxisTiles:
    """Tiling of one image axis.

    Tile ``i`` keeps image pixels ``[i * stride, min((i + 1) * stride, size))`` and reads the
    input pixels ``[i * stride - context, i * stride - context + input_size)`` (mirrored where
    they fall outside the image). In the predictor's output, the kept pixels start at
    ``out_offset = context - margin``.

    Attributes
    ----------
    size : int
        Image length along this axis.
    stride : int
        Kept pixels per tile; a multiple of ``2**depth``.
    context : int
        Input pixels read before the first kept pixel (the margin for valid networks,
        the halo for same networks).
    input_size : int
        Tile input length; valid for the network.
    output_size : int
        Length of the predictor's output for one tile.
    count : int
        Number of tiles along this axis.
    """

    size: int
    stride: int
    context: int
    input_size: int
    output_size: int
    count: int

    @property
    def out_offset(self) -> int:
        """First kept pixel in the predictor output of a tile."""
        return self.context - (self.input_size - self.output_size) // 2

    def kept(self, index: int) -> slice:
        """Image pixels tile ``index`` contributes, clipped to the image."""
        start = index * self.stride
        return slice(start, min(start + self.stride, self.size))

    def read(self, index: int) -> tuple[int, int]:
        """``(start, stop)`` input range of tile ``index`` in image coordinates (may overhang)."""
        start = index * self.stride - self.context
        return start, start + self.input_size


@dataclass(frozen=True)
class TileGrid:
    """Tiling of a 2D plane: independent :class:`AxisTiles` for rows and columns.

    Tiles are numbered row-major: tile ``index`` is ``(index // cols.count, index % cols.count)``.
    """

    rows: AxisTiles
    cols: AxisTiles

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image this grid tiles."""
        return self.rows.size, self.cols.size

    @property
    def total(self) -> int:
        """Number of tiles."""
        return self.rows.count * self.cols.count

    @property
    def input_shape(self) -> tuple[int, int]:
        """``(h, w)`` of every tile input."""
        return self.rows.input_size, self.cols.input_size

    @property
    def output_shape(self) -> tuple[int, int]:
        """``(h', w')`` the predictor returns for one tile."""
        return self.rows.output_size, self.cols.output_size

    def region(self, index: int) -> tuple[slice, slice]:
        """``(rows, cols)`` image slices tile ``index`` contributes."""
        i, j = divmod(index, self.cols.count)
        return self.rows.kept(i), self.cols.kept(j)

    def read_window(self, index: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((r0, r1), (c0, c1))`` input window of tile ``index`` (may overhang the image)."""
        i, j = divmod(index, self.cols.count)
        return self.rows.read(i), self.cols.read(j)

    def kept_in_output(self, index: int) -> tuple[slice, slice]:
        """Slices of the predictor output of tile ``index`` that are kept."""
        rows, cols = self.region(index)
        r, c = self.rows.out_offset, self.cols.out_offset
        return slice(r, r + rows.stop - rows.start), slice(c, c + cols.stop - cols.start)


def default_halo(config: UNetConfig) -> int:
    """Overlap context of ``same`` networks: ``4 * 2**depth`` pixels (64 for depth 4)."""
    return 4 * 2**config.depth


def default_tile_size(config: UNetConfig) -> int:
    """A good maximum tile input size (pixels per side) for CPU inference of ``config``."""
    target = DEFAULT_VALID_TILE_SIZE if config.padding == "valid" else DEFAULT_SAME_TILE_SIZE
    return nearest_valid_input_size(config, target, mode="down")


def round_tile_size(config: UNetConfig, requested: int) -> tuple[int, str | None]:
    """Round a requested tile size to a valid input size of ``config``.

    Returns
    -------
    size : int
        The nearest valid input size (never below :func:`smallest_tile_size`).
    message : str or None
        Why the size changed, for the user; ``None`` when ``requested`` was valid.

    Raises
    ------
    InputError
        When ``requested`` is below the smallest tile that holds the network's context:
        the same message the tile planner gives, so the user reads one rule, not two.
    """
    smallest = smallest_tile_size(config)
    if requested < smallest:
        raise InputError(_too_small_message(requested, config, _context(config, None)))
    if is_valid_input_size(config, requested):
        return requested, None
    size = nearest_valid_input_size(config, requested)
    rule = (
        "a multiple of 2**depth"
        if config.padding == "same"
        else "such that every 2x2 max-pooling sees an even size"
    )
    return size, (
        f"tile size {requested} is not valid for this {config.padding} U-Net of depth "
        f"{config.depth} (it must be {rule}, at least {smallest}); using {size}"
    )


def smallest_tile_size(config: UNetConfig, halo: int | None = None) -> int:
    """The smallest tile input size that holds one output step plus the context per side."""
    return _input_size_for(2**config.depth, _context(config, halo), config)


def _context(config: UNetConfig, halo: int | None) -> int:
    """Pixels of context kept per tile side: the margin (valid) or the rounded halo (same)."""
    if config.padding == "valid":
        return margin(config)
    step = 2**config.depth
    context = default_halo(config) if halo is None else halo
    if context < 0:
        raise InputError(f"halo must be >= 0, got {halo}")
    return math.ceil(context / step) * step


def _too_small_message(size: int, config: UNetConfig, context: int) -> str:
    smallest = _input_size_for(2**config.depth, context, config)
    return (
        f"tile size {size} is too small for this {config.padding} U-Net of depth "
        f"{config.depth} (context {context} px per side); use at least {smallest}"
    )


def plan_tiles(
    image_shape: tuple[int, ...],
    config: UNetConfig,
    *,
    tile_size: int | tuple[int, int] | None = None,
    halo: int | None = None,
) -> TileGrid:
    """Choose tiles for an image, adaptively to waste as little compute as possible.

    Per axis, with ``max_stride`` the largest stride whose tile input fits ``tile_size``:
    ``n = ceil(size / max_stride)`` tiles, each with the smallest stride (a multiple of
    ``2**depth``) that covers ``ceil(size / n)``.

    Parameters
    ----------
    image_shape : tuple of int
        ``(H, W)`` or ``(C, H, W)``; ``C`` must equal ``config.in_channels``.
    config : UNetConfig
        The network's architecture.
    tile_size : int or (int, int), optional
        Maximum tile input size per axis (default :func:`default_tile_size`).
    halo : int, optional
        Context kept around each tile of a ``same`` network, rounded up to a multiple of
        ``2**depth`` (default :func:`default_halo`). Ignored by ``valid`` networks, whose
        context is their margin.

    Raises
    ------
    InputError
        For a shape that is not a 2D plane with the right channels, or a tile size too
        small to hold one tile.
    """
    height, width = _plane_shape(image_shape, config)
    if tile_size is None:
        tile_size = default_tile_size(config)
    sizes = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
    if len(sizes) != 2:
        raise InputError(f"tile_size must be an int or a pair (rows, cols), got {tile_size!r}")
    context = _context(config, halo)
    return TileGrid(
        rows=_plan_axis(height, sizes[0], context, config),
        cols=_plan_axis(width, sizes[1], context, config),
    )


def _plane_shape(image_shape: tuple[int, ...], config: UNetConfig) -> tuple[int, int]:
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2 and config.in_channels != 1:
        raise InputError(
            f"the model expects {config.in_channels} channels but the image is 2D {shape}; "
            f"pass a (C, H, W) image with C = {config.in_channels}"
        )
    if len(shape) == 3 and shape[0] != config.in_channels:
        raise InputError(
            f"the model expects {config.in_channels} channel(s) but the image has shape {shape} "
            f"(read as (C, H, W) with C = {shape[0]}); pick the right channels or model"
        )
    if len(shape) not in (2, 3):
        raise InputError(
            f"expected one plane of shape (H, W) or (C, H, W), got shape {shape}; "
            "segment stacks plane by plane"
        )
    if min(shape[-2:]) < 1:
        raise InputError(f"the image is empty: shape {shape}")
    return shape[-2], shape[-1]


def _input_size_for(stride: int, context: int, config: UNetConfig) -> int:
    """Smallest valid input whose output still holds ``context - margin + stride`` pixels."""
    return nearest_valid_input_size(config, stride + 2 * context, mode="up")


def _plan_axis(size: int, max_input: int, context: int, config: UNetConfig) -> AxisTiles:
    step = 2**config.depth
    lost = 2 * margin(config)
    # Largest multiple of `step` whose tile input fits in `max_input`.
    max_stride = (max_input - 2 * context) // step * step
    while max_stride >= step and _input_size_for(max_stride, context, config) > max_input:
        max_stride -= step
    if max_stride < step:
        raise InputError(_too_small_message(max_input, config, context))
    count = math.ceil(size / max_stride)
    stride = math.ceil(math.ceil(size / count) / step) * step
    input_size = _input_size_for(stride, context, config)
    return AxisTiles(
        size=size,
        stride=stride,
        context=context,
        input_size=input_size,
        output_size=input_size - lost,
        count=count,
    )


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices of ``[start, stop)`` in an axis of length ``size`` extended by mirroring.

    Uses numpy's ``"symmetric"`` padding, repeated periodically (period ``2 * size``), so
    any range works, however far it overhangs the image.

    Examples
    --------
    >>> reflect_indices(-3, 6, 3).tolist()
    [2, 1, 0, 0, 1, 2, 2, 1, 0]
    """
    idx = np.arange(start, stop) % (2 * size)
    return np.where(idx >= size, 2 * size - 1 - idx, idx)


def read_region(image: Any, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Read a window of the mirror-extended image, touching only the pixels it needs.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        numpy, memmap, zarr or dask array: only the bounding box of the mirrored
        indices is read (sliced), so a lazy source is never loaded whole.
    rows, cols : (int, int)
        ``(start, stop)`` in image coordinates; may lie partly or wholly outside.

    Returns
    -------
    (h, w) or (C, h, w) ndarray
        A new array (never a view of ``image``).
    """
    height, width = image.shape[-2:]
    row_idx = reflect_indices(*rows, height)
    col_idx = reflect_indices(*cols, width)
    r0, r1 = int(row_idx.min()), int(row_idx.max()) + 1
    c0, c1 = int(col_idx.min()), int(col_idx.max()) + 1
    lead = (slice(None),) * (len(image.shape) - 2)
    block = np.asarray(image[(*lead, slice(r0, r1), slice(c0, c1))])
    return block[..., (row_idx - r0)[:, None], (col_idx - c0)[None, :]]


def iter_tiles(
    image: Any,
    predictor: Predictor,
    grid: TileGrid,
    *,
    plane: int = 0,
    batch_size: int = 1,
    transform: Transform | None = None,
    tiles: Sequence[int] | None = None,
) -> Iterator[TileDone]:
    """Predict a plane tile by tile, yielding each finished tile.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        The plane; read lazily, one tile window at a time.
    predictor : Predictor
        ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 probabilities.
    grid : TileGrid
        From :func:`plan_tiles` for this image's shape.
    plane : int
        Plane index reported in the events.
    batch_size : int
        Tiles per predictor call; memory grows with it, not with the image.
    transform : callable, optional
        Applied to each tile as read (``(h, w)`` or ``(C, h, w)``, same shape out), before
        conversion to float32; where per-plane normalisation goes.
    tiles : sequence of int, optional
        Only these tile indices (e.g. those covering a region); default all. Each tile
        is computed exactly as in a whole-plane run.

    Yields
    ------
    TileDone
        ``data`` is the ``(K, h, w)`` float32 result for ``region`` (image coordinates).
    """
    if tuple(image.shape[-2:]) != grid.shape:
        raise InputError(
            f"image of shape {tuple(image.shape)} does not match the tile grid {grid.shape}"
        )
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(grid.total)) if tiles is None else [int(t) for t in tiles]
    for first in range(0, len(order), batch_size):
        indices = order[first : first + batch_size]
        batch = np.stack([_read_tile(image, grid, index, transform) for index in indices])
        result = np.asarray(predictor(batch))
        _check_prediction(result, batch, grid)
        for b, index in enumerate(indices):
            rows, cols = grid.kept_in_output(index)
            data = np.ascontiguousarray(result[b, :, rows, cols], dtype=np.float32)
            yield TileDone(plane, index, grid.total, grid.region(index), data)
        del batch, result  # bound memory by one batch while the consumer runs


def _read_tile(image: Any, grid: TileGrid, index: int, transform: Transform | None) -> np.ndarray:
    rows, cols = grid.read_window(index)
    tile = read_region(image, rows, cols)
    if transform is not None:
        tile = transform(tile)
    tile = np.asarray(tile, dtype=np.float32)
    return tile[np.newaxis] if tile.ndim == 2 else tile


def _check_prediction(result: np.ndarray, batch: np.ndarray, grid: TileGrid) -> None:
    expected = (batch.shape[0], grid.output_shape[0], grid.output_shape[1])
    if result.ndim != 4 or (result.shape[0], *result.shape[2:]) != expected:
        raise InputError(
            f"the predictor returned shape {tuple(result.shape)} for input {tuple(batch.shape)}; "
            f"expected (B, K, {expected[1]}, {expected[2]}) for this network"
        )


def predict_plane(
    image: Any,
    predictor: Predictor,
    grid: TileGrid,
    *,
    out: Any | None = None,
    batch_size: int = 1,
    transform: Transform | None = None,
) -> Any:
    """Predict a whole plane by draining :func:`iter_tiles`.

    Parameters
    ----------
    image, predictor, grid, batch_size, transform
        As in :func:`iter_tiles`.
    out : (K, H, W) array-like, optional
        Where to write the probabilities (numpy, ``np.memmap``, zarr array: anything with
        ``__setitem__``), so a huge result can live on disk. Allocated when omitted.

    Returns
    -------
    (K, H, W) float32 array
        ``out`` if given.
    """
    for done in iter_tiles(image, predictor, grid, batch_size=batch_size, transform=transform):
        if out is None:
            out = np.empty((done.data.shape[0], *grid.shape), dtype=np.float32)
        elif done.index == 0 and tuple(out.shape) != (done.data.shape[0], *grid.shape):
            raise InputError(
                f"out has shape {tuple(out.shape)} but the result is "
                f"{(done.data.shape[0], *grid.shape)} (K, H, W)"
            )
        out[(slice(None), *done.region)] = done.data
    return out


__all__ = [
    "AxisTiles",
    "Predictor",
    "TileGrid",
    "Transform",
    "default_halo",
    "default_tile_size",
    "iter_tiles",
    "plan_tiles",
    "predict_plane",
    "read_region",
    "reflect_indices",
    "round_tile_size",
    "smallest_tile_size",
]

"""Block geometry: whole overlap-tiles of a plane's global tile grid grouped into blocks.

A block (:class:`Block`) is a rectangle of whole tiles of the **global** tile grid
(:func:`~napari_unet.core.tiling.plan_tiles` of the full plane), so every tile of a block
reads and computes exactly what it would in a whole-plane run. :func:`plan_blocks`
makes the :class:`BlockPlan`; one block is one chunk of the output store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from napari_unet.core.errors import InputError
from napari_unet.core.model import UNetConfig
from napari_unet.core.tiling import TileGrid, plan_tiles

#: Default block edge in pixels (rounded to whole tiles); one block = one output chunk.
DEFAULT_BLOCK_SIZE = 2048


@dataclass(frozen=True)
class Block:
    """A rectangle of whole tiles of the global grid of one plane.

    Attributes
    ----------
    plane, row, col : int
        Plane index and block position in the block grid.
    rows, cols : slice
        Image pixels the block covers.
    tiles : tuple of int
        Indices (in the plane's :class:`~napari_unet.core.tiling.TileGrid`) of its tiles.
    """

    plane: int
    row: int
    col: int
    rows: slice
    cols: slice
    tiles: tuple[int, ...]

    @property
    def key(self) -> str:
        """Name of the block's record, e.g. ``"p0_r1_c2"``."""
        return f"p{self.plane}_r{self.row}_c{self.col}"


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of every plane, sharing one tile grid.

    Attributes
    ----------
    grid : TileGrid
        The global tile grid of one plane.
    planes : int
        Number of planes.
    tiles_per_block : (int, int)
        Tiles per block along rows and columns.
    blocks : tuple of Block
        Plane-major, then row-major.
    """

    grid: TileGrid
    planes: int
    tiles_per_block: tuple[int, int]
    blocks: tuple[Block, ...]

    @property
    def block_shape(self) -> tuple[int, int]:
        """``(h, w)`` of a full block: the output chunk shape."""
        return (
            self.grid.rows.stride * self.tiles_per_block[0],
            self.grid.cols.stride * self.tiles_per_block[1],
        )

    @property
    def seams(self) -> tuple[list[int], list[int]]:
        """Row and column positions of the block borders inside a plane."""
        height, width = self.grid.shape
        bh, bw = self.block_shape
        return list(range(bh, height, bh)), list(range(bw, width, bw))

    def describe(self) -> dict[str, Any]:
        """JSON-able facts that must match for a store to be resumed."""
        return {
            "planes": self.planes,
            "plane_shape": list(self.grid.shape),
            "tile_input": list(self.grid.input_shape),
            "tile_stride": [self.grid.rows.stride, self.grid.cols.stride],
            "tiles_per_block": list(self.tiles_per_block),
        }


def plan_blocks(
    image_shape: tuple[int, ...],
    config: UNetConfig,
    *,
    planes: int = 1,
    tile_size: int | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> BlockPlan:
    """Group the global overlap-tiles of a plane into blocks of about ``block_size`` pixels.

    Parameters
    ----------
    image_shape : tuple of int
        One plane: ``(H, W)`` or ``(C, H, W)``.
    config : UNetConfig
        The network.
    planes : int
        Number of planes (blocks are listed for each).
    tile_size : int, optional
        Tile input size, as in :func:`~napari_unet.core.tiling.plan_tiles`.
    block_size : int
        Wanted block edge in pixels; rounded to a whole number (>= 1) of tile strides,
        so block origins are multiples of ``2**depth`` and block-local tiling is the
        global tiling.
    """
    if block_size < 1:
        raise InputError(f"block size must be a positive number of pixels, got {block_size}")
    grid = plan_tiles(image_shape, config, tile_size=tile_size)
    per_block = (
        max(1, round(block_size / grid.rows.stride)),
        max(1, round(block_size / grid.cols.stride)),
    )
    count_r = math.ceil(grid.rows.count / per_block[0])
    count_c = math.ceil(grid.cols.count / per_block[1])
    blocks = []
    for plane in range(planes):
        for i in range(count_r):
            tile_rows = range(i * per_block[0], min((i + 1) * per_block[0], grid.rows.count))
            for j in range(count_c):
                tile_cols = range(j * per_block[1], min((j + 1) * per_block[1], grid.cols.count))
                tiles = tuple(r * grid.cols.count + c for r in tile_rows for c in tile_cols)
                first, last = grid.region(tiles[0]), grid.region(tiles[-1])
                blocks.append(
                    Block(
                        plane=plane,
                        row=i,
                        col=j,
                        rows=slice(first[0].start, last[0].stop),
                        cols=slice(first[1].start, last[1].stop),
                        tiles=tiles,
                    )
                )
    return BlockPlan(grid=grid, planes=planes, tiles_per_block=per_block, blocks=tuple(blocks))

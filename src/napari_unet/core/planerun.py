"""The tile loop every run shares, and one plane through it in memory.

:func:`iter_tile_results` is the one tile loop: it normalises each tile with the plane's
statistics, runs :func:`~napari_unet.core.tiling.iter_tiles` (all tiles of a plane, or
the tiles of one block) and turns each tile's probabilities into its result
(:func:`~napari_unet.core.outputs.tile_result`). The in-memory run (:class:`PlaneRun`)
and the block-wise run (:func:`~napari_unet.core.blocks.iter_block`) both drain it, so
a tile is computed and checked the same way whoever runs it.

:class:`PlaneRun` writes each tile's result into the output as it finishes;
:class:`PlaneWork` keeps what whole-plane post-processing needs (mask, foreground
probability) and :func:`plane_labels` labels it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from napari_unet.core import normalise
from napari_unet.core.events import TileDone
from napari_unet.core.model import UNetConfig
from napari_unet.core.options import SegmentOptions, plane_labeller
from napari_unet.core.outputs import tile_result
from napari_unet.core.postprocess import foreground_probability
from napari_unet.core.predictor import Predictor
from napari_unet.core.resample import Resampled
from napari_unet.core.resample_back import tile_to_input_grid, to_input_grid
from napari_unet.core.tiling import TileGrid, iter_tiles


def iter_tile_results(
    image: Any,
    predictor: Predictor,
    grid: TileGrid,
    stats: dict[str, Any],
    options: SegmentOptions,
    *,
    plane: int = 0,
    tiles: Sequence[int] | None = None,
) -> Iterator[tuple[np.ndarray, TileDone]]:
    """Predict tiles of one plane and give each tile's probabilities and result.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        The plane on the grid the network runs on; read one tile window at a time.
    predictor : Predictor
        ``(B, C, h, w) -> (B, K, h', w')`` probabilities.
    grid : TileGrid
        The plane's global tile grid.
    stats : dict
        The whole plane's normalisation statistics
        (:func:`~napari_unet.core.normalise.compute_stats`): a tile of a block is
        normalised exactly as in a whole-plane run.
    options : SegmentOptions
        ``output``, ``threshold`` and ``batch_size`` are used.
    plane : int
        Flat plane index reported in the events.
    tiles : sequence of int, optional
        Tile indices of ``grid`` to compute (a block's); default all.

    Yields
    ------
    probabilities : (K, h, w) float32
        The tile's kept probabilities.
    done : TileDone
        Its event; ``data`` is the tile's result (:func:`~napari_unet.core.outputs.tile_result`).
    """
    for done in iter_tiles(
        image,
        predictor,
        grid,
        plane=plane,
        batch_size=options.batch_size,
        transform=lambda tile: normalise.apply(tile, stats),
        tiles=tiles,
    ):
        data = tile_result(done.data, options.output, options.threshold)
        yield done.data, TileDone(plane, done.index, done.total, done.region, data)


class PlaneRun:
    """One plane through the tiles: its results written into ``out`` as tiles finish.

    Parameters
    ----------
    plane : (H, W) or (C, H, W) array-like
        The plane on the input grid (read lazily).
    index : int
        Its flat plane index (for events).
    where : str
        How messages name it.
    options : SegmentOptions
    spec : dict
        The model's normalisation.
    grid : TileGrid
        Tiles of the grid the network runs on: the input's, or the model's when resampled.
    """

    def __init__(
        self,
        plane: Any,
        index: int,
        where: str,
        options: SegmentOptions,
        spec: dict[str, Any],
        grid: TileGrid,
    ) -> None:
        self.plane, self.index, self.where = plane, index, where
        self.options, self.spec, self.grid = options, spec, grid

    def tiles(self, image: Any, predictor: Predictor, work: PlaneWork) -> Iterable[TileDone]:
        """Predict ``image`` (on the grid's scale) tile by tile, recording into ``work``."""
        stats = normalise.compute_stats(
            image, self.spec, where=self.where, per_channel=len(image.shape) == 3
        )
        for probabilities, done in iter_tile_results(
            image, predictor, self.grid, stats, self.options, plane=self.index
        ):
            work.add(done.region, probabilities, done.data)
            yield done

    def at_input_scale(
        self, predictor: Predictor, out: Any, at: tuple[int, ...]
    ) -> Generator[TileDone, None, np.ndarray]:
        """Segment the plane as it is; return its result."""
        output = self.options.output
        work = PlaneWork(self.options, self.grid.shape)
        for done in self.tiles(self.plane, predictor, work):
            out[result_index(at, done.region, output)] = done.data
            yield done
        if work.mask is None:
            return np.asarray(out[at] if at else out)
        result = work.labels(self.options)
        out[result_index(at, (slice(None), slice(None)), output)] = result
        return result

    def resampled(
        self,
        predictor: Predictor,
        out: Any,
        at: tuple[int, ...],
        input_size: tuple[int, int],
        config: UNetConfig,
    ) -> Generator[TileDone, None, np.ndarray]:
        """Segment the plane at the model's scale and map each result back; return it.

        Tiles are reported on the input grid: masks by nearest neighbour (exact),
        probabilities mapped per tile (a preview, replaced by the exact mapping of the
        whole plane when it is done).
        """
        output, model_size = self.options.output, self.grid.shape
        # one model-grid plane in memory at a time (checked by _check_model_plane_fits)
        image = np.asarray(Resampled(self.plane, size=model_size))
        work = PlaneWork(
            self.options, model_size, num_classes=config.num_classes, keep_probabilities=True
        )
        for done in self.tiles(image, predictor, work):
            region, data = tile_to_input_grid(
                done.data, done.region, model_size, input_size, kind=output
            )
            out[result_index(at, region, output)] = data
            yield TileDone(self.index, done.index, done.total, region, data)
        del image
        whole = (slice(None), slice(None))
        if output == "labels":
            result = to_input_grid(work.labels(self.options), input_size, kind="labels")
        elif output == "probabilities":
            result = to_input_grid(work.probabilities, input_size, kind="probabilities")
        else:
            return np.asarray(out[at] if at else out)  # nearest per tile is already exact
        out[result_index(at, whole, output)] = result
        return result


class PlaneWork:
    """What a plane keeps while its tiles finish, on the grid the network runs on.

    ``mask`` (labels output), ``foreground`` (labels merged across weak boundaries) and,
    with ``keep_probabilities`` for a probabilities output, ``probabilities``.
    """

    def __init__(
        self,
        options: SegmentOptions,
        shape: tuple[int, int],
        *,
        num_classes: int = 2,
        keep_probabilities: bool = False,
    ) -> None:
        labels = options.output == "labels"
        merging = labels and options.merge_boundaries > 0
        keep = keep_probabilities and options.output == "probabilities"
        self.mask = np.zeros(shape, np.uint8) if labels else None
        self.foreground = np.zeros(shape, np.float32) if merging else None
        self.probabilities = np.zeros((num_classes, *shape), np.float32) if keep else None

    def add(self, region: tuple[slice, slice], probabilities: np.ndarray, data: np.ndarray):
        """Record one tile: its ``(K, h, w)`` probabilities and its result ``data``."""
        if self.mask is not None:
            self.mask[region] = data
        if self.foreground is not None:
            self.foreground[region] = foreground_probability(probabilities)
        if self.probabilities is not None:
            self.probabilities[(slice(None), *region)] = probabilities

    def labels(self, options: SegmentOptions) -> np.ndarray:
        """Instance labels of the whole plane (labels output only)."""
        return plane_labels(self.mask, self.foreground, options)


def plane_labels(
    mask: np.ndarray, foreground: np.ndarray | None, options: SegmentOptions
) -> np.ndarray:
    """Instance labels of a whole plane with the labeller block-wise runs use too
    (:func:`~napari_unet.core.options.plane_labeller`): grown and merged from the
    ``(H, W)`` foreground probability when ``merge_boundaries`` is set, else labelled from
    the ``(H, W)`` mask."""
    return plane_labeller(options)(mask, foreground)


def result_index(at: tuple[int, ...], region: tuple[slice, slice], output: str) -> tuple:
    channels = (slice(None),) if output == "probabilities" else ()
    return (*at, *channels, *region)

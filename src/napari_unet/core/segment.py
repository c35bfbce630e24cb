"""Segment an image with a model: the one pipeline every front end (CLI, widgets) drains.

:func:`segment_iter` is a generator: it checks the image, normalises each plane with
the model's own normalisation, predicts it tile by tile (overlap-tile, see
:mod:`napari_unet.core.tiling`) and yields a :class:`~napari_unet.core.events.TileDone`
per tile and a :class:`~napari_unet.core.events.PlaneDone` per plane. Results are
written into ``out`` as tiles finish, so closing the generator early (Cancel) keeps
the finished tiles. :func:`segment` drains it and returns the result.

>>> labels = segment(load_model(resolve_model("nuclei")), image)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from napari_unet.core import normalise
from napari_unet.core.calibration import PixelSize, parse_pixel_size
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, ScaleChosen, TileDone, drain
from napari_unet.core.io import (
    as_planes,
    check_fits_in_memory,
    describe_array,
    plane_position,
)
from napari_unet.core.linking import link_planes
from napari_unet.core.model import UNet, UNetConfig, pick_device
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.postprocess import (
    foreground_probability,
    grow_and_merge,
    instance_labels,
    semantic_mask,
)
from napari_unet.core.predictor import WHOLE_MAP_MAX_PIXELS, make_predictor
from napari_unet.core.resample import Resampled, tile_to_input_grid, to_input_grid
from napari_unet.core.scaling import (
    AUTO_COARSE,
    AUTO_CROP,
    AUTO_FINE_CROP,
    AUTO_MIN_OBJECTS,
    ScaleChoice,
    auto_start,
    central_crop,
    check_diameter,
    check_resampled_size,
    choose_scale,
    measured_objects,
    scale_from_measurement,
)
from napari_unet.core.tiling import TileGrid, iter_tiles, plan_tiles

Output = Literal["labels", "mask", "probabilities"]
#: ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]

_OUTPUTS = ("labels", "mask", "probabilities")
_OUT_DTYPES = {"labels": np.int32, "mask": np.uint8, "probabilities": np.float32}


@dataclass(frozen=True)
class SegmentOptions:
    """How to segment.

    Attributes
    ----------
    output : {"labels", "mask", "probabilities"}
        ``labels``: int32 instance ids (0 = background); ``mask``: uint8 class per
        pixel; ``probabilities``: float32 ``(K, H, W)`` per plane.
    tile_size : int, optional
        Tile input size in pixels (a valid size for the network, see
        :func:`~napari_unet.core.tiling.round_tile_size`); default per network.
    threshold : float
        Foreground probability threshold for ``mask`` and ``labels``.
    min_size : int
        ``labels`` only: objects smaller than this many pixels are removed.
    fill_boundaries : bool
        ``labels`` only: grow objects until they touch (thin-boundary models such as EM
        membranes).
    split_touching : bool
        ``labels`` only: separate touching objects (watershed).
    merge_boundaries : float
        ``labels`` only, for thin-boundary models (EM membranes): when above 0, cells are
        seeded where the foreground probability exceeds ``threshold``, grown along the
        predicted boundaries to fill the image, and neighbours whose shared border has
        a mean boundary probability below this value are merged
        (:func:`~napari_unet.core.postprocess.grow_and_merge`). Replaces
        ``fill_boundaries`` and ``split_touching``; ``min_size`` applies to the seeds.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    batch_size : int
        Tiles per forward pass.
    channel_axis : int, optional
        The image's channel axis (negative counts from the end); by default a
        one-channel model reads no channel axis and a ``C``-channel model axis ``-3``
        (see :func:`~napari_unet.core.io.as_planes`).
    channels : tuple of int, optional
        Channels to use, in order (indices on the channel axis); default all.
    link : bool
        ``labels`` only: after every plane is segmented, link the instance labels through
        the last leading axis (z of ``(T, Z, Y, X)``; frame to frame on a time axis) with
        :func:`~napari_unet.core.linking.link_planes`, so one object keeps one id across
        planes. Ids are unique over the whole result.
    link_iou : float
        Smallest overlap (intersection over union, in (0, 1]) for an object to take the
        id of an object in the previous plane.
    pixel_size : PixelSize, optional
        The image's pixel size (text like ``"0.325um"`` or a number of µm is parsed).
        With the model's pixel size it sets the scale (see
        :func:`~napari_unet.core.scaling.choose_scale`).
    diameter : float or "auto", optional
        The objects' diameter in pixels of the image, or ``"auto"`` to measure it; the
        image is resampled so that objects have the model's diameter. ``None`` (default):
        the pixel sizes when both are known, else auto for models that record a diameter,
        else no resampling. ``min_size`` counts pixels of the grid objects are labelled on,
        the model's scale when the image is resampled (as the model's recommendations do).
    """

    output: Output = "labels"
    tile_size: int | None = None
    threshold: float = 0.5
    min_size: int = 0
    split_touching: bool = False
    fill_boundaries: bool = False
    merge_boundaries: float = 0.0
    device: str = "auto"
    batch_size: int = 1
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    link: bool = False
    link_iou: float = 0.25
    pixel_size: PixelSize | None = None
    diameter: float | str | None = None

    def __post_init__(self) -> None:
        if self.output not in _OUTPUTS:
            raise InputError(f"output must be one of {', '.join(_OUTPUTS)}, got {self.output!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.min_size < 0:
            raise InputError(f"min_size must be >= 0, got {self.min_size}")
        if not 0.0 <= self.merge_boundaries <= 1.0:
            raise InputError(
                f"merge_boundaries must be between 0 and 1, got {self.merge_boundaries}"
            )
        if self.batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tile_size is not None and self.tile_size < 1:
            raise InputError(f"tile_size must be a positive number of pixels, got {self.tile_size}")
        if self.channels is not None:
            object.__setattr__(self, "channels", _channel_tuple(self.channels))
        if not 0.0 < self.link_iou <= 1.0:
            raise InputError(f"link_iou must be above 0 and at most 1, got {self.link_iou}")
        if self.pixel_size is not None and not isinstance(self.pixel_size, PixelSize):
            object.__setattr__(self, "pixel_size", parse_pixel_size(self.pixel_size))
        object.__setattr__(self, "diameter", check_diameter(self.diameter))


def _channel_tuple(channels: Any) -> tuple[int, ...]:
    """Channels as a hashable tuple: from a list, one number, or text like ``"0,2"``.

    Only the form is checked here; :func:`~napari_unet.core.io.as_planes` checks the
    indices against the image.
    """
    if isinstance(channels, str):
        try:
            return tuple(int(part) for part in channels.split(","))
        except ValueError:
            raise InputError(
                f"channels are numbers separated by commas, e.g. 0,2; got {channels!r}"
            ) from None
    if isinstance(channels, (int, np.integer)):
        return (int(channels),)
    return tuple(channels)


#: Post-processing settings a model file may recommend (in ``provenance["postprocess"]``).
_RECOMMENDABLE = ("threshold", "min_size", "split_touching", "fill_boundaries", "merge_boundaries")


def recommended_options(model: ModelBundle | UNet, output: str | None = None) -> dict[str, Any]:
    """Post-processing the model's authors recommend (tuned on data the model holds out).

    ``provenance["postprocess"]`` holds the recommendation; its optional ``"per_output"``
    mapping refines it for one output kind (e.g. a higher threshold for instance labels
    than for the semantic mask).

    Parameters
    ----------
    model : ModelBundle or UNet
        The model; models without a recommendation give an empty dict.
    output : {"labels", "mask", "probabilities"}, optional
        The output kind the options are for.

    Returns
    -------
    dict
        A subset of ``threshold``, ``min_size``, ``split_touching``, ``fill_boundaries``
        and ``merge_boundaries``, ready to pass to :class:`SegmentOptions`.
    """
    provenance = getattr(model, "provenance", None) or {}
    recommended = dict(provenance.get("postprocess") or {})
    recommended.update((recommended.pop("per_output", None) or {}).get(output, {}))
    return {key: recommended[key] for key in _RECOMMENDABLE if key in recommended}


def segment_iter(
    model: ModelBundle | UNet,
    image: Any,
    *,
    options: SegmentOptions | None = None,
    planes: Iterable[int] | None = None,
    out: Any | None = None,
    predictor: Predictor | None = None,
) -> Generator[TileDone | PlaneDone, None, Any]:
    """Segment ``image`` plane by plane, tile by tile, yielding progress.

    Parameters
    ----------
    model : ModelBundle or UNet
        A loaded model; a bare :class:`UNet` uses its ``normalisation`` attribute if
        it has one, else :data:`~napari_unet.core.normalise.DEFAULT_SPEC`.
    image : array-like
        numpy, zarr or dask; read one tile at a time. ``(H, W)``, or with up to two
        leading axes (``(Z, H, W)``, ``(T, Z, H, W)``) and a channel axis (see
        ``options.channel_axis`` and :func:`~napari_unet.core.io.as_planes`).
    options : SegmentOptions, optional
        Defaults to ``SegmentOptions()``.
    planes : iterable of int, optional
        Flat plane indices to segment (default all; see
        :func:`~napari_unet.core.io.plane_index`); others are left untouched in ``out``.
    out : array, optional
        Where results go, in the result's layout ``(*leading, H, W)`` (labels, mask) /
        ``(*leading, K, H, W)`` (probabilities), or flat with one plane axis
        ``(N, H, W)`` / ``(N, K, H, W)``. Allocated (zeros) when omitted. While a plane is
        in progress a labels output holds the 0/1 mask of its finished tiles.
    predictor : callable, optional
        A prebuilt ``(B, C, h, w) -> (B, K, h', w')`` predictor for ``model``; by default
        one is built (and cached per model bundle and device).

    Yields
    ------
    ScaleChosen
        First, whenever a scale is involved (the model records one, or ``options`` give
        a pixel size or diameter): the factor the image is resampled by, and why (see
        :func:`~napari_unet.core.scaling.choose_scale`; ``auto`` measures a central crop
        before it). A model without a scale, segmented without them, runs as before.
    TileDone
        Per tile; ``data`` is ``(h, w)`` uint8 mask (``labels``, ``mask``) or ``(K, h, w)``
        float32 probabilities. ``region`` and ``data`` are on the input grid: when the
        image is resampled, a tile of the model grid is mapped to the input pixels
        whose centres it holds (masks by nearest neighbour, exact; probabilities mapped
        per tile, a preview replaced by the exact mapping when the plane is done).
    PlaneDone
        Per plane (``plane`` is the flat index), once all its tiles are done; ``data`` is
        the plane's result (instance labels after labelling the whole plane, so ids are
        consistent across tile seams; with ``options.link`` the ids change once more
        when every plane is done).

    Returns
    -------
    ndarray
        The result, ``(*leading, H, W)`` or ``(*leading, K, H, W)`` (``out`` when given;
        no leading axes for a single plane).

    Raises
    ------
    InputError
        For images, channels or options that cannot be segmented (one line each).

    Notes
    -----
    At a scale other than 1 each plane is resampled (area averaging or linear, see
    :mod:`~napari_unet.core.resample`) into one model-grid plane in memory, normalised and
    segmented there; labels are mapped back by nearest neighbour (the model grid's ids
    kept), probabilities by the linear operator, so the result is exactly the model-grid
    result on the input grid.

    With ``options.link`` every group of planes along the last leading axis that holds a
    segmented plane is linked again as a whole (planes of ``out`` not segmented in this
    call included), its ids placed above those of the other groups; linking works on the
    input grid's labels.
    """
    options = options or SegmentOptions()
    config = model.config
    stack, restore = as_planes(
        image,
        in_channels=config.in_channels,
        channel_axis=options.channel_axis,
        channels=options.channels,
    )
    leading = restore.leading
    plane_shape = tuple(stack.shape[1:])
    input_size = tuple(plane_shape[-2:])
    selected = _check_planes(planes, len(stack))
    full_shape = _result_shape(options.output, len(stack), config, input_size)
    out_dtype = np.dtype(_OUT_DTYPES[options.output])
    if out is None:
        # Refused in one line before any work: np.zeros of a too large result would only
        # fail (or swap) once the network has run.
        check_fits_in_memory(math.prod(full_shape) * out_dtype.itemsize, "the result")
    grid = plan_tiles(plane_shape, config, tile_size=options.tile_size)
    layout = "flat" if out is None else _check_out(out, full_shape, leading)
    middle = selected[len(selected) // 2] if selected else 0
    choice = choose_plane_scale(model, lambda: stack[middle], options, predictor=predictor)
    if choice.resamples:
        model_size = check_resampled_size(input_size, choice)
        _check_model_plane_fits(plane_shape, model_size, options, config, choice)
        grid = plan_tiles((*plane_shape[:-2], *model_size), config, tile_size=options.tile_size)
    if scale_matters(model, options):
        yield ScaleChosen(choice)
    if predictor is None:
        predictor = get_predictor(model, options.device, whole_maps=_one_small_tile(grid))
    if out is None:
        out = np.zeros(full_shape, dtype=out_dtype)
    where = _plane_namer(leading)
    for p in selected:
        at = _out_prefix(p, layout, leading)
        plane = _PlaneRun(stack[p], p, where(p), options, _normalisation_of(model), grid)
        if choice.resamples:
            result = yield from plane.resampled(predictor, out, at, input_size, config)
        else:
            result = yield from plane.at_input_scale(predictor, out, at)
        yield PlaneDone(p, result)
    if options.link and options.output == "labels" and leading:
        link_through(out, leading, selected, layout=layout, min_iou=options.link_iou)
    return restore(out) if layout == "flat" else out


class _PlaneRun:
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

    def tiles(self, image: Any, predictor: Predictor, work: _PlaneWork) -> Iterable[TileDone]:
        """Predict ``image`` (on the grid's scale) tile by tile, recording into ``work``."""
        stats = normalise.compute_stats(
            image, self.spec, where=self.where, per_channel=len(image.shape) == 3
        )
        for done in iter_tiles(
            image,
            predictor,
            self.grid,
            plane=self.index,
            batch_size=self.options.batch_size,
            transform=lambda tile: normalise.apply(tile, stats),
        ):
            data = _tile_result(done.data, self.options)
            work.add(done.region, done.data, data)
            yield TileDone(self.index, done.index, done.total, done.region, data)

    def at_input_scale(
        self, predictor: Predictor, out: Any, at: tuple[int, ...]
    ) -> Generator[TileDone, None, np.ndarray]:
        """Segment the plane as it is; return its result."""
        output = self.options.output
        work = _PlaneWork(self.options, self.grid.shape)
        for done in self.tiles(self.plane, predictor, work):
            out[_index(at, done.region, output)] = done.data
            yield done
        if work.mask is None:
            return np.asarray(out[at] if at else out)
        result = work.labels(self.options)
        out[_index(at, (slice(None), slice(None)), output)] = result
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
        work = _PlaneWork(
            self.options, model_size, num_classes=config.num_classes, keep_probabilities=True
        )
        for done in self.tiles(image, predictor, work):
            region, data = tile_to_input_grid(
                done.data, done.region, model_size, input_size, kind=output
            )
            out[_index(at, region, output)] = data
            yield TileDone(self.index, done.index, done.total, region, data)
        del image
        whole = (slice(None), slice(None))
        if output == "labels":
            result = to_input_grid(work.labels(self.options), input_size, kind="labels")
        elif output == "probabilities":
            result = to_input_grid(work.probabilities, input_size, kind="probabilities")
        else:
            return np.asarray(out[at] if at else out)  # nearest per tile is already exact
        out[_index(at, whole, output)] = result
        return result


class _PlaneWork:
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
        return _plane_labels(self.mask, self.foreground, options)


def scale_matters(model: ModelBundle | UNet, options: Any) -> bool:
    """Whether a run reports its scale: the model records one or the options give one.

    A model without a scale segmented without a pixel size or diameter runs exactly as
    before scales existed (no :class:`~napari_unet.core.events.ScaleChosen` event).
    """
    given = (getattr(options, "pixel_size", None), getattr(options, "diameter", None))
    recorded = (getattr(model, "pixel_size", None), getattr(model, "object_diameter", None))
    return any(value is not None for value in (*given, *recorded))


def choose_plane_scale(
    model: ModelBundle | UNet,
    plane: Callable[[], Any],
    options: Any,
    *,
    predictor: Predictor | None = None,
    fallback_size: int | None = None,
) -> ScaleChoice:
    """The scale of a run: :func:`~napari_unet.core.scaling.choose_scale`, or when it says
    ``"auto"`` :func:`measure_scale` on ``plane()`` (called only then: a lazy plane)."""
    pixel_size = getattr(options, "pixel_size", None)
    choice = choose_scale(model, pixel_size, getattr(options, "diameter", None))
    if choice != "auto":
        return choice
    return measure_scale(
        model,
        plane(),
        options,
        start=auto_start(model, pixel_size),
        predictor=predictor,
        fallback_size=fallback_size,
    )


def measure_scale(
    model: ModelBundle | UNet,
    plane: Any,
    options: SegmentOptions | None = None,
    *,
    start: tuple[float, float] = (1.0, 1.0),
    predictor: Predictor | None = None,
    fallback_size: int | None = None,
) -> ScaleChoice:
    """``auto``: segment central crops of ``plane`` and measure their objects' diameter.

    A first pass at :data:`~napari_unet.core.scaling.AUTO_COARSE` times ``start``, on a
    crop of :data:`~napari_unet.core.scaling.AUTO_CROP` model pixels: a model splits
    objects several times its own size into fragments, but measures them faithfully at
    half the scale. When the objects turn out smaller than the model's (or none are
    found), a second pass at ``start`` on a crop of
    :data:`~napari_unet.core.scaling.AUTO_FINE_CROP` pixels measures them where small
    objects are not lost. Only the crops are read. A crop with fewer than
    :data:`~napari_unet.core.scaling.AUTO_MIN_OBJECTS` objects inside is measured again
    on the whole plane (or a central crop of ``fallback_size`` model pixels).

    Parameters
    ----------
    model : ModelBundle
        Must record ``object_diameter``.
    plane : (H, W) or (C, H, W) array-like
        One plane of the image (channels already chosen).
    options : SegmentOptions, optional
        Post-processing of the labels measured (their ``output`` is ignored).
    start : (float, float)
        The factors auto starts from (1: the image as it is).
    predictor : callable, optional
        As in :func:`segment_iter`.
    fallback_size : int, optional
        Side of the wider crop measured when a crop holds too few objects; default the
        whole plane.

    Returns
    -------
    ScaleChoice
        From :func:`~napari_unet.core.scaling.scale_from_measurement`.
    """
    # Objects as the model's diameter was measured on its annotations: never grown into
    # their boundaries (grow-and-merge EM cells measured 36-38 px against 26 px annotated).
    options = replace(
        options or SegmentOptions(),
        output="labels",
        link=False,
        merge_boundaries=0.0,
        fill_boundaries=False,
    )
    diameter = getattr(model, "object_diameter", None)
    if diameter is None:
        raise InputError("measuring the objects' diameter needs a model that records its own")
    coarse = (start[0] * AUTO_COARSE, start[1] * AUTO_COARSE)
    measure = functools.partial(
        _measure_crop, model, plane, options, predictor=predictor, fallback_size=fallback_size
    )
    measured, count, where = measure(coarse, AUTO_CROP)
    at = coarse
    if measured is None or measured < diameter * AUTO_COARSE:  # smaller than the model's
        measured, count, where = measure(start, AUTO_FINE_CROP)
        at = start
    return scale_from_measurement(diameter, measured, count, start, measured_at=at, where=where)


def _measure_crop(
    model: ModelBundle | UNet,
    plane: Any,
    options: SegmentOptions,
    factors: tuple[float, float],
    size: int,
    *,
    predictor: Predictor | None,
    fallback_size: int | None,
) -> tuple[float | None, int, str]:
    """Measure a central crop of ``size`` model pixels at ``factors``; with too few objects
    in it, the whole plane (or a crop of ``fallback_size``)."""
    shape = tuple(int(s) for s in plane.shape[-2:])
    crop = central_crop(shape, factors, size)
    measured, count, where = _measure(model, plane, crop, factors, options, predictor)
    if fallback_size is None:
        wider = (slice(0, shape[0]), slice(0, shape[1]))
    else:
        wider = central_crop(shape, factors, fallback_size)
    if count < AUTO_MIN_OBJECTS and _pixels(wider) > _pixels(crop):
        measured, count, where = _measure(model, plane, wider, factors, options, predictor)
    return measured, count, where


def _pixels(region: tuple[slice, slice]) -> int:
    return math.prod(part.stop - part.start for part in region)


def _measure(
    model: ModelBundle | UNet,
    plane: Any,
    crop: tuple[slice, slice],
    start: tuple[float, float],
    options: SegmentOptions,
    predictor: Predictor | None,
) -> tuple[float | None, int, str]:
    """Labels of ``crop`` of ``plane`` at factors ``start``: median diameter, count, and
    what was measured (for the reason)."""
    lead = (slice(None),) * (len(plane.shape) - 2)
    region = np.asarray(plane[(*lead, *crop)])
    if start != (1.0, 1.0):
        region = np.asarray(Resampled(region, start))
    grid = plan_tiles(region.shape, model.config, tile_size=options.tile_size)
    if predictor is None:
        predictor = get_predictor(model, options.device, whole_maps=_one_small_tile(grid))
    run = _PlaneRun(region, 0, "", options, _normalisation_of(model), grid)
    work = _PlaneWork(options, grid.shape)
    for _ in run.tiles(region, predictor, work):
        pass
    measured, count = measured_objects(work.labels(options))
    shape = tuple(int(s) for s in plane.shape[-2:])
    whole = all(part.stop - part.start == size for part, size in zip(crop, shape, strict=True))
    height, width = (part.stop - part.start for part in crop)
    where = "the whole image" if whole else f"a central {height} x {width} px crop"
    return measured, count, where


def _check_model_plane_fits(
    plane_shape: tuple[int, ...],
    model_size: tuple[int, int],
    options: SegmentOptions,
    config: UNetConfig,
    choice: ScaleChoice,
) -> None:
    """Refuse, in one line, a model-grid plane (and what is kept of it) too large for memory."""
    channels = plane_shape[0] if len(plane_shape) == 3 else 1
    per_pixel = 4 * channels  # the resampled plane, float32
    if options.output == "labels":
        per_pixel += 1 + 4 + (4 if options.merge_boundaries > 0 else 0)  # mask, labels
    elif options.output == "probabilities":
        per_pixel += 4 * config.num_classes
    check_fits_in_memory(
        math.prod(model_size) * per_pixel,
        f"the image resampled to the model's scale ({choice.reason}: "
        f"{describe_array(model_size, np.float32)})",
        hint="check the pixel size (--pixel-size) or diameter (--diameter N), or segment "
        "into a .zarr output (-o result.zarr), which works block by block",
    )


def segment(
    model: ModelBundle | UNet,
    image: Any,
    *,
    options: SegmentOptions | None = None,
    planes: Iterable[int] | None = None,
    out: Any | None = None,
    predictor: Predictor | None = None,
    **option_fields: Any,
) -> Any:
    """Drain :func:`segment_iter` and return its result.

    Option fields may be given directly: ``segment(model, image, output="mask")``.
    """
    if option_fields:
        unknown = set(option_fields) - {f.name for f in fields(SegmentOptions)}
        if unknown:
            raise TypeError(f"unknown segment options: {sorted(unknown)}")
        options = SegmentOptions(**{**_as_dict(options), **option_fields})
    generator = segment_iter(
        model, image, options=options, planes=planes, out=out, predictor=predictor
    )
    return drain(generator)


# Built networks cost a weight copy; keep one predictor per (bundle, device) while
# the bundle is alive. Bundles hash by identity, so a new bundle (e.g. after
# fine-tuning) gets a fresh network.
_PREDICTORS: weakref.WeakKeyDictionary[ModelBundle, dict[str, Predictor]] = (
    weakref.WeakKeyDictionary()
)


def get_predictor(
    model: ModelBundle | UNet, device: str = "auto", *, whole_maps: bool = False
) -> Predictor:
    """A predictor for ``model`` on ``device``, cached per model bundle and device.

    ``whole_maps`` computes one whole feature map at a time instead of row strips: faster
    for a single small tile (see :data:`~napari_unet.core.predictor.WHOLE_MAP_MAX_PIXELS`),
    unbounded memory for large ones.

    Raises
    ------
    InputError
        If ``device`` is unknown or not available.
    """
    try:
        torch_device = pick_device(device)
    except ValueError as error:
        raise InputError(str(error)) from error
    strip_rows = None if whole_maps else "auto"
    if isinstance(model, UNet):
        # make_predictor puts the network in eval mode; a caller's network may be
        # training, so give it its mode back (the predictor has its own weight snapshot).
        was_training = model.training
        predictor = make_predictor(model, torch_device, strip_rows=strip_rows)
        model.train(was_training)
        return predictor
    per_device = _PREDICTORS.setdefault(model, {})
    key = f"{torch_device}, whole maps" if whole_maps else str(torch_device)
    if key not in per_device:
        per_device[key] = make_predictor(
            model.build(torch_device), torch_device, strip_rows=strip_rows
        )
    return per_device[key]


def _one_small_tile(grid: TileGrid) -> bool:
    """Whether the plane is one tile small enough to compute whole feature maps."""
    height, width = grid.input_shape
    return grid.total == 1 and height * width <= WHOLE_MAP_MAX_PIXELS


def _normalisation_of(model: ModelBundle | UNet) -> dict[str, Any]:
    if isinstance(model, ModelBundle):
        return model.normalisation
    return normalise.validate_spec(getattr(model, "normalisation", None))


def _check_planes(planes: Iterable[int] | None, count: int) -> list[int]:
    if planes is None:
        return list(range(count))
    selected = [int(p) for p in planes]
    bad = [p for p in selected if not 0 <= p < count]
    if bad:
        raise InputError(f"plane indices {bad} are out of range for {count} plane(s)")
    return selected


def _result_shape(
    output: str, count: int, config: UNetConfig, plane: tuple[int, int]
) -> tuple[int, ...]:
    if output == "probabilities":
        return (count, config.num_classes, *plane)
    return (count, *plane)


def _check_out(out: Any, full_shape: tuple[int, ...], leading: tuple[int, ...]) -> str:
    """The layout of ``out``: ``"flat"`` (N, ...) or ``"leading"`` (*leading, ...)."""
    shape = tuple(out.shape)
    if shape == full_shape:
        return "flat"
    laid_out = (*leading, *full_shape[1:])
    if shape == laid_out:
        return "leading"
    expected = str(full_shape) if laid_out == full_shape else f"{laid_out} or {full_shape}"
    raise InputError(f"out has shape {shape}; expected {expected} for this image and output")


def _out_prefix(p: int, layout: str, leading: tuple[int, ...]) -> tuple[int, ...]:
    """Index of plane ``p`` in an ``out`` of ``layout``."""
    return (p,) if layout == "flat" else plane_position(leading, p)


def _index(at: tuple[int, ...], region: tuple[slice, slice], output: str) -> tuple:
    channels = (slice(None),) if output == "probabilities" else ()
    return (*at, *channels, *region)


def _plane_namer(leading: tuple[int, ...]) -> Callable[[int], str]:
    """Names a plane in messages: ``"plane (t, z) = (1, 4)"``, ``"plane 3"``, or nothing."""
    if not leading:
        return lambda p: ""  # a single 2-D image
    if len(leading) == 1:
        return lambda p: f"plane {p}"
    return lambda p: f"plane {p} (position {plane_position(leading, p)})"


def link_through(
    out: Any,
    leading: tuple[int, ...],
    segmented: Iterable[int],
    *,
    layout: str = "leading",
    min_iou: float = 0.25,
) -> None:
    """Link labels in ``out`` along the last leading axis, in place.

    Each group of planes that differ only on the last leading axis (one z-stack of a
    (T, Z, H, W) result) and holds a plane of ``segmented`` is linked by
    :func:`~napari_unet.core.linking.link_planes`; its ids are shifted above every id of
    the groups linked before it and of the groups left alone, so ids stay unique.

    Parameters
    ----------
    out : (*leading, H, W) or (N, H, W) array
        Per-plane instance labels (numpy, or any array-like with slicing).
    leading : tuple of int
        Shape of the leading axes (at least one).
    segmented : iterable of int
        Flat indices of the planes segmented in this run.
    layout : {"leading", "flat"}
        How ``out`` is laid out.
    min_iou : float
        As in :func:`~napari_unet.core.linking.link_planes`.
    """

    depth = leading[-1]
    groups = sorted({p // depth for p in segmented})
    count = math.prod(leading) // depth
    left_alone = [g for g in range(count) if g not in set(groups)]
    offset = max(
        (int(np.max(_group(out, g, depth, leading, layout))) for g in left_alone), default=0
    )
    limit = np.iinfo(np.int32).max
    for g in groups:
        linked = link_planes(np.asarray(_group(out, g, depth, leading, layout)), min_iou=min_iou)
        top = int(linked.max()) if linked.size else 0
        if offset + top > limit:
            raise InputError(
                f"linking gives more than {limit} objects; link fewer planes at a time"
            )
        _set_group(out, g, depth, leading, layout, np.where(linked > 0, linked + offset, 0))
        offset += top


def _group_index(g: int, depth: int, leading: tuple[int, ...], layout: str) -> tuple:
    if layout == "flat":
        return (slice(g * depth, (g + 1) * depth),)
    return (*plane_position(leading, g * depth)[:-1], slice(None))


def _group(out: Any, g: int, depth: int, leading: tuple[int, ...], layout: str) -> Any:
    return out[_group_index(g, depth, leading, layout)]


def _set_group(
    out: Any, g: int, depth: int, leading: tuple[int, ...], layout: str, value: np.ndarray
) -> None:
    out[_group_index(g, depth, leading, layout)] = value.astype(np.int32, copy=False)


def _plane_labels(
    mask: np.ndarray, foreground: np.ndarray | None, options: SegmentOptions
) -> np.ndarray:
    """Instance labels of a whole plane: grown and merged from the ``(H, W)`` foreground
    probability when ``merge_boundaries`` is set, else labelled from the ``(H, W)`` mask."""
    if foreground is not None:
        return grow_and_merge(
            foreground,
            seed_threshold=options.threshold,
            merge_below=options.merge_boundaries,
            min_size=options.min_size,
        )
    return instance_labels(
        mask,
        min_size=options.min_size,
        split_touching=options.split_touching,
        fill_boundaries=options.fill_boundaries,
    )


def _tile_result(probabilities: np.ndarray, options: SegmentOptions) -> np.ndarray:
    if options.output == "probabilities":
        return probabilities
    return semantic_mask(probabilities, threshold=options.threshold)


def _as_dict(options: SegmentOptions | None) -> dict[str, Any]:
    if options is None:
        return {}
    return {f.name: getattr(options, f.name) for f in fields(SegmentOptions)}


__all__ = [
    "SegmentOptions",
    "choose_plane_scale",
    "get_predictor",
    "link_through",
    "measure_scale",
    "scale_matters",
    "segment",
    "segment_iter",
]

"""The scale of a run: which factor the image is resampled by, and why.

:func:`choose_plane_scale` applies :func:`~napari_unet.core.scaling.choose_scale` and,
for ``auto``, :func:`measure_scale`: segment central crops of a plane in memory and
measure their objects' diameter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions
from napari_unet.core.planerun import PlaneRun, PlaneWork
from napari_unet.core.predictor import Predictor, get_predictor, normalisation_of, one_small_tile
from napari_unet.core.resample import Resampled
from napari_unet.core.scaling import (
    AUTO_COARSE,
    AUTO_CROP,
    AUTO_FINE_CROP,
    AUTO_MIN_OBJECTS,
    ScaleChoice,
    auto_start,
    central_crop,
    choose_scale,
    measured_objects,
    scale_from_measurement,
)
from napari_unet.core.tiling import plan_tiles


def scale_matters(model: ModelBundle | UNet, options: SegmentOptions) -> bool:
    """Whether a run reports its scale: the model records one or the options give one.

    A model without a scale segmented without a pixel size or diameter runs exactly as
    before scales existed (no :class:`~napari_unet.core.events.ScaleChosen` event).
    """
    given = (options.pixel_size, options.diameter)
    recorded = (getattr(model, "pixel_size", None), getattr(model, "object_diameter", None))
    return any(value is not None for value in (*given, *recorded))


def choose_plane_scale(
    model: ModelBundle | UNet,
    plane: Callable[[], Any],
    options: SegmentOptions,
    *,
    predictor: Predictor | None = None,
    fallback_size: int | None = None,
) -> ScaleChoice:
    """The scale of a run: :func:`~napari_unet.core.scaling.choose_scale`, or when it says
    ``"auto"`` :func:`measure_scale` on ``plane()`` (called only then: a lazy plane)."""
    pixel_size = options.pixel_size
    choice = choose_scale(model, pixel_size, options.diameter)
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
        predictor = get_predictor(model, options.device, whole_maps=one_small_tile(grid))
    run = PlaneRun(region, 0, "", options, normalisation_of(model), grid)
    work = PlaneWork(options, grid.shape)
    for _ in run.tiles(region, predictor, work):
        pass
    measured, count = measured_objects(work.labels(options))
    shape = tuple(int(s) for s in plane.shape[-2:])
    whole = all(part.stop - part.start == size for part, size in zip(crop, shape, strict=True))
    height, width = (part.stop - part.start for part in crop)
    where = "the whole image" if whole else f"a central {height} x {width} px crop"
    return measured, count, where

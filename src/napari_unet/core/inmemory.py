"""The in-memory run: every plane of an image through the tiles, the result in an array.

:func:`run_in_memory` checks the image (:func:`~napari_unet.core.planes.as_planes`) and
that the result fits in memory, chooses the scale
(:mod:`~napari_unet.core.scalechoice`), then runs each plane through the shared tile
loop (:class:`~napari_unet.core.planerun.PlaneRun`): normalise -> tiles -> predictor ->
stitch into ``out`` -> whole-plane post-processing -> :func:`link_through` (z linking).
Results are written into ``out`` as tiles finish, so closing the generator early
(Cancel) keeps the finished tiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, ScaleChosen, TileDone
from napari_unet.core.linking import link_planes
from napari_unet.core.memory import check_fits_in_memory, describe_array
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions
from napari_unet.core.outputs import OUT_DTYPES, result_shape
from napari_unet.core.planerun import PlaneRun
from napari_unet.core.planes import as_planes, plane_position
from napari_unet.core.predictor import Predictor, get_predictor, normalisation_of, one_small_tile
from napari_unet.core.scalechoice import choose_plane_scale, scale_matters
from napari_unet.core.scaling import ScaleChoice, check_resampled_size
from napari_unet.core.tiling import plan_tiles


def run_in_memory(
    model: ModelBundle | UNet,
    image: Any,
    *,
    options: SegmentOptions | None = None,
    planes: Iterable[int] | None = None,
    out: Any | None = None,
    predictor: Predictor | None = None,
) -> Generator[TileDone | PlaneDone, None, Any]:
    """Segment ``image`` in memory, plane by plane, tile by tile, yielding progress.

    The in-memory run of :func:`~napari_unet.core.pipeline.run`; parameters, events and
    result as in :func:`~napari_unet.core.segment.segment_iter`.
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
    full_shape = result_shape(options.output, config.num_classes, (len(stack),), input_size)
    out_dtype = OUT_DTYPES[options.output]
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
        predictor = get_predictor(model, options.device, whole_maps=one_small_tile(grid))
    if out is None:
        out = np.zeros(full_shape, dtype=out_dtype)
    where = _plane_namer(leading)
    for p in selected:
        at = _out_prefix(p, layout, leading)
        plane = PlaneRun(stack[p], p, where(p), options, normalisation_of(model), grid)
        if choice.resamples:
            result = yield from plane.resampled(predictor, out, at, input_size, config)
        else:
            result = yield from plane.at_input_scale(predictor, out, at)
        yield PlaneDone(p, result)
    if options.link and options.output == "labels" and leading:
        link_through(out, leading, selected, layout=layout, min_iou=options.link_iou)
    return restore(out) if layout == "flat" else out


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


def _check_planes(planes: Iterable[int] | None, count: int) -> list[int]:
    if planes is None:
        return list(range(count))
    selected = [int(p) for p in planes]
    bad = [p for p in selected if not 0 <= p < count]
    if bad:
        raise InputError(f"plane indices {bad} are out of range for {count} plane(s)")
    return selected


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


__all__ = ["link_through", "run_in_memory"]

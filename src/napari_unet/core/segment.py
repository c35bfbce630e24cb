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

import math
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from napari_unet.core import normalise
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, TileDone, drain
from napari_unet.core.io import as_planes, check_fits_in_memory
from napari_unet.core.model import UNet, UNetConfig, pick_device
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.postprocess import (
    foreground_probability,
    grow_and_merge,
    instance_labels,
    semantic_mask,
)
from napari_unet.core.predictor import WHOLE_MAP_MAX_PIXELS, make_predictor
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
    image : (H, W) or (N, H, W) array-like
        numpy, zarr or dask; read one tile at a time.
    options : SegmentOptions, optional
        Defaults to ``SegmentOptions()``.
    planes : iterable of int, optional
        Plane indices to segment (default all); others are left untouched in ``out``.
    out : array, optional
        Where results go, in the image's layout or with a plane axis:
        ``(H, W)``/``(N, H, W)`` for labels and mask, ``(K, H, W)``/``(N, K, H, W)`` for
        probabilities. Allocated (zeros) when omitted. While a plane is in progress a
        labels output holds the 0/1 mask of its finished tiles.
    predictor : callable, optional
        A prebuilt ``(B, C, h, w) -> (B, K, h', w')`` predictor for ``model``; by default
        one is built (and cached per model bundle and device).

    Yields
    ------
    TileDone
        Per tile; ``data`` is ``(h, w)`` uint8 mask (``labels``, ``mask``) or ``(K, h, w)``
        float32 probabilities.
    PlaneDone
        Per plane, once all its tiles are done; ``data`` is the plane's final result
        (instance labels after labelling the whole plane, so ids are consistent across
        tile seams).

    Returns
    -------
    ndarray
        The result in the image's layout (``out`` when given).
    """
    options = options or SegmentOptions()
    config = model.config
    stack, restore = as_planes(image, in_channels=config.in_channels)
    plane_shape = tuple(stack.shape[1:])
    height, width = plane_shape[-2:]
    selected = _check_planes(planes, len(stack))
    full_shape = _result_shape(options.output, len(stack), config, (height, width))
    out_dtype = np.dtype(_OUT_DTYPES[options.output])
    if out is None:
        # Refused in one line before any work: np.zeros of a too large result would only
        # fail (or swap) once the network has run.
        check_fits_in_memory(math.prod(full_shape) * out_dtype.itemsize, "the result")
    grid = plan_tiles(plane_shape, config, tile_size=options.tile_size)
    if predictor is None:
        predictor = get_predictor(model, options.device, whole_maps=_one_small_tile(grid))
    spec = _normalisation_of(model)
    if out is None:
        out = np.zeros(full_shape, dtype=out_dtype)
        has_plane_axis = True
    else:
        single_image = len(image.shape) < len(stack.shape)
        has_plane_axis = _check_out(out, full_shape, single_image)

    for p in selected:
        plane = stack[p]
        stats = normalise.compute_stats(plane, spec, where=f"plane {p}")
        plane_mask = np.zeros((height, width), np.uint8) if options.output == "labels" else None
        merging = plane_mask is not None and options.merge_boundaries > 0
        plane_foreground = np.zeros((height, width), np.float32) if merging else None
        for done in iter_tiles(
            plane,
            predictor,
            grid,
            plane=p,
            batch_size=options.batch_size,
            transform=lambda tile, stats=stats: normalise.apply(tile, stats),
        ):
            data = _tile_result(done.data, options)
            out[_index(p, done.region, options.output, has_plane_axis)] = data
            if plane_mask is not None:
                plane_mask[done.region] = data
            if plane_foreground is not None:
                plane_foreground[done.region] = foreground_probability(done.data)
            yield TileDone(p, done.index, done.total, done.region, data)
        if plane_mask is not None:
            result = _plane_labels(plane_mask, plane_foreground, options)
            out[_index(p, (slice(None), slice(None)), "labels", has_plane_axis)] = result
        else:
            result = np.asarray(out[p] if has_plane_axis else out)
        yield PlaneDone(p, result)
    return restore(out) if has_plane_axis else out


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


def _check_out(out: Any, full_shape: tuple[int, ...], single_image: bool) -> bool:
    """Whether ``out`` has the plane axis; raise if it fits neither layout."""
    shape = tuple(out.shape)
    if shape == full_shape:
        return True
    if single_image and shape == full_shape[1:]:
        return False
    expected = f"{full_shape[1:]} or {full_shape}" if single_image else str(full_shape)
    raise InputError(f"out has shape {shape}; expected {expected} for this image and output")


def _index(p: int, region: tuple[slice, slice], output: str, has_plane_axis: bool) -> tuple:
    channels = (slice(None),) if output == "probabilities" else ()
    plane = (p,) if has_plane_axis else ()
    return (*plane, *channels, *region)


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


__all__ = ["SegmentOptions", "get_predictor", "segment", "segment_iter"]

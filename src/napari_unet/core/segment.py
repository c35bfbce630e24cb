"""Segment an image with a model: the public front door of the in-memory run.

:func:`segment_iter` is a generator: it checks the image, normalises each plane with
the model's own normalisation, predicts it tile by tile (overlap-tile, see
:mod:`napari_unet.core.tiling`) and yields a :class:`~napari_unet.core.events.TileDone`
per tile and a :class:`~napari_unet.core.events.PlaneDone` per plane. Results are
written into ``out`` as tiles finish, so closing the generator early (Cancel) keeps
the finished tiles. :func:`segment` drains it and returns the result.

>>> labels = segment(load_model(resolve_model("nuclei")), image)  # doctest: +SKIP

Both run :func:`napari_unet.core.pipeline.run`, the one pipeline (its docstring maps the
data path onto the modules). The names a caller needs are importable from here:
options (:mod:`~napari_unet.core.options`), predictors
(:mod:`~napari_unet.core.predictor`), the scale (:mod:`~napari_unet.core.scalechoice`),
z linking (:mod:`~napari_unet.core.inmemory`).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

from napari_unet.core.events import PlaneDone, ScaleChosen, TileDone, drain
from napari_unet.core.inmemory import link_through
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions, recommended_options, with_fields
from napari_unet.core.pipeline import run
from napari_unet.core.predictor import Predictor, get_predictor
from napari_unet.core.scalechoice import choose_plane_scale, measure_scale, scale_matters


def segment_iter(
    model: ModelBundle | UNet,
    image: Any,
    *,
    options: SegmentOptions | None = None,
    planes: Iterable[int] | None = None,
    out: Any | None = None,
    predictor: Predictor | None = None,
) -> Generator[ScaleChosen | TileDone | PlaneDone, None, Any]:
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
    return (
        yield from run(model, image, options=options, planes=planes, out=out, predictor=predictor)
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
        options = with_fields(options, **option_fields)
    generator = segment_iter(
        model, image, options=options, planes=planes, out=out, predictor=predictor
    )
    return drain(generator)


__all__ = [
    "SegmentOptions",
    "choose_plane_scale",
    "get_predictor",
    "link_through",
    "measure_scale",
    "recommended_options",
    "scale_matters",
    "segment",
    "segment_iter",
]

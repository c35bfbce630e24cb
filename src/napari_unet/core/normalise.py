"""Intensity normalisation, stored in the model file so training and inference agree.

A *spec* says how to normalise (it travels with the weights); *stats* are the two
numbers a spec yields for one plane. Normalising is then ``(x - offset) / scale``:

>>> stats = compute_stats(np.array([[0, 50], [100, 200]]), {"method": "minmax"})
>>> stats
{'offset': 0.0, 'scale': 200.0}
>>> apply(np.array([[100, 200]]), stats)
array([[0.5, 1. ]], dtype=float32)

Specs
-----
``{"method": "percentile", "low": 1.0, "high": 99.8}`` (the default)
    ``low`` and ``high`` percentiles map to 0 and 1; robust to hot pixels.
``{"method": "minmax"}``
    The plane's minimum and maximum map to 0 and 1.
``{"method": "fixed", "offset": o, "scale": s}``
    The same ``(x - o) / s`` for every image (e.g. ``offset=0, scale=255`` for uint8).

Multichannel planes ``(C, H, W)`` are normalised per channel (``per_channel=True``):
channels of one image have unrelated intensity ranges (a bright nuclear stain next to a
faint membrane stain). Stats are computed once per plane, from a strided subsample of at most
:data:`MAX_STAT_PIXELS` pixels, so a huge lazy (zarr/dask) plane is never read whole.

Non-finite pixels
-----------------
NaN and infinite pixels are left out of the stats, and :func:`apply` (the one place
tiles are normalised before the network) replaces them by :data:`NON_FINITE_VALUE`,
0.0, the plane's low normalisation level: they never reach the network.
:func:`compute_stats` says how many there were in one
:class:`~napari_unet.core.errors.NonFiniteWarning` per plane, and refuses a plane
without a single finite pixel.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError, NonFiniteWarning

#: Default normalisation of new models.
DEFAULT_SPEC: dict[str, Any] = {"method": "percentile", "low": 1.0, "high": 99.8}
#: What NaN and infinite pixels become after normalisation: the plane's low level.
NON_FINITE_VALUE = 0.0
#: Statistics use at most this many pixels (a strided subsample of larger planes).
MAX_STAT_PIXELS = 4_000_000

_METHODS = ("percentile", "minmax", "fixed")


def validate_spec(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Return a complete, checked copy of ``spec`` (``None`` gives :data:`DEFAULT_SPEC`).

    Raises
    ------
    InputError
        If the method is unknown or its parameters are missing or out of range.
    """
    if spec is None:
        return dict(DEFAULT_SPEC)
    method = spec.get("method")
    if method not in _METHODS:
        raise InputError(
            f"unknown normalisation method {method!r}; choose one of {', '.join(_METHODS)}"
        )
    if method == "percentile":
        low = float(spec.get("low", DEFAULT_SPEC["low"]))
        high = float(spec.get("high", DEFAULT_SPEC["high"]))
        if not 0.0 <= low < high <= 100.0:
            raise InputError(
                f"percentile normalisation needs 0 <= low < high <= 100, got low={low}, high={high}"
            )
        return {"method": method, "low": low, "high": high}
    if method == "fixed":
        try:
            offset, scale = float(spec["offset"]), float(spec["scale"])
        except KeyError as missing:
            raise InputError(
                f"fixed normalisation needs 'offset' and 'scale', missing {missing}"
            ) from None
        if scale == 0.0 or not math.isfinite(scale) or not math.isfinite(offset):
            raise InputError(f"fixed normalisation needs a finite non-zero scale, got {scale}")
        return {"method": method, "offset": offset, "scale": scale}
    return {"method": method}


def compute_stats(
    image: Any, spec: dict[str, Any] | None = None, *, where: str = "", per_channel: bool = False
) -> dict[str, Any]:
    """Offset and scale that normalise one plane according to ``spec``.

    Also counts the plane's NaN and infinite pixels, which :func:`apply` replaces:
    when there are any, one :class:`~napari_unet.core.errors.NonFiniteWarning` says
    how many (exactly for a numpy plane, estimated from the subsample, "about N", for a
    lazy one). Call it once per plane.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        One plane; numpy, zarr or dask (read lazily through a strided subsample).
    spec : dict, optional
        Normalisation spec (see the module docstring); default :data:`DEFAULT_SPEC`.
    where : str
        Names the plane in messages, e.g. ``"plane 3"`` or ``"cells.tif, plane 3"``.
    per_channel : bool
        For a ``(C, H, W)`` plane: one offset and scale per channel (channels of a
        multichannel image have unrelated intensity ranges), from the same subsample.
        ``fixed`` specs give the same numbers for every channel.

    Returns
    -------
    dict
        ``{"offset": float, "scale": float}`` with ``scale != 0``; a constant plane
        gets ``scale = 1`` so it normalises to zeros instead of dividing by zero. With
        ``per_channel``, ``offset`` and ``scale`` are lists of ``C`` floats (fixed specs:
        floats).

    Raises
    ------
    InputError
        If the plane has pixels but none of them is finite (all NaN or infinite).

    Warns
    -----
    NonFiniteWarning
        If some pixels are NaN or infinite.
    """
    spec = validate_spec(spec)
    if spec["method"] == "fixed" and _never_non_finite(image):
        return {"offset": spec["offset"], "scale": spec["scale"]}  # nothing to read
    sample = subsample(image)
    sampled = sample.size
    if per_channel:
        values = [_finite_values(channel) for channel in sample]
    else:
        values = [_finite_values(sample)]
    del sample  # not kept alive during the percentile (lazy planes: up to 4 M pixels)
    if not _never_non_finite(image):
        _report_non_finite(image, sampled, sum(v.size for v in values), where)
    if spec["method"] == "fixed":
        return {"offset": spec["offset"], "scale": spec["scale"]}
    stats = [_offset_scale(channel, spec) for channel in values]
    if not per_channel:
        return stats[0]
    return {"offset": [s["offset"] for s in stats], "scale": [s["scale"] for s in stats]}


def _offset_scale(values: np.ndarray, spec: dict[str, Any]) -> dict[str, float]:
    """Offset and scale of finite ``values`` (a flat sample) for a percentile/minmax spec."""
    if values.size == 0:
        return {"offset": 0.0, "scale": 1.0}
    if spec["method"] == "percentile":
        low, high = np.percentile(values, [spec["low"], spec["high"]])
    else:
        low, high = values.min(), values.max()
    scale = float(high - low)
    return {"offset": float(low), "scale": scale if scale > 0 else 1.0}


def apply(tile: Any, stats: dict[str, Any]) -> np.ndarray:
    """Normalise ``tile`` (any shape, real or bool dtype) to float32 ``(x - offset) / scale``.

    Per-channel stats (lists, see :func:`compute_stats`) apply to the channel axis of a
    ``(..., C, h, w)`` tile.

    NaN and infinite results (NaN/Inf pixels, or values beyond float32's range) become
    :data:`NON_FINITE_VALUE`, 0.0, the plane's low normalisation level, so they never
    reach the network (one of them would spread NaN over a whole tile's output).
    """
    values = np.asarray(tile)
    if values.dtype == bool:
        values = values.view(np.uint8)
    offset, scale = stats["offset"], stats["scale"]
    if np.ndim(offset) or np.ndim(scale):
        offset = np.asarray(offset, np.float64).reshape(-1, 1, 1)
        scale = np.asarray(scale, np.float64).reshape(-1, 1, 1)
        if values.ndim < 3 or values.shape[-3] != len(offset):
            raise InputError(
                f"per-channel normalisation of {len(offset)} channels does not fit a tile of "
                f"shape {values.shape}"
            )
    # float64 arithmetic first: uint16/int32 values minus a large offset lose
    # precision in float32 otherwise; the cast at the end keeps memory small.
    with np.errstate(over="ignore", invalid="ignore"):  # the non-finite results are replaced
        result = (values.astype(np.float64) - offset) / scale
        result = result.astype(np.float32)
    value = NON_FINITE_VALUE
    return np.nan_to_num(result, copy=False, nan=value, posinf=value, neginf=value)


def _never_non_finite(image: Any) -> bool:
    """Whether ``image``'s dtype cannot hold NaN or infinity (so it need not be read)."""
    dtype = np.dtype(image.dtype)
    return not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating))


def _report_non_finite(image: Any, sampled: int, finite: int, where: str) -> None:
    """Warn once about the plane's NaN/infinite pixels; refuse a plane without finite ones.

    ``finite`` of the ``sampled`` pixels of the subsample are finite. A numpy plane is
    counted exactly; a lazy one is estimated from the subsample, never read whole.
    """
    total = math.prod(image.shape)
    if isinstance(image, np.ndarray) and sampled < total:
        count, about = _count_non_finite(image), ""
    else:
        count, about = sampled - finite, "" if sampled == total else "about "
    if total == 0 or count == 0:
        return
    prefix = f"{where}: " if where else ""
    if finite == 0 and (about or count == total):
        raise InputError(
            f"{prefix}the image has no finite pixel values (all NaN or infinite); check how "
            "it was exported, or segment another plane or region"
        )
    if about:
        count = max(1, round(count * total / sampled))
    pixels = "pixel" if count == 1 else "pixels"
    warnings.warn(
        NonFiniteWarning(
            f"{prefix}{about}{count} NaN/infinite {pixels} replaced by the low intensity "
            "level before segmentation"
        ),
        stacklevel=3,
    )


def _count_non_finite(image: np.ndarray) -> int:
    """Exact count of NaN/infinite pixels, by blocks of rows: no plane-sized mask or copy."""
    planes = image.reshape(1, *image.shape) if image.ndim < 2 else image
    step = max(1, MAX_STAT_PIXELS // max(1, planes.shape[-1]))
    finite = 0
    for index in np.ndindex(planes.shape[:-2]):
        plane = planes[index]
        for row in range(0, plane.shape[0], step):
            finite += int(np.count_nonzero(np.isfinite(plane[row : row + step])))
    return image.size - finite


def subsample(image: Any, max_pixels: int | None = None) -> np.ndarray:
    """A strided subsample of ``image`` with at most ``max_pixels`` elements, as numpy.

    ``max_pixels`` defaults to :data:`MAX_STAT_PIXELS`.

    Only the last two (spatial) axes are strided, with the same step, so a lazy
    array reads just the selected pixels.
    """
    max_pixels = MAX_STAT_PIXELS if max_pixels is None else max_pixels
    size = math.prod(image.shape)
    step = max(1, math.ceil(math.sqrt(size / max_pixels)))
    if step > 1:
        image = image[(..., slice(None, None, step), slice(None, None, step))]
    return np.asarray(image)


def _finite_values(values: np.ndarray) -> np.ndarray:
    if values.dtype == bool:
        return values.astype(np.uint8).ravel()
    if np.issubdtype(values.dtype, np.floating):
        return values[np.isfinite(values)]
    return values.ravel()


__all__ = [
    "DEFAULT_SPEC",
    "MAX_STAT_PIXELS",
    "NON_FINITE_VALUE",
    "apply",
    "compute_stats",
    "subsample",
    "validate_spec",
]

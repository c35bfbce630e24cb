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

Stats are computed once per plane, from a strided subsample of at most
:data:`MAX_STAT_PIXELS` pixels, so a huge lazy (zarr/dask) plane is never read whole.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError

#: Default normalisation of new models.
DEFAULT_SPEC: dict[str, Any] = {"method": "percentile", "low": 1.0, "high": 99.8}
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


def compute_stats(image: Any, spec: dict[str, Any] | None = None) -> dict[str, float]:
    """Offset and scale that normalise one plane according to ``spec``.

    Parameters
    ----------
    image : (H, W) or (C, H, W) array-like
        One plane; numpy, zarr or dask (read lazily through a strided subsample).
    spec : dict, optional
        Normalisation spec (see the module docstring); default :data:`DEFAULT_SPEC`.

    Returns
    -------
    dict
        ``{"offset": float, "scale": float}`` with ``scale != 0``; a constant plane
        gets ``scale = 1`` so it normalises to zeros instead of dividing by zero.
    """
    spec = validate_spec(spec)
    if spec["method"] == "fixed":
        return {"offset": spec["offset"], "scale": spec["scale"]}
    values = _finite_values(subsample(image))
    if values.size == 0:
        return {"offset": 0.0, "scale": 1.0}
    if spec["method"] == "percentile":
        low, high = np.percentile(values, [spec["low"], spec["high"]])
    else:
        low, high = values.min(), values.max()
    scale = float(high - low)
    return {"offset": float(low), "scale": scale if scale > 0 else 1.0}


def apply(tile: Any, stats: dict[str, float]) -> np.ndarray:
    """Normalise ``tile`` (any shape, real or bool dtype) to float32 ``(x - offset) / scale``."""
    values = np.asarray(tile)
    if values.dtype == bool:
        values = values.view(np.uint8)
    # float64 arithmetic first: uint16/int32 values minus a large offset lose
    # precision in float32 otherwise; the cast at the end keeps memory small.
    result = (values.astype(np.float64) - stats["offset"]) / stats["scale"]
    return result.astype(np.float32)


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
    "apply",
    "compute_stats",
    "subsample",
    "validate_spec",
]

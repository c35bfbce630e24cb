"""Guess what kind of microscopy image a plane is, cheaply, to offer a fitting model.

Two kinds matter for the built-in models:

* ``"fluorescence"``: a few bright objects on a dark background, so most pixels are near
  the image's low end (the ``nuclei`` model's DSB 2018 images);
* ``"em"``: electron microscopy or transmitted light, a mid-grey texture filling the
  whole field, so the typical pixel lies well inside the image's range (the
  ``em-membranes`` model's ISBI 2012 images).

The measure is where the median pixel lies between the image's robust low and high ends
(its 1st and 99.9th percentiles): :func:`background_level`. Fluorescence images put it
near 0, EM images near the middle. On ``../shared/data`` (``tests/core/test_imagekind.py``)
the 398 DSB 2018 nuclei images measured 0.00-0.18 (median 0.02) and the 20 ISBI 2012 EM
slices 0.46-0.53; :data:`DARK_BACKGROUND` (0.3) sits between them. The 99.9th percentile,
not the 99.5th, because two DSB images hold so few nuclei (under 0.5 % of the pixels) that
the 99.5th percentile is still background noise (0.29 and 0.50 then). Transmitted light
with bright halos on an even background (the BBBC030 DIC images, 0.07-0.24) reads as a
dark background: neither built-in model is trained for it. It reads at most
:data:`SAMPLE_SIDE` x :data:`SAMPLE_SIDE` pixels of a plane (a strided view of an
in-memory array, a central crop of a lazy one): about 1.5 ms for a 512 x 512 plane.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ImageKind = Literal["fluorescence", "em"]

#: Background levels below this are fluorescence (dark background), at or above it EM or
#: transmitted light (mid-grey texture).
DARK_BACKGROUND = 0.3
#: Largest side of the sample :func:`plane_sample` reads.
SAMPLE_SIDE = 256
#: Fewest finite pixels a guess is made from.
MIN_PIXELS = 64
#: Percentiles of the robust low and high ends.
LOW_END, HIGH_END = 1.0, 99.9


def plane_sample(data: Any, side: int = SAMPLE_SIDE) -> np.ndarray:
    """At most ``side`` x ``side`` pixels of the middle (y, x) plane of ``data``.

    Parameters
    ----------
    data : array-like, shape (..., Y, X)
        A numpy array, or any lazy array (dask, zarr...) supporting slicing.
    side : int
        Largest side of the sample.

    Returns
    -------
    numpy.ndarray, shape (<= side, <= side)
        A strided view of an in-memory plane (the whole field), a central crop of a lazy
        one (reading every chunk of a large lazy plane would be slow).
    """
    shape = tuple(int(n) for n in data.shape)
    if len(shape) < 2:
        raise ValueError(f"a plane needs two axes (y, x), got shape {shape}")
    middle = tuple(n // 2 for n in shape[:-2])
    height, width = shape[-2:]
    if isinstance(data, np.ndarray):
        step_y, step_x = -(-height // side), -(-width // side)
        return data[(*middle, slice(None, None, step_y), slice(None, None, step_x))]
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    crop = (slice(top, top + side), slice(left, left + side))
    return np.asarray(data[(*middle, *crop)])


def background_level(plane: Any) -> float | None:
    """Where the median pixel of ``plane`` lies between its robust low and high ends.

    Parameters
    ----------
    plane : array-like, shape (Y, X)

    Returns
    -------
    float or None
        ``(median - p1) / (p99.9 - p1)``, in [0, 1]: near 0 when most pixels are dark
        background. None for a flat plane or too few finite pixels.
    """
    values = np.asarray(plane, dtype=np.float32).ravel()
    values = values[np.isfinite(values)]
    if values.size < MIN_PIXELS:
        return None
    low, median, high = np.percentile(values, (LOW_END, 50.0, HIGH_END))
    if not high > low:
        return None
    return float(np.clip((median - low) / (high - low), 0.0, 1.0))


def image_kind(plane: Any) -> ImageKind | None:
    """``"fluorescence"`` for a dark background, ``"em"`` for a mid-grey texture (EM or
    transmitted light), None when the plane says nothing (flat, or too small).

    Parameters
    ----------
    plane : array-like, shape (Y, X)
        Best a sample (:func:`plane_sample`): every pixel is read.
    """
    level = background_level(plane)
    if level is None:
        return None
    return "fluorescence" if level < DARK_BACKGROUND else "em"


__all__ = [
    "DARK_BACKGROUND",
    "SAMPLE_SIDE",
    "ImageKind",
    "background_level",
    "image_kind",
    "plane_sample",
]

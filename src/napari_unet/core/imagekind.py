"""Guess what kind of microscopy image a plane is, cheaply, to offer a fitting model.

Three kinds matter for the built-in models:

* ``"fluorescence"``: a few bright objects on a dark background, so most pixels are near
  the image's low end and nothing is much darker than the background (the ``nuclei``
  model's DSB 2018 images);
* ``"transmitted"``: transmitted light (DIC, phase contrast), objects on an even grey
  background with relief or halos both brighter *and darker* than it (the ``dic-cells``
  model's BBBC030 images);
* ``"em"``: electron microscopy, a mid-grey texture filling the whole field, so the
  typical pixel lies well inside the image's range (the ``em-membranes`` model's ISBI
  2012 images).

Two measures tell them apart. :func:`background_level` is where the median pixel lies
between the image's robust low and high ends (its 1st and 99.9th percentiles):
fluorescence and transmitted light put it near 0, EM near the middle. On
``../shared/data`` (``tests/core/test_imagekind.py``) the 398 DSB 2018 nuclei images
measured 0.00-0.18 (median 0.02), the 60 BBBC030 DIC images 0.07-0.24 and the 20 ISBI 2012
EM slices 0.46-0.53; :data:`DARK_BACKGROUND` (0.3) sits between them. The 99.9th
percentile, not the 99.5th, because two DSB images hold so few nuclei (under 0.5 % of the
pixels) that the 99.5th percentile is still background noise (0.29 and 0.50 then).
:func:`dark_tail` is how far the darkest pixels lie below the median, against how far the
brightest lie above it: the nuclei images measured 0.00-0.23, the DIC images 0.60-1.20
(EM 1.03-1.40); :data:`DARK_TAIL` (0.4) separates transmitted light from fluorescence.
Both read at most :data:`SAMPLE_SIDE` x :data:`SAMPLE_SIDE` pixels of a plane (a strided
view of an in-memory array, a central crop of a lazy one): about 1.5 ms for a 512 x 512
plane.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

ImageKind = Literal["fluorescence", "transmitted", "em"]

#: Background levels below this are fluorescence or transmitted light (an even
#: background), at or above it EM (mid-grey texture).
DARK_BACKGROUND = 0.3
#: Dark tails (:func:`dark_tail`) at or above this, on an even background, are
#: transmitted light; below it fluorescence.
DARK_TAIL = 0.4
#: Percentiles of the extreme ends :func:`dark_tail` compares.
EXTREME_LOW, EXTREME_HIGH = 0.1, 99.9
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
    values = _finite(plane)
    if values is None:
        return None
    low, median, high = np.percentile(values, (LOW_END, 50.0, HIGH_END))
    if not high > low:
        return None
    return float(np.clip((median - low) / (high - low), 0.0, 1.0))


def dark_tail(plane: Any) -> float | None:
    """How far the darkest pixels of ``plane`` lie below its median, against how far the
    brightest lie above it.

    Parameters
    ----------
    plane : array-like, shape (Y, X)

    Returns
    -------
    float or None
        ``(median - p0.1) / (p99.9 - median)``: near 0 when nothing is darker than the
        background (fluorescence), near 1 when objects are as dark as they are bright
        (DIC relief, phase-contrast halos). None for a plane with nothing above its
        median or too few finite pixels.
    """
    values = _finite(plane)
    if values is None:
        return None
    low, median, high = np.percentile(values, (EXTREME_LOW, 50.0, EXTREME_HIGH))
    if not high > median:
        return None
    return float((median - low) / (high - median))


def _finite(plane: Any) -> np.ndarray | None:
    """The finite pixels of ``plane`` as float32, None when fewer than MIN_PIXELS."""
    values = np.asarray(plane, dtype=np.float32).ravel()
    values = values[np.isfinite(values)]
    return values if values.size >= MIN_PIXELS else None


def image_kind(plane: Any) -> ImageKind | None:
    """``"fluorescence"`` for bright objects on a dark background, ``"transmitted"`` for
    objects brighter and darker than an even background, ``"em"`` for a mid-grey
    texture; None when the plane says nothing (flat, or too small).

    Parameters
    ----------
    plane : array-like, shape (Y, X)
        Best a sample (:func:`plane_sample`): every pixel is read.
    """
    level = background_level(plane)
    if level is None:
        return None
    if level >= DARK_BACKGROUND:
        return "em"
    tail = dark_tail(plane)
    return "transmitted" if tail is not None and tail >= DARK_TAIL else "fluorescence"


__all__ = [
    "DARK_BACKGROUND",
    "DARK_TAIL",
    "SAMPLE_SIDE",
    "ImageKind",
    "background_level",
    "dark_tail",
    "image_kind",
    "plane_sample",
]

"""Writing a calibration: ``tifffile.imwrite`` keywords (ImageJ or OME) and OME-NGFF
``coordinateTransformations``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_unet.core.calibration_axes import _OME_SOURCES, Calibration
from napari_unet.core.units import unit_factor

#: How ImageJ spells the canonical units (its TIFF description is ASCII: "micron" is
#: what ImageJ itself writes for µm).
_IMAGEJ_UNITS = {"µm": "micron", "Å": "angstrom"}


#: OME-NGFF's unit names (UDUNITS-2).
NGFF_UNITS = {
    "pm": "picometer",
    "Å": "angstrom",
    "nm": "nanometer",
    "µm": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}


#: Data types an ImageJ hyperstack holds (tifffile's rule): others are written as OME-TIFF.
_IMAGEJ_DTYPES = "BHhf"


def tiff_calibration_kwargs(
    calibration: Calibration | None,
    *,
    shape: tuple[int, ...] | None = None,
    dtype: Any = None,
    info: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``tifffile.imwrite`` that record ``calibration``.

    ImageJ hyperstack metadata (``imagej=True``, ``resolution`` in pixels per unit,
    ``unit``, ``spacing`` for z, origins, axes) for calibrations from ImageJ, plain
    TIFF, napari, the user or unknown; OME metadata (``ome=True``, PhysicalSizeX/Y/Z
    and units, plane positions, plus the resolution tags in pixels per centimetre for
    readers that ignore OME) for calibrations from OME-TIFF or OME-Zarr, and for data
    ImageJ cannot hold (int32, float64... or axes outside its TZCYXS order).

    Parameters
    ----------
    calibration : Calibration or None
        The result's calibration; ``None`` writes none.
    shape : tuple of int, optional
        The array's shape: the calibration is fitted to its number of axes
        (:meth:`Calibration.for_ndim`) and OME plane positions are counted from it.
    dtype : dtype, optional
        The array's data type (decides whether ImageJ can hold it).
    info : str, optional
        Text stored with the image: ImageJ's ``Info`` property, the OME image
        ``Description``.

    Returns
    -------
    dict
        Empty when there is neither a calibration nor ``info``.
    """
    if calibration is None and info is None:
        return {}
    ndim = len(shape) if shape is not None else calibration.ndim if calibration else 2
    calibration = (calibration or Calibration.identity(ndim)).for_ndim(ndim)
    if calibration.source not in _OME_SOURCES and _imagej_can_hold(calibration.axes, dtype):
        return _imagej_kwargs(calibration, info)
    return _ome_kwargs(calibration, shape, info)


def _imagej_can_hold(axes: str, dtype: Any) -> bool:
    if dtype is not None and np.dtype(dtype).char not in _IMAGEJ_DTYPES:
        return False
    order = [("tzcyxs".find(letter)) for letter in axes]
    return (
        min(order, default=-1) >= 0
        and order == sorted(set(order))
        and axes.rstrip("s").endswith("yx")
    )


def _imagej_kwargs(calibration: Calibration, info: str | None) -> dict[str, Any]:
    axes = calibration.axes
    metadata: dict[str, Any] = {"axes": axes.upper()}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": metadata}
    x, y = axes.index("x"), axes.index("y")
    unit = calibration.units[x]
    if unit is not None and calibration.units[y] is not None:
        size_y = calibration.scale[y] * unit_factor(calibration.units[y], unit)
        kwargs["resolution"] = (1 / calibration.scale[x], 1 / size_y)  # tifffile: (x, y)
        metadata["unit"] = _IMAGEJ_UNITS.get(unit, unit)
        z = axes.find("z")
        if z >= 0 and calibration.units[z] is not None:
            metadata["spacing"] = calibration.scale[z] * unit_factor(calibration.units[z], unit)
        for index in (x, y, z):
            if index >= 0 and calibration.translate[index] != 0.0:
                # ImageJ's origin is in pixels: the first pixel is at -origin * size
                origin = -calibration.translate[index] / calibration.scale[index]
                metadata[f"{axes[index]}origin"] = origin
    if info is not None:
        metadata["Info"] = info
    return kwargs


#: Axis letters tifffile's OME writer knows; another (tifffile's "I" of image sequences)
#: is written as "Q", OME's "other".
_OME_AXES = "TZCYXSAPRHEQ"


def _ome_kwargs(
    calibration: Calibration, shape: tuple[int, ...] | None, info: str | None
) -> dict[str, Any]:
    axes = calibration.axes
    letters = "".join(letter if letter in _OME_AXES else "Q" for letter in axes.upper())
    metadata: dict[str, Any] = {"axes": letters}
    kwargs: dict[str, Any] = {"ome": True, "metadata": metadata}
    for letter in "xyz":
        index = axes.find(letter)
        if index >= 0 and calibration.units[index] is not None:
            metadata[f"PhysicalSize{letter.upper()}"] = calibration.scale[index]
            metadata[f"PhysicalSize{letter.upper()}Unit"] = calibration.units[index]
    pixel_size = calibration.pixel_size
    if pixel_size is not None:  # for readers that ignore OME-XML (ImageJ's own opener)
        per_cm = pixel_size.to("cm")
        kwargs["resolution"] = (1 / per_cm.x, 1 / per_cm.y)
        kwargs["resolutionunit"] = "CENTIMETER"
    positions = _ome_positions(calibration, shape)
    if positions:
        metadata["Plane"] = positions
    if info is not None:
        metadata["Description"] = info
    return kwargs


def _ome_positions(calibration: Calibration, shape: tuple[int, ...] | None) -> dict[str, list]:
    """Every plane's PositionX/Y (the translation of x and y), when there is one."""
    if shape is None:
        return {}
    planes = math.prod(
        n for n, letter in zip(shape, calibration.axes, strict=True) if letter not in "yxs"
    )
    positions: dict[str, list] = {}
    for letter in "xy":
        index = calibration.axes.find(letter)
        if index < 0 or calibration.units[index] is None or calibration.translate[index] == 0:
            continue
        positions[f"Position{letter.upper()}"] = [calibration.translate[index]] * planes
        positions[f"Position{letter.upper()}Unit"] = [calibration.units[index]] * planes
    return positions


def ngff_transformations(
    calibration: Calibration | None, ndim: int
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """OME-NGFF 0.4 ``axes`` and full-resolution ``coordinateTransformations``.

    Parameters
    ----------
    calibration : Calibration or None
        The result's calibration (fitted to ``ndim`` axes, see
        :meth:`Calibration.for_ndim`); ``None``: scale 1, no units.
    ndim : int
        Number of axes of the array written.

    Returns
    -------
    axes : list of dict
        ``{"name": "y", "type": "space", "unit": "micrometer"}``...: ``t`` is time,
        ``c`` channel, ``z``/``y``/``x`` space (a ``z`` before a ``c`` gets no type:
        NGFF wants channels before space axes), units in NGFF's names when known.
    coordinateTransformations : list of dict
        A ``scale`` and, when any axis is translated, a ``translation``.
    """
    calibration = (calibration or Calibration.identity(ndim)).for_ndim(ndim)
    axes = []
    for index, letter in enumerate(calibration.axes):
        entry: dict[str, str] = {"name": letter}
        kind = {"t": "time", "c": "channel"}.get(letter)
        if letter in "zyx" and "c" not in calibration.axes[index:]:
            kind = "space"
        if kind is not None:
            entry["type"] = kind
        unit = calibration.units[index]
        if unit is not None:
            entry["unit"] = NGFF_UNITS[unit]
        axes.append(entry)
    transformations: list[dict[str, Any]] = [{"type": "scale", "scale": list(calibration.scale)}]
    if any(value != 0.0 for value in calibration.translate):
        transformations.append({"type": "translation", "translation": list(calibration.translate)})
    return axes, transformations

"""Which scale to segment an image at: the resampling factor, and why.

A model records the scale of its training data (:attr:`ModelBundle.pixel_size` and
:attr:`ModelBundle.object_diameter`, in model pixels). An image is resampled by a
``factor`` (model grid = input grid x factor along y and x; 0.5 = downsampled 2x) chosen,
in this order, from:

1. an explicit object diameter (``diameter=N`` pixels): ``factor = model diameter / N``;
2. both pixel sizes (units converted): ``factor = input pixel / model pixel`` per axis
   (anisotropic y/x allowed);
3. ``"auto"``, the default for models recording a diameter: passes on a central crop
   measure the median object diameter, first at half the starting scale, then, for
   objects smaller than the model's, at the starting scale
   (:func:`napari_unet.core.segment.measure_scale`, :func:`scale_from_measurement`);
4. otherwise 1 (not resampled), with a reason saying what is missing.

Only :func:`choose_scale` and the pure helpers live here (torch-free); the measuring
pass itself runs in :func:`napari_unet.core.segment.measure_scale`.

Public API
----------
- :class:`ScaleChoice` ``(factor, source, reason, measured_diameter=None, factor_yx=None)``
- :func:`choose_scale` ``(model, pixel_size=None, diameter=None) -> ScaleChoice | "auto"``
- :func:`check_diameter` ``(diameter) -> float | "auto" | None``
- :func:`auto_start` ``(model, pixel_size) -> (float, float)``
- :func:`central_crop` ``(shape, factors, size=AUTO_CROP) -> (slice, slice)``
- :func:`measured_objects` ``(labels) -> (diameter | None, count)``
- :func:`scale_from_measurement` ``(model_diameter, measured, count, start, *, measured_at,
  where) -> ScaleChoice``
- :func:`check_resampled_size` ``(shape, choice)``
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from napari_unet.core.calibration import PixelSize
from napari_unet.core.errors import InputError
from napari_unet.core.metrics import median_object_diameter
from napari_unet.core.resample import resampled_size

#: Smallest resampled plane side (pixels) that is segmented.
MIN_RESAMPLED_SIZE = 16
#: ``auto`` rescales only when the measured diameter is larger than the model's by more
#: than this fraction...
AUTO_TOLERANCE = 0.2
#: ... or smaller by more than this one. Asymmetric on purpose: on 45 images of the
#: nuclei model's training split (never its validation split) upsampling objects 20-50 %
#: smaller than the model's cost F1 (mean F1@0.5 at native scale 0.833 with 20 %, 0.844
#: with 50 %; at 0.75x 0.840 / 0.850; at 1.5x and 2x equal or better): models see a range of
#: sizes around their median, and enlarging small objects blurs them.
AUTO_TOLERANCE_BELOW = 0.5
#: ``auto`` first measures at this fraction of its starting scale: big objects, which a
#: model splits into fragments at its own scale, are then within the sizes it segments
#: well, and a crop covers more of the image for the same cost.
AUTO_COARSE = 0.5
#: Side (model pixels) of the central crop ``auto`` measures on at the coarse scale,
#: and of the crop at the starting scale when objects are smaller than the model's: at
#: most half, then a quarter of the pixels of a 512 x 512 pass, so auto costs at most
#: ~1.5 passes on such an image (the coarse crop covers the whole of it).
AUTO_CROP = 360
AUTO_FINE_CROP = 256
#: Fewer objects than this inside the crop (not touching its border): measure the
#: whole plane instead.
AUTO_MIN_OBJECTS = 5
#: Factors closer to 1 than this are 1 (pixel sizes equal up to rounding).
_UNIT_TOLERANCE = 1e-6

Source = Literal["diameter", "pixel size", "auto", "none"]
_HINT = "give the image's pixel size (--pixel-size) or its objects' diameter (--diameter N)"


@dataclass(frozen=True)
class ScaleChoice:
    """The factor an image is resampled by before segmentation, and why.

    Attributes
    ----------
    factor : float
        Model grid = input grid x factor (for an anisotropic choice, the geometric mean
        of ``factor_yx``; informative only).
    source : {"diameter", "pixel size", "auto", "none"}
        What decided it: an explicit diameter, the two pixel sizes, the ``auto``
        measurement, or nothing (``factor`` 1).
    reason : str
        One line for the user, e.g. ``"auto: objects measure 41 px, the model's 20 px
        -> x0.49"``.
    measured_diameter : float, optional
        ``auto`` only: the median object diameter measured, in input pixels.
    factor_yx : (float, float), optional
        Per-axis factors ``(y, x)``; defaults to ``(factor, factor)``.
    """

    factor: float
    source: Source
    reason: str
    measured_diameter: float | None = None
    factor_yx: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        factors = self.factor_yx if self.factor_yx is not None else (self.factor, self.factor)
        factors = tuple(_snap(_positive(f, "a scale factor")) for f in factors)
        object.__setattr__(self, "factor_yx", factors)
        object.__setattr__(self, "factor", _snap(math.sqrt(factors[0] * factors[1])))

    @property
    def resamples(self) -> bool:
        """Whether the image is resampled at all."""
        return self.factor_yx != (1.0, 1.0)

    def model_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of a plane of ``shape`` ``(H, W)`` on the model grid."""
        fy, fx = self.factor_yx
        return resampled_size(shape[0], fy), resampled_size(shape[1], fx)

    def record(self) -> dict[str, Any]:
        """JSON-able facts (a store's run record)."""
        return {
            "factor": list(self.factor_yx),
            "source": self.source,
            "reason": self.reason,
            "measured_diameter": self.measured_diameter,
        }


def _snap(factor: float) -> float:
    return 1.0 if abs(factor - 1.0) < _UNIT_TOLERANCE else float(factor)


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{what} must be a positive number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise InputError(f"{what} must be a positive number, got {value}")
    return number


def _times(factors: tuple[float, float]) -> str:
    """``"x0.49"`` or ``"x0.50 (y) x 0.33 (x)"``."""
    fy, fx = factors
    if math.isclose(fy, fx, rel_tol=1e-9):
        return f"x{fy:.3g}"
    return f"x{fy:.3g} (y), x{fx:.3g} (x)"


def check_diameter(diameter: Any) -> float | Literal["auto"] | None:
    """A diameter option as ``None`` (the model's default), ``"auto"`` or a float of pixels.

    Accepts numbers and their text (``"40"``), and ``"auto"`` in any case.

    Raises
    ------
    InputError
        One line, for anything else: zero, a negative number, NaN, infinity, text.
    """
    if diameter is None:
        return None
    if isinstance(diameter, str):
        text = diameter.strip()
        if text.lower() == "auto":
            return "auto"
        try:
            diameter = float(text)
        except ValueError:
            raise InputError(
                f"the diameter must be 'auto' or a number of pixels, got {text!r}"
            ) from None
    if isinstance(diameter, bool) or not isinstance(diameter, numbers.Real):
        raise InputError(f"the diameter must be 'auto' or a number of pixels, got {diameter!r}")
    number = float(diameter)
    if not math.isfinite(number) or number <= 0:
        raise InputError(
            f"the diameter must be a positive number of pixels (or auto), got {diameter}"
        )
    return number


def choose_scale(
    model: Any, pixel_size: PixelSize | None = None, diameter: Any = None
) -> ScaleChoice | Literal["auto"]:
    """The scale to segment at, or ``"auto"`` when a measuring pass must decide it.

    Parameters
    ----------
    model : ModelBundle or UNet
        Its ``pixel_size`` and ``object_diameter`` (absent on a bare network: no scale).
    pixel_size : PixelSize, optional
        The input's pixel size.
    diameter : float, "auto" or None
        The input's object diameter in pixels, ``"auto"`` to measure it, ``None`` for the
        model's default (auto when the model records a diameter).

    Returns
    -------
    ScaleChoice or "auto"

    Raises
    ------
    InputError
        One line: a bad diameter, or a diameter (number or auto) for a model that
        records none.
    """
    diameter = check_diameter(diameter)
    model_diameter = getattr(model, "object_diameter", None)
    model_pixel = getattr(model, "pixel_size", None)
    if diameter is not None and model_diameter is None:
        given = "--diameter auto" if diameter == "auto" else f"a diameter of {diameter:g} px"
        raise InputError(
            f"{given} needs a model that records its objects' diameter, and this one does "
            "not; give the image's pixel size (--pixel-size) if the model records one, or "
            "leave the diameter out"
        )
    if isinstance(diameter, float):
        factor = model_diameter / diameter
        return ScaleChoice(
            factor,
            "diameter",
            f"objects measure {diameter:g} px (given), the model's {model_diameter:.3g} px "
            f"-> {_times((factor, factor))}",
        )
    if diameter == "auto":
        return "auto"
    if pixel_size is not None and model_pixel is not None:
        factors = pixel_size.ratio_to(model_pixel)
        return ScaleChoice(
            1.0,
            "pixel size",
            f"pixel size {pixel_size}, the model's {model_pixel.to(pixel_size.unit)} -> "
            f"{_times(factors)}",
            factor_yx=factors,
        )
    if model_diameter is not None:
        return "auto"
    if model_pixel is not None:
        return ScaleChoice(
            1.0,
            "none",
            f"the image's pixel size is unknown (the model's is {model_pixel}): not "
            "resampled; give it (--pixel-size) to segment at the model's scale",
        )
    return ScaleChoice(1.0, "none", "the model records no scale: not resampled")


def auto_start(model: Any, pixel_size: PixelSize | None) -> tuple[float, float]:
    """Factors of ``auto``'s measuring pass: from the pixel sizes when both are known, else 1."""
    model_pixel = getattr(model, "pixel_size", None)
    if pixel_size is not None and model_pixel is not None:
        return tuple(_snap(f) for f in pixel_size.ratio_to(model_pixel))
    return (1.0, 1.0)


def central_crop(
    shape: tuple[int, int], factors: tuple[float, float], size: int = AUTO_CROP
) -> tuple[slice, slice]:
    """Input rows and columns of a centred crop of at most ``size`` model pixels per side."""
    crop = []
    for length, factor in zip(shape, factors, strict=True):
        wanted = min(int(length), max(1, math.ceil(size / factor)))
        start = (int(length) - wanted) // 2
        crop.append(slice(start, start + wanted))
    return crop[0], crop[1]


def measured_objects(labels: np.ndarray) -> tuple[float | None, int]:
    """Median diameter of the objects not touching the border, and how many there are.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        Instance labels of a crop (or a whole plane).

    Returns
    -------
    diameter : float or None
        :func:`~napari_unet.core.metrics.median_object_diameter` with
        ``exclude_border=True`` (None without objects).
    count : int
        Objects not touching the border.
    """
    labels = np.asarray(labels)
    ids = np.unique(labels[labels != 0])
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner = np.setdiff1d(ids, border, assume_unique=False)
    return median_object_diameter(labels, exclude_border=True), int(inner.size)


def scale_from_measurement(
    model_diameter: float,
    measured: float | None,
    count: int,
    start: tuple[float, float] = (1.0, 1.0),
    *,
    measured_at: tuple[float, float] | None = None,
    where: str = "",
) -> ScaleChoice:
    """``auto``'s choice from a pass at factors ``measured_at`` that measured ``measured`` px.

    Parameters
    ----------
    model_diameter : float
        The model's object diameter (model pixels).
    measured : float or None
        Median diameter measured on the grid of the pass (None: no objects).
    count : int
        Objects measured (shown in the reason).
    start : (float, float)
        The factors ``auto`` starts from (the pixel sizes', else 1): kept when the
        objects measure the model's diameter on that grid, within
        :data:`AUTO_TOLERANCE`, or when nothing was found.
    measured_at : (float, float), optional
        The pass's factors (default ``start``).
    where : str
        What was measured, e.g. ``"a central 720 x 720 px crop"``, for the reason.

    Returns
    -------
    ScaleChoice
        ``start``, or ``measured_at * model_diameter / measured``.
    """
    measured_at = start if measured_at is None else measured_at
    seen_at = math.sqrt(measured_at[0] * measured_at[1])
    on = f" on {where}" if where else ""
    if seen_at != math.sqrt(start[0] * start[1]) or seen_at != 1.0:
        on += f", seen at {_times(measured_at)}"
    if measured is None:
        return ScaleChoice(
            1.0,
            "auto",
            f"auto: no objects found{on} to measure -> {_times(start)}; {_HINT}",
            factor_yx=start,
        )
    in_input = measured / seen_at  # the objects' diameter in input pixels
    on_start = in_input * math.sqrt(start[0] * start[1])
    measure = (
        f"auto: objects measure {in_input:.3g} px ({count} objects{on}), the model's "
        f"{model_diameter:.3g} px"
    )
    if -AUTO_TOLERANCE_BELOW <= on_start / model_diameter - 1.0 <= AUTO_TOLERANCE:
        return ScaleChoice(
            1.0,
            "auto",
            f"{measure} -> {_times(start)} ({_tolerance()})",
            measured_diameter=in_input,
            factor_yx=start,
        )
    ratio = model_diameter / measured
    factors = (measured_at[0] * ratio, measured_at[1] * ratio)
    return ScaleChoice(
        1.0,
        "auto",
        f"{measure} -> {_times(factors)}",
        measured_diameter=in_input,
        factor_yx=factors,
    )


def _tolerance() -> str:
    """ "within 20%", or "within -50%/+20% of the model's" when the two differ."""
    if AUTO_TOLERANCE_BELOW == AUTO_TOLERANCE:
        return f"within {AUTO_TOLERANCE:.0%}"
    return f"within -{AUTO_TOLERANCE_BELOW:.0%}/+{AUTO_TOLERANCE:.0%} of the model's"


def check_resampled_size(shape: tuple[int, int], choice: ScaleChoice) -> tuple[int, int]:
    """The model-grid ``(h, w)`` of an ``(H, W)`` plane; refuse one below the smallest size.

    Raises
    ------
    InputError
        One line when a side is below :data:`MIN_RESAMPLED_SIZE` pixels.
    """
    model_shape = choice.model_shape(shape)
    if min(model_shape) < MIN_RESAMPLED_SIZE:
        raise InputError(
            f"the {shape[0]} x {shape[1]} px image resampled {_times(choice.factor_yx)} to the "
            f"model's scale ({choice.reason}) would be {model_shape[0]} x {model_shape[1]} px, "
            f"smaller than {MIN_RESAMPLED_SIZE} px; check the pixel size (--pixel-size) or "
            "give the objects' diameter (--diameter N)"
        )
    return model_shape


__all__ = [
    "AUTO_COARSE",
    "AUTO_CROP",
    "AUTO_FINE_CROP",
    "AUTO_MIN_OBJECTS",
    "AUTO_TOLERANCE",
    "MIN_RESAMPLED_SIZE",
    "ScaleChoice",
    "auto_start",
    "central_crop",
    "check_diameter",
    "check_resampled_size",
    "choose_scale",
    "measured_objects",
    "scale_from_measurement",
]

"""Scale fields shared by the docks: a layer's pixel size, the typed fields, the status.

napari layers know their physical scale: ``layer.scale`` (the size of one data pixel
along each axis, in world units) and, since napari 0.6, ``layer.units`` (pint units,
``pixel`` when unknown). The pixel size of the (y, x) axes is what the core compares
with a model's pixel size (:class:`~napari_unet.core.calibration.PixelSize`).
"""

from __future__ import annotations

from typing import Any

from napari_unet.core.calibration import (
    Calibration,
    PixelSize,
    canonical_unit,
    parse_pixel_size,
    unit_factor,
)
from napari_unet.core.errors import InputError, UNetError

#: The diameter field's word for "measure it in a first pass".
AUTO = "auto"


def _length_unit(unit: Any) -> str | None:
    """The canonical length unit of a pint unit or text (``micrometer`` -> ``µm``); None
    for ``pixel`` and anything that is not a length unit."""
    try:
        return canonical_unit(str(unit))
    except InputError:
        return None


def layer_pixel_size(layer: Any, channel_axis: int | None = None) -> PixelSize | None:
    """The (y, x) pixel size of an image layer from its ``scale`` and ``units``.

    Parameters
    ----------
    layer : napari.layers.Image
        Its last two axes, after dropping ``channel_axis``, are (y, x) (an RGB layer's
        colour axis is not a layer axis).
    channel_axis : int, optional
        A channel axis among the layer's own axes.

    Returns
    -------
    PixelSize or None
        None when the units of y or x are not lengths (napari's default ``pixel``:
        the layer's scale then says nothing physical).
    """
    scale = [float(s) for s in layer.scale]
    units = list(getattr(layer, "units", None) or ("pixel",) * len(scale))
    if channel_axis is not None and 0 <= channel_axis < len(scale):
        del scale[channel_axis], units[channel_axis]
    if len(scale) < 2 or len(units) != len(scale):
        return None
    unit_y, unit_x = _length_unit(units[-2]), _length_unit(units[-1])
    if unit_y is None or unit_x is None:
        return None
    try:  # both in y's unit (napari allows a different unit per axis)
        return PixelSize(scale[-2], scale[-1] * unit_factor(unit_x, unit_y), unit_y)
    except InputError:  # a zero or negative scale: napari refuses those, but never trust it
        return None


def result_calibration(
    placement: dict[str, tuple[Any, ...]],
    pixel_size: PixelSize | None = None,
    *,
    plane_only: bool = False,
) -> Calibration | None:
    """The calibration a result store records, from a result layer's placement.

    Parameters
    ----------
    placement : dict
        ``scale``, ``translate`` and ``units`` of the result's axes (the image layer's
        without its channel axis, see :meth:`ImageInput.placement`).
    pixel_size : PixelSize, optional
        The pixel size the run used (the dock's field): it sets y and x.
    plane_only : bool
        The result is one (y, x) plane of the image: its leading axes are left out.

    Returns
    -------
    Calibration or None
        None when the layer's axes cannot be named (more than five).
    """
    keep = slice(-2, None) if plane_only else slice(None)
    try:
        calibration = Calibration.from_scale(
            placement["scale"][keep],
            placement["translate"][keep],
            placement.get("units", (None,) * len(placement["scale"]))[keep],
        )
    except InputError:
        return None
    if pixel_size is not None:
        calibration = calibration.with_pixel_size(pixel_size)
    return calibration


def pixel_size_text(pixel_size: PixelSize | None) -> str:
    """What the pixel size field shows: ``"0.325 µm"``, ``"0.5 x 0.325 µm"`` or ``""``."""
    return "" if pixel_size is None else str(pixel_size)


def read_pixel_size_field(text: str) -> PixelSize | None:
    """The pixel size typed in a dock: None when empty (unknown).

    Raises
    ------
    InputError
        One line for a size that is zero, negative, NaN, unreadable or in an unknown unit.
    """
    if not text.strip():
        return None
    try:
        return parse_pixel_size(text)
    except InputError as error:
        # The core's hint names the command-line option; in a dock, name the field.
        message = str(error).replace("give e.g. --pixel-size 0.325um", "type e.g. 0.325 µm")
        raise InputError(f"pixel size field: {message}") from None


def read_diameter_field(text: str) -> float | str | None:
    """The object diameter typed in a dock: ``"auto"``, a number of pixels, or None (empty:
    the model's default).

    Raises
    ------
    InputError
        One line for anything else, or a number that is not above 0.
    """
    text = text.strip()
    if not text:
        return None
    if text.lower() == AUTO:
        return AUTO
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(
            f"object diameter field: type the objects' diameter in pixels (a number above 0) "
            f"or 'auto', not {text!r}"
        )
    return value


def diameter_text(diameter: float | str | None) -> str:
    """What the diameter field shows for a :attr:`SegmentOptions.diameter` value."""
    if diameter is None:
        return ""
    if isinstance(diameter, str):
        return diameter.strip().lower()
    return f"{float(diameter):g}"


def model_scale(source: Any) -> tuple[PixelSize | None, float | None]:
    """``(pixel size, object diameter)`` a model records, read cheaply (a session model's
    bundle, or a file's description); ``(None, None)`` when unknown or unreadable (a
    broken file is reported in full when a run loads it)."""
    bundle = getattr(source, "bundle", None)
    if bundle is not None:
        return getattr(bundle, "pixel_size", None), getattr(bundle, "object_diameter", None)
    path = getattr(source, "path", None)
    if path is None:
        return None, None
    from napari_unet.core.description import parse_scale, read_description
    from napari_unet.core.description_fields import FieldProblem

    try:
        return parse_scale(read_description(path).get("scale"))
    except (UNetError, OSError, FieldProblem):
        return None, None


#: The core's hints name command-line options; a dock names its fields instead.
_FIELD_NAMES = (
    ("(--pixel-size)", "(the pixel size field)"),
    ("--pixel-size", "the pixel size field"),
    ("(--diameter N)", "(the object diameter field)"),
    ("--diameter N", "the object diameter field"),
    ("--diameter auto", "an object diameter of auto"),
    ("(--diameter)", "(the object diameter field)"),
    ("--diameter", "the object diameter field"),
    # The block-wise refusal of linking (core.options.blockwise_refused).
    ("write a .tif OUTPUT, or turn it off (--no-link)", 'untick "link labels through z"'),
)


def in_dock_words(text: str) -> str:
    """``text`` (a core message) with command-line options named as the dock's fields."""
    for option, field in _FIELD_NAMES:
        text = text.replace(option, field)
    return text


def scale_status(choice: Any) -> str:
    """The status line of a scale choice: ``"scale: auto: objects measure 41 px (23 on a
    360 x 360 px crop), the model's 20 px -> x0.488"`` (the core's reason says the factor
    and why)."""
    return f"scale: {in_dock_words(choice.reason)}"


__all__ = [
    "AUTO",
    "diameter_text",
    "in_dock_words",
    "layer_pixel_size",
    "model_scale",
    "pixel_size_text",
    "read_diameter_field",
    "read_pixel_size_field",
    "result_calibration",
    "scale_status",
]

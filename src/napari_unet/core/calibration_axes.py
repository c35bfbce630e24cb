"""The physical calibration of an image's axes: :class:`Calibration`.

Per-axis scale, translation and unit (what napari calls ``scale`` and ``translate``),
and how a result's axes follow from its image's (:meth:`Calibration.for_result`).
Reading calibrations from files is :mod:`napari_unet.core.calibration`, writing them
:mod:`napari_unet.core.calibration_write`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from napari_unet.core.errors import InputError
from napari_unet.core.units import (
    PixelSize,
    _check_size,
    _known_unit,
    canonical_unit,
    unit_factor,
)

#: Where a calibration came from (:attr:`Calibration.source`); results of OME inputs are
#: written with OME metadata, every other with ImageJ metadata.
SOURCES = ("ImageJ", "OME", "OME-Zarr", "TIFF", "napari layer", "user", "unknown")


_OME_SOURCES = ("OME", "OME-Zarr")


#: Axis letters of an image with ``ndim`` axes when nothing names them (NGFF order).
_DEFAULT_AXES = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tzcyx"}


_SCALE_HINT = "check the image's calibration (pixel size and spacing)"


def default_axes(ndim: int) -> str:
    """Axis letters for ``ndim`` unnamed axes: ``"yx"``, ``"zyx"``, ``"tzyx"``..."""
    if ndim in _DEFAULT_AXES:
        return _DEFAULT_AXES[ndim]
    raise InputError(f"cannot name the axes of a {ndim}-D image: give it 2 to 5 axes")


@dataclass(frozen=True)
class Calibration:
    """The physical calibration of an image's axes (what napari calls scale and translate).

    The physical position of pixel ``i`` along an axis is ``translate + i * scale``, in
    that axis' unit.

    Parameters
    ----------
    axes : str
        One lower-case letter per image axis: ``t``, ``c``, ``z``, ``y``, ``x``, ``s``
        (RGB samples), others (``q``: unknown) as tifffile names them. ``y`` and ``x``
        at most once each.
    scale : tuple of float
        Positive size of one pixel along each axis; 1.0 where unknown (channel axes).
    translate : tuple of float
        Physical position of the first pixel along each axis.
    units : tuple of str or None
        Canonical length unit of each axis (see :data:`UNITS`), ``None`` where unknown
        and for time, channel and sample axes.
    source : str
        Where it was read from: one of :data:`SOURCES` ("ImageJ", "OME", "OME-Zarr",
        "TIFF", "napari layer", "user", "unknown").

    Raises
    ------
    InputError
        For lengths that differ from ``axes``, a scale that is not a positive number, a
        translation that is not finite, or an unknown unit.
    """

    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: tuple[str | None, ...]
    source: str = "unknown"

    def __post_init__(self) -> None:
        axes = str(self.axes).lower()
        lengths = {len(self.scale), len(self.translate), len(self.units)}
        if lengths != {len(axes)}:
            raise InputError(
                f"a calibration needs one scale, translation and unit per axis of {axes!r}"
            )
        if axes.count("y") > 1 or axes.count("x") > 1:
            raise InputError(f"calibration axes {axes!r} name y or x twice")
        scale = tuple(
            _check_size(value, f"the scale of axis {letter}", _SCALE_HINT)
            for letter, value in zip(axes, self.scale, strict=True)
        )
        translate = tuple(float(value) + 0.0 for value in self.translate)  # + 0.0: no -0.0
        if not all(math.isfinite(value) for value in translate):
            raise InputError(f"a translation must be finite, got {self.translate}: {_SCALE_HINT}")
        units = tuple(None if unit is None else canonical_unit(unit) for unit in self.units)
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "translate", translate)
        object.__setattr__(self, "units", units)

    @classmethod
    def identity(cls, ndim: int, *, axes: str | None = None) -> Calibration:
        """Scale 1, translation 0 and no unit on every axis (axes named by ``ndim``)."""
        axes = axes if axes is not None else default_axes(ndim)
        return cls(axes, (1.0,) * len(axes), (0.0,) * len(axes), (None,) * len(axes))

    @classmethod
    def from_pixel_size(
        cls, pixel_size: PixelSize, axes: str = "yx", *, source: str = "user"
    ) -> Calibration:
        """A calibration where only y and x are known, e.g. from ``--pixel-size``."""
        return cls.identity(len(axes), axes=axes).with_pixel_size(pixel_size, source=source)

    @classmethod
    def from_scale(
        cls,
        scale: Any,
        translate: Any = None,
        units: Any = None,
        *,
        axes: str | None = None,
        source: str = "napari layer",
    ) -> Calibration:
        """A calibration from napari-style ``scale``, ``translate`` and ``units``.

        Units may be strings or pint units (napari's ``layer.units``); ``"pixel"`` and
        other non-lengths become ``None``. ``axes`` defaults to :func:`default_axes`.
        """
        scale = tuple(float(value) for value in scale)
        ndim = len(scale)
        translate = (0.0,) * ndim if translate is None else tuple(translate)
        units = (None,) * ndim if units is None else tuple(units)
        units = tuple(_known_unit(None if unit is None else str(unit)) for unit in units)
        return cls(axes or default_axes(ndim), scale, translate, units, source)

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.axes)

    @property
    def pixel_size(self) -> PixelSize | None:
        """The y and x scale as a :class:`PixelSize`, ``None`` when either unit is unknown."""
        if "y" not in self.axes or "x" not in self.axes:
            return None
        y, x = self.axes.index("y"), self.axes.index("x")
        unit_y, unit_x = self.units[y], self.units[x]
        if unit_y is None or unit_x is None:
            return None
        return PixelSize(self.scale[y], self.scale[x] * unit_factor(unit_x, unit_y), unit_y)

    @property
    def is_known(self) -> bool:
        """Whether it records anything: a unit, a scale other than 1 or a translation."""
        return (
            any(unit is not None for unit in self.units)
            or any(value != 1.0 for value in self.scale)
            or any(value != 0.0 for value in self.translate)
        )

    def with_pixel_size(self, pixel_size: PixelSize, *, source: str | None = None) -> Calibration:
        """This calibration with y and x set to ``pixel_size`` (e.g. a size the user typed)."""
        scale, units = list(self.scale), list(self.units)
        for letter, value in (("y", pixel_size.y), ("x", pixel_size.x)):
            if letter in self.axes:
                scale[self.axes.index(letter)] = value
                units[self.axes.index(letter)] = pixel_size.unit
        return Calibration(
            self.axes, tuple(scale), self.translate, tuple(units), source or self.source
        )

    def for_ndim(self, ndim: int) -> Calibration:
        """This calibration for an array of ``ndim`` axes (itself when it has as many).

        The axes are named by :func:`default_axes` and take this calibration's value of
        the same letter (y, x, z...), unknown otherwise: a result that lost or gained an
        axis keeps its pixel size and z spacing.
        """
        if ndim == self.ndim:
            return self
        axes = default_axes(ndim)
        known = [self.axes.find(letter) for letter in axes]
        return Calibration(
            axes,
            tuple(self.scale[i] if i >= 0 else 1.0 for i in known),
            tuple(self.translate[i] if i >= 0 else 0.0 for i in known),
            tuple(self.units[i] if i >= 0 else None for i in known),
            self.source,
        )

    def for_result(self, channel_axis: int | None, classes: int | None = None) -> Calibration:
        """The calibration of a segmentation result of the image calibrated by ``self``.

        Parameters
        ----------
        channel_axis : int or None
            The image's channel axis (an index into :attr:`axes`, negative allowed),
            which results do not have. RGB sample axes (``s``) are dropped too.
        classes : int, optional
            For probabilities: a ``c`` axis (scale 1, no unit) of that many classes is
            inserted before ``y``, as results ``(..., K, H, W)`` are laid out.

        Returns
        -------
        Calibration
            Same source, scale, translation and units on the remaining axes.

        Raises
        ------
        InputError
            For a channel axis out of range, ``classes`` < 1, or a class axis asked for
            while the image's channel axis is kept.
        """
        drop = {i for i, letter in enumerate(self.axes) if letter == "s"}
        if channel_axis is not None:
            if not -self.ndim <= channel_axis < self.ndim:
                raise InputError(
                    f"channel axis {channel_axis} is out of range for the axes {self.axes!r}"
                )
            drop.add(channel_axis % self.ndim)
        keep = [i for i in range(self.ndim) if i not in drop]
        axes = "".join(self.axes[i] for i in keep)
        scale = [self.scale[i] for i in keep]
        translate = [self.translate[i] for i in keep]
        units = [self.units[i] for i in keep]
        if classes is not None:
            if int(classes) < 1:
                raise InputError(f"a probability result has at least one class, got {classes}")
            if "c" in axes:
                raise InputError(
                    f"the axes {self.axes!r} keep their channel axis: give channel_axis"
                )
            at = axes.index("y") if "y" in axes else max(0, len(axes) - 2)
            axes = axes[:at] + "c" + axes[at:]
            scale.insert(at, 1.0)
            translate.insert(at, 0.0)
            units.insert(at, None)
        return Calibration(axes, tuple(scale), tuple(translate), tuple(units), self.source)

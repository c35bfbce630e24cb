"""How to segment: :class:`SegmentOptions`, the model's recommendations, and the
whole-plane option policy.

Some post-processing needs a whole plane (or the whole result) at once:
:data:`WHOLE_PLANE_OPTIONS` says which options, :func:`whole_plane_options` which of
them a given :class:`SegmentOptions` uses, :func:`blockwise_refused` which of those a
block-wise run cannot honour (``link``: the others are applied after the blocks), and
:func:`check_blockwise` refuses them; :func:`plane_labeller` is the labelling both
runs apply (:func:`~napari_unet.core.frontend.applied_postprocessing` says it in words).
This is the one place that policy lives.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.outputs import OUTPUTS, Output
from napari_unet.core.postprocess import PlaneLabeller
from napari_unet.core.scaling import check_diameter
from napari_unet.core.units import PixelSize, parse_pixel_size


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
    channel_axis : int, optional
        The image's channel axis (negative counts from the end); by default a
        one-channel model reads no channel axis and a ``C``-channel model axis ``-3``
        (see :func:`~napari_unet.core.io.as_planes`).
    channels : tuple of int, optional
        Channels to use, in order (indices on the channel axis); default all.
    link : bool
        ``labels`` only: after every plane is segmented, link the instance labels through
        the last leading axis (z of ``(T, Z, Y, X)``; frame to frame on a time axis) with
        :func:`~napari_unet.core.linking.link_planes`, so one object keeps one id across
        planes. Ids are unique over the whole result.
    link_iou : float
        Smallest overlap (intersection over union, in (0, 1]) for an object to take the
        id of an object in the previous plane.
    pixel_size : PixelSize, optional
        The image's pixel size (text like ``"0.325um"`` or a number of µm is parsed).
        With the model's pixel size it sets the scale (see
        :func:`~napari_unet.core.scaling.choose_scale`).
    diameter : float or "auto", optional
        The objects' diameter in pixels of the image, or ``"auto"`` to measure it; the
        image is resampled so that objects have the model's diameter. ``None`` (default):
        the pixel sizes when both are known, else auto for models that record a diameter,
        else no resampling. ``min_size`` counts pixels of the grid objects are labelled on,
        the model's scale when the image is resampled (as the model's recommendations do).
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
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    link: bool = False
    link_iou: float = 0.25
    pixel_size: PixelSize | None = None
    diameter: float | str | None = None

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
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
        if self.channels is not None:
            object.__setattr__(self, "channels", _channel_tuple(self.channels))
        if not 0.0 < self.link_iou <= 1.0:
            raise InputError(f"link_iou must be above 0 and at most 1, got {self.link_iou}")
        if self.pixel_size is not None and not isinstance(self.pixel_size, PixelSize):
            object.__setattr__(self, "pixel_size", parse_pixel_size(self.pixel_size))
        object.__setattr__(self, "diameter", check_diameter(self.diameter))


def _channel_tuple(channels: Any) -> tuple[int, ...]:
    """Channels as a hashable tuple: from a list, one number, or text like ``"0,2"``.

    Only the form is checked here; :func:`~napari_unet.core.io.as_planes` checks the
    indices against the image.
    """
    if isinstance(channels, str):
        try:
            return tuple(int(part) for part in channels.split(","))
        except ValueError:
            raise InputError(
                f"channels are numbers separated by commas, e.g. 0,2; got {channels!r}"
            ) from None
    if isinstance(channels, (int, np.integer)):
        return (int(channels),)
    return tuple(channels)


#: Post-processing settings a model file may recommend (in ``provenance["postprocess"]``).
RECOMMENDABLE = ("threshold", "min_size", "split_touching", "fill_boundaries", "merge_boundaries")


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
    return {key: recommended[key] for key in RECOMMENDABLE if key in recommended}


def with_fields(options: SegmentOptions | None, **changes: Any) -> SegmentOptions:
    """``options`` (default ``SegmentOptions()``) with some fields changed.

    Raises
    ------
    TypeError
        For a name that is not a field of :class:`SegmentOptions`.
    """
    unknown = set(changes) - {f.name for f in fields(SegmentOptions)}
    if unknown:
        raise TypeError(f"unknown segment options: {sorted(unknown)}")
    return replace(options or SegmentOptions(), **changes)


def plane_labeller(options: SegmentOptions) -> PlaneLabeller:
    """The instance labelling of one plane ``options`` ask for (labels output), the same
    in memory and block-wise."""
    return PlaneLabeller(
        threshold=options.threshold,
        min_size=options.min_size,
        split_touching=options.split_touching,
        fill_boundaries=options.fill_boundaries,
        merge_boundaries=options.merge_boundaries,
    )


@dataclass(frozen=True)
class WholePlaneOption:
    """A labels option that looks at a whole plane (or the whole result) at once.

    Attributes
    ----------
    name : str
        The :class:`SegmentOptions` field.
    what : str
        What it does, as messages name it.
    needs : str
        What it needs at once: ``"whole planes"`` or ``"the whole result in memory"``.
    instead : str
        What to do instead, for a block-wise (store) run that cannot honour it.
    blockwise : bool
        Whether block-wise runs honour it: whole-plane labelling is done after the
        blocks, window by window (:func:`~napari_unet.core.seams.label_plane_in_blocks`,
        docs/blockwise-postprocessing.md); linking needs the whole result and is refused.
    """

    name: str
    what: str
    needs: str
    instead: str
    blockwise: bool = True

    def in_use(self, options: SegmentOptions) -> bool:
        """Whether ``options`` use it (labels output only; a number above 0 or ``True``)."""
        return options.output == "labels" and bool(getattr(options, self.name))

    def blockwise_message(self) -> str:
        """The one-line refusal of a block-wise run with this option."""
        where = "(.zarr)" if self.name == "link" else "(large image)"
        return (
            f"{self.what} needs {self.needs} and is not available for block-wise {where} "
            f"segmentation; {self.instead}"
        )


#: Options that look at whole planes or the whole result: the option policy as data.
#: Block-wise runs honour all but ``link`` (the planes are labelled after the blocks, as
#: in memory). ``min_size`` is not among them: sizes are counted across blocks.
WHOLE_PLANE_OPTIONS: tuple[WholePlaneOption, ...] = (
    WholePlaneOption(
        "split_touching",
        "splitting touching objects (watershed)",
        "whole planes",
        "turn it off (--no-split-touching)",
    ),
    WholePlaneOption(
        "fill_boundaries",
        "filling the boundaries between objects",
        "whole planes",
        "turn it off (--no-fill-boundaries)",
    ),
    WholePlaneOption(
        "merge_boundaries",
        "merging cells across weak boundaries",
        "whole planes",
        "turn it off (--merge-boundaries 0)",
    ),
    WholePlaneOption(
        "link",
        "linking labels through z",
        "the whole result in memory",
        "write a .tif OUTPUT, or turn it off (--no-link)",
        blockwise=False,
    ),
)


def whole_plane_options(options: SegmentOptions) -> tuple[WholePlaneOption, ...]:
    """The options of :data:`WHOLE_PLANE_OPTIONS` that ``options`` use."""
    return tuple(option for option in WHOLE_PLANE_OPTIONS if option.in_use(options))


def blockwise_refused(options: SegmentOptions) -> tuple[WholePlaneOption, ...]:
    """The options of :data:`WHOLE_PLANE_OPTIONS` that ``options`` use and a block-wise
    run cannot honour (today ``link``); every other one is applied block-wise too."""
    return tuple(option for option in whole_plane_options(options) if not option.blockwise)


def check_blockwise(options: SegmentOptions) -> None:
    """Refuse, in one line, options block-wise segmentation cannot honour (``link``).

    Raises
    ------
    InputError
        Naming the first such option in use and what to do instead.
    """
    refused = blockwise_refused(options)
    if refused:
        raise InputError(refused[0].blockwise_message())


__all__ = [
    "RECOMMENDABLE",
    "WHOLE_PLANE_OPTIONS",
    "SegmentOptions",
    "WholePlaneOption",
    "blockwise_refused",
    "check_blockwise",
    "plane_labeller",
    "recommended_options",
    "whole_plane_options",
    "with_fields",
]

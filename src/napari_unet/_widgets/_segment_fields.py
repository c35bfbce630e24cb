"""The Segment dock's settings: its fields, and :class:`SegmentDockOptions`, their values.

:class:`SegmentFields` builds the fields below the image and model choosers (pixel
size, object diameter, output, link, and the advanced settings: tile size,
post-processing, device, block-wise store) and reads and sets them as a user would.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)

from napari_unet._widgets import _devices
from napari_unet._widgets._layer_output import OUTPUTS
from napari_unet._widgets._scale import (
    diameter_text,
    read_diameter_field,
    read_pixel_size_field,
)
from napari_unet.core.calibration import PixelSize
from napari_unet.core.frontend import default_store_path
from napari_unet.core.largeimage import DEFAULT_BLOCK_SIZE
from napari_unet.core.segment import SegmentOptions

#: Overlap (IoU) above which "link labels through z" gives an object its predecessor's id.
LINK_IOU = next(f.default for f in fields(SegmentOptions) if f.name == "link_iou")


@dataclass(frozen=True)
class SegmentDockOptions:
    """Every user-settable field of the Segment dock (see ``SegmentWidget.set_options``).

    ``image`` and ``model`` are as the choosers show them (the layer's name, the model's
    label); ``channel_axis`` and ``channels`` are those of the chosen input as the core
    reads it (stacked channel layers: axis 0; an RGB layer "as channels": its colour
    axis); ``channel_layers`` are layer names; ``link`` is the checkbox (a run links
    only instance labels of a whole stack); ``pixel_size`` is None when unknown,
    ``diameter`` "auto", a number of pixels or None (the model's default). The last
    four are the block-wise settings: ``to_zarr``, ``output_store`` (None: the
    default), ``resume``, ``block_size``.
    """

    image: str | None = None
    model: str | None = None
    channel_axis: int | None = None
    channels: tuple[int, ...] | None = None
    channel_layers: tuple[str, ...] = ()
    rgb: str | None = None
    output: str = "labels"
    tile_size: int | None = None
    threshold: float = 0.5
    min_size: int = 0
    split_touching: bool = False
    fill_boundaries: bool = False
    merge_boundaries: float = 0.0
    device: str = "auto"
    link: bool = False
    pixel_size: PixelSize | None = None
    diameter: float | str | None = None
    to_zarr: bool = False
    output_store: Path | None = None
    resume: bool = False
    block_size: int = DEFAULT_BLOCK_SIZE

    def segment_options(self) -> SegmentOptions:
        """The core's options of these settings."""
        names = {f.name for f in fields(SegmentOptions)} & {f.name for f in fields(self)}
        return SegmentOptions(**{name: getattr(self, name) for name in names})


class SegmentFields:
    """The Segment dock's fields besides the choosers and the channel controls."""

    #: Keys of :meth:`values` and :meth:`set`.
    KEYS = (
        "output", "tile_size", "threshold", "min_size", "split_touching", "fill_boundaries",
        "merge_boundaries", "device", "link", "pixel_size", "diameter", "to_zarr",
        "output_store", "resume", "block_size",
    )  # fmt: skip

    def __init__(self) -> None:
        self.output = ComboBox(
            label="output", choices=[(label, kind) for label, kind, _ in OUTPUTS], value="labels"
        )
        self.pixel_size = LineEdit(
            label="pixel size",
            value="",
            tooltip="the image's pixel size, e.g. 0.325 µm, 4 nm or 0.5 x 0.325 µm (y x); "
            "filled in from the layer's scale and units; empty: unknown. The image is "
            "resampled to the model's pixel size when the model records one",
        )
        self.pixel_size.native.setPlaceholderText("unknown (e.g. 0.325 µm)")
        self.diameter = LineEdit(
            label="object diameter",
            value="",
            tooltip="the objects' typical diameter in this image, in pixels, or 'auto' to "
            "measure it in a first pass; the image is rescaled so objects have the model's "
            "size. Empty: the model's default (auto when it records its objects' size, "
            "unless pixel sizes decide)",
        )
        self.link = CheckBox(
            text="link labels through z",
            value=False,
            tooltip="instance labels of a stack: each object takes the id of the object it "
            "overlaps most in the previous plane of the axis before y (IoU at least "
            f"{LINK_IOU}), else a new id, so one object keeps one id through z. On a time "
            "axis this is frame-to-frame tracking by overlap (no divisions, no gaps). On by "
            "default when that axis is labelled 'z' in the viewer",
        )
        self.advanced_toggle = CheckBox(text="advanced settings", value=False)
        self._build_advanced()
        self.advanced_toggle.changed.connect(self._toggle_advanced)

    def _build_advanced(self) -> None:
        self.tile_size = SpinBox(
            label="tile size (px)", value=0, min=0, max=4096, step=16,
            tooltip="network input tile size; 0 picks a size for the model",
        )  # fmt: skip
        self.threshold = FloatSpinBox(
            label="threshold", value=0.5, min=0.0, max=1.0, step=0.05,
            tooltip="foreground probability above which a pixel is foreground",
        )  # fmt: skip
        self.threshold.native.setDecimals(4)
        self.min_size = SpinBox(
            label="min size (px)", value=0, min=0, max=1_000_000,
            tooltip="instance labels: remove objects smaller than this",
        )  # fmt: skip
        self.split_touching = CheckBox(
            text="split touching objects", value=False,
            tooltip="instance labels: separate touching objects with a watershed",
        )  # fmt: skip
        self.fill_boundaries = CheckBox(
            text="fill boundaries", value=False,
            tooltip="instance labels: grow objects until they touch (EM membrane models)",
        )  # fmt: skip
        self.merge_boundaries = FloatSpinBox(
            label="merge below", value=0.0, min=0.0, max=1.0, step=0.05,
            tooltip="instance labels of thin-boundary models (EM membranes): cells seeded "
            "above the threshold grow along the predicted boundaries, and neighbours whose "
            "shared border has a mean boundary probability below this value merge; 0: off",
        )  # fmt: skip
        self.device = ComboBox(label="device", choices=_devices.device_choices(), value="auto")
        self._build_store_fields()
        self.advanced = Container(
            widgets=[
                self.tile_size, self.threshold, self.min_size, self.split_touching,
                self.fill_boundaries, self.merge_boundaries, self.device, self.to_zarr,
                self.output_store, self.resume, self.block_size,
            ],
            labels=True,
            visible=False,
        )  # fmt: skip

    def _build_store_fields(self) -> None:
        self.to_zarr = CheckBox(
            text="write to zarr store", value=False,
            tooltip="segment block by block into a zarr store on disk, also for in-memory "
            "images (for results larger than memory); lazy and multiscale images always are",
        )  # fmt: skip
        self.output_store = FileEdit(
            label="output store", mode="w", filter="*.zarr", nullable=True,
            tooltip="the .zarr folder block-wise results are written to; empty: "
            f"{default_store_path('<image>')}",
        )  # fmt: skip
        self.resume = CheckBox(
            text="resume", value=False,
            tooltip="continue an interrupted block-wise run into the same output store",
        )  # fmt: skip
        self.block_size = SpinBox(
            label="block size (px)", value=DEFAULT_BLOCK_SIZE, min=16, max=65536, step=256,
            tooltip="block-wise runs: edge of a block (one zarr chunk), rounded to whole tiles",
        )  # fmt: skip

    @property
    def widgets(self) -> list[Any]:
        """The fields in the dock's order (after the model chooser)."""
        return [self.pixel_size, self.diameter, self.output, self.link,
                self.advanced_toggle, self.advanced]  # fmt: skip

    def _toggle_advanced(self, shown: bool) -> None:
        self.advanced.visible = shown

    # ------------------------------------------------------------------ values
    def values(self) -> dict[str, Any]:
        """The fields' values, as :class:`SegmentDockOptions` takes them.

        Raises
        ------
        InputError
            When the pixel size or object diameter field cannot be read.
        """
        store = self.output_store.value
        return {
            "output": self.output.value,
            "tile_size": self.tile_size.value or None,
            "threshold": float(self.threshold.value),
            "min_size": int(self.min_size.value),
            "split_touching": bool(self.split_touching.value),
            "fill_boundaries": bool(self.fill_boundaries.value),
            "merge_boundaries": float(self.merge_boundaries.value),
            "device": self.device.value,
            "link": bool(self.link.value),
            "pixel_size": read_pixel_size_field(self.pixel_size.value),
            "diameter": read_diameter_field(self.diameter.value),
            "to_zarr": bool(self.to_zarr.value),
            "output_store": Path(store) if store else None,
            "resume": bool(self.resume.value),
            "block_size": int(self.block_size.value),
        }

    def set(self, **values: Any) -> None:
        """Set fields as a user would (keys: :data:`KEYS`); a pixel size or diameter the
        dock cannot read is refused at once, in one line."""
        for key, value in values.items():
            if key == "tile_size":
                value = value or 0
            elif key == "pixel_size":
                value = "" if value is None else str(value)
                read_pixel_size_field(value)
            elif key == "diameter":
                value = diameter_text(value)
                read_diameter_field(value)
            elif key == "output_store":
                value = value or None
            getattr(self, key).value = value

    def recommend(self, recommended: dict[str, Any]) -> None:
        """Set the post-processing a model recommends (the defaults where it is silent)."""
        self.threshold.value = recommended.get("threshold", 0.5)
        self.min_size.value = recommended.get("min_size", 0)
        self.split_touching.value = recommended.get("split_touching", False)
        self.fill_boundaries.value = recommended.get("fill_boundaries", False)
        self.merge_boundaries.value = recommended.get("merge_boundaries", 0.0)


__all__ = ["LINK_IOU", "SegmentDockOptions", "SegmentFields"]

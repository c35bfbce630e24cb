"""The *Segment* dock widget: one click from an image layer to instance labels.

The network runs in a ``thread_worker`` draining :func:`~napari_unet.core.segment.segment_iter`;
each finished tile is written into the output layer on the main thread (``yielded``), so
results appear tile by tile, and **Cancel** (``worker.quit()``) keeps the finished tiles.
Layers are only touched on the main thread.

**Stacks and channels.** The image may have any leading axes before (y, x), e.g.
(t, z, y, x): "Segment current slice" segments the plane at the viewer's sliders (read
through the layer's world-to-data mapping, whatever its scale and translate), "Segment
stack" every plane, the progress bar counting the tiles of all of them and the status
line naming the plane ("plane 4 of 6 (t=1, z=0), tile 1 of 2"). The output layer has the
image's shape without its channel axis, placed as the image. The channel controls
(:class:`~napari_unet._widgets._channels.ChannelControls`) choose a channel axis and
channels, or several layers as the channels of one input; an RGB layer is refused until
the user picks "as channels" or "as grey". "link labels through z" (on by default when
the viewer labels the axis before y "z") links the instance labels of a whole stack
through its last leading axis when every plane is done (not block-wise: the run then
says it segmented without linking).

**Large images.** When the image layer's data is lazy (a dask or zarr array, any
non-numpy array-like, or a multiscale layer, whose full-resolution level is used) or
"write to zarr store" is ticked, the image is never loaded whole: the worker drains
:func:`~napari_unet.core.largeimage.segment_blocks_iter`, which writes block by block
into an OME-Zarr store on disk (the "output store", by default
``<tempdir>/napari-unet/<image>.zarr``). The output layer is a lazy view of that store:
it shows each block as soon as it is written, and the merged labels at the end.
Cancel keeps the finished blocks; "resume" continues an interrupted run into the same
store. A store is never replaced unless it is this widget's own earlier result for the
same image, or the user agreed: when the default store exists, a free name
(``<image>-2.zarr``...) is used; a chosen one that holds a napari-unet result is replaced
only after asking; anything else is refused with one line. "Segment current slice" on
a lazy stack segments that plane alone into its own store (``<store>-plane<k>.zarr``),
shown at its plane of the stack. Splitting touching objects needs whole planes, so it is
turned off for this path (the status line says so).

**Model.** Choosing an image selects a model for it (:mod:`._model_choice`): the one the
user chose for it this session or Fine-tune trained on it, else the user's last choice for
an image of its kind (fluorescence or EM, from a small sample of the image; kept across
sessions), else a built-in model recording the layer's pixel size or suiting its kind. A
model Fine-tune trains in the same viewer is selected when its run ends.

**Scale.** "pixel size" is filled in from the image layer's scale and units (empty when
they are pixels: unknown) and may be typed ("0.325 µm", "4 nm", "0.5 x 0.325 µm");
"object diameter" takes a number of pixels or "auto", empty meaning the core's default
(the pixel sizes when both are known, else auto for models recording their objects'
size). The core resamples the image to the model's scale and maps the result back; the
status line says the scale used and why (its ``ScaleChosen`` event). Result layers take
the image layer's scale, translate and units (without its channel axis), so they overlay
it, anisotropic z included; a block-wise store records the same calibration.

**Device.** The device is resolved as the core does (``pick_device`` with the "device"
choice) when a run is prepared: an unavailable one is refused in one line and nothing
starts. The worker then names it first (naming a CUDA GPU initialises CUDA, so not on
the GUI thread), and a line under the buttons says "running on CPU: no CUDA GPU found"
(or "CUDA: <GPU name> (cuda:0)"...), "ran on ..." once the run ended.

Closing the panel or the viewer during a run cancels it: the worker stops after its
tile in progress and nothing touches the closed widget (see
:class:`~napari_unet._widgets._common.DockLifetime`). Errors reach the user as one-line
notifications, and replaced NaN/infinite pixels as a warning.

The logic is callable without clicking: :meth:`SegmentWidget.segment_current_slice`,
:meth:`SegmentWidget.segment_stack`, :meth:`SegmentWidget.cancel`,
:meth:`SegmentWidget.add_model_file`.
"""

from __future__ import annotations

import contextlib
import tempfile
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from qtpy.QtCore import QTimer

from napari_unet._widgets import _common
from napari_unet._widgets._channels import ChannelControls, ImageInput, default_link
from napari_unet._widgets._common import (
    BROWSE,
    DeviceLine,
    DockLifetime,
    JobDevice,
    JobFailed,
    JobWarning,
    ModelSource,
    SessionModels,
    StatusLabel,
    add_unselected,
    ask_model_file,
    choose_layer,
    close_progress,
    find_our_layer,
    free_name,
    in_separate_turns,
    is_ours,
    job_device,
    model_choices,
    model_in_channels,
    model_sources,
    notify_error,
    notify_info,
    notify_warning,
    open_progress,
    our_metadata,
    reporting_errors,
    resolve_device,
    session_for,
    show_layer,
    viewer_key,
)
from napari_unet._widgets._model_choice import default_model, layer_kind, remember_last_choice
from napari_unet._widgets._scale import (
    AUTO,
    diameter_text,
    in_dock_words,
    layer_pixel_size,
    model_scale,
    pixel_size_text,
    read_diameter_field,
    read_pixel_size_field,
    result_calibration,
    scale_status,
)
from napari_unet.core.calibration import Calibration
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.events import PlaneDone, Progress, ScaleChosen, TileDone
from napari_unet.core.io import plane_position
from napari_unet.core.largeimage import DEFAULT_BLOCK_SIZE, BlockStore, segment_blocks_iter
from napari_unet.core.modelfile import ModelBundle, read_description
from napari_unet.core.safety import free_path, is_our_store
from napari_unet.core.segment import SegmentOptions, recommended_options, segment_iter
from napari_unet.core.tiling import round_tile_size

if TYPE_CHECKING:
    import napari

#: Output kinds: (label in the chooser, SegmentOptions.output, layer name suffix).
OUTPUTS = (
    ("instance labels", "labels", "labels"),
    ("semantic mask", "mask", "mask"),
    ("probabilities (foreground)", "probabilities", "probabilities"),
)
_OUT_DTYPES = {"labels": np.int32, "mask": np.uint8, "probabilities": np.float32}
#: Overlap (IoU) above which "link labels through z" gives an object its predecessor's id.
LINK_IOU = next(f.default for f in fields(SegmentOptions) if f.name == "link_iou")
#: Minimum milliseconds between two redraws of the output layer while tiles stream in.
REFRESH_INTERVAL_MS = 100
#: Status-line note when the block-wise path has to turn watershed splitting off.
NO_SPLIT_NOTE = (
    "splitting touching objects, filling boundaries and merging across weak boundaries "
    "need whole planes, which large (block-wise) images do not allow: segmented without them"
)


#: set_options() keys of the widget's own fields (besides the channel controls).
_OPTION_WIDGETS: dict[str, str] = {
    "output": "_output_combo",
    "tile_size": "_tile_size",
    "threshold": "_threshold",
    "min_size": "_min_size",
    "split_touching": "_split_touching",
    "fill_boundaries": "_fill_boundaries",
    "merge_boundaries": "_merge_boundaries",
    "device": "_device",
    "link": "_link",
    "image": "_image_combo",
    "pixel_size": "_pixel_size",
    "diameter": "_diameter",
}
#: set_options() keys handled by the channel controls.
_CHANNEL_KEYS = frozenset({"channel_axis", "channels", "channel_layers", "rgb"})

#: Status-line note when the block-wise path has to turn linking through z off.
NO_LINK_NOTE = (
    "linking labels through z needs the whole result in memory, which large (block-wise) "
    "images do not allow: segmented without linking"
)


def default_store_path(image_name: str) -> Path:
    """Where a block-wise run writes when no output store is chosen."""
    return Path(tempfile.gettempdir()) / "napari-unet" / f"{image_name}.zarr"


def _source_paths(layer: Any) -> tuple[Path, ...]:
    """The file or store ``layer`` was opened from, if napari knows it (an output may
    never replace it)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return (Path(path),) if path else ()


@reporting_errors
def _segment_job(
    source: ModelSource,
    cache: dict,
    image: Any,
    options: SegmentOptions,
    planes: list[int],
):
    """Worker generator: name the device, load the model (off the GUI thread), then
    segment ``planes``."""
    yield job_device(options.device)
    bundle = source.load(cache)
    if options.tile_size:
        size, note = round_tile_size(bundle.config, options.tile_size)
        options = replace(options, tile_size=size)
        if note:
            yield _Note(note)
    return (yield from segment_iter(bundle, image, options=options, planes=planes))


@reporting_errors
def _segment_blocks_job(
    source: ModelSource,
    cache: dict,
    image: Any,
    path: Path,
    options: SegmentOptions,
    block_size: int,
    resume: bool,
    overwrite: bool,
    inputs: tuple[Path, ...],
    calibration: Calibration | None = None,
):
    """Worker generator: load the model, then segment ``image`` block-wise into ``path``.

    ``overwrite`` only when the user agreed or the store is this widget's own earlier
    result; the core checks the output (and the ``inputs``) before any work. The first
    event names the device. ``calibration`` (of labels and masks: the image's axes without
    channels) is recorded in the store; probabilities get their class axis here.
    """
    yield job_device(options.device)
    bundle = source.load(cache)
    if calibration is not None and options.output == "probabilities":
        calibration = calibration.for_result(None, bundle.config.num_classes)
    if options.tile_size:
        size, note = round_tile_size(bundle.config, options.tile_size)
        options = replace(options, tile_size=size)
        if note:
            yield _Note(note)
    return (
        yield from segment_blocks_iter(
            bundle,
            image,
            path,
            options=options,
            block_size=block_size,
            resume=resume,
            overwrite=overwrite,
            inputs=inputs,
            calibration=calibration,
        )
    )


def _default_scale_words(pixel_size: Any, diameter: float | None) -> str:
    """What an empty diameter field does with a model recording ``pixel_size`` and
    ``diameter`` (the core's order: pixel sizes, then auto, else no rescaling)."""
    if diameter is not None and pixel_size is not None:
        return "default: from the pixel sizes, else auto"
    if diameter is not None:
        return f"default: {AUTO} (the model's objects: {diameter:.0f} px)"
    if pixel_size is not None:
        return "default: from the pixel sizes"
    return "default: not rescaled (the model records no scale)"


@dataclass(frozen=True)
class _Note:
    """A message for the user from the worker (e.g. the tile size was rounded)."""

    message: str


@dataclass
class _SegmentRun:
    """State of one run, owned by the main thread."""

    layer: Any
    output: str
    stacked: bool
    planes: list[int]
    #: napari progress bar, created when the worker starts (the turn after the click).
    progress: Any
    #: Shape of the image's leading axes ((t, z) of a (t, z, y, x) stack; () for 2D),
    #: and the viewer's labels of them, for status lines.
    leading: tuple[int, ...] = ()
    axis_names: tuple[str, ...] = ()
    #: Labels linked through the last leading axis: the final result replaces the
    #: per-plane labels when the run ends.
    link: bool = False
    linked: bool = False
    tiles_done: int = 0
    planes_done: set = field(default_factory=set)
    cancelled: bool = False
    failed: bool = False
    #: Set when the worker finished; tiles whose signal arrives later are still written.
    finished: bool = False
    #: Block-wise runs: the store, the image layer, (blocks done, total), a note for the
    #: user, and for a single plane of a stack its index and the stack's plane count.
    store: Path | None = None
    #: The store the widget's settings name (``store`` may be a free name beside it).
    requested_store: Path | None = None
    image_layer: Any = None
    image_input: ImageInput | None = None
    blocks: tuple[int, int] = (0, 0)
    note: str = ""
    plane_index: int | None = None
    plane_count: int = 1
    #: The scale the core chose (:class:`~napari_unet.core.scaling.ScaleChoice`), once
    #: its ScaleChosen event arrived, and its status line.
    scale: Any = None
    scale_line: str = ""


def _add_output_layer(
    viewer: Any, output: str, data: Any, name: str, metadata: dict, placement: dict
) -> Any:
    """Add our output layer, hidden (shown a turn later) and unselected: an Image for
    ``probabilities``, else Labels."""
    if output == "probabilities":
        return add_unselected(
            viewer.add_image, viewer, data, name=name, metadata=metadata, colormap="magma",
            blending="additive", contrast_limits=(0.0, 1.0), opacity=0.7, visible=False,
            **placement,
        )  # fmt: skip
    return add_unselected(
        viewer.add_labels, viewer, data, name=name, metadata=metadata, visible=False,
        **placement,
    )  # fmt: skip


def _at_position(plane: Any, position: tuple[int, ...], leading: tuple[int, ...]) -> Any:
    """A lazy ``(*leading, ...)`` stack holding ``plane`` at ``position``, zeros elsewhere."""
    import dask.array as da

    if not leading:
        return plane
    inner = _at_position(plane, position[1:], leading[1:])
    blank = da.zeros(inner.shape, dtype=inner.dtype, chunks=inner.chunksize)
    return da.stack([inner if p == position[0] else blank for p in range(leading[0])])


class SegmentWidget(Container):
    """Segment the chosen image layer with a U-Net; results stream into a layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are read and written.
    session : SessionModels, optional
        Models trained in this session and the models chosen per image; by default
        the one every napari-unet widget shares.
    """

    def __init__(self, viewer: napari.viewer.Viewer, session: SessionModels | None = None) -> None:
        super().__init__(labels=True)
        _common.warm_up()
        self._viewer = viewer
        self._session = session if session is not None else session_for(viewer)
        self._browsed: list[Path] = []
        self._model_cache: dict = {}
        self._worker: Any = None
        self._run: _SegmentRun | None = None
        self._last_run: _SegmentRun | None = None
        self._refresh_pending = False
        self._last_model: Any = None
        #: True while the widget selects a model itself (not the user's choice).
        self._choosing = False
        #: The user's choice made while no image was chosen: it goes to the next images.
        self._choice_without_image: ModelSource | None = None
        #: Stores this widget wrote: requested path -> (actual path, image layer).
        self._own_stores: dict[Path, tuple[Path, weakref.ref]] = {}
        self._lifetime = DockLifetime(self.native, self._on_closed)

        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._link = CheckBox(
            text="link labels through z",
            value=False,
            tooltip="instance labels of a stack: each object takes the id of the object it "
            "overlaps most in the previous plane of the axis before y (IoU at least "
            f"{LINK_IOU}), else a new id, so one object keeps one id through z. On a time "
            "axis this is frame-to-frame tracking by overlap (no divisions, no gaps). On by "
            "default when that axis is labelled 'z' in the viewer",
        )
        self._channels = ChannelControls(viewer, self._image_combo, self._set_link_default)
        self._model_combo = ComboBox(label="model", choices=self._model_choices)
        self._output_combo = ComboBox(
            label="output", choices=[(label, kind) for label, kind, _ in OUTPUTS], value="labels"
        )
        self._pixel_size = LineEdit(
            label="pixel size",
            value="",
            tooltip="the image's pixel size, e.g. 0.325 µm, 4 nm or 0.5 x 0.325 µm (y x); "
            "filled in from the layer's scale and units; empty: unknown. The image is "
            "resampled to the model's pixel size when the model records one",
        )
        self._pixel_size.native.setPlaceholderText("unknown (e.g. 0.325 µm)")
        self._diameter = LineEdit(
            label="object diameter",
            value="",
            tooltip="the objects' typical diameter in this image, in pixels, or 'auto' to "
            "measure it in a first pass; the image is rescaled so objects have the model's "
            "size. Empty: the model's default (auto when it records its objects' size, "
            "unless pixel sizes decide)",
        )
        #: What the pixel size field was filled in with from the layer (so a value the
        #: user did not change follows the layer's scale).
        self._prefilled_pixel_size = ""
        self._advanced_toggle = CheckBox(text="advanced settings", value=False)
        self._tile_size = SpinBox(
            label="tile size (px)",
            value=0,
            min=0,
            max=4096,
            step=16,
            tooltip="network input tile size; 0 picks a size for the model",
        )
        self._threshold = FloatSpinBox(
            label="threshold",
            value=0.5,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="foreground probability above which a pixel is foreground",
        )
        self._min_size = SpinBox(
            label="min size (px)",
            value=0,
            min=0,
            max=1_000_000,
            tooltip="instance labels: remove objects smaller than this",
        )
        self._split_touching = CheckBox(
            text="split touching objects",
            value=False,
            tooltip="instance labels: separate touching objects with a watershed",
        )
        self._fill_boundaries = CheckBox(
            text="fill boundaries",
            value=False,
            tooltip="instance labels: grow objects until they touch (EM membrane models)",
        )
        self._merge_boundaries = FloatSpinBox(
            label="merge below",
            value=0.0,
            min=0.0,
            max=1.0,
            step=0.05,
            tooltip="instance labels of thin-boundary models (EM membranes): cells seeded "
            "above the threshold grow along the predicted boundaries, and neighbours whose "
            "shared border has a mean boundary probability below this value merge; 0: off",
        )
        self._threshold.native.setDecimals(4)
        self._device = ComboBox(label="device", choices=_common.device_choices(), value="auto")
        self._to_zarr = CheckBox(
            text="write to zarr store",
            value=False,
            tooltip="segment block by block into a zarr store on disk, also for in-memory "
            "images (for results larger than memory); lazy and multiscale images always are",
        )
        self._output_store = FileEdit(
            label="output store",
            mode="w",
            filter="*.zarr",
            nullable=True,
            tooltip="the .zarr folder block-wise results are written to; empty: "
            f"{default_store_path('<image>')}",
        )
        self._resume = CheckBox(
            text="resume",
            value=False,
            tooltip="continue an interrupted block-wise run into the same output store",
        )
        self._block_size = SpinBox(
            label="block size (px)",
            value=DEFAULT_BLOCK_SIZE,
            min=16,
            max=65536,
            step=256,
            tooltip="block-wise runs: edge of a block (one zarr chunk), rounded to whole tiles",
        )
        self._advanced = Container(
            widgets=[
                self._tile_size,
                self._threshold,
                self._min_size,
                self._split_touching,
                self._fill_boundaries,
                self._merge_boundaries,
                self._device,
                self._to_zarr,
                self._output_store,
                self._resume,
                self._block_size,
            ],
            labels=True,
            visible=False,
        )
        self._slice_button = PushButton(text="Segment current slice")
        self._stack_button = PushButton(text="Segment stack")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._device_line = DeviceLine()
        self._status = StatusLabel()
        self.extend([
            self._image_combo, *self._channels.widgets, self._model_combo, self._pixel_size,
            self._diameter, self._output_combo, self._link, self._advanced_toggle,
            self._advanced, self._slice_button, self._stack_button, self._cancel_button,
            self._device_line.label, self._status,
        ])  # fmt: skip
        self._channels.sync()

        self._advanced_toggle.changed.connect(self._toggle_advanced)
        self._model_combo.changed.connect(self._on_model_chosen)
        self._image_combo.changed.connect(self._prefill_pixel_size)
        self._image_combo.changed.connect(self._offer_default_model)
        self._channels.axis.changed.connect(self._prefill_pixel_size)
        # Recommendations may differ per output kind (e.g. labels vs mask threshold).
        self._output_combo.changed.connect(
            lambda _output: self._apply_recommendation(self._model_combo.value)
        )
        self._slice_button.clicked.connect(self.segment_current_slice)
        self._stack_button.clicked.connect(self.segment_stack)
        self._cancel_button.clicked.connect(self.cancel)
        connect = self._lifetime.connect  # disconnected when the panel is gone
        connect(self._session.changed, self._on_session_changed)
        connect(viewer.layers.events.inserted, self._refresh_layers)
        connect(viewer.layers.events.removed, self._refresh_layers)
        connect(viewer.layers.selection.events.active, self._follow_active_layer)
        connect(viewer.dims.events.axis_labels, self._on_axis_labels)
        self._follow_active_layer()
        self._offer_default_model()
        self._apply_recommendation(self._model_combo.value)
        self._set_link_default()
        self._prefill_pixel_size()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _model_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return model_choices(model_sources(self._session, self._browsed))

    def _refresh_layers(self, _event: Any = None) -> None:
        self._image_combo.reset_choices()
        self._channels.refresh_layers()
        self._follow_active_layer()

    def _on_axis_labels(self, _event: Any = None) -> None:
        self._channels.axis_labels_changed()  # also sets the link default

    def _set_link_default(self) -> None:
        """ "link labels through z": on when the image's axis before y is labelled "z"."""
        layer = self._image_combo.value
        self._link.value = default_link(self._viewer, layer, self._channels.layer_axis())

    def _follow_active_layer(self, _event: Any = None) -> None:
        active = self._viewer.layers.selection.active
        # Our own results (previews, probabilities) are not what the user wants to process.
        if isinstance(active, Image) and active in self._viewer.layers and not is_ours(active):
            self._image_combo.reset_choices()
            self._image_combo.value = active

    @contextlib.contextmanager
    def _choosing_model(self) -> Iterator[None]:
        """The widget selects a model itself: not a choice of the user's to remember."""
        self._choosing = True
        try:
            yield
        finally:
            self._choosing = False
            self._last_model = self._model_combo.value

    def _offer_default_model(self, _value: Any = None) -> None:
        """Select the model for the chosen image: the user's earlier choice for it, else
        a model fitting its scale or kind (see :mod:`._model_choice`)."""
        layer = self._image_combo.value
        if layer is not None and self._choice_without_image is not None:
            if self._session.remembered(layer) is None:
                self._session.remember(layer, self._choice_without_image)
        sources = model_sources(self._session, self._browsed)
        source = default_model(layer, sources, self._session)
        if source is None:
            return
        if source not in sources and source.path is not None:  # a file of an earlier session
            self._browsed.append(source.path)
            self._model_combo.reset_choices()
        with self._choosing_model():
            self._model_combo.value = source

    def _remember_choice(self, source: ModelSource) -> None:
        """The user chose ``source`` for the chosen image: keep it for the session, and
        as the last choice for images of its kind."""
        layer = self._image_combo.value
        if layer is not None:
            self._session.remember(layer, source)
        else:
            self._choice_without_image = source
        remember_last_choice(layer_kind(layer), source)

    def _apply_recommendation(self, source: Any) -> None:
        """Set threshold, minimum size and splitting to what the model file recommends."""
        if not isinstance(source, ModelSource):
            return
        provenance: dict = {}
        if source.bundle is not None:
            provenance = source.bundle.provenance
        elif source.path is not None:
            try:
                provenance = read_description(source.path).get("provenance") or {}
            except UNetError:
                return  # a broken file is reported when it is used, with the full message
        recommended = recommended_options(
            SimpleNamespace(provenance=provenance), self._output_combo.value
        )
        self._threshold.value = recommended.get("threshold", 0.5)
        self._min_size.value = recommended.get("min_size", 0)
        self._split_touching.value = recommended.get("split_touching", False)
        self._fill_boundaries.value = recommended.get("fill_boundaries", False)
        self._merge_boundaries.value = recommended.get("merge_boundaries", 0.0)
        self._apply_model_scale(source)

    def _apply_model_scale(self, source: ModelSource) -> None:
        """Say in the diameter field what an empty one means for ``source`` (the core's
        default: the pixel sizes when both are known, else auto for a model recording its
        objects' size), and in the model chooser's tooltip what the model records."""
        pixel_size, diameter = model_scale(source)
        self._diameter.native.setPlaceholderText(_default_scale_words(pixel_size, diameter))
        known = [f"{pixel_size}/px" if pixel_size is not None else "",
                 f"objects ~{diameter:.0f} px" if diameter is not None else ""]  # fmt: skip
        recorded = ", ".join(k for k in known if k) or "no scale"
        self._model_combo.tooltip = f"the model records {recorded}"

    def _prefill_pixel_size(self, _value: Any = None) -> None:
        """Fill the pixel size field in from the image layer's scale and units (empty when
        they are in pixels: unknown)."""
        layer = self._image_combo.value
        text = ""
        if layer is not None:
            text = pixel_size_text(layer_pixel_size(layer, self._channels.layer_axis()))
        self._pixel_size.value = text
        self._prefilled_pixel_size = text

    def _refresh_prefill(self) -> None:
        """A field the user did not change follows the layer's scale (it may have changed
        since the layer was chosen)."""
        if self._pixel_size.value == self._prefilled_pixel_size:
            self._prefill_pixel_size()

    def _on_session_changed(self, bundle: ModelBundle | None, origin: Any = None) -> None:
        """Refresh the chooser; a model just trained in this viewer is selected."""
        previous = self._model_combo.value
        with self._choosing_model():
            self._model_combo.reset_choices()
            if bundle is not None and origin == viewer_key(self._viewer):
                self._model_combo.value = ModelSource("", "session", bundle=bundle)
            elif previous is not None and previous != BROWSE:
                with contextlib.suppress(ValueError):  # a session model replaced since
                    self._model_combo.value = previous

    def _on_model_chosen(self, value: Any) -> None:
        if value != BROWSE:
            self._last_model = value
            self._apply_recommendation(value)
            if not self._choosing and isinstance(value, ModelSource):
                self._remember_choice(value)
            return
        path = ask_model_file(self.native)
        if path is None:
            self._model_combo.value = self._last_model
        else:
            self.add_model_file(path)

    def add_model_file(self, path: str | Path) -> None:
        """Offer the model file ``path`` in the chooser and select it."""
        path = Path(path)
        if path not in self._browsed:
            self._browsed.append(path)
        self._model_combo.reset_choices()
        for source in model_sources(self._session, self._browsed):
            if source.path == path:
                self._model_combo.value = source
        self._last_model = self._model_combo.value

    @property
    def model_labels(self) -> list[str]:
        """Labels of the models offered in the chooser (without "Browse...")."""
        return [label for label, value in self._model_choices() if value != BROWSE]

    @property
    def model_label(self) -> str | None:
        """Label of the chosen model, as the chooser shows it (e.g. "nuclei")."""
        value = self._model_combo.value
        return None if value is None or value == BROWSE else self._model_combo.current_choice

    def _choose_model(self, model: Any) -> None:
        """Select ``model`` as the user would (remembered for the chosen image): a label
        of the chooser, a model name ("em-membranes"), a model file, or a ModelSource."""
        if isinstance(model, Path):
            self.add_model_file(model)
            return
        if not isinstance(model, ModelSource):
            offered = [(label, value) for label, value in self._model_choices() if value != BROWSE]
            matches = [value for label, value in offered if label == str(model)]
            matches += [value for label, value in offered if label.split(" (")[0] == str(model)]
            if not matches:
                labels = ", ".join(label for label, _ in offered)
                raise InputError(f"unknown model {str(model)!r}: choose one of {labels}")
            model = matches[0]
        if model == self._model_combo.value:  # no change signal: remember it here
            self._remember_choice(model)
        self._model_combo.value = model

    def _toggle_advanced(self, shown: bool) -> None:
        self._advanced.visible = shown

    # ------------------------------------------------------------------ options
    def options(self) -> SegmentOptions:
        """The segmentation options currently set in the widget.

        ``channel_axis`` and ``channels`` are those of the chosen input as the core reads
        it (stacked channel layers: axis 0; an RGB layer "as channels": its colour axis);
        ``link`` is the checkbox (a run links only instance labels of a whole stack).

        ``pixel_size`` is the pixel size field (None when empty: unknown), ``diameter``
        the object diameter field ("auto", a number of pixels, or None when empty: the
        model's default).

        Raises
        ------
        InputError
            When the channels, pixel size or object diameter field cannot be read.
        """
        channel_axis, channels = None, None
        try:
            image_input = self._channels.input(model_in_channels(self._model_combo.value))
        except InputError:
            image_input = None  # no image yet, or an RGB layer without a choice
        if image_input is not None:
            channel_axis, channels = image_input.channel_axis, image_input.channels
        pixel_size = read_pixel_size_field(self._pixel_size.value)
        diameter = read_diameter_field(self._diameter.value)
        return SegmentOptions(
            output=self._output_combo.value,
            tile_size=self._tile_size.value or None,
            threshold=float(self._threshold.value),
            min_size=int(self._min_size.value),
            split_touching=bool(self._split_touching.value),
            fill_boundaries=bool(self._fill_boundaries.value),
            merge_boundaries=float(self._merge_boundaries.value),
            device=self._device.value,
            channel_axis=channel_axis,
            channels=channels,
            link=bool(self._link.value),
            pixel_size=pixel_size,
            diameter=diameter,
        )

    def set_options(self, **values: Any) -> None:
        """Set the widget's fields as a user would.

        Keys: ``image`` (a layer or its name), ``channel_axis`` (an axis of the image
        layer, or None), ``channels`` ("0,2", a sequence of ints, or None for all),
        ``channel_layers`` (layers or names; empty: the image), ``rgb`` (None,
        "channels" or "grey"), ``link``, and the :class:`SegmentOptions` fields
        ``output``, ``tile_size`` (None: automatic), ``threshold``, ``min_size``,
        ``split_touching``, ``fill_boundaries``, ``merge_boundaries``, ``device``,
        ``pixel_size`` (a PixelSize, text such as "0.325 um", a number of µm, or None:
        unknown) and ``diameter`` ("auto", a number of pixels, or None: the model's
        default), and ``model`` (a label of the model chooser, a model name such as
        "em-membranes", a model file's Path, or a ModelSource; a choice the widget
        remembers for the image, as the user's). The image is set first, then the
        channel controls, then the model, then the rest (so an explicit ``model``,
        ``link`` or ``pixel_size`` wins over the default a new image brings).
        """
        unknown = set(values) - set(_OPTION_WIDGETS) - _CHANNEL_KEYS - {"model"}
        if unknown:
            raise TypeError(f"unknown options: {sorted(unknown)}")
        if "image" in values:
            choose_layer(self._image_combo, self._viewer, values.pop("image"))
        channel_values = {k: values.pop(k) for k in list(values) if k in _CHANNEL_KEYS}
        self._channels.set(**channel_values)
        if {"channel_axis", "channel_layers"} & set(channel_values):
            self._set_link_default()
        if "model" in values:
            self._choose_model(values.pop("model"))
        for key, value in values.items():
            if key == "tile_size":
                value = value or 0
            elif key == "pixel_size":
                value = "" if value is None else str(value)
                read_pixel_size_field(value)  # refused at once, in one line
            elif key == "diameter":
                value = diameter_text(value)
                read_diameter_field(value)
            getattr(self, _OPTION_WIDGETS[key]).value = value

    @property
    def is_running(self) -> bool:
        """Whether a segmentation is in progress."""
        return self._worker is not None

    @property
    def device_description(self) -> str:
        """Which device runs the current (or ran the last) segmentation and why, e.g.
        "CPU: no CUDA GPU found"; "" until a run's worker has named it."""
        return self._device_line.description

    # --------------------------------------------------------------------- runs
    def segment_current_slice(self) -> Any:
        """Segment the plane of the chosen image at the viewer's current position (any
        number of leading axes: the sliders' t, z...); return the worker."""
        return self._start(current=True)

    def segment_stack(self) -> Any:
        """Segment every plane of the chosen image (all leading axes); return the worker."""
        return self._start(current=False)

    @property
    def scale_choice(self) -> Any:
        """The scale the current or last run used and why
        (:class:`~napari_unet.core.scaling.ScaleChoice`: ``factor``, ``source``,
        ``reason``...), once the core chose it; None before."""
        run = self._run or self._last_run
        return run.scale if run is not None else None

    @property
    def plane_progress(self) -> tuple[int, int]:
        """``(planes done, planes to do)`` of the current or last in-memory run."""
        run = self._run or self._last_run
        return (len(run.planes_done), len(run.planes)) if run is not None else (0, 0)

    def cancel(self) -> None:
        """Stop after the tile in progress; finished tiles stay in the output layer."""
        if self._worker is not None and self._run is not None:
            self._run.cancelled = True
            self._status.value = "cancelling..."
            self._worker.quit()

    @property
    def is_closed(self) -> bool:
        """Whether the panel was closed (or the viewer): the widget is not used again."""
        return self._lifetime.closed

    def _on_closed(self) -> None:
        """The panel or the viewer was closed: stop the run without touching Qt."""
        if self._run is not None:
            self._run.cancelled = True
        if self._worker is not None:
            self._worker.quit()

    def _start(self, *, current: bool) -> Any:
        if self.is_closed:
            return None
        if self._worker is not None:
            notify_info("a segmentation is already running: cancel it first")
            return None
        try:
            return self._start_worker(current)
        except UNetError as error:
            notify_error(in_dock_words(str(error)))
            return None

    def _prepare(self, current: bool) -> tuple[ImageInput, ModelSource, SegmentOptions, list]:
        """The checked input, model, options and planes of a run (main thread, no reads).

        Raises
        ------
        UNetError
            With one line for the user: no image or model, an RGB layer without a choice,
            channels the core refuses, an unavailable device.
        """
        source = self._model_combo.value
        in_channels = model_in_channels(source)
        image_input = self._channels.input(in_channels)
        if not isinstance(source, ModelSource):
            raise InputError(
                "no model chosen: pick a built-in or saved model, or Browse... for a file"
            )
        image_input.check(in_channels)
        self._refresh_prefill()
        planes = (
            [image_input.plane_in_view(self._viewer)]
            if current
            else list(range(image_input.plane_count))
        )
        # Linking joins the planes of a whole stack; one plane has nothing to link to.
        link = (
            bool(self._link.value)
            and self._output_combo.value == "labels"
            and image_input.plane_count > 1
            and not current
        )
        options = replace(
            self.options(),
            channel_axis=image_input.channel_axis,
            channels=image_input.channels,
            link=link,
        )
        resolve_device(options.device)  # an unavailable device: one line, nothing started
        return image_input, source, options, planes

    def _start_worker(self, current: bool) -> Any:
        image_input, source, options, planes = self._prepare(current)
        self._device_line.clear()
        if image_input.lazy or self._to_zarr.value:
            return self._start_block_worker(image_input, source, options, planes, current)
        image_layer = image_input.layer
        stacked = bool(image_input.leading_shape)
        layer, create = self._output_layer(image_input, options.output, planes)
        run = _SegmentRun(
            layer=layer,
            output=options.output,
            stacked=stacked,
            planes=planes,
            progress=None,
            leading=image_input.leading_shape,
            axis_names=image_input.axis_names(self._viewer),
            link=options.link,
        )
        worker = thread_worker(_segment_job, start_thread=False)(
            source, self._model_cache, image_input.data, options, planes
        )
        worker.yielded.connect(lambda event: self._on_event(run, event))
        worker.returned.connect(lambda result: self._on_returned(run, result))
        worker.errored.connect(lambda error: self._on_error(run, error))
        worker.finished.connect(lambda: self._on_finished(run))
        self._worker, self._run = worker, run
        self._set_running(True)
        if stacked and len(planes) == 1:
            what = f"plane {self._where(run, planes[0])}"
        elif stacked:
            what = f"{len(planes)} planes"
        else:
            what = "image"
        self._status.value = f"segmenting {what} with {source.label}..."
        # A new output layer is added (hidden) in the turn after the click, shown (its
        # first draw) in the next, and the progress bar is built and the worker started
        # in the last: napari's ~70-90 ms for a new layer then shares its turn with
        # nothing else (see in_separate_turns).
        make = [] if create is None else [self._create_step(run, create), self._show_step(run)]
        make = [self._lifetime.unless_closed(step) for step in make]
        in_separate_turns(*make, self._begin(run, worker, f"Segmenting {image_layer.name}"))
        return worker

    @staticmethod
    def _create_step(run: _SegmentRun, create: Callable[[], Any]) -> Callable[[], None]:
        """A step adding the run's output layer (worker events only arrive after it)."""

        def create_layer() -> None:
            run.layer = create()

        return create_layer

    @staticmethod
    def _show_step(run: _SegmentRun) -> Callable[[], None]:
        """A step showing the run's output layer, added hidden a turn before."""
        return lambda: show_layer(run.layer)()

    def _begin(self, run: _SegmentRun, worker: Any, description: str) -> Callable[[], None]:
        """A step creating the progress bar and starting ``worker``.

        Not in the click's turn, which may build the output layer (see
        ``in_separate_turns``). Worker events only arrive after the start, so they always
        find the bar. Skipped when the panel was closed in between: the run then ends
        here, never started.
        """

        def begin() -> None:
            run.progress = open_progress(0, description)
            worker.start()

        def never_started() -> None:
            if self._worker is worker:
                self._worker, self._run = None, None

        return lambda: never_started() if self.is_closed else begin()

    def _output_layer(
        self, image_input: ImageInput, output: str, planes: list[int]
    ) -> tuple[Any, Callable[[], Any] | None]:
        """Our output layer for this image, cleared where it will be rewritten (main
        thread), or ``(None, create)`` when there is none yet: ``create()`` adds it,
        hidden and unselected, and returns it (the caller runs it a turn later).

        The layer has the image's shape without its channel axis (its leading axes kept)
        and the image layer's scale and translate for those axes.
        """
        suffix = next(s for _, kind, s in OUTPUTS if kind == output)
        name_stem = image_input.name
        shape = image_input.shape
        role = f"{name_stem}/{output}"
        dtype = _OUT_DTYPES[output]
        layer_type = Image if output == "probabilities" else Labels
        layer = find_our_layer(self._viewer, role, layer_type, shape, dtype)
        if layer is not None:
            if len(planes) < image_input.plane_count:
                for p in planes:
                    layer.data[image_input.position(p)] = 0
            else:
                layer.data[...] = 0
            layer.refresh()
            return layer, None
        metadata = our_metadata(role)
        placement = image_input.placement()
        viewer = self._viewer

        def create() -> Any:
            # Named when added, so a layer the user adds meanwhile cannot take the name.
            name = free_name(viewer, f"{name_stem} {suffix}")
            data = np.zeros(shape, dtype=dtype)
            return _add_output_layer(viewer, output, data, name, metadata, placement)

        return None, create

    # ------------------------------------------------------- block-wise (large) runs
    def store_path(self, image: Any, plane: int | None = None) -> Path:
        """The output store of a block-wise run of ``image`` (an image layer or input, by
        its name), or of one flat ``plane`` of it."""
        chosen = self._output_store.value
        path = Path(chosen) if chosen else default_store_path(image.name)
        if path.suffix.lower() != ".zarr":
            path = path.with_name(path.name + ".zarr")
        if plane is not None:  # one plane of a stack: a store of its own
            path = path.with_name(f"{path.stem}-plane{plane}.zarr")
        return path

    def _start_block_worker(
        self,
        image_input: ImageInput,
        source: ModelSource,
        options: SegmentOptions,
        planes: list[int],
        current: bool,
    ) -> Any:
        """Segment block by block into a zarr store; the image is never read whole.

        One plane of a stack (``current``) is segmented as a lazy view of that plane
        (with its channels) into a store of its own, shown at its place in the stack.
        """
        whole_plane_only = (
            options.split_touching or options.fill_boundaries or options.merge_boundaries > 0
        )
        notes = []
        if options.output == "labels" and whole_plane_only:
            options = replace(
                options, split_touching=False, fill_boundaries=False, merge_boundaries=0.0
            )
            notes.append(NO_SPLIT_NOTE)
        if options.link:
            options = replace(options, link=False)
            notes.append(NO_LINK_NOTE)
        for note in notes:
            notify_warning(note)
        note = "\n".join(notes)
        stacked = bool(image_input.leading_shape)
        plane_index = planes[0] if stacked and current else None
        target = self._store_target(image_input, plane_index)
        if target is None:
            self._status.value = "not started: the output store was kept"
            return None
        requested, path, overwrite = target
        if plane_index is None:
            image = image_input.data
        else:  # the core segments whole images: give it a lazy view of the plane
            image = image_input.plane(plane_index)
            options = replace(options, channel_axis=image_input.plane_channel_axis)
        run = _SegmentRun(
            layer=None,
            output=options.output,
            stacked=stacked,
            planes=planes if plane_index is None else [0],
            progress=None,
            leading=image_input.leading_shape,
            axis_names=image_input.axis_names(self._viewer),
            link=options.link,
            store=path,
            requested_store=requested,
            image_layer=image_input.layer,
            image_input=image_input,
            note=note,
            plane_index=plane_index,
            plane_count=image_input.plane_count,
        )
        worker = thread_worker(_segment_blocks_job, start_thread=False)(
            source,
            self._model_cache,
            image,
            path,
            options,
            int(self._block_size.value),
            bool(self._resume.value),
            overwrite,
            tuple(p for layer in image_input.layers for p in _source_paths(layer)),
            result_calibration(
                image_input.placement(), options.pixel_size, plane_only=plane_index is not None
            ),
        )
        worker.yielded.connect(lambda event: self._on_block_event(run, event))
        worker.errored.connect(lambda error: self._on_error(run, error))
        worker.finished.connect(lambda: self._on_block_finished(run))
        self._worker, self._run = worker, run
        self._set_running(True)
        what = "image" if plane_index is None else f"plane {self._where(run, plane_index)}"
        self._status.value = self._with_note(
            run, f"segmenting {what} block-wise into {path} with {source.label}..."
        )
        in_separate_turns(self._begin(run, worker, f"Segmenting {image_input.name}"))
        return worker

    def _store_target(
        self, image_input: ImageInput, plane: int | None
    ) -> tuple[Path, Path, bool] | None:
        """``(requested, store, overwrite)`` of a block-wise run, or ``None`` when the user
        declined to replace the chosen store.

        A store is replaced (``overwrite``) only when it is this widget's own earlier
        result for this image, or the user agreed. An existing default store becomes a
        free name beside it; a chosen one holding a napari-unet result is asked about;
        anything else goes to the core as is, which refuses it in one line.
        """
        requested = self.store_path(image_input, plane)
        resume = bool(self._resume.value)
        own_path, own_layer = self._own_stores.get(requested, (None, None))
        if own_path is not None and own_layer() is image_input.layer:
            return requested, own_path, not resume
        if resume or not (requested.exists() or requested.is_symlink()):
            return requested, requested, False
        if not self._output_store.value:  # our default place: never replace, pick a name
            return requested, free_path(requested), False
        if not is_our_store(requested):
            return requested, requested, False
        if _common.ask_replace(self.native, requested):
            return requested, requested, True
        return None

    @staticmethod
    def _with_note(run: _SegmentRun, message: str) -> str:
        """``message``, then the scale used and why, then the run's note (one per line)."""
        return "\n".join(line for line in (message, run.scale_line, run.note) if line)

    def _store_view(self, run: _SegmentRun) -> Any:
        """The store's result as layer data: lazy, read from disk whenever it is drawn.

        Labels and masks of whole images are the zarr array itself (painting edits the
        store); probabilities and single planes of a stack are read-only dask views.
        """
        array = BlockStore(run.store).result(mode="r+")
        if run.output != "probabilities" and run.plane_index is None:
            return array
        import dask.array as da

        view = da.from_zarr(array)
        if run.output == "probabilities":  # foreground = anything but background (class 0)
            view = 1.0 - view[..., 0, :, :]
        if run.plane_index is not None:  # put the plane back at its place in the stack
            view = _at_position(view, plane_position(run.leading, run.plane_index), run.leading)
        return view

    def _attach_store_layer(self, run: _SegmentRun) -> None:
        """Show the store in our output layer (main thread), once the worker created it."""
        if run.layer is not None or run.store is None or BlockStore(run.store).run_record() is None:
            return
        image_layer, image_input = run.image_layer, run.image_input
        data = self._store_view(run)
        # A role of its own: the in-memory path must never write into a store's layer.
        role = f"{image_input.name}/{run.output}/store"
        metadata = our_metadata(role, store=str(run.store))
        layer_type = Image if run.output == "probabilities" else Labels
        placement = image_input.placement()
        if run.requested_store is not None:  # this store is ours to replace from now on
            self._own_stores[run.requested_store] = (run.store, weakref.ref(image_layer))
        for layer in self._viewer.layers:
            marker = getattr(layer, "metadata", {}).get(_common.METADATA_KEY)
            if (
                isinstance(layer, layer_type)
                and isinstance(marker, dict)
                and marker == metadata[_common.METADATA_KEY]
            ):
                layer.data = data  # our layer of a previous run into this store
                run.layer = layer
                return
        suffix = next(s for _, kind, s in OUTPUTS if kind == run.output)
        name = free_name(self._viewer, f"{image_input.name} {suffix}")
        run.layer = _add_output_layer(self._viewer, run.output, data, name, metadata, placement)
        # Its first draw in a turn of its own.
        in_separate_turns(self._lifetime.unless_closed(show_layer(run.layer)))

    def _on_block_event(self, run: _SegmentRun, event: Any) -> None:
        if self.is_closed:
            return
        if run.finished and isinstance(event, (TileDone, Progress)):
            self._schedule_refresh(run.layer)  # arrived after the end: keep the final status
            return
        if isinstance(event, (TileDone, Progress)):
            # Only now is the store surely this run's (a rerun recreates it first).
            self._attach_store_layer(run)
        if isinstance(event, TileDone):
            # Blocks reach the store whole; a redraw shows every block finished so far.
            run.tiles_done += 1
            self._schedule_refresh(run.layer)
            done, total = run.blocks
            self._status.value = self._with_note(
                run, f"block {done + 1}" + (f" of {total}" if total else "") + ": tile "
                f"{event.index + 1} of {event.total}" + (
                    f" (plane {event.plane})" if run.stacked and run.plane_index is None else ""
                ),
            )  # fmt: skip
        elif isinstance(event, Progress) and event.message == "blocks":
            run.blocks = (event.done, event.total)
            self._status.value = self._with_note(run, f"block {event.done} of {event.total} done")
            self._schedule_refresh(run.layer)
            if run.progress.total != event.total:
                run.progress.total = event.total
            # Last: napari's progress may process events, delivering `finished` right here.
            run.progress.update(event.done - run.progress.n)
        elif isinstance(event, Progress):
            self._status.value = self._with_note(
                run, f"{event.message}: {event.done} of {event.total}"
            )
        else:
            self._on_event(run, event)

    def _on_block_finished(self, run: _SegmentRun) -> None:
        run.finished = True
        if self.is_closed:
            self._end_closed(run)
            return
        close_progress(run.progress)
        self._device_line.ended()
        if not run.failed:
            self._attach_store_layer(run)
        if run.layer is not None and run.layer in self._viewer.layers:
            run.layer.refresh()
        done, total = run.blocks
        if run.cancelled:
            message = (
                f"cancelled: kept {done} of {total or '?'} blocks in {run.store} "
                "(tick resume to continue)"
            )
        elif run.failed:
            message = "failed (see the notification)"
        else:
            message = f"done: {run.layer.name} (saved in {run.store})"
        self._status.value = self._with_note(run, message)
        self._last_run = run
        self._worker, self._run = None, None
        self._set_running(False)

    # ------------------------------------------------------------ worker events
    def _on_event(self, run: _SegmentRun, event: Any) -> None:
        if self.is_closed:
            return
        if isinstance(event, TileDone):
            if run.tiles_done == 0:  # the bar counts the tiles of every plane of the run
                run.progress.total = event.total * len(run.planes)
            self._write(run, event.plane, event.region, event.data)
            run.tiles_done += 1
            if run.finished:
                return  # the final status ("cancelled: ...", "done: ...") stays
            self._status.value = self._with_note(run, self._tile_status(run, event))
            # Last: napari's progress may process events, delivering `finished` right here.
            run.progress.update(1)
        elif isinstance(event, PlaneDone):
            if run.output == "labels":  # ids consistent across tile seams
                self._write(run, event.plane, (slice(None), slice(None)), event.data)
            run.planes_done.add(event.plane)
            if run.link and len(run.planes_done) == len(run.planes) and not run.finished:
                self._status.value = self._with_note(
                    run, f"linking the labels of {len(run.planes)} planes..."
                )
        elif isinstance(event, ScaleChosen):
            run.scale = event.choice
            run.scale_line = scale_status(event.choice)
            self._status.value = self._with_note(run, self._status.value.split("\n")[0])
        elif isinstance(event, JobDevice):
            self._device_line.running(event.description)
        elif isinstance(event, _Note):
            notify_info(event.message)
        elif isinstance(event, JobWarning):
            notify_warning(event.message)
        elif isinstance(event, JobFailed):
            run.failed = True
            notify_error(in_dock_words(str(event.error)))

    def _tile_status(self, run: _SegmentRun, event: TileDone) -> str:
        """ "tile 3 of 4"; in a stack "plane 2 of 6 (t=0, z=1), tile 3 of 4"."""
        if not run.stacked:
            return f"tile {run.tiles_done} of {run.progress.total}"
        tile = f"tile {event.index + 1} of {event.total}"
        where = self._where(run, event.plane)
        if len(run.planes) == 1:
            return f"plane {where}: {tile}"
        ordinal = min(len(run.planes_done) + 1, len(run.planes))
        return f"plane {ordinal} of {len(run.planes)} ({where}), {tile}"

    @staticmethod
    def _where(run: _SegmentRun, plane: int) -> str:
        """Where flat ``plane`` is: "t=1, z=2" with the viewer's axis labels, else its index."""
        position = tuple(plane_position(run.leading, plane)) if run.leading else ()
        names = run.axis_names
        named = len(names) == len(position) and all(
            n.strip() and not n.strip().lstrip("-").isdigit() for n in names
        )
        if named:
            return ", ".join(f"{n.strip()}={p}" for n, p in zip(names, position, strict=True))
        if len(position) > 1:
            return ", ".join(str(p) for p in position)
        return str(plane)

    def _write(self, run: _SegmentRun, plane: int, region: tuple, data: np.ndarray) -> None:
        if run.output == "probabilities":
            data = 1.0 - data[0]  # foreground = anything but background (class 0)
        # The flat plane index of the core, at its place among the leading axes.
        where = tuple(plane_position(run.leading, plane)) if run.leading else ()
        run.layer.data[(*where, *region)] = data
        self._schedule_refresh(run.layer)

    def _on_returned(self, run: _SegmentRun, result: Any) -> None:
        """The worker's result: with "link", the labels linked through the stack replace
        the per-plane labels the planes wrote."""
        if self.is_closed or not run.link or run.cancelled or run.failed or result is None:
            return
        layer = run.layer
        if layer is None or tuple(np.shape(result)) != tuple(layer.data.shape):
            return
        layer.data[...] = result
        run.linked = True
        self._schedule_refresh(layer)

    def _schedule_refresh(self, layer: Any) -> None:
        """Redraw at most every REFRESH_INTERVAL_MS: redrawing per tile would stall the GUI."""
        if self._refresh_pending or layer is None:
            return
        self._refresh_pending = True

        def refresh() -> None:
            self._refresh_pending = False
            if not self.is_closed and layer in self._viewer.layers:
                layer.refresh()

        QTimer.singleShot(REFRESH_INTERVAL_MS, refresh)

    def _on_error(self, run: _SegmentRun, error: Exception) -> None:
        # napari already shows unexpected errors with their traceback; just remember it.
        run.failed = True

    def _on_finished(self, run: _SegmentRun) -> None:
        run.finished = True
        if self.is_closed:
            self._end_closed(run)
            return
        close_progress(run.progress)
        self._device_line.ended()
        if run.layer in self._viewer.layers:
            run.layer.refresh()
        planes = f"{len(run.planes_done)} of {len(run.planes)} planes"
        if run.cancelled:
            kept = f"cancelled: kept {run.tiles_done} of {run.progress.total or '?'} tiles"
            message = kept + (f" ({planes} whole; not linked)" if len(run.planes) > 1 else "")
        elif run.failed:
            message = "failed (see the notification)"
        else:
            message = f"done: {run.layer.name}" + (
                f" ({len(run.planes)} planes" + (", labels linked" if run.linked else "") + ")"
                if len(run.planes) > 1
                else ""
            )
        self._status.value = self._with_note(run, message)
        self._last_run = run
        self._worker, self._run = None, None
        self._set_running(False)

    def _end_closed(self, run: _SegmentRun) -> None:
        """The worker of a closed panel finished: forget it, touching no widget."""
        close_progress(run.progress)  # its viewer's activity dock may be gone
        self._worker, self._run = None, None

    def _set_running(self, running: bool) -> None:
        self._slice_button.enabled = not running
        self._stack_button.enabled = not running
        self._cancel_button.enabled = running


__all__ = ["SegmentWidget"]

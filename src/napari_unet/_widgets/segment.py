"""The *Segment* dock widget: one click from an image layer to instance labels.

The dock lays out its fields and starts runs; the work is elsewhere:

- :class:`~napari_unet._widgets._choosers.ImageModelChoosers`: the image and model
  choosers (the active layer followed; a model per image: the user's earlier choice for
  it, else the last choice for its kind, else one fitting its pixel size or kind; the
  session's models; Browse...). A model Fine-tune trains in the same viewer is selected
  when its run ends;
- :class:`~napari_unet._widgets._channels.ChannelControls`: channel axis, channels,
  several layers as channels, RGB as channels or grey (refused until chosen);
- :class:`~napari_unet._widgets._segment_fields.SegmentFields`: pixel size (from the
  layer's scale and units; empty: unknown), object diameter, output, "link labels through
  z" (on by default when the axis before y is labelled "z"), the advanced settings;
- :class:`~napari_unet._widgets._segment_run.SegmentRun`: one run (worker, events,
  status, Cancel), into a layer filled tile by tile
  (:class:`~napari_unet._widgets._layer_output.LayerOutput`) or, for lazy, multiscale
  or "write to zarr store" images, block-wise into an OME-Zarr store shown lazily
  (:class:`~napari_unet._widgets._store_output.StoreOutput`).

**Stacks.** "Segment current slice" segments the plane at the viewer's sliders (through
the layer's world-to-data mapping), "Segment stack" every plane; the status line names
the plane ("plane 4 of 6 (t=1, z=0), tile 1 of 2"). Results take the image layer's
scale, translate and units without its channel axis.

**Options a block-wise run cannot apply** (linking through z, see
:func:`~napari_unet.core.options.blockwise_refused`; split, fill and grow-and-merge are
applied block-wise too) follow
the one policy of :func:`~napari_unet.core.frontend.run_options`, as the CLI does: one
the user set is refused (the status and a notification say why, nothing starts); one
the dock put there itself (the model's recommendation, the z-stack link default) is left
out with a warning. A block-wise run's status lists the post-processing it applied and
what it left out.

**Device.** Resolved as the core does when a run is prepared (an unavailable one is
refused in one line, nothing starts); the line under the buttons names it ("running on
CPU: no CUDA GPU found", "ran on ..." after the run).

Closing the panel or the viewer during a run cancels it; errors reach the user as
one-line notifications. Callable without clicking: :meth:`SegmentWidget.options`,
:meth:`SegmentWidget.set_options`, :attr:`SegmentWidget.status`,
:meth:`SegmentWidget.segment_current_slice`, :meth:`SegmentWidget.segment_stack`,
:meth:`SegmentWidget.cancel`, :meth:`SegmentWidget.add_model_file`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, PushButton

from napari_unet._widgets._channels import ChannelControls, ImageInput, default_link
from napari_unet._widgets._choosers import ImageModelChoosers
from napari_unet._widgets._devices import DeviceLine, resolve_device
from napari_unet._widgets._layer_output import LayerOutput
from napari_unet._widgets._lifetime import DockLifetime, warm_up
from napari_unet._widgets._notify import notify_error, notify_info, notify_warning
from napari_unet._widgets._scale import (
    AUTO,
    in_dock_words,
    layer_pixel_size,
    model_scale,
    pixel_size_text,
)
from napari_unet._widgets._segment_fields import SegmentDockOptions, SegmentFields
from napari_unet._widgets._segment_run import RunHost, SegmentRun
from napari_unet._widgets._sessions import (
    ModelSource,
    SessionModels,
    model_in_channels,
    model_recommendation,
    session_for,
)
from napari_unet._widgets._store_output import StoreOutput, StoreTargets
from napari_unet._widgets._text import StatusLabel
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.frontend import links_planes, run_options
from napari_unet.core.options import RECOMMENDABLE

if TYPE_CHECKING:
    import napari

#: set_options() keys handled by the channel controls.
_CHANNEL_KEYS = frozenset({"channel_axis", "channels", "channel_layers", "rgb"})


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
        warm_up()
        self._viewer = viewer
        self._session = session if session is not None else session_for(viewer)
        self._model_cache: dict = {}
        self._run: SegmentRun | None = None
        self._last_run: SegmentRun | None = None
        self._lifetime = DockLifetime(self.native, self._on_closed)
        self._stores = StoreTargets(self.native)
        self._choosers = ImageModelChoosers(
            viewer, self._session, parent=self.native, connect=self._lifetime.connect
        )
        self._channels = ChannelControls(viewer, self._choosers.image, self._set_link_default)
        self._fields = SegmentFields()
        #: What the pixel size field was filled in with from the layer (so a value the
        #: user did not change follows the layer's scale).
        self._prefilled_pixel_size = ""
        #: The values the dock set itself (the model's recommendation, the link default):
        #: an option still at its value here is not the user's choice.
        self._dock_set: dict[str, Any] = {}
        self._slice_button = PushButton(text="Segment current slice")
        self._stack_button = PushButton(text="Segment stack")
        self._cancel_button = PushButton(text="Cancel", enabled=False)
        self._device_line = DeviceLine()
        self._status = StatusLabel()
        self.extend([
            self._choosers.image, *self._channels.widgets, self._choosers.model,
            *self._fields.widgets, self._slice_button, self._stack_button,
            self._cancel_button, self._device_line.label, self._status,
        ])  # fmt: skip
        self._channels.sync()
        self._connect()
        self._choosers.start()
        self._apply_recommendation(self._choosers.source)
        self._set_link_default()
        self._prefill_pixel_size()

    def _connect(self) -> None:
        self._choosers.model_changed.connect(self._apply_recommendation)
        self._choosers.image.changed.connect(self._prefill_pixel_size)
        self._channels.axis.changed.connect(self._prefill_pixel_size)
        # Recommendations may differ per output kind (e.g. labels vs mask threshold).
        self._fields.output.changed.connect(
            lambda _output: self._apply_recommendation(self._choosers.source)
        )
        self._slice_button.clicked.connect(self.segment_current_slice)
        self._stack_button.clicked.connect(self.segment_stack)
        self._cancel_button.clicked.connect(self.cancel)
        connect = self._lifetime.connect  # disconnected when the panel is gone
        connect(self._viewer.layers.events.inserted, self._channels.refresh_layers)
        connect(self._viewer.layers.events.removed, self._channels.refresh_layers)
        connect(self._viewer.dims.events.axis_labels, self._on_axis_labels)

    # ------------------------------------------------------------------ choices
    def _on_axis_labels(self, _event: Any = None) -> None:
        self._channels.axis_labels_changed()  # also sets the link default

    def _set_link_default(self) -> None:
        """ "link labels through z": on when the image's axis before y is labelled "z"."""
        layer = self._choosers.image_layer
        self._fields.link.value = default_link(self._viewer, layer, self._channels.layer_axis())
        self._dock_set["link"] = self._fields.link.value

    def _apply_recommendation(self, source: Any) -> None:
        """Set the post-processing the model recommends, and say in the diameter field
        what an empty one means for it and in the model's tooltip what it records."""
        recommended = model_recommendation(source, self._fields.output.value)
        if recommended is None:
            return  # a broken file is reported when it is used, with the full message
        self._fields.recommend(recommended)
        self._dock_set.update({name: getattr(self._fields, name).value for name in RECOMMENDABLE})
        pixel_size, diameter = model_scale(source)
        self._fields.diameter.native.setPlaceholderText(_default_scale_words(pixel_size, diameter))
        known = [f"{pixel_size}/px" if pixel_size is not None else "",
                 f"objects ~{diameter:.0f} px" if diameter is not None else ""]  # fmt: skip
        recorded = ", ".join(k for k in known if k) or "no scale"
        self._choosers.model.tooltip = f"the model records {recorded}"

    def _prefill_pixel_size(self, _value: Any = None) -> None:
        """Fill the pixel size field in from the image layer's scale and units (empty when
        they are in pixels: unknown)."""
        layer = self._choosers.image_layer
        text = ""
        if layer is not None:
            text = pixel_size_text(layer_pixel_size(layer, self._channels.layer_axis()))
        self._fields.pixel_size.value = text
        self._prefilled_pixel_size = text

    def _refresh_prefill(self) -> None:
        """A field the user did not change follows the layer's scale (it may have changed
        since the layer was chosen)."""
        if self._fields.pixel_size.value == self._prefilled_pixel_size:
            self._prefill_pixel_size()

    def add_model_file(self, path: Any) -> None:
        """Offer the model file ``path`` in the chooser and select it."""
        self._choosers.add_model_file(path)

    @property
    def model(self) -> ModelSource | None:
        """The chosen model (its ``label``; ``bundle`` for a session model, ``path`` for
        a file), or None."""
        return self._choosers.source

    @property
    def model_labels(self) -> list[str]:
        """Labels of the models offered in the chooser (without "Browse...")."""
        return self._choosers.model_labels

    @property
    def model_label(self) -> str | None:
        """Label of the chosen model, as the chooser shows it (e.g. "nuclei")."""
        return self._choosers.model_label

    # ------------------------------------------------------------------ options
    def options(self) -> SegmentDockOptions:
        """Every field of the dock (see :class:`SegmentDockOptions`); its
        ``segment_options()`` are the core's options.

        Raises
        ------
        InputError
            When the pixel size or object diameter field cannot be read.
        """
        channel_axis, channels = None, None
        try:
            image_input = self._channels.input(model_in_channels(self._choosers.source))
        except InputError:
            image_input = None  # no image yet, or an RGB layer without a choice
        if image_input is not None:
            channel_axis, channels = image_input.channel_axis, image_input.channels
        layer = self._choosers.image_layer
        controls = self._channels.values()
        return SegmentDockOptions(
            image=None if layer is None else layer.name,
            model=self._choosers.model_label,
            channel_axis=channel_axis,
            channels=channels,
            channel_layers=tuple(layer.name for layer in controls["channel_layers"]),
            rgb=controls["rgb"],
            **self._fields.values(),
        )

    def set_options(self, **values: Any) -> None:
        """Set the dock's fields as a user would.

        Keys: ``image`` (a layer or its name), ``channel_axis`` (an axis of the image
        layer, or None), ``channels`` ("0,2", a sequence of ints, or None for all),
        ``channel_layers`` (layers or names; empty: the image), ``rgb`` (None,
        "channels" or "grey"), ``model`` (a label of the model chooser, a model name such
        as "em-membranes", a model file's Path, or a ModelSource; remembered for the image
        as the user's choice), the :class:`SegmentOptions` fields ``output``,
        ``tile_size`` (None: automatic), ``threshold``, ``min_size``,
        ``split_touching``, ``fill_boundaries``, ``merge_boundaries``, ``device``,
        ``link``, ``pixel_size`` (a PixelSize, text such as "0.325 um", or None:
        unknown) and ``diameter`` ("auto", a number of pixels, or None), and the
        block-wise ``to_zarr``, ``output_store`` (a path; None: the default),
        ``resume`` and ``block_size``. The image is set first, then the channel
        controls, then the model, then the rest (so an explicit ``model``, ``link`` or
        ``pixel_size`` wins over the default a new image brings).
        """
        unknown = set(values) - set(SegmentFields.KEYS) - _CHANNEL_KEYS - {"image", "model"}
        if unknown:
            raise TypeError(f"unknown options: {sorted(unknown)}")
        if "image" in values:
            self._choosers.choose_image(values.pop("image"))
        channel_values = {k: values.pop(k) for k in list(values) if k in _CHANNEL_KEYS}
        self._channels.set(**channel_values)
        if {"channel_axis", "channel_layers"} & set(channel_values):
            self._set_link_default()
        if "model" in values:
            self._choosers.choose_model(values.pop("model"))
        self._fields.set(**values)

    @property
    def status(self) -> str:
        """The status line: what the current or last run is doing or did, the scale it
        used and why, and for block-wise runs the post-processing applied."""
        return self._status.value

    @property
    def is_running(self) -> bool:
        """Whether a segmentation is in progress."""
        return self._run is not None

    @property
    def device_description(self) -> str:
        """Which device runs the current (or ran the last) segmentation and why, e.g.
        "CPU: no CUDA GPU found"; "" until a run's worker has named it."""
        return self._device_line.description

    @property
    def device_line(self) -> str:
        """The line under the buttons: "running on ..." or "ran on ..." ("" before)."""
        return self._device_line.label.value

    @property
    def progress_bar(self) -> Any:
        """The napari progress bar of the run in progress, or None (between runs, and
        before its worker started)."""
        return self._run.progress if self._run is not None else None

    @property
    def scale_choice(self) -> Any:
        """The scale the current or last run used and why
        (:class:`~napari_unet.core.scaling.ScaleChoice`), once the core chose it."""
        run = self._run or self._last_run
        return run.scale if run is not None else None

    @property
    def plane_progress(self) -> tuple[int, int]:
        """``(planes done, planes to do)`` of the current or last in-memory run."""
        run = self._run or self._last_run
        return (len(run.planes_done), len(run.planes)) if run is not None else (0, 0)

    # --------------------------------------------------------------------- runs
    def segment_current_slice(self) -> Any:
        """Segment the plane of the chosen image at the viewer's current position (any
        number of leading axes: the sliders' t, z...); return the worker."""
        return self._start(current=True)

    def segment_stack(self) -> Any:
        """Segment every plane of the chosen image (all leading axes); return the worker."""
        return self._start(current=False)

    def cancel(self) -> None:
        """Stop after the tile in progress; finished tiles stay in the output layer."""
        if self._run is not None:
            self._run.cancel()

    @property
    def is_closed(self) -> bool:
        """Whether the panel was closed (or the viewer): the widget is not used again."""
        return self._lifetime.closed

    def _on_closed(self) -> None:
        """The panel or the viewer was closed: stop the run without touching Qt."""
        if self._run is not None:
            self._run.close()

    def _start(self, *, current: bool) -> Any:
        if self.is_closed:
            return None
        if self._run is not None:
            notify_info("a segmentation is already running: cancel it first")
            return None
        try:
            run = self._new_run(current)
        except UNetError as error:
            message = in_dock_words(str(error))
            self._status.value = f"not started: {message}"
            notify_error(message)
            return None
        if run is None:
            return None
        self._run = run
        self._set_running(True)
        return run.start()

    def _prepare(self, current: bool) -> tuple[ImageInput, ModelSource, Any, list[int]]:
        """The checked input, model, core options and planes of a run (main thread).

        Raises
        ------
        UNetError
            With one line for the user: no image or model, an RGB layer without a choice,
            channels the core refuses, an unavailable device.
        """
        source = self._choosers.model.value
        in_channels = model_in_channels(source)
        image_input = self._channels.input(in_channels)
        if not isinstance(source, ModelSource):
            raise InputError(
                "no model chosen: pick a built-in or saved model, or Browse... for a file"
            )
        image_input.check(in_channels)
        self._refresh_prefill()
        count = image_input.plane_count
        planes = [image_input.plane_in_view(self._viewer)] if current else list(range(count))
        options = self.options()
        link = links_planes(options.link, options.output, count, one_plane=current)
        core = replace(
            options.segment_options(),
            channel_axis=image_input.channel_axis,
            channels=image_input.channels,
            link=link,
        )
        resolve_device(core.device)  # an unavailable device: one line, nothing started
        return image_input, source, core, planes

    def _new_run(self, current: bool) -> SegmentRun | None:
        """A run of the chosen image, into a layer or (lazy images, "write to zarr
        store") a store; None when the user kept the chosen store."""
        image_input, source, options, planes = self._prepare(current)
        self._device_line.clear()
        block_wise = image_input.lazy or bool(self._fields.to_zarr.value)
        options, notes = run_options(
            options, block_wise=block_wise, recommended=self._not_users(options)
        )
        for note in notes:
            notify_warning(note)
        if block_wise:
            plane = planes[0] if image_input.leading_shape and current else None
            settings = self._fields.values()
            output = StoreOutput.prepare(
                self._viewer, self._stores, image_input, options, plane, settings
            )
            if output is None:
                self._status.value = "not started: the output store was kept"
                return None
            output.notes = notes
        else:
            output = LayerOutput.prepare(self._viewer, image_input, options, planes)
        host = RunHost(self._lifetime, self._device_line, self._set_status,
                       lambda: self._status.value, self._run_ended)  # fmt: skip
        return SegmentRun(
            host, source, self._model_cache, output, leading=image_input.leading_shape,
            axis_names=image_input.axis_names(self._viewer),
            description=f"Segmenting {image_input.name}",
        )  # fmt: skip

    def _not_users(self, options: Any) -> frozenset[str]:
        """The options of ``options`` still at the value the dock set itself: the model's
        recommendation or the link default, not the user's choice."""
        return frozenset(
            name for name, value in self._dock_set.items() if getattr(options, name) == value
        )

    def _set_status(self, text: str) -> None:
        self._status.value = text

    def _run_ended(self, run: SegmentRun) -> None:
        """``run`` finished (or never started): the dock is free for the next."""
        if self._run is run:
            self._run = None
        if run.worker is not None and run.finished:
            self._last_run = run
        if not self.is_closed:
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self._slice_button.enabled = not running
        self._stack_button.enabled = not running
        self._cancel_button.enabled = running


__all__ = ["SegmentDockOptions", "SegmentWidget"]

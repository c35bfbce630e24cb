"""The *Fine-tune* dock widget: paint a few cells, train, watch the loss, use the model.

The dock reads its fields and layers; its parts do the rest:

- :mod:`._finetune_fields`: the training fields and :class:`FinetuneOptions` (every value
  :meth:`FinetuneWidget.options` returns and :meth:`FinetuneWidget.set_options` takes);
- :class:`~napari_unet._widgets._choosers.ImageModelChoosers`: the image and base model
  choosers, shared with the Segment dock (the active layer followed; a base per image:
  the one chosen for that image, else for its kind, else by pixel size or kind; the
  session's models; "scratch"; Browse...);
- :mod:`._finetune_run`: the runs (a worker draining
  :meth:`~napari_unet.core.train.Trainer.run`; the loss plot, status, device line and
  progress bar; **Stop** keeps the best weights and re-tunes the post-processing; Start
  resumes the last run with the settings as they are now, or says why a new one starts),
  with :mod:`._finetune_preview` (the current model's prediction on the plane in view);
- :mod:`._finetune_output`: **Save model...** and **Export for bioimage.io...**;
- :mod:`._annotation_layers`: **Correct a result** (a Labels layer as annotations to fix);
- :mod:`napari_unet.core.finetune_plan`: what they compute (annotated planes, status text).

Part of the annotations is held out of training ("hold out": auto, a fraction, planes or
off; :mod:`napari_unet.core.holdout`); its score is shown live and decides the kept
weights. The image may be an nD stack with a channel axis, or several channel layers;
"New annotations" makes a layer of the image's shape without its channel axis, and only
annotated planes are copied and trained on. The image layer's pixel size goes to
``TrainConfig.pixel_size``, so the trained model records it. An unavailable device is
refused in one line. Closing the panel or the viewer during a run stops it: nothing is
saved and nothing touches the closed widget. Errors reach the user as one-line
notifications.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Labels
from psygnal import SignalInstance

from napari_unet._widgets import _common
from napari_unet._widgets._annotation_layers import (
    FIRST_CELL_LABEL,
    ResultCorrection,
    new_annotation_layer,
)
from napari_unet._widgets._channels import ChannelControls, ImageInput
from napari_unet._widgets._choosers import ImageModelChoosers
from napari_unet._widgets._common import (
    SCRATCH,
    DockLifetime,
    SessionModels,
    StatusLabel,
    choose_layer,
    in_separate_turns,
    model_in_channels,
    notify_error,
    notify_info,
    session_for,
    wrap_words,
)
from napari_unet._widgets._finetune_fields import FinetuneOptions, TrainingFields
from napari_unet._widgets._finetune_output import ModelOutput
from napari_unet._widgets._finetune_run import TrainingRuns, TrainRequest
from napari_unet._widgets._loss_plot import LossPlot
from napari_unet._widgets._scale import layer_pixel_size
from napari_unet.core.calibration import PixelSize
from napari_unet.core.errors import UNetError
from napari_unet.core.finetune_plan import model_name, suggested_model_name
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.train import TrainConfig

if TYPE_CHECKING:
    import napari

LEGEND = (
    "<b>Paint:</b> 0 = not annotated (ignored) · 1 = background · "
    "2, 3, ... = one id per cell (touching cells need different ids)"
)
#: set_options() keys of the channel controls (``image`` is set first).
_CHANNEL_KEYS = frozenset({"image", "channel_axis", "channels", "channel_layers", "rgb"})


class _StatusLine(StatusLabel):
    """The dock's status line, telling :attr:`shown` each text it is given (a Label has
    no ``changed`` signal), so a script can follow what the dock says."""

    def __init__(self) -> None:
        self.shown = SignalInstance((str,))
        super().__init__()

    def set_value(self, value: Any) -> None:
        super().set_value(value)
        self.shown.emit(str(value))


class FinetuneWidget(Container):
    """Fine-tune a U-Net on annotations painted in napari.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are read (never modified, except the preview layer
        and new annotation layers this widget creates).
    session : SessionModels, optional
        Where trained models go; by default the one every napari-unet widget shares.
    """

    def __init__(self, viewer: napari.viewer.Viewer, session: SessionModels | None = None) -> None:
        super().__init__(labels=True)
        _common.warm_up()
        self._viewer = viewer
        self._session = session if session is not None else session_for(viewer)
        self._lifetime = DockLifetime(self.native, self._on_closed)
        self._status = _StatusLine()
        self._build_inputs()
        self._fields = TrainingFields()
        self._start_button = PushButton(text="Start")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._runs = TrainingRuns(
            viewer, self._session, self._lifetime, self._status,
            on_running=self._set_running, on_model=self._on_model,
        )  # fmt: skip
        self._output = ModelOutput(
            self._session, self._status, self._lifetime, lambda: self._runs.bundle
        )
        plot_box = Container(labels=False)
        plot_box.native.layout().addWidget(self._runs.plot)
        self.extend([
            self._image_combo, *self._channels.widgets, self._new_button,
            *self._correction.widgets, self._annotation_combo, wrap_words(Label(value=LEGEND)),
            self._fields.convention, self._base_combo, *self._fields.widgets,
            self._start_button, self._stop_button, self._runs.device_line.label, plot_box,
            self._status, self._output.save_button, self._output.export_button,
        ])  # fmt: skip
        self._channels.sync()
        self._connect()
        self._choosers.start()
        self._correction.offer()
        self._suggest_name()

    def _build_inputs(self) -> None:
        """The image and base model choosers, the image's channel controls, the
        annotations and result choosers."""
        self._choosers = ImageModelChoosers(
            self._viewer, self._session, parent=self.native, connect=self._lifetime.connect,
            model_label="base model", extra=(SCRATCH,), select_trained=False,
        )  # fmt: skip
        self._image_combo, self._base_combo = self._choosers.image, self._choosers.model
        self._channels = ChannelControls(self._viewer, self._image_combo)
        self._new_button = PushButton(text="New annotations")
        self._correction = ResultCorrection(self._viewer, self._chosen_image)
        self._annotation_combo = ComboBox(
            label="annotations", choices=self._labels_choices, nullable=True
        )

    def _connect(self) -> None:
        self._new_button.clicked.connect(self.new_annotations)
        self._correction.button.clicked.connect(lambda: self.correct_result())
        self._start_button.clicked.connect(self.start)
        self._stop_button.clicked.connect(self.stop)
        self._output.save_button.clicked.connect(lambda: self.save_model())
        self._output.export_button.clicked.connect(lambda: self.export_bioimageio())
        self._image_combo.changed.connect(self._suggest_name)
        viewer, connect = self._viewer, self._lifetime.connect  # disconnected when closed
        connect(viewer.layers.events.inserted, self._refresh_layers)
        connect(viewer.layers.events.removed, self._refresh_layers)
        connect(viewer.layers.events.inserted, self._correction.offer)
        connect(viewer.layers.events.removed, self._correction.offer)
        connect(
            viewer.dims.events.axis_labels, lambda _e=None: self._channels.axis_labels_changed()
        )

    # ------------------------------------------------------------------ choices
    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _refresh_layers(self, _event: Any = None) -> None:
        """Layers were added or removed (the image chooser follows them itself)."""
        self._annotation_combo.reset_choices()
        self._channels.refresh_layers()

    def _suggest_name(self, _value: Any = None) -> None:
        image = self._image_combo.value
        if image is not None and not self.is_training:
            self._fields.name.value = suggested_model_name(image.name)

    def _chosen_image(self) -> tuple[str, tuple[int, ...] | None] | None:
        """The chosen image's name and shape without its channel axis (None when the
        channel settings do not fit it); None when no image is chosen."""
        image = self._image_combo.value
        if image is None:
            return None
        try:
            return image.name, self._input(for_base=False).shape
        except UNetError:
            return image.name, None

    def add_model_file(self, path: str | Path) -> None:
        """Offer the model file ``path`` as a base model and select it."""
        self._choosers.add_model_file(path)

    @property
    def base_label(self) -> str | None:
        """The chosen base model as the chooser shows it ("nuclei", "scratch ...")."""
        return self._choosers.model_label

    @property
    def base_labels(self) -> list[str]:
        """Every base model offered, as the chooser shows them (without "Browse...")."""
        return self._choosers.model_labels

    # ------------------------------------------------------------------ options
    def options(self) -> FinetuneOptions:
        """Every value set in the dock (see :class:`FinetuneOptions`)."""
        channels = self._channels.values()
        return FinetuneOptions(
            image=self._image_combo.value,
            channel_axis=channels["channel_axis"],
            channels=channels["channels"],
            channel_layers=tuple(channels["channel_layers"]),
            rgb=channels["rgb"],
            **self._correction.values(),
            annotations=self._annotation_combo.value,
            base=self._choosers.source,
            **self._fields.values(),
        )

    def set_options(self, **values: Any) -> None:
        """Set the dock's fields as a user would: any :class:`FinetuneOptions` field.

        Layers (``image``, ``channel_layers``, ``annotations``, ``result``) may be given
        by name; ``channels`` as "0,2", ints, or None for all; ``patch_size`` None or 0
        for automatic; ``holdout`` as "auto", "off", "20%", "1 plane" (see
        :func:`~napari_unet.core.holdout.parse_holdout`); ``base`` as a label of the
        chooser, a model name ("em-membranes", "scratch"), a model file's Path or a
        ModelSource. The image is set first, then the channel controls, then the base
        (so an explicit ``base`` wins over the default a new image brings), then the rest.

        Raises
        ------
        TypeError
            For a key that is not an option.
        InputError
            For a value the dock cannot take (an unknown base, an unreadable hold-out).
        """
        unknown = set(values) - set(FinetuneOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown options: {sorted(unknown)}")
        if "image" in values:
            self._choosers.choose_image(values.pop("image"))
        self._channels.set(**{k: values.pop(k) for k in list(values) if k in _CHANNEL_KEYS})
        if "base" in values:
            self._choosers.choose_model(values.pop("base"))
        if "annotations" in values:
            choose_layer(self._annotation_combo, self._viewer, values.pop("annotations"))
        keys = ResultCorrection.KEYS
        self._correction.set(**{k: values.pop(k) for k in list(values) if k in keys})
        for key, value in values.items():
            self._fields.set(key, value)

    def train_config(self) -> TrainConfig:
        """The training options currently set in the widget, with the pixel size of the
        chosen image layer (from its scale and units; None when they are pixels), which
        the trained model records."""
        return self._fields.config(self.pixel_size)

    @property
    def pixel_size(self) -> PixelSize | None:
        """The chosen image's pixel size from its layer's scale and units (the first
        channel layer's when several are chosen); None when the units are pixels."""
        layers = self._channels.channel_layers()
        if layers:
            return layer_pixel_size(layers[0])
        layer = self._image_combo.value
        return None if layer is None else layer_pixel_size(layer, self._channels.layer_axis())

    def _input(self, *, for_base: bool = True) -> ImageInput:
        """The chosen input, checked by the core against the base model's channel count
        when known (``for_base``), else against the channels chosen."""
        in_channels = model_in_channels(self._base_combo.value) if for_base else None
        image_input = self._channels.input(in_channels)
        image_input.check(in_channels)
        return image_input

    # ------------------------------------------------------------------ state
    @property
    def status(self) -> str:
        """The status line's text (what the dock last said: progress, result, error)."""
        return str(self._status.value)

    @property
    def status_shown(self) -> SignalInstance:
        """Emitted with each text the status line is given (``connect(callback)``)."""
        return self._status.shown

    @property
    def is_training(self) -> bool:
        """Whether a training run is in progress."""
        return self._runs.is_training

    @property
    def is_exporting(self) -> bool:
        """Whether a bioimage.io export is in progress."""
        return self._output.export_worker is not None

    @property
    def is_closed(self) -> bool:
        """Whether the panel was closed (or the viewer): the widget is not used again."""
        return self._lifetime.closed

    @property
    def trained_bundle(self) -> ModelBundle | None:
        """The best model of the last finished or stopped run."""
        return self._runs.bundle

    @property
    def trained_model_name(self) -> str | None:
        """The name of :attr:`trained_bundle` (None before a run completed a step)."""
        return None if self._runs.bundle is None else self._runs.bundle.name

    @property
    def can_save(self) -> bool:
        """Whether Save model... is enabled (a run completed a step)."""
        return bool(self._output.save_button.enabled)

    @property
    def can_export(self) -> bool:
        """Whether Export for bioimage.io... is enabled (a model, no export running)."""
        return bool(self._output.export_button.enabled)

    @property
    def can_start(self) -> bool:
        """Whether Start is enabled (no run in progress)."""
        return bool(self._start_button.enabled)

    @property
    def can_resume(self) -> bool:
        """Whether a last run is kept for Start to resume (not after a diverged run)."""
        previous = self._runs.previous
        return previous is not None and previous.trainer is not None

    @property
    def trained_planes(self) -> int:
        """How many planes the last run trained on (its trainer's planes; 0 before)."""
        previous = self._runs.previous
        return 0 if previous is None or previous.trainer is None else len(previous.trainer.planes)

    @property
    def trained_annotations(self) -> Labels | None:
        """The annotations layer the last run trained on."""
        previous = self._runs.previous
        return None if previous is None else previous.request.annotation_layer

    @property
    def loss_plot(self) -> LossPlot:
        return self._runs.plot

    @property
    def loss_points(self) -> list[tuple[int, float]]:
        """The training loss curve: ``(step, loss)`` of each step of the current or last run."""
        return list(self._runs.plot.train)

    @property
    def device_description(self) -> str:
        """Which device runs the current (or ran the last) training run and why, e.g.
        "CPU: no CUDA GPU found"; "" until a run's worker has named it."""
        return self._runs.device_line.description

    @property
    def device_line(self) -> str:
        """The line under the buttons naming the device ("running on ...", "ran on ...")."""
        return str(self._runs.device_line.label.value)

    @property
    def progress_bar(self) -> Any:
        """The napari progress bar of the run in progress (``n`` of ``total`` steps), or
        ``None`` between runs and before the worker started."""
        return self._runs.run.progress if self._runs.run is not None else None

    @property
    def result_to_correct(self) -> Labels | None:
        """The Labels layer "Correct a result" converts (the newest result by default)."""
        return self._correction.result.value

    # ------------------------------------------------------------- annotations
    def new_annotations(self) -> Labels | None:
        """Add "<image> annotations": an empty uint16 Labels layer ready to paint.

        It has the image's shape without the channel axis (every plane of an nD stack
        can be painted) and the image layer's scale and translate for those axes.
        """
        try:  # annotations do not depend on the base model
            image_input = self._input(for_base=False)
        except UNetError as error:
            notify_error(error)
            return None
        layer = new_annotation_layer(self._viewer, image_input)
        self._use_annotations(layer)
        return layer

    def _use_annotations(self, layer: Labels) -> None:
        """Train on ``layer`` (sparse convention) and select it for painting."""
        choose_layer(self._annotation_combo, self._viewer, layer)
        self._fields.convention.value = "sparse"
        self._viewer.layers.selection.active = layer

    def correct_result(self, layer: Labels | str | None = None) -> Labels | None:
        """Add "<result> corrections": ``layer`` (default: the chosen result) as sparse
        annotations to fix with napari's label tools and train on.

        On the plane in view (every plane with "all planes"; the whole image for a 2D
        layer) each object becomes a cell (2, 3, ...) and the rest background (1); other
        planes stay unannotated (0). The new layer has the result's shape, scale,
        translate and units; it becomes the annotations layer, with the sparse
        convention, and its brush paints a new id. ``layer`` itself is not changed.
        """
        corrected = self._correction.correct(layer)
        if corrected is None:
            return None
        added, status = corrected
        self._use_annotations(added)
        self._status.value = status
        return added

    # ------------------------------------------------------------------ training
    def start(self) -> Any:
        """Start (or resume) training on the chosen image and annotations; return the
        worker (None when nothing started: the reason is notified in one line)."""
        if self.is_closed:
            return None
        if self.is_training:
            notify_info("training is already running: stop it first")
            return None
        try:
            worker, steps = self._runs.prepare(self._request())
        except UNetError as error:
            notify_error(error)
            return None
        # The preview layer is added hidden in the turn after the click, shown (its first
        # draw) in the next, and the worker started in the last, so each shares its turn
        # with nothing else (see in_separate_turns).
        in_separate_turns(*steps)
        return worker

    def _request(self) -> TrainRequest:
        """What Start trains, checked (one-line UNetErrors)."""
        image_input = self._input()
        return TrainRequest.checked(
            image_input,
            self._annotation_combo.value,
            self._base_combo.value,
            name=model_name(self._fields.name.value),
            convention=self._fields.convention.value,
            config=self.train_config(),
            plane=image_input.plane_in_view(self._viewer),
        )

    def stop(self) -> None:
        """Stop after the current step; the best weights so far become the model."""
        self._runs.stop()

    def _on_closed(self) -> None:
        """The panel or the viewer was closed: stop training without touching Qt."""
        self._runs.closed()

    def _set_running(self, running: bool) -> None:
        self._start_button.enabled = not running
        self._stop_button.enabled = running
        self._new_button.enabled = not running
        self._correction.button.enabled = not running

    def _on_model(self) -> None:
        self._output.model_ready()

    # ------------------------------------------------------------------ saving
    def save_model(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path | None:
        """Write the trained model to ``path`` (asks with a file dialog when omitted),
        atomically; an existing ``path`` is replaced only with ``overwrite`` or after the
        dialog asked. None when nothing was written (the reason notified in one line)."""
        return self._output.save(path, overwrite, lambda: self._output.ask_save_path(self.native))

    def save_to_user_models(
        self, name: str | None = None, *, overwrite: bool = False
    ) -> Path | None:
        """Save the trained model by name in the user's model folder (listed everywhere)."""
        return self._output.save_by_name(name, overwrite)

    def export_bioimageio(self, path: str | Path | None = None, *, overwrite: bool = False) -> Any:
        """Export the trained model as a bioimage.io package (``.zip``) in a background
        worker; return it (None when nothing started: no model, cancelled, refused, an
        export running, the panel closed). Asks with a save dialog when ``path`` is
        omitted; an existing ``path`` is replaced only with ``overwrite`` or after the
        dialog asked. The status says "exporting NAME..." then "exported PATH"."""
        return self._output.export(
            path, overwrite, lambda: self._output.ask_export_path(self.native)
        )


__all__ = ["FIRST_CELL_LABEL", "FinetuneOptions", "FinetuneWidget"]

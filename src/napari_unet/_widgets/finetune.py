"""The *Fine-tune* dock widget: paint a few cells, train, watch the loss, use the model.

Training runs in a ``thread_worker`` draining :meth:`~napari_unet.core.train.Trainer.run`;
the dock draws the loss curve live and a preview layer shows the current model's
prediction on the plane in view. **Stop** (``Trainer.request_stop``) keeps the best
weights.

**A score to trust.** Part of the annotations is held out of training ("hold out" in
the advanced settings: auto = one plane of several, else 20 % of the cells; a fraction,
planes, or off; :mod:`napari_unet.core.holdout`). Its score (F1 at IoU 0.5, or IoU for
a binary mask) is shown live beside the loss, in the status and as green points on the
plot, and decides the kept best weights. When a run ends (or is stopped) the
post-processing is re-tuned on the training annotations; the model recommends it, and
the status compares the held-out score at the base's settings with the re-tuned ones.
When a run ends, its best model joins the session's models, so the Segment widget
offers it at once; **Save model...** writes it to a file (atomically; it is enabled only
once a step has completed), and **Export for bioimage.io...** writes it as a bioimage.io
model package (``.zip``, for deepImageJ, ilastik, QuPath and the BioImage Model Zoo; see
:mod:`napari_unet.core.export`) in a background worker: the first export imports
bioimageio (~5 s) and each takes a few seconds more. A loss that becomes NaN or
infinite ends the run with the last good weights, and the dock says so.

**Stacks and channels.** The image may be an nD stack ((t, z, y, x)...) with a channel
axis, or several layers chosen as its channels (the same channel controls as Segment).
"New annotations" makes a layer of the image's shape without its channel axis, so any
plane can be painted; only annotated planes are copied and trained on. A "scratch" base
reads as many channels as are chosen; the preview shows the plane at the sliders.

**Scale.** The image layer's pixel size (its scale and units; unknown when they are
pixels) goes to ``TrainConfig.pixel_size``, so the trained model records it with the
median diameter of the painted cells; the status line says both when a run ends.

**Device and progress.** The device is resolved as the core does (``pick_device`` with
the "device" choice) when a run is prepared: an unavailable one is refused in one line
and nothing starts. The worker names it first (naming a CUDA GPU initialises CUDA, so not
on the GUI thread), and a line under the buttons says "running on CPU: no CUDA GPU
found" (or "CUDA: <GPU name> (cuda:0)"...), "ran on ..." once the run ended; a resumed
run names the device its network is on. A napari progress bar (the viewer's activity
dock) counts the run's steps (a resumed run's own steps); it closes when the run ends,
is stopped, fails, or the panel or viewer closes.

**Resume.** Stop, paint more and Start continue the same run (network, optimiser, step
count) with the settings as they are now: a changed learning rate, batch size, border
weight, augmentation, patch size or device takes effect
(:meth:`~napari_unet.core.train.Trainer.update_config`), and the status says what
changed ("resumed at step 40 with learning rate 0.001 -> 0.0001"). A run cannot change
its network: another base model, image, channels or annotations layer starts a new run,
and the status says why.

**Readable.** The status lines wrap within the dock's width (file paths too, see
:class:`~napari_unet._widgets._common.StatusLabel`); the loss plot sizes its margins to
its labels and turns logarithmic when the loss spans more than a decade.

Closing the panel or the viewer during a run stops it: nothing is saved and nothing
touches the closed widget (see :class:`~napari_unet._widgets._common.DockLifetime`).
An export in progress cannot be interrupted: it completes (the package is written
atomically, as asked) without touching the closed widget.
Errors reach the user as one-line notifications, replaced NaN/infinite pixels as a
warning.

**Correcting a result.** "Correct a result" turns a Labels layer (a Segment result, or
labels loaded from disk; chosen in "result to correct") into a new "<result>
corrections" layer for the plane in view (or all planes): its objects become cells
(2, 3, ...), the rest of the plane background (1), other planes stay unannotated (0)
(:func:`~napari_unet.core.annotations.annotations_from_labels`). The user fixes it with
napari's label tools and trains on it; the result layer itself is never changed.

Callable without clicking: :meth:`FinetuneWidget.new_annotations`,
:meth:`FinetuneWidget.correct_result`,
:meth:`FinetuneWidget.start`, :meth:`FinetuneWidget.stop`,
:meth:`FinetuneWidget.save_model`, :meth:`FinetuneWidget.save_to_user_models`,
:meth:`FinetuneWidget.export_bioimageio`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker

from napari_unet._widgets import _common
from napari_unet._widgets._channels import ChannelControls, ImageInput
from napari_unet._widgets._common import (
    BROWSE,
    SCRATCH,
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
    wrap_words,
)
from napari_unet._widgets._loss_plot import LossPlot
from napari_unet._widgets._scale import layer_pixel_size
from napari_unet.core import export as bioimageio_export
from napari_unet.core.annotations import (
    RESULT_BOUNDARY_BAND,
    annotations_from_labels,
    check_annotation_matches,
)
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import AnnotationError, InputError, UNetError
from napari_unet.core.events import Preview, TrainingFinished, TrainStep, Validation
from napari_unet.core.holdout import parse_holdout
from napari_unet.core.io import as_planes
from napari_unet.core.model import SMALL
from napari_unet.core.modelfile import ModelBundle, save_user_model, user_models_dir
from napari_unet.core.modelfile import save_model as write_model_file
from napari_unet.core.postprocess import foreground_probability
from napari_unet.core.safety import free_path
from napari_unet.core.train import ConfigUpdate, TrainConfig, Trainer

if TYPE_CHECKING:
    import napari

LEGEND = (
    "<b>Paint:</b> 0 = not annotated (ignored) · 1 = background · "
    "2, 3, ... = one id per cell (touching cells need different ids)"
)
HOLDOUT_TIP = (
    "annotations kept out of training and scored live (F1 at IoU 0.5; IoU for a mask): "
    "auto (one plane of several, else 20% of the cells), off, a fraction of the cells "
    "such as 20%, or a number of planes such as 1 plane"
)
#: set_options() keys of the channel controls (``image`` is set first).
_CHANNEL_KEYS = frozenset({"image", "channel_axis", "channels", "channel_layers", "rgb"})
#: set_options() keys of the training settings, and their fields.
_OPTION_WIDGETS = {
    "steps": "_steps",
    "learning_rate": "_learning_rate",
    "batch_size": "_batch_size",
    "patch_size": "_patch_size",
    "augment": "_augment",
    "blur": "_blur",
    "invert_contrast": "_invert",
    "preview_every": "_preview_every",
    "device": "_device",
    "name": "_name",
    "result_planes": "_result_planes",
    "boundary_band": "_boundary_band",
    "holdout": "_holdout",
}
#: Brush defaults of new annotation layers: paint a first cell at once.
BRUSH_SIZE = 8
FIRST_CELL_LABEL = 2


@dataclass(frozen=True)
class _TrainerReady:
    """Yielded once the worker has prepared the data (weight maps) and built the network."""

    trainer: Trainer


@dataclass(frozen=True)
class _Resumed:
    """Yielded when a run resumes: what it now does differently, in one line."""

    step: int
    changes: str


#: Settings a resume does not mention: the steps are per Start, and the validation
#: interval follows them.
_UNREMARKABLE = frozenset({"steps", "validation_every"})


def _resume_note(step: int, update: ConfigUpdate, convention: tuple[str, str]) -> _Resumed:
    """The :class:`_Resumed` event of a run resumed at ``step`` after ``update``, and a
    change of ``convention`` ``(old, new)``."""
    changed = {k: v for k, v in update.changed.items() if k not in _UNREMARKABLE}
    notes = [ConfigUpdate(changed, update.kept).describe()]
    if convention[0] != convention[1]:
        notes.append(f"convention {convention[0]} -> {convention[1]}")
    return _Resumed(step, "; ".join(note for note in notes if note))


@reporting_errors
def _train_job(
    source: ModelSource,
    cache: dict,
    images: np.ndarray,
    annotations: np.ndarray,
    *,
    convention: str,
    config: TrainConfig,
    preview_image: np.ndarray | None,
    name: str,
    trainer: Trainer | None,
    channel_axis: int | None = None,
    channels: tuple[int, ...] | None = None,
    channel_count: int = 1,
):
    """Worker generator: name the device, prepare (or resume) a :class:`Trainer`, run it.

    A new network ("scratch") reads ``channel_count`` channels.
    """
    if trainer is None:
        yield job_device(config.device)
        base = source.load(cache)
        trainer = Trainer(
            base if base is not None else replace(SMALL, in_channels=channel_count),
            images,
            annotations,
            convention=convention,
            config=config,
            preview_image=preview_image,
            name=name,
            channel_axis=channel_axis,
            channels=channels,
        )
    else:  # resume: same network and optimiser; the settings and annotations as now
        update = trainer.update_config(config)  # may move the network to another device
        yield job_device(trainer.config.device, trainer.device)
        convention = (trainer.convention, convention)
        trainer.convention, trainer.name = convention[1], name
        trainer.update_annotations(images, annotations)
        trainer.preview_image = preview_image
        yield _resume_note(trainer.step, update, convention)
    yield _TrainerReady(trainer)
    yield from trainer.run(config.steps)


@dataclass(frozen=True)
class _Exported:
    """Yielded by :func:`_export_events` once the package is written."""

    path: Path


@reporting_errors
def _export_events(bundle: ModelBundle, path: Path, overwrite: bool):
    """Write ``bundle`` as a bioimage.io package at ``path``; yield :class:`_Exported`
    (or, through :func:`reporting_errors`, a :class:`JobFailed` / :class:`JobWarning`).

    The core function is looked up on its module at call time (tests replace it).
    """
    yield _Exported(bioimageio_export.export_bioimageio(bundle, path, overwrite=overwrite))


def _export_job(bundle: ModelBundle, path: Path, overwrite: bool) -> list[Any]:
    """Worker function: the events of :func:`_export_events`, returned together.

    A function worker, not a generator worker: superqt's generator worker takes any
    ``RuntimeError`` for a deleted worker and then never emits ``finished``, so a bug in
    the export (the core raises RuntimeError for those) would leave the dock exporting
    forever. A function worker relays it to napari (with its traceback) and finishes.
    """
    return list(_export_events(bundle, path, overwrite))


@dataclass
class _ExportRun:
    """State of one export, owned by the main thread."""

    name: str
    path: Path
    #: The package written; ``None`` until then, and after a failure.
    exported: Path | None = None


@dataclass
class _TrainRun:
    """State of one training run, owned by the main thread."""

    image_layer: Any
    annotation_layer: Any
    source: ModelSource
    preview_plane: int
    #: The input (image or channel layers, channel settings) and where the previewed
    #: plane is among its leading axes.
    image_input: ImageInput | None = None
    preview_position: tuple[int, ...] = ()
    #: Steps this run is to take, and the napari progress bar over them (created when
    #: the worker starts, the turn after the click; closed when the run ends).
    steps: int = 0
    progress: Any = None
    trainer: Trainer | None = None
    stopped: bool = False
    failed: bool = False
    finished: bool = False
    finished_event: TrainingFinished | None = None
    #: The last held-out score, as the step status shows it ("  held-out F1@0.5 0.840").
    score: str = ""
    #: A line about how this run relates to the previous one ("resumed at step 40 with
    #: learning rate 0.001 -> 0.0001"; "new run: ..."), shown under the run's status.
    note: str = ""


def _annotated_planes(
    image_input: ImageInput, annotations: Any
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Copies of the annotated planes: ``(images, annotations, channel_axis)``.

    ``images`` is ``(K, H, W)`` or, with channels, ``(K, ...)`` with the plane's channel
    axis at ``channel_axis``; ``annotations`` is ``(K, H, W)``. Copies, because the user
    may keep painting while training runs on what was painted; only annotated planes,
    because the others are not trained on (and a lazy stack is never read whole).

    Raises
    ------
    AnnotationError
        When nothing is annotated.
    """
    height, width = image_input.shape[-2:]
    flat = np.asarray(annotations).reshape(-1, height, width)
    annotated = np.flatnonzero(flat.reshape(len(flat), -1).any(axis=1))
    if annotated.size == 0:
        raise AnnotationError(
            "nothing is annotated: paint some background with label 1 and at least one "
            "cell with label 2 or higher"
        )
    images = np.stack([np.array(image_input.plane(int(k)), copy=True) for k in annotated])
    axis = image_input.plane_channel_axis
    return images, flat[annotated].copy(), None if axis is None else axis + 1


def _is_annotation_layer(layer: Any) -> bool:
    """Whether ``layer`` is annotations this dock made (new, or corrections of a result)."""
    marker = layer.metadata.get(_common.METADATA_KEY) if is_ours(layer) else None
    role = marker.get("role") if isinstance(marker, dict) else None
    return isinstance(role, str) and role.endswith(("/annotations", "/corrections"))


def _with_note(status: str, note: str) -> str:
    """``status``, and ``note`` on a line of its own when there is one."""
    return f"{status}\n{note}" if note else status


def _scale_words(bundle: ModelBundle) -> str:
    """What the trained model records of its scale: "objects ~22 px at 0.5 µm/px"."""
    pixel_size = getattr(bundle, "pixel_size", None)
    diameter = getattr(bundle, "object_diameter", None)
    objects = f"objects ~{diameter:.0f} px" if diameter is not None else "no object size"
    where = f" at {pixel_size}/px" if pixel_size is not None else " (pixel size unknown)"
    return f"it records {objects}{where}"


#: Status while the run's last step is done and the post-processing is being re-tuned.
RETUNING = "re-tuning the post-processing on the training annotations..."


def _score_words(trainer: Trainer) -> str:
    """The held-out score and the re-tuned post-processing, for the final status."""
    if trainer.tuning is not None:
        return trainer.tuning_summary()
    if trainer.holdout is None:
        return trainer.holdout_note
    score = trainer.best_score
    return f"held-out {trainer.holdout.score_name} {score:.3f}" if score is not None else ""


def _preview_plane(image_input: ImageInput, plane: int) -> np.ndarray:
    """The previewed plane as the network reads it: ``(H, W)``, or ``(C, H, W)`` with the
    chosen channels in order."""
    data = np.array(image_input.plane(plane), copy=True)
    planes, _restore = as_planes(
        data,
        in_channels=image_input.channel_count,
        channel_axis=image_input.plane_channel_axis,
        channels=image_input.channels,
        rgb=False,
    )
    return np.asarray(planes[0])


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
        self._browsed: list[Path] = []
        self._model_cache: dict = {}
        self._worker: Any = None
        self._export_worker: Any = None
        self._run: _TrainRun | None = None
        self._previous: _TrainRun | None = None
        self._bundle: ModelBundle | None = None
        self._last_base: Any = None
        self._lifetime = DockLifetime(self.native, self._on_closed)

        self._image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._channels = ChannelControls(viewer, self._image_combo)
        self._new_button = PushButton(text="New annotations")
        self._annotation_combo = ComboBox(
            label="annotations", choices=self._labels_choices, nullable=True
        )
        self._result_combo = ComboBox(
            label="result to correct", choices=self._result_choices, nullable=True
        )
        self._result_planes = ComboBox(
            label="correct", choices=[("plane in view", "view"), ("all planes", "all")]
        )
        self._boundary_band = SpinBox(
            label="unsure boundary (px)",
            value=RESULT_BOUNDARY_BAND,
            min=0,
            max=20,
            tooltip="leave this many px around the result's object boundaries unannotated, so "
            "training does not learn the result's own boundary placement (0: keep them)",
        )
        self._correct_button = PushButton(
            text="Correct a result",
            tooltip="copy the result as annotations (objects = cells, the rest background) "
            "to fix with the label tools and train on",
        )
        self._legend = wrap_words(Label(value=LEGEND))
        self._convention = ComboBox(
            label="convention",
            choices=[
                ("sparse (0 unpainted, 1 bg, 2+ cells)", "sparse"),
                ("dense (0 bg, 1+ cells)", "dense"),
                ("binary (0 bg, 1 fg)", "binary"),
                ("auto", "auto"),
            ],
            value="sparse",
        )
        self._base_combo = ComboBox(label="base model", choices=self._base_choices)
        self._steps = SpinBox(label="steps", value=200, min=1, max=100_000, step=50)
        self._learning_rate = FloatSpinBox(
            label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4
        )
        self._learning_rate.native.setDecimals(5)
        self._advanced_toggle = CheckBox(text="advanced settings", value=False)
        self._w0 = FloatSpinBox(
            label="border weight w0",
            value=10.0,
            min=0.0,
            max=100.0,
            step=1.0,
            tooltip="extra loss weight between touching cells (paper eq. 2)",
        )
        self._sigma = FloatSpinBox(
            label="border sigma (px)",
            value=5.0,
            min=0.5,
            max=50.0,
            step=0.5,
            tooltip="width of the border weight (paper eq. 2)",
        )
        self._augment = CheckBox(text="augmentation (elastic, flips, intensity)", value=True)
        self._blur = FloatSpinBox(
            label="blur (px)",
            value=0.0,
            min=0.0,
            max=20.0,
            step=0.5,
            tooltip="transmitted light: blur each training patch by a Gaussian of up to this "
            "sigma (slightly defocused frames; the DIC recipe uses 1.5; 0: off)",
        )
        self._invert = FloatSpinBox(
            label="invert contrast",
            value=0.0,
            min=0.0,
            max=1.0,
            step=0.1,
            tooltip="transmitted light: probability of inverting a patch's contrast about its "
            "mean (the opposite DIC shear or phase halo; the DIC recipe uses 0.5; 0: off)",
        )
        self._batch_size = SpinBox(label="batch size", value=4, min=1, max=64)
        self._patch_size = SpinBox(
            label="patch size (px)",
            value=0,
            min=0,
            max=1024,
            step=16,
            tooltip="network input patch size; 0 picks about 128 px of output",
        )
        self._preview_every = SpinBox(
            label="preview every",
            value=10,
            min=0,
            max=10_000,
            tooltip="steps between previews of the plane in view (0: never)",
        )
        self._device = ComboBox(label="device", choices=_common.device_choices(), value="auto")
        self._holdout = LineEdit(label="hold out", value="auto", tooltip=HOLDOUT_TIP)
        self._advanced = Container(
            widgets=[self._w0, self._sigma, self._augment, self._blur, self._invert,
                     self._batch_size, self._patch_size, self._preview_every, self._device,
                     self._holdout],
            labels=True,
            visible=False,
        )  # fmt: skip
        self._name = LineEdit(label="model name", value="fine-tuned")
        self._start_button = PushButton(text="Start")
        self._stop_button = PushButton(text="Stop", enabled=False)
        self._device_line = DeviceLine()
        self._plot = LossPlot()
        self._plot_box = Container(labels=False)
        self._plot_box.native.layout().addWidget(self._plot)
        self._status = StatusLabel()
        self._save_button = PushButton(text="Save model...", enabled=False)
        self._export_button = PushButton(
            text="Export for bioimage.io...",
            enabled=False,
            tooltip="write the trained model as a bioimage.io package (.zip) for deepImageJ, "
            "ilastik, QuPath and the BioImage Model Zoo",
        )
        self.extend([
            self._image_combo, *self._channels.widgets, self._new_button,
            self._result_combo, self._result_planes, self._boundary_band, self._correct_button,
            self._annotation_combo, self._legend, self._convention, self._base_combo,
            self._steps, self._learning_rate,
            self._advanced_toggle, self._advanced, self._name, self._start_button,
            self._stop_button, self._device_line.label, self._plot_box, self._status,
            self._save_button, self._export_button,
        ])  # fmt: skip
        self._channels.sync()

        self._last_base = self._base_combo.value
        self._new_button.clicked.connect(self.new_annotations)
        self._correct_button.clicked.connect(lambda: self.correct_result())
        self._start_button.clicked.connect(self.start)
        self._stop_button.clicked.connect(self.stop)
        self._save_button.clicked.connect(lambda: self.save_model())
        self._export_button.clicked.connect(lambda: self.export_bioimageio())
        self._advanced_toggle.changed.connect(self._toggle_advanced)
        self._base_combo.changed.connect(self._on_base_chosen)
        self._image_combo.changed.connect(self._suggest_name)
        connect = self._lifetime.connect  # disconnected when the panel is gone
        connect(self._session.changed, self._on_session_changed)
        connect(viewer.layers.events.inserted, self._refresh_layers)
        connect(viewer.layers.events.removed, self._refresh_layers)
        connect(viewer.layers.events.inserted, self._offer_result)
        connect(viewer.layers.events.removed, self._offer_result)
        connect(viewer.layers.selection.events.active, self._follow_active_layer)
        connect(viewer.dims.events.axis_labels, self._on_axis_labels)
        self._follow_active_layer()
        self._offer_result()
        self._suggest_name()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _base_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        sources = model_sources(self._session, self._browsed)
        choices = model_choices(sources)
        return [*choices[:-1], (SCRATCH.label, SCRATCH), choices[-1]]

    def _refresh_layers(self, _event: Any = None) -> None:
        self._image_combo.reset_choices()
        self._annotation_combo.reset_choices()
        self._channels.refresh_layers()
        self._follow_active_layer()

    def _on_axis_labels(self, _event: Any = None) -> None:
        self._channels.axis_labels_changed()

    def _follow_active_layer(self, _event: Any = None) -> None:
        active = self._viewer.layers.selection.active
        # Our own results (previews, probabilities) are not what the user wants to process.
        if isinstance(active, Image) and active in self._viewer.layers and not is_ours(active):
            self._image_combo.reset_choices()
            self._image_combo.value = active

    def _on_session_changed(self, _bundle: ModelBundle | None) -> None:
        previous = self._base_combo.value
        self._base_combo.reset_choices()
        if previous is not None and previous != BROWSE:
            try:
                self._base_combo.value = previous
            except ValueError:  # that model is gone
                pass
        self._last_base = self._base_combo.value

    def _on_base_chosen(self, value: Any) -> None:
        if value != BROWSE:
            self._last_base = value
            return
        path = ask_model_file(self.native)
        if path is None:
            self._base_combo.value = self._last_base
        else:
            self.add_model_file(path)

    def add_model_file(self, path: str | Path) -> None:
        """Offer the model file ``path`` as a base model and select it."""
        path = Path(path)
        if path not in self._browsed:
            self._browsed.append(path)
        self._base_combo.reset_choices()
        self._base_combo.value = ModelSource("", "file", path=path)
        self._last_base = self._base_combo.value

    def _suggest_name(self, _value: Any = None) -> None:
        image = self._image_combo.value
        if image is not None and not self.is_training:
            stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in image.name)
            self._name.value = f"{stem.strip('-') or 'model'}-finetuned"

    def _toggle_advanced(self, shown: bool) -> None:
        self._advanced.visible = shown

    # ------------------------------------------------------------------ state
    @property
    def is_training(self) -> bool:
        """Whether a training run is in progress."""
        return self._worker is not None

    @property
    def trained_bundle(self) -> ModelBundle | None:
        """The best model of the last finished or stopped run."""
        return self._bundle

    @property
    def is_exporting(self) -> bool:
        """Whether a bioimage.io export is in progress."""
        return self._export_worker is not None

    @property
    def loss_plot(self) -> LossPlot:
        return self._plot

    @property
    def device_description(self) -> str:
        """Which device runs the current (or ran the last) training run and why, e.g.
        "CPU: no CUDA GPU found"; "" until a run's worker has named it."""
        return self._device_line.description

    @property
    def progress_bar(self) -> Any:
        """The napari progress bar of the run in progress (``n`` of ``total`` steps), or
        ``None`` between runs and before the worker started."""
        return self._run.progress if self._run is not None else None

    def train_config(self) -> TrainConfig:
        """The training options currently set in the widget, with the pixel size of the
        chosen image layer (from its scale and units; None when they are pixels), which
        the trained model records."""
        return TrainConfig(
            steps=int(self._steps.value),
            batch_size=int(self._batch_size.value),
            patch_size=int(self._patch_size.value) or None,
            learning_rate=float(self._learning_rate.value),
            w0=float(self._w0.value),
            sigma=float(self._sigma.value),
            augment=AugmentConfig(
                enabled=bool(self._augment.value),
                blur=float(self._blur.value),
                invert=float(self._invert.value),
            ),
            validation_every=max(1, min(25, int(self._steps.value) // 4)),
            preview_every=int(self._preview_every.value),
            device=self._device.value,
            pixel_size=self.pixel_size,
            holdout=self._holdout.value,
        )

    @property
    def pixel_size(self) -> Any:
        """The chosen image's pixel size (a :class:`~napari_unet.core.calibration.PixelSize`)
        from its layer's scale and units (the first channel layer's when several are
        chosen); None when the layer's units are pixels."""
        layers = self._channels.channel_layers()
        if layers:
            return layer_pixel_size(layers[0])
        layer = self._image_combo.value
        return None if layer is None else layer_pixel_size(layer, self._channels.layer_axis())

    def set_options(self, **values: Any) -> None:
        """Set the widget's fields as a user would.

        Keys: the channel controls, ``image`` (a layer or its name), ``channel_axis`` (an
        axis of the image layer, or None), ``channels`` ("0,2", ints, or None for all),
        ``channel_layers`` (layers or names), ``rgb`` (None, "channels" or "grey"); and
        the training settings ``steps``, ``learning_rate``, ``batch_size``,
        ``patch_size`` (None or 0: automatic), ``augment``, ``blur`` and
        ``invert_contrast`` (transmitted light, see docs/transmitted-light.md),
        ``preview_every`` (0: never), ``device``, ``name`` (the trained model's) and
        ``holdout`` ("auto", "off", "20%", "1 plane"; see
        :func:`~napari_unet.core.holdout.parse_holdout`). For
        "Correct a result": ``result`` (the Labels layer to correct, or its name),
        ``result_planes`` ("view": the plane in view, or "all") and ``boundary_band`` (px
        around the result's boundaries left unannotated).
        """
        unknown = set(values) - _CHANNEL_KEYS - set(_OPTION_WIDGETS) - {"result"}
        if unknown:
            raise TypeError(f"unknown options: {sorted(unknown)}")
        if "result" in values:
            choose_layer(self._result_combo, self._viewer, values.pop("result"))
        if "image" in values:
            choose_layer(self._image_combo, self._viewer, values.pop("image"))
        self._channels.set(**{k: values.pop(k) for k in list(values) if k in _CHANNEL_KEYS})
        for key, value in values.items():
            if key == "patch_size":
                value = value or 0
            elif key == "holdout":
                value = parse_holdout(value).text
            getattr(self, _OPTION_WIDGETS[key]).value = value

    def _input(self, *, for_base: bool = True) -> ImageInput:
        """The chosen input, checked by the core against the base model's channel count
        when known (``for_base``), else against the channels chosen."""
        in_channels = model_in_channels(self._base_combo.value) if for_base else None
        image_input = self._channels.input(in_channels)
        image_input.check(in_channels)
        return image_input

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
        layer = self._viewer.add_labels(
            np.zeros(image_input.shape, dtype=np.uint16),
            name=free_name(self._viewer, f"{image_input.name} annotations"),
            metadata=our_metadata(f"{image_input.name}/annotations"),
            **image_input.placement(),
        )
        layer.brush_size = BRUSH_SIZE
        layer.selected_label = FIRST_CELL_LABEL
        layer.mode = "paint"
        self._annotation_combo.reset_choices()
        self._annotation_combo.value = layer
        self._convention.value = "sparse"
        self._viewer.layers.selection.active = layer
        return layer

    # ------------------------------------------------------------- correcting a result
    def _result_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """Labels layers but our annotations, newest (top) first: the default."""
        return [
            (layer.name, layer)
            for layer in reversed(self._viewer.layers)
            if isinstance(layer, Labels) and not _is_annotation_layer(layer)
        ]

    def _offer_result(self, event: Any = None) -> None:
        """A newly added result (a Segment result, a labels file) becomes the one to
        correct; with none chosen, the newest result."""
        layer = getattr(event, "value", None) if getattr(event, "type", "") == "inserted" else None
        self._result_combo.reset_choices()
        if isinstance(layer, Labels) and not _is_annotation_layer(layer):
            self._result_combo.value = layer
        elif self._result_combo.value is None:
            results = [choice for choice in self._result_combo.choices if choice is not None]
            self._result_combo.value = results[0] if results else None

    @property
    def result_to_correct(self) -> Labels | None:
        """The Labels layer "Correct a result" converts (the newest result by default)."""
        return self._result_combo.value

    def correct_result(self, layer: Labels | str | None = None) -> Labels | None:
        """Add "<result> corrections": ``layer`` (default: the chosen result) as sparse
        annotations to fix with napari's label tools and train on.

        On the plane in view (every plane with "all planes"; the whole image for a 2D
        layer) each object becomes a cell (2, 3, ...) and the rest background (1); other
        planes stay unannotated (0). The new layer has the result's shape, scale,
        translate and units; it becomes the annotations layer, with the sparse
        convention, and its brush paints a new id. ``layer`` itself is not changed.
        """
        if isinstance(layer, str):
            layer = self._viewer.layers[layer] if layer in self._viewer.layers else layer
        result = self._result_combo.value if layer is None else layer
        if not isinstance(result, Labels):
            notify_error(
                "no result to correct: segment an image or open a labels file, and choose "
                "it in 'result to correct'"
            )
            return None
        source = ImageInput((result,), result.data[0] if result.multiscale else result.data)
        try:
            position = self._correct_position(source)
            annotations = annotations_from_labels(
                source.data,
                None if position is None else [position],
                boundary_band=int(self._boundary_band.value),
            )
        except UNetError as error:
            notify_error(error)
            return None
        added = self._viewer.add_labels(
            annotations,
            name=free_name(self._viewer, f"{result.name} corrections"),
            metadata=our_metadata(f"{result.name}/corrections"),
            **source.placement(),
        )
        added.brush_size = BRUSH_SIZE
        added.selected_label = min(int(annotations.max()) + 1, np.iinfo(annotations.dtype).max)
        choose_layer(self._annotation_combo, self._viewer, added)
        self._convention.value = "sparse"
        self._viewer.layers.selection.active = added
        self._status.value = self._corrections_status(source, position, annotations)
        return added

    def _correct_position(self, source: ImageInput) -> tuple[int, ...] | None:
        """The plane to correct: the one in view; None for all planes (or a 2D result)."""
        if self._result_planes.value == "all" or not source.leading_shape:
            return None
        return source.position_in_view(self._viewer)

    def _corrections_status(
        self, source: ImageInput, position: tuple[int, ...] | None, annotations: np.ndarray
    ) -> str:
        """What "Correct a result" made, and whether it fits the chosen image."""
        cells = max(int(annotations.max()) - 1, 0)
        if position is None:
            count = source.plane_count
            where = f"all {count} planes" if count > 1 else "the image"
            status = f"corrections for {where}: {cells} cells, background elsewhere"
        else:
            names = self._viewer.dims.axis_labels[-len(source.shape) :]
            plane = ", ".join(
                str(i) if str(name).lstrip("-").isdigit() else f"{name}={i}"
                for name, i in zip(names, position, strict=False)
            )
            status = (
                f"corrections for plane {plane}: {cells} cells, background elsewhere in the "
                "plane; other planes unannotated"
            )
        status += "; fix with the label tools (a new id splits, one id merges), then Start"
        image = self._image_combo.value
        try:
            shape = self._input(for_base=False).shape if image is not None else None
        except UNetError:
            shape = None
        if image is None:
            status += "\nnote: choose the image it segments in 'image'"
        elif shape is not None and shape != annotations.shape:
            status += (
                f"\nnote: image '{image.name}' has shape {shape}, the result "
                f"{annotations.shape}: choose the image it segments"
            )
        return status

    # ------------------------------------------------------------------ training
    def start(self) -> Any:
        """Start (or resume) training on the chosen image and annotations; return the worker."""
        if self.is_closed:
            return None
        if self._worker is not None:
            notify_info("training is already running: stop it first")
            return None
        try:
            return self._start_worker()
        except UNetError as error:
            notify_error(error)
            return None

    def stop(self) -> None:
        """Stop after the current step; the best weights so far become the model."""
        if self._worker is not None and self._run is not None:
            self._run.stopped = True
            self._status.value = "stopping..."
            if self._run.trainer is not None:  # ends as a finished run: post-processing re-tuned
                self._status.value = f"stopping: {RETUNING}"
                self._run.trainer.request_stop()
            else:
                self._worker.quit()

    @property
    def is_closed(self) -> bool:
        """Whether the panel was closed (or the viewer): the widget is not used again."""
        return self._lifetime.closed

    def _on_closed(self) -> None:
        """The panel or the viewer was closed: stop training without touching Qt."""
        if self._run is not None:
            self._run.stopped = True
        if self._worker is not None:
            self._worker.quit()

    def _start_worker(self) -> Any:
        image_input = self._input()
        image_layer = image_input.layer
        annotation_layer = self._annotation_combo.value
        if annotation_layer is None:
            raise AnnotationError(
                "no annotations: click 'New annotations' and paint background (1) and cells "
                "(2, 3, ...), or choose an existing labels layer"
            )
        check_annotation_matches(image_input.shape, tuple(annotation_layer.data.shape))
        source = self._base_combo.value
        if not isinstance(source, ModelSource):
            raise InputError("no base model chosen: pick one, or 'scratch' for a new network")
        name = self._name.value.strip() or "fine-tuned"
        images, annotations, channel_axis = _annotated_planes(image_input, annotation_layer.data)
        plane = image_input.plane_in_view(self._viewer)
        config = self.train_config()
        preview = _preview_plane(image_input, plane) if config.preview_every else None
        resume, why_new = self._resumable(image_input, annotation_layer, source)
        resolve_device(config.device)  # an unavailable device: one line, nothing started
        run = _TrainRun(
            image_layer,
            annotation_layer,
            source,
            plane,
            image_input=image_input,
            preview_position=image_input.position(plane),
            steps=config.steps,
            note=why_new,
        )
        worker = thread_worker(_train_job, start_thread=False)(
            source,
            self._model_cache,
            images,
            annotations,
            convention=self._convention.value,
            config=config,
            preview_image=preview,
            name=name,
            trainer=resume,
            channel_axis=channel_axis,
            channels=image_input.channels,
            channel_count=image_input.channel_count,
        )
        worker.yielded.connect(lambda event: self._on_event(run, event))
        worker.errored.connect(lambda _error: setattr(run, "failed", True))
        worker.finished.connect(lambda: self._on_finished(run))
        self._worker, self._run = worker, run
        self._device_line.clear()
        if resume is None:
            self._plot.clear()
        # The preview layer is added at the start, not at the first preview, where napari's
        # ~80 ms for a new layer froze the viewer along with the preview's own work: added
        # hidden in the turn after the click, shown (its first draw) in the next, and the
        # worker started in the last, so each shares its turn with nothing else (see
        # in_separate_turns).
        steps = (
            self._make_preview_layer(run, image_input.shape[-2:]) if config.preview_every else []
        )
        self._set_running(True)
        self._status.value = _with_note(
            f"resuming at step {resume.step}..." if resume else "preparing the annotations...",
            run.note,
        )
        what = f"Fine-tuning {name}" + (f" (resumed at step {resume.step})" if resume else "")
        in_separate_turns(*map(self._lifetime.unless_closed, steps), self._begin(run, worker, what))
        return worker

    def _begin(self, run: _TrainRun, worker: Any, description: str) -> Callable[[], None]:
        """A step creating the run's progress bar and starting ``worker`` (its events
        always find the bar); when the panel was closed first, the run just ends."""

        def begin() -> None:
            if not self.is_closed:
                run.progress = open_progress(run.steps, description)
                worker.start()
            elif self._worker is worker:
                self._worker, self._run = None, None

        return begin

    def _resumable(
        self, image_input: ImageInput, annotation_layer: Any, source: ModelSource
    ) -> tuple[Any, str]:
        """The previous run's trainer if this run continues it (same layers, channel
        settings and base), else None and why a new run starts ("" for a first run).

        The base model and the input cannot change within a run: the network is the
        base's, with as many input channels as the image had. Every other setting can
        (:meth:`~napari_unet.core.train.Trainer.update_config`).
        """
        previous = self._previous
        if previous is None or previous.trainer is None or previous.image_input is None:
            return None, ""
        if previous.source != source:
            why = "the base model changed, and a run keeps its network"
        elif previous.image_input.key() != image_input.key():
            why = "the image or its channels changed, and a run keeps its network's inputs"
        elif previous.annotation_layer is not annotation_layer:
            why = "another annotations layer was chosen"
        else:
            return previous.trainer, ""
        if previous.trainer.has_progress:
            why += " (the last run's model stays in the Segment widget)"
        return None, f"new run: {why}"

    def _on_event(self, run: _TrainRun, event: Any) -> None:
        if self.is_closed:
            return
        if isinstance(event, TrainStep):
            self._plot.add_step(run.trainer.step if run.trainer else event.step, event.loss)
            if run.finished:
                return  # arrived after the end: the final status stays, the bar is closed
            if run.stopped:
                return  # the status says it is stopping and re-tuning
            last = event.step == event.total_steps
            self._status.value = _with_note(
                f"step {event.step}/{event.total_steps}  loss {event.loss:.4f}{run.score}  "
                + (RETUNING if last else f"eta {event.eta:.0f} s"),
                run.note,
            )
            self._count_step(run, event)
        elif isinstance(event, JobDevice):
            self._device_line.running(event.description)
        elif isinstance(event, Validation):
            self._plot.add_validation(event.step, event.loss, event.is_best, score=event.score)
            if event.score is not None:
                self._plot.score_name = f"held-out {event.score_name}"
                run.score = f"  held-out {event.score_name} {event.score:.3f}"
        elif isinstance(event, Preview):
            self._show_preview(run, foreground_probability(event.probabilities))
        elif isinstance(event, _TrainerReady):
            run.trainer = event.trainer
        elif isinstance(event, _Resumed):
            run.note = f"resumed at step {event.step}" + (
                f" with {event.changes}" if event.changes else ""
            )
            self._status.value = _with_note(self._status.value.split("\n")[0], run.note)
        elif isinstance(event, TrainingFinished):
            run.finished_event = event
        elif isinstance(event, JobWarning):
            notify_warning(event.message)
        elif isinstance(event, JobFailed):
            run.failed = True
            notify_error(event.error)

    @staticmethod
    def _count_step(run: _TrainRun, event: TrainStep) -> None:
        """Move the progress bar to the run's ``event.step`` of ``event.total_steps``.

        Call it last in an event handler: napari's bar processes Qt events, which may
        deliver the worker's ``finished`` (closing the bar) right here.
        """
        bar = run.progress
        if bar is None:
            return
        if bar.total != event.total_steps:
            bar.total = event.total_steps
        bar.update(event.step - bar.n)

    def _preview_placement(self, run: _TrainRun) -> tuple[dict[str, Any], str]:
        """Scale and translate of the preview (a one-plane stack placed at the previewed
        plane's position when the image has leading axes) and the preview layer's role."""
        placement = run.image_input.placement()
        translate = list(placement["translate"])
        for axis, index in enumerate(run.preview_position):
            translate[axis] += index * placement["scale"][axis]
        placement["translate"] = tuple(translate)
        return placement, f"{run.image_input.name}/preview"

    def _preview_layer(self, role: str) -> Any:
        """Our preview layer of this role, or None."""
        return next(
            (
                lay
                for lay in self._viewer.layers
                if _common.is_ours(lay) and lay.metadata[_common.METADATA_KEY]["role"] == role
            ),
            None,
        )

    def _make_preview_layer(
        self, run: _TrainRun, plane_shape: tuple[int, ...]
    ) -> list[Callable[[], None]]:
        """Unless ours exists: the steps (for :func:`in_separate_turns`) that add
        "<image> preview" (hidden, empty, not selected) and then show it."""
        placement, role = self._preview_placement(run)
        if self._preview_layer(role) is not None:
            return []
        shape = (1,) * len(run.preview_position) + tuple(plane_shape)
        added: list[Any] = []

        def add() -> None:
            # Not selected: the user keeps painting where they were painting.
            added.append(
                add_unselected(
                    self._viewer.add_image,
                    self._viewer,
                    np.zeros(shape, np.float32),
                    name=free_name(self._viewer, f"{run.image_input.name} preview"),
                    metadata=our_metadata(role),
                    colormap="magma",
                    blending="additive",
                    contrast_limits=(0.0, 1.0),
                    opacity=0.6,
                    visible=False,
                    **placement,
                )
            )

        def show() -> None:  # its first draw, a turn after it was added
            for layer in added:
                show_layer(layer)()

        return [add, show]

    def _show_preview(self, run: _TrainRun, foreground: np.ndarray) -> None:
        """Show ``foreground`` (H, W), the current model's foreground probability on the
        preview plane, in our preview layer (re-created if the user deleted it)."""
        placement, role = self._preview_placement(run)
        layer = self._preview_layer(role)
        if layer is None:  # deleted during the run: added now, shown a turn later
            add, show = self._make_preview_layer(run, foreground.shape)
            add()
            in_separate_turns(self._lifetime.unless_closed(show))
            layer = self._preview_layer(role)
        layer.data = foreground.reshape((1,) * len(run.preview_position) + foreground.shape)
        layer.translate = placement["translate"]

    def _on_finished(self, run: _TrainRun) -> None:
        run.finished = True
        self._worker, self._run = None, None
        close_progress(run.progress)  # also once the viewer's activity dock is gone
        if self.is_closed:  # stopped with its panel: nothing is kept, no widget touched
            return
        self._device_line.ended()
        self._set_running(False)
        if run.trainer is None:
            self._status.value = "failed (see the notification)" if run.failed else "stopped"
            return
        trainer = run.trainer
        diverged = trainer.diverged
        # A diverged run is not resumed: Start begins anew, with the settings changed.
        self._previous = None if diverged else run
        if diverged:
            notify_warning(f"training stopped: {diverged}")
        if not trainer.has_progress:
            self._status.value = (
                f"stopped: {diverged}; no model" if diverged
                else "stopped before the first step: no model"
            )  # fmt: skip
            return
        self._bundle = trainer.best_bundle()
        # Trained on this image: Segment offers it for this image from now on.
        self._session.add(self._bundle, viewer=self._viewer, layer=run.image_layer)
        self._save_button.enabled = True
        self._export_button.enabled = not self.is_exporting
        best = f"best step {trainer.best_step}" if trainer.best_step else "last weights"
        verb = "stopped" if run.stopped else ("failed" if run.failed else "finished")
        kept = f"model '{self._bundle.name}' is in the Segment widget"
        kept += f" ({_scale_words(self._bundle)})"
        if diverged:
            status = (
                f"stopped at step {trainer.step}: {diverged} ({best}); {kept}; lower the "
                "learning rate and Start again"
            )
        else:
            status = f"{verb} at step {trainer.step} ({best}): {kept}"
        self._status.value = _with_note(_with_note(status, _score_words(trainer)), run.note)

    def _set_running(self, running: bool) -> None:
        self._start_button.enabled = not running
        self._stop_button.enabled = running
        self._new_button.enabled = not running
        self._correct_button.enabled = not running

    # ------------------------------------------------------------------ saving
    def save_model(self, path: str | Path | None = None, *, overwrite: bool = False) -> Path | None:
        """Write the trained model to ``path`` (asks with a file dialog when omitted).

        The file is written atomically (an interrupted save leaves no partial file and
        an existing file intact). An existing ``path`` is replaced only with
        ``overwrite``, or after the file dialog, which asked the user already. Nothing
        is written before a training step has completed.
        """
        if self._bundle is None:
            notify_error("no trained model yet: start a training run first")
            return None
        target = self._target(path, overwrite, self._ask_save_path, "Save model...")
        if target is None:
            return None
        path, overwrite = target
        try:
            saved = write_model_file(self._bundle, path, overwrite=overwrite)
        except (UNetError, OSError) as error:
            notify_error(error)
            return None
        self._session.files_changed()
        self._status.value = f"saved {saved}"
        return saved

    def save_to_user_models(
        self, name: str | None = None, *, overwrite: bool = False
    ) -> Path | None:
        """Save the trained model by name in the user's model folder (listed everywhere)."""
        if self._bundle is None:
            notify_error("no trained model yet: start a training run first")
            return None
        try:
            saved = save_user_model(self._bundle, name or self._bundle.name, overwrite=overwrite)
        except UNetError as error:
            notify_error(error)
            return None
        self._session.files_changed()
        self._status.value = f"saved {saved}"
        return saved

    @staticmethod
    def _target(
        path: str | Path | None,
        overwrite: bool,
        ask: Callable[[], tuple[Path, bool] | None],
        action: str,
    ) -> tuple[Path, bool] | None:
        """The file to write and whether it may be replaced; ``None`` to write nothing.

        Without ``path`` the user is asked (``ask``: a save dialog, which confirms a
        replacement itself). An existing file is refused in one line unless replacing it
        was asked for: nothing the user has is overwritten unasked.
        """
        if path is None:
            chosen = ask()
            if chosen is None:
                return None
            path, overwrite = chosen
        path = Path(path)
        if not overwrite and (path.exists() or path.is_symlink()):
            notify_error(
                f"{path} already exists; choose another file name ({action} asks before "
                "replacing a file)"
            )
            return None
        return path, overwrite

    def _ask_save_path(self) -> tuple[Path, bool] | None:
        """The file chosen in a save dialog and whether the dialog confirmed replacing it
        (not when ``.safetensors`` had to be added to the name); ``None`` when cancelled."""
        from qtpy.QtWidgets import QFileDialog

        folder = user_models_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path, _ = QFileDialog.getSaveFileName(
            self.native,
            "Save the model",
            str(folder / f"{self._bundle.name}.safetensors"),
            "napari-unet models (*.safetensors)",
        )
        if not path:
            return None
        path = Path(path)
        if path.suffix == ".safetensors":
            return path, True
        return path.with_name(f"{path.name}.safetensors"), False

    # ------------------------------------------------------------------ bioimage.io
    def export_bioimageio(self, path: str | Path | None = None, *, overwrite: bool = False) -> Any:
        """Export the trained model as a bioimage.io model package; return the worker.

        Asks for the file with a save dialog when ``path`` is omitted (the dialog asks
        before replacing a file). The package is written in a background worker
        (:func:`napari_unet.core.export.export_bioimageio`, atomically), so the viewer
        stays responsive; the status line says "exporting NAME for bioimage.io..." and
        then "exported PATH", errors arrive as one-line notifications. An existing
        ``path`` is replaced only with ``overwrite`` or after the dialog asked.

        Returns
        -------
        worker or None
            The started worker; ``None`` when nothing was started (no trained model,
            cancelled, refused, an export already running, or the panel closed).
        """
        if self.is_closed:
            return None
        if self._bundle is None:
            notify_error("no trained model yet: start a training run first")
            return None
        if self._export_worker is not None:
            notify_info("an export is already running: wait until it has finished")
            return None
        target = self._target(path, overwrite, self._ask_export_path, "Export for bioimage.io...")
        if target is None:
            return None
        path, overwrite = target
        return self._start_export(self._bundle, path, overwrite)

    def _start_export(self, bundle: ModelBundle, path: Path, overwrite: bool) -> Any:
        run = _ExportRun(bundle.name, path)
        worker = thread_worker(_export_job, start_thread=False)(bundle, path, overwrite)
        worker.returned.connect(lambda events: self._on_export_events(run, events))
        worker.finished.connect(lambda: self._on_export_finished(run, worker))
        self._export_worker = worker
        self._export_button.enabled = False
        self._status.value = f"exporting {bundle.name} for bioimage.io..."
        worker.start()
        return worker

    def _on_export_events(self, run: _ExportRun, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, _Exported):
                run.exported = event.path
            elif isinstance(event, JobFailed):
                if not self.is_closed:
                    notify_error(event.error)
            elif isinstance(event, JobWarning) and not self.is_closed:
                notify_warning(event.message)

    def _on_export_finished(self, run: _ExportRun, worker: Any) -> None:
        if self._export_worker is worker:
            self._export_worker = None
        if self.is_closed:  # the package is complete (written atomically); no widget touched
            return
        self._export_button.enabled = self._bundle is not None
        if run.exported is not None:  # else a JobFailed, or a bug napari has shown
            self._status.value = f"exported {run.exported}"
            notify_info(f"exported {run.name} for bioimage.io: {run.exported}")
        else:
            self._status.value = "export failed (see the notification)"

    def _ask_export_path(self) -> tuple[Path, bool] | None:
        """The package file chosen in a save dialog and whether the dialog confirmed
        replacing it (not when ``.zip`` had to be added); ``None`` when cancelled.

        The dialog proposes ``<model name>.zip`` in the home folder, or the first free
        ``<model name>-2.zip``... there, so accepting it replaces nothing.
        """
        from qtpy.QtWidgets import QFileDialog

        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in self._bundle.name)
        proposed = free_path(Path.home() / f"{stem.strip('-.') or 'model'}.zip")
        path, _ = QFileDialog.getSaveFileName(
            self.native,
            "Export the model for bioimage.io",
            str(proposed),
            "bioimage.io model packages (*.zip)",
        )
        if not path:
            return None
        path = Path(path)
        if path.suffix.lower() == ".zip":
            return path, True
        return path.with_name(f"{path.name}.zip"), False


__all__ = ["FinetuneWidget"]

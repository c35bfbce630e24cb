"""The Fine-tune dock's training runs: a worker draining a Trainer, its events on screen.

A run is a ``thread_worker`` over :func:`train_job`, which prepares (or resumes) a
:class:`~napari_unet.core.train.Trainer` and drains :meth:`~napari_unet.core.train.Trainer.run`.
:class:`TrainingRuns` turns its events into the loss plot, the preview layer, the status
line, the device line and a napari progress bar. **Stop**
(:meth:`~napari_unet.core.train.Trainer.request_stop`) ends the run as a finished one: the
best weights are kept and the post-processing re-tuned. The next Start resumes the run
(same network, optimiser and step count) unless its base, input or annotations layer
changed (:func:`~napari_unet.core.finetune_plan.new_run_reason`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from napari.qt.threading import thread_worker

from napari_unet._widgets._channels import ImageInput
from napari_unet._widgets._common import (
    DeviceLine,
    DockLifetime,
    JobDevice,
    JobFailed,
    JobWarning,
    ModelSource,
    SessionModels,
    StatusLabel,
    close_progress,
    job_device,
    notify_error,
    notify_warning,
    open_progress,
    reporting_errors,
    resolve_device,
)
from napari_unet._widgets._finetune_preview import PreviewLayer
from napari_unet._widgets._loss_plot import LossPlot
from napari_unet.core.annotations import check_annotation_matches
from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.events import Preview, TrainStep, Validation
from napari_unet.core.finetune_plan import (
    RETUNING,
    annotated_planes,
    finished_status,
    new_run_reason,
    no_model_status,
    preview_plane,
    progress_title,
    resume_changes,
    resumed_note,
    score_text,
    starting_status,
    step_status,
    with_note,
)
from napari_unet.core.model import SMALL
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.postprocess import foreground_probability
from napari_unet.core.train import TrainConfig, Trainer


@dataclass(frozen=True)
class TrainRequest:
    """What a Start trains: read from the dock and checked before a run is made."""

    image_input: ImageInput
    annotation_layer: Any
    source: ModelSource
    name: str
    convention: str
    config: TrainConfig
    #: Flat index of the plane in view: the previewed plane.
    plane: int

    @classmethod
    def checked(
        cls, image_input: ImageInput, annotation_layer: Any, source: Any, **values: Any
    ) -> TrainRequest:
        """The request, once the annotations fit the image, a base is chosen and the
        device is available (``values``: the other fields).

        Raises
        ------
        UNetError
            One line saying what is missing or wrong; nothing has started.
        """
        if annotation_layer is None:
            raise AnnotationError(
                "no annotations: click 'New annotations' and paint background (1) and cells "
                "(2, 3, ...), or choose an existing labels layer"
            )
        check_annotation_matches(image_input.shape, tuple(annotation_layer.data.shape))
        if not isinstance(source, ModelSource):
            raise InputError("no base model chosen: pick one, or 'scratch' for a new network")
        resolve_device(values["config"].device)  # unavailable: one line, nothing started
        return cls(image_input, annotation_layer, source, **values)


@dataclass(frozen=True)
class TrainerReady:
    """Yielded once the worker has prepared the data (weight maps) and built the network."""

    trainer: Trainer


@dataclass(frozen=True)
class Resumed:
    """Yielded when a run resumes: at which step, and what it now does differently."""

    step: int
    changes: str


@reporting_errors
def train_job(
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
        conventions = (trainer.convention, convention)
        trainer.convention, trainer.name = convention, name
        trainer.update_annotations(images, annotations)
        trainer.preview_image = preview_image
        yield Resumed(trainer.step, resume_changes(update, conventions))
    yield TrainerReady(trainer)
    yield from trainer.run(config.steps)


@dataclass
class TrainRun:
    """State of one training run, owned by the main thread."""

    request: TrainRequest
    preview: PreviewLayer
    #: The napari progress bar over the run's steps (created when the worker starts,
    #: the turn after the click; closed when the run ends).
    progress: Any = None
    trainer: Trainer | None = None
    stopped: bool = False
    failed: bool = False
    finished: bool = False
    #: The last held-out score, as the step status shows it ("held-out F1@0.5 0.840").
    score: str = ""
    #: How this run relates to the previous one ("resumed at step 40 with learning
    #: rate 0.001 -> 0.0001"; "new run: ..."), shown under the run's status.
    note: str = ""

    @property
    def steps(self) -> int:
        return self.request.config.steps


class TrainingRuns:
    """The training runs of one dock: the one in progress, the last one, its model.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    session : SessionModels
        Where a run's model goes when it ends.
    lifetime : DockLifetime
        The dock's lifetime: nothing touches a closed dock.
    status : StatusLabel
        The dock's status line.
    on_running : callable
        ``on_running(running)``: enable the dock's buttons for a run in progress or not.
    on_model : callable
        Called when a run produced a model (:attr:`bundle`).
    """

    def __init__(
        self,
        viewer: Any,
        session: SessionModels,
        lifetime: DockLifetime,
        status: StatusLabel,
        on_running: Callable[[bool], None],
        on_model: Callable[[], None],
    ) -> None:
        self._viewer = viewer
        self._session = session
        self._lifetime = lifetime
        self._status = status
        self._on_running = on_running
        self._on_model = on_model
        self._model_cache: dict = {}
        self.plot = LossPlot()
        self.device_line = DeviceLine()
        self.worker: Any = None
        #: The run in progress, and the last run a Start may resume.
        self.run: TrainRun | None = None
        self.previous: TrainRun | None = None
        #: The best model of the last run that completed a step.
        self.bundle: ModelBundle | None = None

    @property
    def is_training(self) -> bool:
        return self.worker is not None

    # ------------------------------------------------------------------ starting
    def prepare(self, request: TrainRequest) -> tuple[Any, list[Callable[[], None]]]:
        """Make the worker of a run of ``request``; return it and the steps that start it
        (for :func:`~napari_unet._widgets._common.in_separate_turns`: the preview layer
        is added hidden, shown, and the worker started, each in a turn of its own).

        Raises
        ------
        UNetError
            When nothing is annotated.
        """
        image_input, config = request.image_input, request.config
        images, annotations, channel_axis = annotated_planes(
            image_input.plane,
            request.annotation_layer.data,
            image_input.shape[-2:],
            image_input.plane_channel_axis,
        )
        preview = self._preview_image(image_input, request.plane) if config.preview_every else None
        resume, why_new = self._resumable(request)
        position = image_input.position(request.plane)
        layer = PreviewLayer(self._viewer, image_input, position, self._lifetime.unless_closed)
        run = TrainRun(request, layer, note=why_new)
        worker = thread_worker(train_job, start_thread=False)(
            request.source, self._model_cache, images, annotations,
            convention=request.convention, config=config, preview_image=preview,
            name=request.name, trainer=resume, channel_axis=channel_axis,
            channels=image_input.channels, channel_count=image_input.channel_count,
        )  # fmt: skip
        worker.yielded.connect(lambda event: self._on_event(run, event))
        worker.errored.connect(lambda _error: setattr(run, "failed", True))
        worker.finished.connect(lambda: self._on_finished(run))
        self.worker, self.run = worker, run
        self.device_line.clear()
        if resume is None:
            self.plot.clear()
        self._on_running(True)
        resumed_at = resume.step if resume else None
        self._status.value = starting_status(resumed_at, run.note)
        what = progress_title(request.name, resumed_at)
        adding = layer.steps_to_add(image_input.shape[-2:]) if config.preview_every else []
        steps = [*map(self._lifetime.unless_closed, adding), self._begin(run, worker, what)]
        return worker, steps

    @staticmethod
    def _preview_image(image_input: ImageInput, plane: int) -> np.ndarray:
        return preview_plane(
            image_input.plane(plane),
            channel_count=image_input.channel_count,
            channel_axis=image_input.plane_channel_axis,
            channels=image_input.channels,
        )

    def _begin(self, run: TrainRun, worker: Any, description: str) -> Callable[[], None]:
        """A step creating the run's progress bar and starting ``worker`` (its events
        always find the bar); when the panel was closed first, the run just ends."""

        def begin() -> None:
            if not self._lifetime.closed:
                run.progress = open_progress(run.steps, description)
                worker.start()
            elif self.worker is worker:
                self.worker, self.run = None, None

        return begin

    def _resumable(self, request: TrainRequest) -> tuple[Trainer | None, str]:
        """The previous run's trainer if this run continues it, else None and why a new
        run starts ("" for a first run).

        The base model and the input cannot change within a run: the network is the
        base's, with as many input channels as the image had. Every other setting can
        (:meth:`~napari_unet.core.train.Trainer.update_config`).
        """
        previous = self.previous
        if previous is None or previous.trainer is None:
            return None, ""
        reason = new_run_reason(
            same_base=previous.request.source == request.source,
            same_input=previous.request.image_input.key() == request.image_input.key(),
            same_annotations=previous.request.annotation_layer is request.annotation_layer,
            had_progress=previous.trainer.has_progress,
        )
        return (previous.trainer, "") if reason is None else (None, reason)

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Stop after the current step; the best weights so far become the model."""
        if self.worker is None or self.run is None:
            return
        self.run.stopped = True
        if self.run.trainer is not None:  # ends as a finished run: post-processing re-tuned
            self._status.value = f"stopping: {RETUNING}"
            self.run.trainer.request_stop()
        else:
            self._status.value = "stopping..."
            self.worker.quit()

    def closed(self) -> None:
        """The dock was closed: stop the run without touching Qt (nothing is kept)."""
        if self.run is not None:
            self.run.stopped = True
        if self.worker is not None:
            self.worker.quit()

    # ------------------------------------------------------------------ events
    def _on_event(self, run: TrainRun, event: Any) -> None:
        if self._lifetime.closed:
            return
        if isinstance(event, TrainStep):
            self._on_step(run, event)
        elif isinstance(event, JobDevice):
            self.device_line.running(event.description)
        elif isinstance(event, Validation):
            self.plot.add_validation(event.step, event.loss, event.is_best, score=event.score)
            if event.score is not None:
                self.plot.score_name = f"held-out {event.score_name}"
                run.score = score_text(event.score_name, event.score)
        elif isinstance(event, Preview):
            run.preview.show(foreground_probability(event.probabilities))
        elif isinstance(event, TrainerReady):
            run.trainer = event.trainer
        elif isinstance(event, Resumed):
            run.note = resumed_note(event.step, event.changes)
            self._status.value = with_note(self._status.value.split("\n")[0], run.note)
        elif isinstance(event, JobWarning):
            notify_warning(event.message)
        elif isinstance(event, JobFailed):
            run.failed = True
            notify_error(event.error)
        # TrainingFinished: the trainer itself says the rest when the worker finishes

    def _on_step(self, run: TrainRun, event: TrainStep) -> None:
        self.plot.add_step(run.trainer.step if run.trainer else event.step, event.loss)
        if run.finished or run.stopped:
            return  # the final status stays, or the status says it is stopping
        self._status.value = step_status(
            event.step, event.total_steps, event.loss, event.eta, run.score, run.note
        )
        self._count_step(run, event)

    @staticmethod
    def _count_step(run: TrainRun, event: TrainStep) -> None:
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

    def _on_finished(self, run: TrainRun) -> None:
        run.finished = True
        self.worker, self.run = None, None
        close_progress(run.progress)  # also once the viewer's activity dock is gone
        if self._lifetime.closed:  # stopped with its panel: nothing is kept, no widget touched
            return
        self.device_line.ended()
        self._on_running(False)
        trainer = run.trainer
        if trainer is None:
            self._status.value = "failed (see the notification)" if run.failed else "stopped"
            return
        diverged = trainer.diverged
        # A diverged run is not resumed: Start begins anew, with the settings changed.
        self.previous = None if diverged else run
        if diverged:
            notify_warning(f"training stopped: {diverged}")
        if not trainer.has_progress:
            self._status.value = no_model_status(diverged)
            return
        self.bundle = trainer.best_bundle()
        # Trained on this image: Segment offers it for this image from now on.
        self._session.add(self.bundle, viewer=self._viewer, layer=run.request.image_input.layer)
        self._on_model()
        self._status.value = finished_status(
            trainer, self.bundle, stopped=run.stopped, failed=run.failed, note=run.note
        )


__all__ = ["Resumed", "TrainRequest", "TrainRun", "TrainerReady", "TrainingRuns", "train_job"]

"""``napari-unet train``: train or fine-tune a model on annotated images and save it.

torch and the core's training modules are imported inside the functions that use them,
so that ``napari-unet --help`` stays fast (start-up time only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_unet.cli.common import (
    EXIT_FAILED,
    PROG,
    channel_list,
    drain_with_progress,
    error_message,
    model_path,
    pixel_size_arg,
    report_device,
)
from napari_unet.core.errors import InputError
from napari_unet.core.events import Progress, TrainingFinished, TrainStep
from napari_unet.core.safety import check_output


def cmd_train(args: argparse.Namespace) -> int:
    """``napari-unet train``: train, then save the kept weights; exit status."""
    output, pixel_size = _checked_train_arguments(args)
    # torch and the model code load only now: argument errors above answer at once.
    from napari_unet.core.io import read_image
    from napari_unet.core.train import Trainer

    channels = channel_list(args.channels)
    images = [read_image(p, rgb=args.channel_axis is not None) for p in args.images]
    channel_axis = _channel_axis(args, images)
    base = _base_model(args.base, images[0], channel_axis, channels)
    config = _train_config(args, pixel_size)
    trainer = Trainer(
        base,
        images,
        _training_labels(args.labels, args.annotation, args.planes, args.boundary_band),
        convention="sparse" if args.annotation == "result" else args.annotation,
        config=config,
        name=args.name or output.name.removesuffix(".safetensors"),
        channel_axis=channel_axis,
        channels=channels,
    )
    report_device(args.device)
    return _train_and_save(trainer, output, overwrite=args.overwrite)


def _checked_train_arguments(args: argparse.Namespace) -> tuple[Path, Any]:
    """The model file to write and the given pixel size (None: not given), after every
    check that needs no torch.

    Before training: a model the user has is never replaced unasked, and an output that
    cannot be written fails now, not after the steps.
    """
    if len(args.images) != len(args.labels):
        raise InputError(
            f"{len(args.images)} --images but {len(args.labels)} --labels: give one --labels "
            "per --images, in the same order"
        )
    output = Path(args.output_path)
    if output.suffix != ".safetensors":
        raise InputError(f"model files end in .safetensors, got {output.name!r}")
    pixel_size = pixel_size_arg(args.pixel_size)
    _check_augment_args(args)
    _check_planes_argument(args)
    _check_holdout_argument(args)
    for path in [*args.images, *args.labels]:
        if not Path(path).is_file():
            raise InputError(f"file not found: {path}")
    check_output(
        output, inputs=[*args.images, *args.labels], overwrite=args.overwrite, what="model"
    )
    return output, pixel_size


def _channel_axis(args: argparse.Namespace, images: list[Any]) -> int | None:
    """``--channel-axis``, else the C axis the files name when they all agree."""
    if args.channel_axis is not None:
        return args.channel_axis
    from napari_unet.core.io import read_axes

    axes = {read_axes(p) for p in args.images}
    known = axes.pop() if len(axes) == 1 else None
    if known is not None and "C" in known and len(known) == images[0].ndim:
        return known.index("C")
    return None


def _base_model(name: str | None, image: Any, channel_axis: int | None, channels) -> Any:
    """The model to fine-tune, or (``scratch``) the configuration of a new network."""
    if name == "scratch":
        return _scratch_config(image, channel_axis, channels)
    from napari_unet.core.modelfile import load_model

    return load_model(model_path(name))


def _train_config(args: argparse.Namespace, pixel_size: Any) -> Any:
    """The core's :class:`~napari_unet.core.train.TrainConfig` of the arguments; the
    pixel size given, else the one the training images record."""
    from napari_unet.core.augment import AugmentConfig
    from napari_unet.core.train import TrainConfig

    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        augment=AugmentConfig(
            enabled=not args.no_augment, blur=args.blur, invert=args.invert_contrast
        ),
        seed=args.seed,
        device=args.device,
        pixel_size=pixel_size or _training_pixel_size([Path(p) for p in args.images]),
        holdout=args.holdout,
    )


def _check_augment_args(args: argparse.Namespace) -> None:
    """Raise :class:`InputError` for a bad --blur or --invert-contrast, before torch loads
    (AugmentConfig checks them again with its own limits)."""
    if not 0 <= args.blur <= 20:  # NaN fails too
        raise InputError(f"--blur must be in [0, 20] pixels, got {args.blur}")
    if not 0 <= args.invert_contrast <= 1:
        raise InputError(f"--invert-contrast must be in [0, 1], got {args.invert_contrast}")


def _check_holdout_argument(args: argparse.Namespace) -> None:
    """Refuse a --holdout the core cannot read, before torch loads."""
    from napari_unet.core.holdout_spec import parse_holdout

    try:
        parse_holdout(args.holdout)
    except InputError as error:
        raise InputError(f"--holdout: {error}") from None


def _check_planes_argument(args: argparse.Namespace) -> None:
    """Refuse --planes without --annotation result, and a --planes list of bad syntax."""
    if args.boundary_band < 0:
        raise InputError(f"--boundary-band must be 0 px or more, got {args.boundary_band}")
    if args.planes is None:
        return
    if args.annotation != "result":
        raise InputError("--planes chooses planes of a result: use it with --annotation result")
    from napari_unet.core.plane_text import parse_plane_text

    try:
        parse_plane_text(args.planes)
    except InputError as error:
        raise InputError(f"--planes: {error}") from None


def _training_labels(
    paths: list[str], annotation: str, planes: str | None, boundary_band: int = 0
) -> list[Any]:
    """The labels files as read; results (``annotation == "result"``) converted to sparse
    annotations of the ``planes`` list (every plane when None)."""
    from napari_unet.core.annotations import annotations_from_labels
    from napari_unet.core.io import read_image
    from napari_unet.core.plane_text import planes_from_text

    if annotation != "result":
        return [read_image(p) for p in paths]
    converted = []
    for path in map(Path, paths):
        result = read_image(path)
        try:
            chosen = None if planes is None else planes_from_text(planes, result.shape[:-2])
        except InputError as error:
            raise InputError(f"--planes for {path.name}: {error}") from None
        annotations = annotations_from_labels(result, chosen, boundary_band=boundary_band)
        cells = max(int(annotations.max()) - 1, 0)
        which = "every plane" if chosen is None else f"{len(chosen)} plane(s)"
        print(
            f"{PROG}: {path.name}: {cells} object(s) of {which} as cells, the rest of "
            "those planes as background",
            file=sys.stderr,
        )
        converted.append(annotations)
    return converted


def _training_pixel_size(images: list[Path]) -> Any:
    """The pixel size the training images' files record (None when none does).

    Raises
    ------
    InputError
        When two images record different pixel sizes: one model has one scale.
    """
    from napari_unet.core.calibration import read_calibration

    known: dict[Path, Any] = {}
    for path in images:
        calibration = read_calibration(path)
        if calibration is not None and calibration.pixel_size is not None:
            known[path] = calibration.pixel_size
    sizes = list(dict.fromkeys(known.values()))
    if len(sizes) > 1:
        listed = ", ".join(f"{path.name}: {size}" for path, size in known.items())
        raise InputError(
            f"the training images record different pixel sizes ({listed}); train on images "
            "of one pixel size, or give the one to record with --pixel-size"
        )
    if not sizes:
        return None
    missing = [path.name for path in images if path not in known]
    if missing:
        print(
            f"{PROG}: note: {', '.join(missing)} record(s) no pixel size; taken as "
            f"{sizes[0]} like the other images",
            file=sys.stderr,
        )
    return sizes[0]


def _scratch_config(image: Any, channel_axis: int | None, channels: tuple[int, ...] | None):
    """The small new network, reading as many channels as are chosen from ``image``."""
    from napari_unet.core.io import as_planes
    from napari_unet.core.model import SMALL

    count = 1
    if channels is not None:
        count = len(channels)
    elif channel_axis is not None:
        count = int(image.shape[channel_axis]) if -image.ndim <= channel_axis < image.ndim else 1
    # The image's own checks first (axis, channel range, at most 8 channels), in one line.
    as_planes(image, in_channels=count, channel_axis=channel_axis, channels=channels)
    return replace(SMALL, in_channels=count)


def _train_and_save(trainer: Any, output: Path, *, overwrite: bool) -> int:
    """Run ``trainer`` with a progress bar; save its best weights once a step has completed.

    Ctrl+C keeps what was learnt so far, like Stop in the GUI. Nothing is written before
    the first completed step, and a failing save never hides why training stopped.
    """
    last_loss: list[float] = []
    finished: list[TrainingFinished] = []
    events = _with_loss(trainer.run(), last_loss, finished)
    try:
        drain_with_progress(events, description="training", unit="step")
    except BaseException as error:
        if trainer.has_progress:
            _save_after_interruption(trainer, output, overwrite=overwrite, cause=error)
        raise
    reason = finished[-1].reason if finished else "no step completed"
    if not trainer.has_progress:
        raise InputError(f"training stopped before its first step ({reason}); nothing was saved")
    _save(trainer, output, overwrite=overwrite, last_loss=last_loss)
    if trainer.diverged is not None:
        print(f"{PROG}: error: training stopped: {trainer.diverged}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _save(trainer: Any, output: Path, *, overwrite: bool, last_loss: list[float]) -> None:
    from napari_unet.core.modelfile import save_model

    bundle = trainer.best_bundle()
    save_model(bundle, output, overwrite=overwrite)
    loss = f", last loss {last_loss[-1]:.4f}" if last_loss else ""
    kept = f"weights of step {bundle.provenance.get('steps', trainer.step)}"
    print(f"{PROG}: saved {output} ({kept}, {trainer.step} steps run{loss})", file=sys.stderr)
    print(f"{PROG}: {_recorded_scale(bundle)}", file=sys.stderr)
    scored = trainer.tuning_summary() or trainer.holdout_note
    if scored:
        print(f"{PROG}: {scored}", file=sys.stderr)


def _recorded_scale(bundle: Any) -> str:
    """ "the model records objects of 22.4 px at 0.325 µm/px" (what it knows of its scale)."""
    diameter, pixel_size = bundle.object_diameter, bundle.pixel_size
    objects = (
        f"objects of {diameter:.1f} px (median diameter)"
        if diameter is not None
        else "no object size"
    )
    where = f" at {pixel_size}/px" if pixel_size is not None else " (pixel size unknown)"
    return f"the model records {objects}{where}"


def _save_after_interruption(
    trainer: Any, output: Path, *, overwrite: bool, cause: BaseException
) -> None:
    """Save the best weights after ``cause`` stopped training; report a failing save only."""
    try:
        _save(trainer, output, overwrite=overwrite, last_loss=[])
    except Exception as error:  # the original error is re-raised by the caller
        print(
            f"{PROG}: error: could not save the weights learnt so far: {error_message(error)}",
            file=sys.stderr,
        )
    else:
        if isinstance(cause, KeyboardInterrupt):
            print(f"{PROG}: training interrupted at step {trainer.step}", file=sys.stderr)


def _with_loss(events: Generator[Any, None, Any], losses: list[float], finished: list):
    """Pass events through, recording losses and the end, turning steps into progress."""
    for event in events:
        if isinstance(event, TrainStep):
            losses.append(event.loss)
            yield Progress(event.step, event.total_steps, f"loss {event.loss:.4f}")
        else:
            if isinstance(event, TrainingFinished):
                finished.append(event)
            yield event

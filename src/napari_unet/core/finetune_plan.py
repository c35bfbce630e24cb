"""What the Fine-tune dock computes: the planes it trains on, and the words it shows.

The dock (:mod:`napari_unet._widgets.finetune`) only reads its widgets and layers and
calls these functions: which planes of an annotations layer are annotated, the preview
plane as the network reads it, whether a run can resume, and every status line built
from a run's numbers. Nothing here imports Qt or napari.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_unet.core.errors import AnnotationError
from napari_unet.core.io import as_planes
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.train import ConfigUpdate, Trainer

#: Status while the run's last step is done and the post-processing is being re-tuned.
RETUNING = "re-tuning the post-processing on the training annotations..."
#: Settings a resume does not mention: the steps are per Start, and the validation
#: interval follows them.
UNREMARKABLE = frozenset({"steps", "validation_every"})
#: The trained model's name when the user left the field empty.
DEFAULT_MODEL_NAME = "fine-tuned"


# ---------------------------------------------------------------------------- planes
def annotated_planes(
    read_plane: Callable[[int], Any],
    annotations: Any,
    plane_shape: tuple[int, int],
    plane_channel_axis: int | None,
) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Copies of the annotated planes: ``(images, annotations, channel_axis)``.

    Parameters
    ----------
    read_plane : callable
        ``read_plane(k)``: flat plane ``k`` of the image, ``(H, W)`` or with its channel
        axis at ``plane_channel_axis`` (array-like; read only for annotated planes).
    annotations : (..., H, W) array-like
        The annotations layer's data; its flat planes match the image's.
    plane_shape : (H, W)
    plane_channel_axis : int or None
        The channel axis of the planes ``read_plane`` returns.

    Returns
    -------
    images : (K, H, W) or (K, ...) ndarray
        The K annotated planes, copied (the user may keep painting while training runs),
        with the channel axis at ``channel_axis``.
    annotations : (K, H, W) ndarray
    channel_axis : int or None

    Raises
    ------
    AnnotationError
        When nothing is annotated.
    """
    height, width = plane_shape
    flat = np.asarray(annotations).reshape(-1, height, width)
    annotated = np.flatnonzero(flat.reshape(len(flat), -1).any(axis=1))
    if annotated.size == 0:
        raise AnnotationError(
            "nothing is annotated: paint some background with label 1 and at least one "
            "cell with label 2 or higher"
        )
    images = np.stack([np.array(read_plane(int(k)), copy=True) for k in annotated])
    axis = None if plane_channel_axis is None else plane_channel_axis + 1
    return images, flat[annotated].copy(), axis


def preview_plane(
    plane: Any, *, channel_count: int, channel_axis: int | None, channels: Sequence[int] | None
) -> np.ndarray:
    """The previewed ``plane`` as the network reads it: ``(H, W)``, or ``(C, H, W)`` with
    the chosen ``channels`` (of its ``channel_axis``) in order."""
    planes, _restore = as_planes(
        np.array(plane, copy=True),
        in_channels=channel_count,
        channel_axis=channel_axis,
        channels=channels,
        rgb=False,
    )
    return np.asarray(planes[0])


def validation_interval(steps: int) -> int:
    """Steps between validations of a run of ``steps``: about 4 per run, at most 25 apart."""
    return max(1, min(25, int(steps) // 4))


# ---------------------------------------------------------------------------- names
def file_stem(name: str, fallback: str = "model") -> str:
    """``name`` as a file name stem: characters other than letters, digits, ``-_.``
    become ``-``; ``fallback`` when nothing is left."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return stem.strip("-.") or fallback


def suggested_model_name(image_name: str) -> str:
    """The trained model's name proposed for an image: ``"<image>-finetuned"``."""
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in image_name)
    return f"{stem.strip('-') or 'model'}-finetuned"


def model_name(typed: str) -> str:
    """The trained model's name from the typed field (:data:`DEFAULT_MODEL_NAME` if empty)."""
    return typed.strip() or DEFAULT_MODEL_NAME


# ---------------------------------------------------------------------------- resume
def new_run_reason(
    *, same_base: bool, same_input: bool, same_annotations: bool, had_progress: bool
) -> str | None:
    """Why a Start begins a new run instead of resuming the last ("new run: ..."); None
    when it resumes (the base, the input and the annotations layer are the run's)."""
    if not same_base:
        why = "the base model changed, and a run keeps its network"
    elif not same_input:
        why = "the image or its channels changed, and a run keeps its network's inputs"
    elif not same_annotations:
        why = "another annotations layer was chosen"
    else:
        return None
    if had_progress:
        why += " (the last run's model stays in the Segment widget)"
    return f"new run: {why}"


def resume_changes(update: ConfigUpdate, convention: tuple[str, str]) -> str:
    """What a resumed run does differently: the settings ``update`` changed (not the
    steps, see :data:`UNREMARKABLE`) and a change of ``convention`` ``(old, new)``."""
    changed = {k: v for k, v in update.changed.items() if k not in UNREMARKABLE}
    notes = [ConfigUpdate(changed, update.kept).describe()]
    if convention[0] != convention[1]:
        notes.append(f"convention {convention[0]} -> {convention[1]}")
    return "; ".join(note for note in notes if note)


def resumed_note(step: int, changes: str) -> str:
    """The note "resumed at step 40 with learning rate 0.001 -> 0.0001" (without changes: only
    where it resumed)."""
    return f"resumed at step {step}" + (f" with {changes}" if changes else "")


# ---------------------------------------------------------------------------- status
def with_note(status: str, note: str) -> str:
    """``status``, and ``note`` on a line of its own when there is one."""
    return f"{status}\n{note}" if note else status


def score_text(score_name: str, score: float) -> str:
    """A held-out score as the step status shows it: "held-out F1@0.5 0.840"."""
    return f"held-out {score_name} {score:.3f}"


def starting_status(resumed_at: int | None, note: str = "") -> str:
    """The status between Start and the first step: preparing, or resuming at step
    ``resumed_at``; then ``note``."""
    starting = "preparing the annotations..."
    if resumed_at is not None:
        starting = f"resuming at step {resumed_at}..."
    return with_note(starting, note)


def progress_title(name: str, resumed_at: int | None) -> str:
    """The progress bar's title: "Fine-tuning NAME (resumed at step 40)"."""
    resumed = f" (resumed at step {resumed_at})" if resumed_at is not None else ""
    return f"Fine-tuning {name}{resumed}"


def step_status(
    step: int, total: int, loss: float, eta: float, score: str = "", note: str = ""
) -> str:
    """The status during a run: "step 3/200  loss 0.4120  held-out ...  eta 12 s" (at
    the last step, that the post-processing is being re-tuned), then ``note``."""
    last = RETUNING if step == total else f"eta {eta:.0f} s"
    scored = f"  {score}" if score else ""
    return with_note(f"step {step}/{total}  loss {loss:.4f}{scored}  {last}", note)


def scale_words(bundle: ModelBundle) -> str:
    """What the trained model records of its scale: "objects ~22 px at 0.5 µm/px"."""
    pixel_size = getattr(bundle, "pixel_size", None)
    diameter = getattr(bundle, "object_diameter", None)
    objects = f"objects ~{diameter:.0f} px" if diameter is not None else "no object size"
    where = f" at {pixel_size}/px" if pixel_size is not None else " (pixel size unknown)"
    return f"it records {objects}{where}"


def score_words(trainer: Trainer) -> str:
    """The held-out score and the re-tuned post-processing, for the final status."""
    if trainer.tuning is not None:
        return trainer.tuning_summary()
    if trainer.holdout is None:
        return trainer.holdout_note
    score = trainer.best_score
    return score_text(trainer.holdout.score_name, score) if score is not None else ""


def no_model_status(diverged: str | None) -> str:
    """The status of a run that ended before a step completed: no model."""
    if diverged:
        return f"stopped: {diverged}; no model"
    return "stopped before the first step: no model"


def finished_status(
    trainer: Trainer, bundle: ModelBundle, *, stopped: bool, failed: bool, note: str = ""
) -> str:
    """The status once a run with a model ended: how it ended, at which step, the kept
    weights, the model's scale, the held-out score and ``note``.

    A diverged run (``trainer.diverged``) says so and what to do.
    """
    diverged = trainer.diverged
    best = f"best step {trainer.best_step}" if trainer.best_step else "last weights"
    kept = f"model '{bundle.name}' is in the Segment widget ({scale_words(bundle)})"
    if diverged:
        status = (
            f"stopped at step {trainer.step}: {diverged} ({best}); {kept}; lower the "
            "learning rate and Start again"
        )
    else:
        verb = "stopped" if stopped else ("failed" if failed else "finished")
        status = f"{verb} at step {trainer.step} ({best}): {kept}"
    return with_note(with_note(status, score_words(trainer)), note)


# ---------------------------------------------------------------------------- corrections
def plane_words(axis_names: Sequence[str], position: Sequence[int]) -> str:
    """A plane's position as the status says it: "t=2, z=5", or "1" for unnamed axes."""
    return ", ".join(
        str(i) if str(name).lstrip("-").isdigit() else f"{name}={i}"
        for name, i in zip(axis_names, position, strict=False)
    )


def corrections_status(
    cells: int,
    *,
    plane: str | None,
    plane_count: int,
    image_name: str | None,
    image_shape: tuple[int, ...] | None,
    result_shape: tuple[int, ...],
) -> str:
    """What "Correct a result" made (``cells`` cells on ``plane``, or on all
    ``plane_count`` planes when ``plane`` is None), and whether it fits the chosen image
    ``image_name`` of ``image_shape`` (None: unknown)."""
    if plane is None:
        where = f"all {plane_count} planes" if plane_count > 1 else "the image"
        status = f"corrections for {where}: {cells} cells, background elsewhere"
    else:
        status = (
            f"corrections for plane {plane}: {cells} cells, background elsewhere in the "
            "plane; other planes unannotated"
        )
    status += "; fix with the label tools (a new id splits, one id merges), then Start"
    if image_name is None:
        status += "\nnote: choose the image it segments in 'image'"
    elif image_shape is not None and tuple(image_shape) != tuple(result_shape):
        status += (
            f"\nnote: image '{image_name}' has shape {tuple(image_shape)}, the result "
            f"{tuple(result_shape)}: choose the image it segments"
        )
    return status


def next_label(annotations: np.ndarray) -> int:
    """The label a brush paints a new cell with on ``annotations``: one above the
    largest, within the dtype."""
    return min(int(annotations.max()) + 1, int(np.iinfo(annotations.dtype).max))


__all__ = [
    "DEFAULT_MODEL_NAME",
    "RETUNING",
    "annotated_planes",
    "corrections_status",
    "file_stem",
    "finished_status",
    "model_name",
    "new_run_reason",
    "next_label",
    "no_model_status",
    "plane_words",
    "preview_plane",
    "progress_title",
    "resume_changes",
    "resumed_note",
    "scale_words",
    "score_text",
    "score_words",
    "starting_status",
    "step_status",
    "suggested_model_name",
    "validation_interval",
    "with_note",
]

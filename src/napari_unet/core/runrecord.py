"""The run record of a block-wise store: what a run writes, and why a resume is refused.

A block-wise store (:mod:`~napari_unet.core.blockstore`) records the run that wrote it:
the model, the options, the image's statistics, the plan and the scale
(:func:`run_record`), and for labels how its planes are labelled after the blocks
(:func:`postprocess_record`). Resuming compares that record with this run's and refuses,
in one line naming what differs, a store written with other settings
(:func:`refuse_other_settings`). The record also says which scratch arrays a labels run
keeps (:func:`label_scratches`).

Separate from :mod:`~napari_unet.core.blockstore`, which owns the store's layout and
files: this module is what is recorded and compared, with no zarr and no file access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_unet.core.blockplan import BlockPlan
from napari_unet.core.errors import InputError
from napari_unet.core.model import UNet
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.options import SegmentOptions, plane_labeller
from napari_unet.core.scaling import ScaleChoice
from napari_unet.core.seams import default_margin
from napari_unet.core.stores import STORE_FORMAT

#: Keys every run record has (see :func:`run_record`).
RECORD_KEYS = (
    "format",
    "model",
    "config",
    "output",
    "threshold",
    "min_size",
    "stats",
    "planes",
    "plane_shape",
    "tile_input",
    "tile_stride",
    "tiles_per_block",
    "complete",
)


#: How the run record's keys are named in "written with a different ..." messages.
_SETTING_NAMES = {
    "config": "network",
    "stats": "image (its intensities differ)",
    "planes": "number of planes",
    "plane_shape": "image size",
    "tile_input": "tile size",
    "tile_stride": "tile size",
    "tiles_per_block": "block size",
    "format": "store format",
    "postprocess": "post-processing (split, fill, merge or margin)",
}


def refuse_other_settings(
    path: Path, record: dict[str, Any], run: dict[str, Any], *, ignore: tuple[str, ...] = ()
) -> None:
    """Raise when the store's ``record`` was written by another run than ``run``."""
    _refuse_other_scale(path, record, run)
    skip = {"complete", "scale", *ignore}
    keys = (set(run) | set(record)) - skip
    changed = sorted({_SETTING_NAMES.get(k, k) for k in keys if run.get(k) != record.get(k)})
    if changed:
        raise InputError(
            f"cannot resume {path}: it was written with a different {', '.join(changed)}; "
            "rerun with --overwrite instead of --resume to start again"
        )


def _refuse_other_scale(path: Path, record: dict[str, Any], run: dict[str, Any]) -> None:
    """Raise, naming both, when the store was written at another scale than ``run``'s.

    Stores written before scales existed were written at the image's own scale.
    """
    theirs = record.get("scale") if isinstance(record.get("scale"), dict) else {}
    ours = run.get("scale") or {}
    factor = [float(f) for f in theirs.get("factor", [1.0, 1.0])]
    wanted = [float(f) for f in ours.get("factor", [1.0, 1.0])]
    if factor != wanted:
        why = f" ({theirs['reason']})" if theirs.get("reason") else ""
        raise InputError(
            f"cannot resume {path}: it was written at scale {_times(factor)}{why}, this run "
            f"is at {_times(wanted)} ({ours.get('reason', 'not resampled')}); give the same "
            "--pixel-size / --diameter, or rerun with --overwrite instead of --resume"
        )


def _times(factors: list[float]) -> str:
    fy, fx = factors
    return f"x{fy:.4g}" if fy == fx else f"x{fy:.4g} (y) x{fx:.4g} (x)"


#: How messages name the scratch arrays.
SCRATCH_NAMES = {
    "mask": "mask scratch",
    "foreground": "foreground scratch",
    "raw": "unfilled labels scratch",
    "model": "model-scale scratch",
}


def label_scratches(run: dict[str, Any]) -> dict[str, str]:
    """Name -> dtype of the scratch arrays a labels run keeps for the plane labelling:
    the class mask; the foreground probability for grow-and-merge; the labels before
    filling for fill."""
    post = run.get("postprocess")
    if run["output"] != "labels" or not isinstance(post, dict):
        return {}
    scratches = {"mask": "uint8"}
    if post.get("merge_boundaries", 0) > 0:
        scratches["foreground"] = "float32"
    elif post.get("fill_boundaries"):
        scratches["raw"] = "int32"
    return scratches


def postprocess_record(model: ModelBundle | UNet, options: SegmentOptions) -> dict[str, Any]:
    """What a labels run records about its plane labelling, read back by
    :func:`~napari_unet.core.blocks.finish_labels`: the labeller's settings and the margin
    of its windows (from the model's ``object_diameter``, in pixels of the grid labelled;
    connected components are exact with a margin of 1)."""
    labeller = plane_labeller(options)
    if labeller.connectivity_only:
        margin = 1
    else:
        margin = default_margin(labeller, object_diameter=getattr(model, "object_diameter", None))
    return {  # threshold and min_size are the run record's own
        "split_touching": labeller.split_touching,
        "fill_boundaries": labeller.fill_boundaries,
        "merge_boundaries": labeller.merge_boundaries,
        "margin": margin,
    }


def run_record(
    model: ModelBundle | UNet,
    plan: BlockPlan,
    options: SegmentOptions,
    stats: list,
    choice: ScaleChoice | None = None,
) -> dict:
    """What a store records about its run, to refuse resuming with other settings.

    ``scale`` records the scale ``choice`` (its factors, and why); a store is resumed only
    at the same factors. A labels run's ``postprocess`` (:func:`postprocess_record`) says
    how its planes are labelled after the blocks.
    """
    choice = choice or ScaleChoice(1.0, "none", "not resampled")
    record = {
        "scale": choice.record(),
        "format": STORE_FORMAT,
        "model": getattr(model, "name", type(model).__name__),
        "config": model.config.to_dict(),
        "output": options.output,
        "threshold": options.threshold,
        "min_size": options.min_size,
        "stats": stats,
        # as lists: a resumed run compares them with the JSON record
        "channel_axis": options.channel_axis,
        "channels": None if options.channels is None else list(options.channels),
        **plan.describe(),
    }
    if options.output == "labels":
        record["postprocess"] = postprocess_record(model, options)
    return record

"""Where a segmentation's result goes, and which options a run applies: the rules a
front end needs around the pipeline (no Qt, no napari).

- :func:`foreground`: the foreground probability a viewer shows of class probabilities,
  for one tile or, lazily, a whole stored result;
- :func:`default_store_path`, :func:`store_path`: the output store of a block-wise run;
- :func:`plane_in_stack`: one plane's lazy result placed in its stack;
- :func:`round_tile`: the tile size rounded for the model, with a note;
- :func:`run_options`: the one option policy: which options a run applies, block-wise
  ones it cannot apply refused (the user's) or left out with a note (recommendations),
  from the data of :data:`~napari_unet.core.options.WHOLE_PLANE_OPTIONS`; and
  :func:`applied_postprocessing`: what is applied, in words, for a status or summary line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_unet.core.errors import InputError
from napari_unet.core.model import UNetConfig
from napari_unet.core.options import SegmentOptions, WholePlaneOption, blockwise_refused
from napari_unet.core.tiling import round_tile_size


def foreground(probabilities: Any) -> Any:
    """The probability of "any class but background" of class probabilities.

    The rule of :func:`~napari_unet.core.postprocess.foreground_probability` (the
    quantity the mask thresholds), over any leading axes and lazily for a dask array.

    Parameters
    ----------
    probabilities : (..., K, H, W) array
        Softmax probabilities (numpy or dask), or ``K = 1`` foreground probability.

    Returns
    -------
    (..., H, W) array
        Of the input's kind (a dask array stays lazy).
    """
    if int(probabilities.shape[-3]) <= 2:
        return probabilities[..., -1, :, :]
    return 1.0 - probabilities[..., 0, :, :]


def default_store_path(image_name: str) -> Path:
    """Where a block-wise run of the image ``image_name`` writes when no store is chosen:
    ``<tempdir>/napari-unet/<image_name>.zarr``."""
    return Path(tempfile.gettempdir()) / "napari-unet" / f"{image_name}.zarr"


def store_path(chosen: str | Path | None, image_name: str, plane: int | None = None) -> Path:
    """The output store of a block-wise run.

    Parameters
    ----------
    chosen : path or None
        The store the user chose; None or empty: :func:`default_store_path`.
    image_name : str
        The image's name (for the default store).
    plane : int, optional
        One flat plane of a stack is segmented alone: into ``<store>-plane<plane>.zarr``.

    Returns
    -------
    Path
        Always ending in ``.zarr``.
    """
    path = Path(chosen) if chosen else default_store_path(image_name)
    if path.suffix.lower() != ".zarr":
        path = path.with_name(path.name + ".zarr")
    if plane is not None:
        path = path.with_name(f"{path.stem}-plane{plane}.zarr")
    return path


def plane_in_stack(plane: Any, position: tuple[int, ...], leading: tuple[int, ...]) -> Any:
    """A lazy ``(*leading, ...)`` stack holding ``plane`` at ``position``, zeros elsewhere.

    Parameters
    ----------
    plane : (..., H, W) dask array
        The result of one plane.
    position : tuple of int
        Its position among the leading axes.
    leading : tuple of int
        The stack's leading shape (``()``: the plane itself is returned).
    """
    import dask.array as da

    if not leading:
        return plane
    inner = plane_in_stack(plane, position[1:], leading[1:])
    blank = da.zeros(inner.shape, dtype=inner.dtype, chunks=inner.chunksize)
    return da.stack([inner if p == position[0] else blank for p in range(leading[0])])


def links_planes(link: bool, output: str, plane_count: int, *, one_plane: bool) -> bool:
    """Whether a run links labels through z: asked for, instance labels, and a whole
    stack of several planes (one plane has nothing to link to)."""
    return bool(link) and output == "labels" and plane_count > 1 and not one_plane


def round_tile(options: SegmentOptions, config: UNetConfig) -> tuple[SegmentOptions, str | None]:
    """``options`` with its tile size rounded to a valid input size of the network
    ``config`` (:func:`~napari_unet.core.tiling.round_tile_size`), and why it changed
    (None: unchanged or automatic)."""
    if not options.tile_size:
        return options, None
    size, note = round_tile_size(config, options.tile_size)
    return replace(options, tile_size=size), note


def left_out_note(option: WholePlaneOption) -> str:
    """The note of a block-wise run that leaves ``option`` out (it was not the user's
    own choice): ``"linking labels through z needs the whole result in memory, which a
    block-wise (large image) run does not hold: segmented without it"``."""
    return (
        f"{option.what} needs {option.needs}, which a block-wise (large image) run does "
        "not hold: segmented without it"
    )


def run_options(
    options: SegmentOptions, *, block_wise: bool, recommended: Collection[str] = frozenset()
) -> tuple[SegmentOptions, list[str]]:
    """The options a run applies, and a note for each option it leaves out: the one
    option policy of every front end (CLI, widgets).

    In memory every option applies. Block-wise, so does all whole-plane post-processing
    (split, fill, grow-and-merge: the planes are labelled after the blocks) but the
    options :func:`~napari_unet.core.options.blockwise_refused` names (``link``):

    - one the user set is refused, in one line, before any work (the user asked for
      it: nothing they asked for is dropped);
    - one in ``recommended`` (the model's recommendation, or a front end's default such
      as linking a stack whose axis before y is z) is left out, with a note
      (:func:`left_out_note`) the front end shows.

    Every other option (threshold, min size, and any post-processing the block-wise
    core can apply) passes through unchanged.

    Parameters
    ----------
    options : SegmentOptions
        What the run was asked to do.
    block_wise : bool
        Whether the run is block-wise (into a store).
    recommended : collection of str
        Names of the :class:`SegmentOptions` fields the user did not set themselves.

    Returns
    -------
    SegmentOptions
        The options to run with.
    list of str
        One note per option left out, in the order of ``WHOLE_PLANE_OPTIONS``.

    Raises
    ------
    InputError
        For the first whole-plane option the user set that a block-wise run cannot
        apply (:meth:`~napari_unet.core.options.WholePlaneOption.blockwise_message`).
    """
    if not block_wise:
        return options, []
    unapplicable = blockwise_refused(options)
    for option in unapplicable:
        if option.name not in recommended:
            raise InputError(option.blockwise_message())
    # The field's own type's zero: False for a switch, 0.0 for merge_boundaries.
    off = {option.name: type(getattr(options, option.name))() for option in unapplicable}
    return replace(options, **off), [left_out_note(option) for option in unapplicable]


def applied_postprocessing(options: SegmentOptions) -> str:
    """What a run does to the network's probabilities, in words: ``"post-processing:
    threshold 0.5, min size 20 px, grow-and-merge below 0.3, linked through z"``."""
    if options.output == "probabilities":
        return "post-processing: none (probabilities)"
    steps = [f"threshold {options.threshold:g}"]
    if options.output == "labels":
        if options.min_size:
            steps.append(f"min size {options.min_size} px")
        if options.split_touching:
            steps.append("split touching objects")
        if options.fill_boundaries:
            steps.append("fill boundaries")
        if options.merge_boundaries > 0:
            steps.append(f"grow-and-merge below {options.merge_boundaries:g}")
        if options.link:
            steps.append("linked through z")
    return "post-processing: " + ", ".join(steps)


__all__ = [
    "applied_postprocessing",
    "default_store_path",
    "foreground",
    "left_out_note",
    "links_planes",
    "plane_in_stack",
    "round_tile",
    "run_options",
    "store_path",
]

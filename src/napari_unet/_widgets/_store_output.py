"""Where a block-wise Segment run writes: an OME-Zarr store on disk, shown lazily.

The image is never read whole: the core writes block by block into the store (by
default ``<tempdir>/napari-unet/<image>.zarr``, see
:func:`~napari_unet.core.frontend.store_path`), and the output layer is a lazy view of
the store, attached once the run created it, showing each block as soon as it is
written. Cancel keeps the finished blocks; "resume" continues into the same store.

A store is never replaced unless it is this dock's own earlier result for the same
image, or the user agreed (:class:`StoreTargets`): an existing default store becomes a
free name (``<image>-2.zarr``...); a chosen one holding a napari-unet result is replaced
only after asking; anything else goes to the core, which refuses it in one line.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels

from napari_unet._widgets import _dialogs
from napari_unet._widgets._channels import ImageInput
from napari_unet._widgets._layer_output import add_output_layer, output_name
from napari_unet._widgets._layers import METADATA_KEY, our_metadata, show_layer
from napari_unet._widgets._lifetime import in_separate_turns
from napari_unet._widgets._scale import result_calibration
from napari_unet.core.calibration import Calibration
from napari_unet.core.events import Progress, TileDone
from napari_unet.core.frontend import applied_postprocessing, foreground, plane_in_stack, store_path
from napari_unet.core.io import plane_position
from napari_unet.core.largeimage import BlockStore
from napari_unet.core.pipeline import StoreTarget
from napari_unet.core.safety import free_path, is_our_store

if TYPE_CHECKING:
    from napari_unet._widgets._segment_run import SegmentRun


@dataclass(frozen=True)
class StoreRequest:
    """The core's arguments of a block-wise run besides the model, image and options."""

    path: Path
    block_size: int
    resume: bool
    #: Only when the user agreed or the store is this dock's own earlier result.
    overwrite: bool
    #: Files the image was read from: the core never writes over them.
    inputs: tuple[Path, ...]
    #: The calibration of labels and masks (the image's axes without channels).
    calibration: Calibration | None

    def target(self, num_classes: int, output: str) -> StoreTarget:
        """The pipeline's sink (:class:`~napari_unet.core.pipeline.StoreTarget`) of a
        model with ``num_classes`` classes (probabilities get their class axis in the
        calibration)."""
        calibration = self.calibration
        if calibration is not None and output == "probabilities":
            calibration = calibration.for_result(None, num_classes)
        return StoreTarget(
            self.path,
            block_size=self.block_size,
            resume=self.resume,
            overwrite=self.overwrite,
            calibration=calibration,
            inputs=self.inputs,
        )


def source_paths(layer: Any) -> tuple[Path, ...]:
    """The file or store ``layer`` was opened from, if napari knows it (an output may
    never replace it)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return (Path(path),) if path else ()


class StoreTargets:
    """The stores a dock's block-wise runs write to, and which of them are its own.

    Parameters
    ----------
    parent : QWidget
        Parent of the "replace the store?" question.
    """

    def __init__(self, parent: Any) -> None:
        self._parent = parent
        #: Stores this dock wrote: requested path -> (actual path, image layer).
        self._own: dict[Path, tuple[Path, weakref.ref]] = {}

    def resolve(
        self, image_input: ImageInput, plane: int | None, chosen: Any, resume: bool
    ) -> tuple[Path, Path, bool] | None:
        """``(requested, store, overwrite)`` of a run, or None when the user declined to
        replace the chosen store (``chosen``: the dock's field, empty for the default)."""
        requested = store_path(chosen, image_input.name, plane)
        own_path, own_layer = self._own.get(requested, (None, None))
        if own_path is not None and own_layer() is image_input.layer:
            return requested, own_path, not resume
        if resume or not (requested.exists() or requested.is_symlink()):
            return requested, requested, False
        if not chosen:  # our default place: never replace, pick a free name
            return requested, free_path(requested), False
        if not is_our_store(requested):
            return requested, requested, False
        if _dialogs.ask_replace(self._parent, requested):
            return requested, requested, True
        return None

    def remember(self, requested: Path, path: Path, layer: Any) -> None:
        """``path`` (asked for as ``requested``) holds this dock's result for ``layer``."""
        self._own[requested] = (path, weakref.ref(layer))


@dataclass
class StoreOutput:
    """The result of a block-wise run: a store on disk, shown lazily in a layer.

    Built by :meth:`prepare`; :class:`~napari_unet._widgets._segment_run.SegmentRun`
    hands it the core's events.
    """

    viewer: Any
    targets: StoreTargets
    image_input: ImageInput
    #: What the core reads (the image, or a lazy view of one plane of it) and how.
    image: Any
    options: Any
    planes: list[int]
    store: StoreRequest
    requested: Path
    #: The flat plane segmented alone (its own store, shown at its place), or None.
    plane_index: int | None = None
    layer: Any = None
    #: (blocks done, total).
    blocks: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def prepare(
        cls,
        viewer: Any,
        targets: StoreTargets,
        image_input: ImageInput,
        options: Any,
        plane_index: int | None,
        settings: dict[str, Any],
    ) -> StoreOutput | None:
        """The output of a run into the store ``settings`` name (``output_store``,
        ``resume``, ``block_size``); None when the user kept the chosen store."""
        target = targets.resolve(
            image_input, plane_index, settings["output_store"], settings["resume"]
        )
        if target is None:
            return None
        requested, path, overwrite = target
        image = image_input.data
        if plane_index is not None:  # the core segments whole images: a lazy plane view
            image = image_input.plane(plane_index)
            options = replace(options, channel_axis=image_input.plane_channel_axis)
        calibration = result_calibration(
            image_input.placement(), options.pixel_size, plane_only=plane_index is not None
        )
        inputs = tuple(p for layer in image_input.layers for p in source_paths(layer))
        store = StoreRequest(
            path, int(settings["block_size"]), bool(settings["resume"]), overwrite, inputs,
            calibration,
        )  # fmt: skip
        planes = [0] if plane_index is not None else list(range(image_input.plane_count))
        return cls(viewer, targets, image_input, image, options, planes, store, requested,
                   plane_index)  # fmt: skip

    # ---------------------------------------------------------------- the run
    def gui_steps(self, run: SegmentRun) -> list[Any]:
        """Nothing to build before the worker starts: the layer comes with the store."""
        return []

    def start_message(self, run: SegmentRun, source_label: str) -> str:
        where = "image" if self.plane_index is None else f"plane {run.where(self.plane_index)}"
        return f"segmenting {where} block-wise into {self.store.path} with {source_label}..."

    def status_lines(self) -> list[str]:
        """What the run applies, and what it had to leave out: shown under each status."""
        return [applied_postprocessing(self.options), *self.notes]

    def on_event(self, run: SegmentRun, event: Any) -> bool:
        """Handle the block-wise events (True), else leave ``event`` to the run."""
        if not isinstance(event, (TileDone, Progress)):
            return False
        if run.finished:
            run.schedule_refresh(self.layer)  # arrived after the end: keep the final status
            return True
        self.attach_layer(run)  # only now is the store surely this run's
        if isinstance(event, TileDone):
            run.tiles_done += 1
            run.schedule_refresh(self.layer)  # blocks reach the store whole
            done, total = self.blocks
            plane = f" (plane {event.plane})" if run.stacked and self.plane_index is None else ""
            of = f" of {total}" if total else ""
            run.show(f"block {done + 1}{of}: tile {event.index + 1} of {event.total}{plane}")
        elif event.message == "blocks":
            self.blocks = (event.done, event.total)
            run.show(f"block {event.done} of {event.total} done")
            run.schedule_refresh(self.layer)
            run.count(event.done, event.total)
        else:
            run.show(f"{event.message}: {event.done} of {event.total}")
        return True

    def on_returned(self, run: SegmentRun, result: Any) -> None:
        """The store holds the result."""

    def finish(self, run: SegmentRun) -> str:
        """Show the store (unless the run failed) and say how the run ended."""
        if not run.failed:
            self.attach_layer(run)
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.refresh()
        done, total = self.blocks
        if run.cancelled:
            return (
                f"cancelled: kept {done} of {total or '?'} blocks in {self.store.path} "
                "(tick resume to continue)"
            )
        if run.failed:
            return "failed (see the notification)"
        return f"done: {self.layer.name} (saved in {self.store.path})"

    # --------------------------------------------------------------- the layer
    def view(self) -> Any:
        """The store's result as layer data: lazy, read from disk whenever it is drawn.

        Labels and masks of whole images are the zarr array itself (painting edits the
        store); probabilities and single planes of a stack are read-only dask views.
        """
        array = BlockStore(self.store.path).result(mode="r+")
        output = self.options.output
        if output != "probabilities" and self.plane_index is None:
            return array
        import dask.array as da

        view = da.from_zarr(array)
        if output == "probabilities":
            view = foreground(view)
        if self.plane_index is not None:  # the plane at its place in the stack
            leading = self.image_input.leading_shape
            view = plane_in_stack(view, plane_position(leading, self.plane_index), leading)
        return view

    def attach_layer(self, run: SegmentRun) -> None:
        """Show the store in our output layer (main thread), once the worker created it."""
        path = self.store.path
        if self.layer is not None or BlockStore(path).run_record() is None:
            return
        output, image_input = self.options.output, self.image_input
        # A role of its own: the in-memory path must never write into a store's layer.
        metadata = our_metadata(f"{image_input.name}/{output}/store", store=str(path))
        self.targets.remember(self.requested, path, image_input.layer)
        layer_type = Image if output == "probabilities" else Labels
        for layer in self.viewer.layers:
            marker = getattr(layer, "metadata", {}).get(METADATA_KEY)
            if isinstance(layer, layer_type) and marker == metadata[METADATA_KEY]:
                layer.data = self.view()  # our layer of a previous run into this store
                self.layer = layer
                return
        name = output_name(self.viewer, image_input.name, output)
        self.layer = add_output_layer(
            self.viewer, output, self.view(), name, metadata, image_input.placement()
        )
        in_separate_turns(run.unless_closed(show_layer(self.layer)))  # its first draw


__all__ = ["StoreOutput", "StoreRequest", "StoreTargets", "source_paths"]

"""Where an in-memory Segment run writes: a layer filled tile by tile on the main thread.

The output layer has the image's shape without its channel axis (its leading axes
kept) and the image layer's scale, translate and units for those axes, so it overlays
the image. Our earlier layer for the same image and output kind is reused (cleared where
it is rewritten); a new one is added hidden and unselected a turn after the click and
shown a turn later (see :func:`~napari_unet._widgets._lifetime.in_separate_turns`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels

from napari_unet._widgets._channels import ImageInput
from napari_unet._widgets._layers import (
    find_our_layer,
    free_name,
    insert_unselected,
    our_metadata,
    show_layer,
)
from napari_unet.core.events import PlaneDone, TileDone
from napari_unet.core.frontend import applied_postprocessing, foreground
from napari_unet.core.io import plane_position
from napari_unet.core.outputs import OUT_DTYPES

if TYPE_CHECKING:
    from napari_unet._widgets._segment_run import SegmentRun

#: Output kinds: (label in the chooser, SegmentOptions.output, layer name suffix).
OUTPUTS = (
    ("instance labels", "labels", "labels"),
    ("semantic mask", "mask", "mask"),
    ("probabilities (foreground)", "probabilities", "probabilities"),
)


def _suffix(output: str) -> str:
    """The layer name suffix of an output kind ("labels", "mask", "probabilities")."""
    return next(suffix for _, kind, suffix in OUTPUTS if kind == output)


def output_name(viewer: Any, image_name: str, output: str) -> str:
    """A free layer name for the ``output`` of ``image_name``: "blobs labels"..."""
    return free_name(viewer, f"{image_name} {_suffix(output)}")


def build_output_layer(output: str, data: Any, metadata: dict, placement: dict) -> Any:
    """Our output layer, not yet in a viewer, hidden (shown a turn after it is added):
    an Image for ``probabilities``, else Labels. Named when inserted
    (:func:`~napari_unet._widgets._layers.insert_unselected`)."""
    if output == "probabilities":
        return Image(
            data, metadata=metadata, colormap="magma", blending="additive",
            contrast_limits=(0.0, 1.0), opacity=0.7, visible=False, **placement,
        )  # fmt: skip
    return Labels(data, metadata=metadata, visible=False, **placement)


def add_output_layer(
    viewer: Any, output: str, data: Any, name: str, metadata: dict, placement: dict
) -> Any:
    """Build our output layer and add it to ``viewer`` unselected, in one go."""
    layer = build_output_layer(output, data, metadata, placement)
    return insert_unselected(viewer, layer, name)


@dataclass
class LayerOutput:
    """The result of an in-memory run: a layer of the viewer, written tile by tile.

    Built by :meth:`prepare`; :class:`~napari_unet._widgets._segment_run.SegmentRun`
    hands it the core's events.
    """

    viewer: Any
    image_input: ImageInput
    #: What the core reads and how.
    image: Any
    options: Any
    planes: list[int]
    #: The output layer, or None until the run's steps built and added it.
    layer: Any = None
    #: Builds the output layer (not yet in the viewer) when there is none to reuse.
    create: Callable[[], Any] | None = None
    #: The name the built layer gets (or its first free variant) when it is added.
    base_name: str = ""
    #: The labels were linked through the stack when the run ended.
    linked: bool = False
    store: None = None

    @classmethod
    def prepare(
        cls, viewer: Any, image_input: ImageInput, options: Any, planes: list[int]
    ) -> LayerOutput:
        """Our output layer for this image, cleared where it will be rewritten, or a
        ``create`` step adding it (the run calls it a turn later)."""
        output = cls(viewer, image_input, image_input.data, options, planes)
        kind, shape = options.output, image_input.shape
        role = f"{image_input.name}/{kind}"
        dtype = OUT_DTYPES[kind]
        layer_type = Image if kind == "probabilities" else Labels
        layer = find_our_layer(viewer, role, layer_type, shape, dtype)
        if layer is not None:
            if len(planes) < image_input.plane_count:
                for p in planes:
                    layer.data[image_input.position(p)] = 0
            else:
                layer.data[...] = 0
            layer.refresh()
            output.layer = layer
            return output
        metadata = our_metadata(role)
        placement = image_input.placement()

        def create() -> Any:
            data = np.zeros(shape, dtype=dtype)
            return build_output_layer(kind, data, metadata, placement)

        output.create = create
        output.base_name = f"{image_input.name} {_suffix(kind)}"
        return output

    # ---------------------------------------------------------------- the run
    def gui_steps(self, run: SegmentRun) -> list[Callable[[], None]]:
        """Build the layer, add it, then show it (its first draw), each in a turn of its
        own: one napari stall at a time."""
        if self.create is None:
            return []
        built: list[Any] = []

        def build_layer() -> None:
            built.append(self.create())

        def add_layer() -> None:
            self.layer = insert_unselected(self.viewer, built.pop(), self.base_name)

        return [build_layer, add_layer, lambda: show_layer(self.layer)()]

    def start_message(self, run: SegmentRun, source_label: str) -> str:
        planes = self.planes
        if run.stacked and len(planes) == 1:
            what = f"plane {run.where(planes[0])}"
        elif run.stacked:
            what = f"{len(planes)} planes"
        else:
            what = "image"
        return f"segmenting {what} with {source_label}..."

    def status_lines(self) -> list[str]:
        """What the run applies (in memory every option applies), shown under each status."""
        return [applied_postprocessing(self.options)]

    def on_event(self, run: SegmentRun, event: Any) -> bool:
        """Write finished tiles and planes (True), else leave ``event`` to the run."""
        if isinstance(event, TileDone):
            if run.tiles_done == 0:  # the bar counts the tiles of every plane of the run
                run.count(0, event.total * len(self.planes))
            self._write(run, event.plane, event.region, event.data)
            run.tiles_done += 1
            if not run.finished:  # else the final status ("cancelled: ...") stays
                run.show(self._tile_status(run, event))
                run.count(run.progress.n + 1)  # last: it may deliver `finished` here
            return True
        if isinstance(event, PlaneDone):
            if self.options.output == "labels":  # ids consistent across tile seams
                self._write(run, event.plane, (slice(None), slice(None)), event.data)
            run.planes_done.add(event.plane)
            if self.options.link and len(run.planes_done) == len(self.planes):
                if not run.finished:
                    run.show(f"linking the labels of {len(self.planes)} planes...")
            return True
        return False

    def _tile_status(self, run: SegmentRun, event: TileDone) -> str:
        """ "tile 3 of 4"; in a stack "plane 2 of 6 (t=0, z=1), tile 3 of 4"."""
        if not run.stacked:
            return f"tile {run.tiles_done} of {run.progress.total}"
        tile = f"tile {event.index + 1} of {event.total}"
        where = run.where(event.plane)
        if len(self.planes) == 1:
            return f"plane {where}: {tile}"
        ordinal = min(len(run.planes_done) + 1, len(self.planes))
        return f"plane {ordinal} of {len(self.planes)} ({where}), {tile}"

    def _write(self, run: SegmentRun, plane: int, region: tuple, data: np.ndarray) -> None:
        if self.options.output == "probabilities":
            data = foreground(data)
        # The flat plane index of the core, at its place among the leading axes.
        leading = self.image_input.leading_shape
        where = tuple(plane_position(leading, plane)) if leading else ()
        self.layer.data[(*where, *region)] = data
        run.schedule_refresh(self.layer)

    def on_returned(self, run: SegmentRun, result: Any) -> None:
        """With "link", the labels linked through the stack replace the planes' own."""
        if not self.options.link or run.cancelled or run.failed or result is None:
            return
        layer = self.layer
        if layer is None or tuple(np.shape(result)) != tuple(layer.data.shape):
            return
        layer.data[...] = result
        self.linked = True
        run.schedule_refresh(layer)

    def finish(self, run: SegmentRun) -> str:
        """Say how the run ended."""
        if self.layer in self.viewer.layers:
            self.layer.refresh()
        count = len(self.planes)
        if run.cancelled:
            total = run.progress.total if run.progress is not None else 0
            kept = f"cancelled: kept {run.tiles_done} of {total or '?'} tiles"
            planes = f"{len(run.planes_done)} of {count} planes"
            return kept + (f" ({planes} whole; not linked)" if count > 1 else "")
        if run.failed:
            return "failed (see the notification)"
        linked = ", labels linked" if self.linked else ""
        return f"done: {self.layer.name}" + (f" ({count} planes{linked})" if count > 1 else "")


__all__ = ["OUTPUTS", "LayerOutput", "add_output_layer", "build_output_layer", "output_name"]

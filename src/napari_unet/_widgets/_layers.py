"""napari layers the docks create: our metadata marker, free names, unselected adds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Metadata key marking layers created by napari-unet (so they may be overwritten).
METADATA_KEY = "napari_unet"


def add_unselected(add_layer: Callable[..., Any], viewer: Any, *args: Any, **kwargs: Any) -> Any:
    """Add a layer with ``add_layer`` (e.g. ``viewer.add_labels``) without selecting it.

    napari makes every new layer the active one. Our output and preview layers must not
    take the selection from the layer the user works with (the image the Segment widget
    follows, the annotations being painted). The selection's events are held while the
    layer is inserted and the previous selection is put back, so nothing that listens to
    the selection (the layer controls, the layer list) sees a change: switching the layer
    controls there and back cost a first run's longest stall 50-90 ms
    (benchmarks/bench_responsiveness.py). Only public API: napari's private
    ``_activate_on_insert`` switch warns in plugins and goes away in napari 0.10.
    """
    selection = viewer.layers.selection
    active, selected = selection.active, set(selection)
    with selection.events.blocker_all():
        layer = add_layer(*args, **kwargs)
        selection.clear()
        selection.update(selected)
        selection.active = active
    return layer


def insert_unselected(viewer: Any, layer: Any, base_name: str) -> Any:
    """Insert a layer built beforehand (``napari.layers.Labels(...)``...) without
    selecting it, named ``base_name`` or the first free variant of it.

    Why build first: constructing the layer costs 10-20 ms of the 70-120 ms a first
    run's insertion step took (benchmarks/bench_responsiveness.py); built a turn earlier,
    the insertion turn is only napari's own work. Named here, at insertion, so a layer
    the user added in between cannot take the name.
    """
    layer.name = free_name(viewer, base_name)
    return add_unselected(viewer.add_layer, viewer, layer)


def choose_layer(chooser: Any, viewer: Any, layer: Any) -> None:
    """Pick ``layer`` (a layer of ``viewer`` or its name) in a layer chooser, as a user
    would: the choices are refreshed first, so a layer added just before is offered."""
    chooser.reset_choices()
    chooser.value = viewer.layers[layer] if isinstance(layer, str) else layer


def show_layer(layer: Any) -> Callable[[], None]:
    """A step for :func:`in_separate_turns` making a layer added with ``visible=False``
    visible: a hidden layer is not drawn, so its first draw gets a turn of its own."""
    return lambda: setattr(layer, "visible", True)


def spatial_transform(layer: Any) -> dict[str, Any]:
    """Scale and translate of ``layer``, to give a result layer the same placement."""
    return {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}


def is_ours(layer: Any) -> bool:
    """Whether ``layer`` was created by napari-unet (so it may be overwritten)."""
    return METADATA_KEY in getattr(layer, "metadata", {})


def our_metadata(role: str, **details: Any) -> dict[str, Any]:
    """Layer metadata marking a layer as napari-unet's ``role`` (e.g. "EM stack/labels")."""
    return {METADATA_KEY: {"role": role, **details}}


def find_our_layer(viewer: Any, role: str, layer_type: type, shape: tuple, dtype: Any) -> Any:
    """Our layer playing ``role``, of this type, shape and dtype, or ``None``.

    Layers the user made (without our metadata) are never returned, so results never
    overwrite a layer somebody painted or loaded.
    """
    for layer in viewer.layers:
        marker = getattr(layer, "metadata", {}).get(METADATA_KEY)
        if not (isinstance(marker, dict) and marker.get("role") == role):
            continue
        if not isinstance(layer, layer_type):
            continue
        if tuple(layer.data.shape) == tuple(shape) and np.dtype(layer.data.dtype) == np.dtype(
            dtype
        ):
            return layer
    return None


def free_name(viewer: Any, name: str) -> str:
    """``name``, or ``name [2]``, ``name [3]``... the first not used by a layer."""
    if name not in viewer.layers:
        return name
    index = 2
    while f"{name} [{index}]" in viewer.layers:
        index += 1
    return f"{name} [{index}]"

"""The Fine-tune dock as a user sets it up: opened from the Plugins menu, cells painted."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_unet._widgets.finetune import FinetuneWidget

#: Tiny training settings: 2 steps of batch 1 on 60 px patches, no augmentation or preview.
TINY_TRAINING = dict(
    steps=2, batch_size=1, patch_size=60, augment=False, preview_every=0, device="cpu"
)


def painted_finetune_dock(
    viewer, blobs: np.ndarray, base: Path, **options
) -> tuple[object, FinetuneWidget]:
    """``(dock, widget)``: ``blobs`` added as an image, the Fine-tune dock opened through
    the plugin's menu entry, background (1) and three cells (2, 3) painted, ``base`` added
    as a base model, :data:`TINY_TRAINING` and ``options`` set through ``set_options``."""
    viewer.add_image(blobs, name="blobs")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    assert isinstance(widget, FinetuneWidget)
    annotations = widget.new_annotations()
    annotations.data[2:10, 40:60] = 1
    annotations.data[85:92, 50:90] = 1
    annotations.data[15:25, 20:30] = 2
    annotations.data[45:55, 65:75] = 3
    widget.add_model_file(base)
    widget.set_options(**{**TINY_TRAINING, **options})
    return dock, widget

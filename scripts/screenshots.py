"""Take the documentation screenshots of both dock widgets in a real napari window.

Runs the walkthrough for real on the nuclei sample: paint sparse annotations (from the
sample's ground truth: a few nuclei and some background), fine-tune the built-in nuclei
model (a small U-Net from scratch when it is missing) with the Fine-tune widget, then
segment with the Segment widget, and saves
``docs/images/finetune.png`` and ``docs/images/segment.png``. Starts Xvfb when there is
no display.

Run: ``python scripts/screenshots.py [--steps 60]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
NUCLEI_LABELS = (
    ROOT.parent / "shared" / "data" / "nuclei-dsb2018" / "labels" / "b1f23c4d27afed8a.tif"
)


def paint_from_ground_truth(annotations: np.ndarray, truth: np.ndarray, cells: int = 12) -> None:
    """Sparse strokes a user might paint: ``cells`` whole nuclei (2, 3, ...) and background (1)."""
    from scipy import ndimage

    ids = [i for i in np.unique(truth) if i][:: max(1, truth.max() // cells)][:cells]
    for new_id, old_id in enumerate(ids, start=2):
        annotations[truth == old_id] = new_id
    far = ~ndimage.binary_dilation(truth > 0, iterations=6)
    rows, cols = np.nonzero(far)
    pick = np.random.default_rng(0).choice(len(rows), size=min(len(rows), 4000), replace=False)
    background = np.zeros(truth.shape, bool)
    background[rows[pick], cols[pick]] = True
    annotations[ndimage.binary_dilation(background, iterations=2) & far] = 1


def close_toasts(viewer) -> None:
    """Hide napari's pop-up notifications (e.g. the PyQt5 deprecation) before a screenshot."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def wait(predicate, app) -> None:
    import time

    while predicate():
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_responsiveness import ensure_display

    xvfb = ensure_display()
    try:
        import napari
        import tifffile
        import torch
        from qtpy.QtWidgets import QApplication

        from napari_unet._sample_data import nuclei_image
        from napari_unet._widgets.finetune import FinetuneWidget
        from napari_unet._widgets.segment import SegmentWidget

        torch.set_num_threads(2)
        IMAGES.mkdir(parents=True, exist_ok=True)
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.resize(1500, 950)
        app = QApplication.instance()
        finetune = FinetuneWidget(viewer)
        segment = SegmentWidget(viewer)
        viewer.window.add_dock_widget(finetune, name="Fine-tune (napari-unet)", area="right")
        nuclei = viewer.add_image(nuclei_image(), name="nuclei")

        annotations = finetune.new_annotations()
        paint_from_ground_truth(annotations.data, tifffile.imread(NUCLEI_LABELS))
        annotations.refresh()
        # Fine-tune the built-in nuclei model when it is installed, as a user would.
        base = "nuclei" if "nuclei" in finetune.base_labels else "scratch"
        finetune.set_options(
            base=base, steps=args.steps, preview_every=25, device="cpu", name="nuclei-tuned"
        )
        finetune.start()
        wait(lambda: finetune.is_training, app)
        viewer.layers.selection.active = annotations
        close_toasts(viewer)
        app.processEvents()
        viewer.screenshot(str(IMAGES / "finetune.png"), canvas_only=False, flash=False)

        viewer.window.remove_dock_widget(finetune.native.parent() or finetune.native)
        viewer.window.add_dock_widget(segment, name="Segment (napari-unet)", area="right")
        for name in ("nuclei preview", annotations.name):
            viewer.layers[name].visible = False
        viewer.layers.selection.active = nuclei
        segment.segment_current_slice()
        wait(lambda: segment.is_running, app)
        close_toasts(viewer)
        app.processEvents()
        viewer.screenshot(str(IMAGES / "segment.png"), canvas_only=False, flash=False)
        print(finetune.status)
        print(segment.status)
        viewer.close()
    finally:
        if xvfb is not None:
            xvfb.terminate()


if __name__ == "__main__":
    main()

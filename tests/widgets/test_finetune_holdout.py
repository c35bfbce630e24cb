"""The Fine-tune dock shows the held-out score live and the re-tuned post-processing."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.core.holdout import holdout_score, split_holdout
from napari_unet.core.segment import recommended_options, segment

TIMEOUT_MS = 90_000


def _paint_every_disc(annotations: np.ndarray, image: np.ndarray) -> None:
    """Each bright disc its own id (2+), a 3 px ring of background (1) around them."""
    discs, count = ndimage.label(image > 100)
    ring = ndimage.binary_dilation(discs > 0, iterations=3) & (discs == 0)
    annotations[ring] = 1
    annotations[discs > 0] = discs[discs > 0] + 1
    assert count == 5


@pytest.mark.slow  # trains 8 tiny steps: ~5-20 s on a busy 2-core machine
def test_held_out_score_is_shown_and_equals_the_offline_score(
    make_napari_viewer, qtbot, blobs, tiny_base_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    annotations = widget.new_annotations()
    _paint_every_disc(annotations.data, blobs)
    widget.add_model_file(tiny_base_file)
    widget.set_options(
        steps=8, batch_size=1, patch_size=60, augment=False, preview_every=0, device="cpu",
        holdout="20%", learning_rate=5e-3,
    )  # fmt: skip
    shown_statuses: list[str] = []
    widget.status_shown.connect(shown_statuses.append)  # every text the status line shows
    widget.start()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=TIMEOUT_MS)
    # while the last step's weights are re-tuned, the dock says so (not a stale eta)
    assert any("re-tuning the post-processing" in text for text in shown_statuses)

    plot = widget.loss_plot
    assert len(plot.scores) == 4 and plot.score_name == "held-out F1@0.5"  # every 2 steps
    status = widget.status
    assert "held-out F1@0.5" in status and "1 of 5 cells held out" in status
    assert any(text.startswith("held-out F1@0.5") for text, _ in plot.tick_labels())
    for _text, rect in plot.tick_labels():  # nothing clipped at the dock's width
        assert rect.left() >= 0 and rect.right() <= plot.width()

    # Offline: the same split of the painted layer, the saved model's probabilities
    bundle = widget.trained_bundle
    record = bundle.provenance["holdout"]
    holdout = split_holdout([annotations.data], "sparse", "20%").holdout
    assert holdout.description == record["held_out"] == "1 of 5 cells"
    probabilities = segment(
        bundle, blobs, output="probabilities", device="cpu", diameter=bundle.object_diameter
    )
    shown = dict(plot.scores)[plot.best_step]
    assert holdout_score(probabilities, holdout, record["postprocess"]) == pytest.approx(shown)
    tuned = bundle.provenance["postprocess_tuning"]["held_out_tuned_score"]
    offline = holdout_score(probabilities, holdout, recommended_options(bundle, "labels"))
    assert offline == pytest.approx(tuned)


def test_the_transmitted_light_augmentation_is_set_in_the_dock(make_napari_viewer, blobs):
    """The DIC recipe's blur and contrast inversion (docs/transmitted-light.md) are dock
    settings that reach the training run; both are off by default."""
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    default = widget.train_config().augment
    assert (default.blur, default.invert) == (0.0, 0.0)
    widget.set_options(blur=1.5, invert_contrast=0.5)
    augment = widget.train_config().augment
    assert (augment.enabled, augment.blur, augment.invert) == (True, 1.5, 0.5)

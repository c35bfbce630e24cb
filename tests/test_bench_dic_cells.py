"""benchmarks/bench_dic_cells.py: its Otsu baselines on synthetic DIC-like relief discs
(one side brighter, the other darker than an even, noisy background), its scoring rows
and its report text."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.core.metrics import f1_score

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: Disc centres (row, col) and radius (px) of the synthetic image.
CENTRES = [(40, 40), (40, 120), (120, 50), (110, 140), (170, 170)]
RADIUS = 18


@pytest.fixture(scope="module")
def bench():
    # As when run as a script: benchmarks/ on sys.path, so the module finds _report.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("bench_dic_cells")
    finally:
        sys.path.remove(str(BENCHMARKS))


def relief_discs(
    seed: int = 0, contrast: float = 30.0, ring: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A ``(200, 200)`` uint8 DIC-like image and its ``(200, 200)`` instance labels.

    Each disc is lit on its left ~40 % (brighter than the background) and shaded on the
    rest (darker), as DIC relief; so the bright part alone covers well under half of a
    disc. ``ring``: only a 5 px rim deviates, the interior is at background level (flat
    cells), which only filling holes recovers.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:200, :200]
    image = 100.0 + rng.normal(0, 3, (200, 200))
    truth = np.zeros((200, 200), np.int32)
    for index, (r, c) in enumerate(CENTRES, start=1):
        distance = np.hypot(rows - r, cols - c)
        disc = distance <= RADIUS
        truth[disc] = index
        shaded = disc & (distance > RADIUS - 5) if ring else disc
        lit = cols < c - 0.2 * RADIUS
        image[shaded & lit] += contrast
        image[shaded & ~lit] -= contrast
    return np.clip(image, 0, 255).astype(np.uint8), truth


def test_deviation_baseline_finds_each_disc_once(bench):
    image, truth = relief_discs()
    labels = bench.deviation_baseline(image)
    assert labels.shape == truth.shape and labels.dtype == np.int32
    assert labels.max() == len(CENTRES)
    # Each disc holds exactly one object, and no object spans two discs.
    found = [set(np.unique(labels[truth == i])) - {0} for i in range(1, len(CENTRES) + 1)]
    assert all(len(ids) == 1 for ids in found)
    assert len(set().union(*found)) == len(CENTRES)
    assert f1_score(truth, labels, 0.5) == 1.0
    assert f1_score(truth, labels, 0.8) == 1.0  # the outlines, not just the centres


def test_plain_intensity_otsu_finds_only_lit_sides(bench):
    image, truth = relief_discs()
    deviation = bench.deviation_baseline(image)
    intensity = bench.intensity_baseline(image)
    iou = bench.TB.foreground_iou
    assert iou(truth, intensity) < 0.5 < 0.9 < iou(truth, deviation)
    assert f1_score(truth, intensity, 0.5) == 0.0


def test_fill_holes_recovers_flat_interiors(bench):
    image, truth = relief_discs(ring=True)
    labels = bench.deviation_baseline(image)
    assert f1_score(truth, labels, 0.5) == 1.0
    assert bench.TB.foreground_iou(truth, labels) > 0.9


def test_small_objects_are_removed(bench):
    image, _ = relief_discs()
    image[185:193, 10:18] = 160  # an 8 x 8 speck (64 px), strongly bright
    labels = bench.deviation_baseline(image)
    assert not labels[185:193, 10:18].any()
    assert labels.max() == len(CENTRES)
    kept = bench.deviation_baseline(image, min_size=10)
    assert kept[189, 14] > 0 and kept.max() == len(CENTRES) + 1


def test_smoothing_merges_noise_into_no_objects(bench):
    # Sigma 0 leaves the background's noise pixels: Otsu of pure deviation noise splits
    # it into many specks; smoothing is what keeps the background clean.
    image, _ = relief_discs(contrast=12.0)
    assert bench.deviation_baseline(image).max() == len(CENTRES)
    assert bench.deviation_baseline(image, sigma=0.0, min_size=1).max() > 3 * len(CENTRES)


def test_blank_image_has_no_objects(bench):
    blank = np.full((64, 64), 100, np.uint8)
    assert not bench.deviation_baseline(blank).any()
    assert not bench.intensity_baseline(blank).any()


def test_input_is_not_modified(bench):
    image, _ = relief_discs()
    before = image.copy()
    bench.deviation_baseline(image)
    bench.intensity_baseline(image)
    np.testing.assert_array_equal(image, before)


def test_scores_rows_and_report_text(bench):
    images, truths = zip(*(relief_discs(seed) for seed in range(3)), strict=True)
    deviation = bench.score_baseline(
        "Otsu on deviation", bench.deviation_baseline, list(images), list(truths)
    )
    intensity = bench.score_baseline(
        "Otsu on intensity", bench.intensity_baseline, list(images), list(truths)
    )
    assert deviation.f1 == [1.0, 1.0, 1.0] and len(deviation.seconds) == 3
    assert deviation.row().startswith("| Otsu on deviation | 0.9")
    assert "| 1.0000 (1.0000) |" in deviation.row()
    # The model's row is compared per image against each baseline.
    model = bench.MethodScores("dic-cells", iou=[0.95, 0.8, 0.99], f1=[1.0, 0.5, 1.0])
    model.seconds = [1.0, 2.0, 3.0]
    text = bench.body_text([model, deviation, intensity], "Model: test.", "test", 2)
    assert "| dic-cells | 0.9133 (0.8000) | 0.8333 (0.5000) | 2.00 |" in text
    assert "beats Otsu on intensity on 3 of 3 images by F1@0.5" in text
    assert "beats Otsu on deviation on 0 of 3 images by F1@0.5" in text
    assert "3 images of the `test` split" in text


def test_report_refused_for_partial_runs(bench, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--report", "--limit", "2"])
    assert "--report is for the full test split" in capsys.readouterr().err


@pytest.mark.data
def test_baselines_on_one_real_train_image(bench, shared_data):
    # The train split only (the test split is the benchmark's, scored once): on real DIC
    # relief the deviation baseline finds cells that intensity alone does not.
    root = shared_data / "dic-cho-bbbc030" / "train"
    name = sorted(p.name for p in (root / "images").glob("*.tif"))[0]
    image = tifffile.imread(root / "images" / name)
    truth = bench.TB.dic_cells_labels(tifffile.imread(root / "labels" / name))
    deviation, intensity = bench.deviation_baseline(image), bench.intensity_baseline(image)
    iou = bench.TB.foreground_iou
    assert iou(truth, deviation) > 0.5 > 0.3 > iou(truth, intensity)
    assert f1_score(truth, deviation, 0.5) > 0.3 > f1_score(truth, intensity, 0.5)

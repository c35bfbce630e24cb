"""benchmarks/bench_human_loop.py: the simulated user's choice of mistakes, the annotations
of both modes, the validation split and the verdict, on tiny synthetic labels."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    # As when run as a script: benchmarks/ on sys.path.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("bench_human_loop")
    finally:
        sys.path.remove(str(BENCHMARKS))


def truth_labels() -> np.ndarray:
    """``(20, 30)`` ground truth: 5 x 5 squares 1, 2, 3 and a 5 x 2 bar 4 two pixels
    right of 2 (inside 2's background ring)."""
    truth = np.zeros((20, 30), np.uint16)
    truth[2:7, 2:7] = 1
    truth[2:7, 12:17] = 2
    truth[12:17, 2:7] = 3
    truth[2:7, 18:20] = 4
    return truth


def result_labels() -> np.ndarray:
    """``(20, 30)`` result: 10 matches truth 1; 20 covers the left part of truth 2 and
    spills left of it (IoU 10 / 35); truths 3 and 4 missed; 30 (48 px) and 40 (6 px) are
    false positives on background."""
    result = np.zeros((20, 30), np.int32)
    result[2:7, 2:7] = 10
    result[2:7, 10:14] = 20
    result[12:18, 20:28] = 30
    result[0:2, 25:28] = 40
    return result


def test_rank_mistakes_missed_by_iou_then_false_positives_by_size(bench):
    ranked = bench.rank_mistakes(truth_labels(), result_labels())
    missed = [(m.kind, m.truth_id) for m in ranked if m.kind == "missed"]
    # 3 and 4 have IoU 0 (ties by id), 2 has IoU 10/35; 1 is matched so absent.
    assert missed == [("missed", 3), ("missed", 4), ("missed", 2)]
    assert ranked[2].iou == pytest.approx(10 / 35)
    assert [m.kind for m in ranked] == ["missed"] * 3 + ["false"] * 3
    # Result 20 (20 px) is also unmatched: sizes 48, 20, 6.
    assert [int(m.mask.sum()) for m in ranked[3:]] == [48, 20, 6]
    assert ranked[3].mask[12, 20] and not ranked[3].mask[0, 25]


def test_rank_mistakes_of_a_perfect_result_is_empty(bench):
    truth = truth_labels()
    assert bench.rank_mistakes(truth, truth.astype(np.int32) * 7) == []


def test_choose_fixes_takes_the_worst_and_never_repeats(bench):
    truth, result = truth_labels(), result_labels()
    first = bench.choose_fixes(truth, result, bench.Fixes(), 3)
    assert first.truth_ids == [3, 4, 2] and first.erased == []
    second = bench.choose_fixes(truth, result, first, 3)
    assert second.truth_ids == [3, 4, 2]  # fixed true objects are not chosen again
    assert [int(m.sum()) for m in second.erased] == [48, 20, 6]
    assert second.count == 6
    third = bench.choose_fixes(truth, result, second, 3)
    assert third.count == 6  # nothing left that was not fixed
    assert first.count == 3  # the earlier fixes are not modified


def test_false_positive_mostly_erased_before_is_not_chosen_again(bench):
    truth = truth_labels()
    earlier = np.zeros(truth.shape, bool)
    earlier[12:18, 20:28] = True
    fixes = bench.Fixes([1, 2, 3, 4], [earlier])
    moved = np.zeros(truth.shape, np.int32)
    moved[12:18, 21:29] = 5  # 7 of its 8 columns were erased before
    moved[0:2, 0:3] = 6  # a new false positive
    chosen = bench.choose_fixes(truth, moved + np.where(truth > 0, truth + 10, 0), fixes, 3)
    assert [int(m.sum()) for m in chosen.erased[1:]] == [6]


def test_correct_annotation_applies_fixes_and_keeps_the_rest_of_the_result(bench, monkeypatch):
    monkeypatch.setattr(bench, "UNSURE_BAND", 0)  # every pixel of the result converted
    truth, result = truth_labels(), result_labels()
    fixes = bench.choose_fixes(truth, result, bench.Fixes(), 3)  # truths 3, 4, 2
    fixes = bench.Fixes(fixes.truth_ids, [result == 30])
    annotation = bench.correct_annotation(result, truth, fixes)
    assert (annotation > 0).all()  # annotated everywhere
    for truth_id in (2, 3, 4):  # each fixed object is one cell, over whatever was there
        values = np.unique(annotation[truth == truth_id])
        assert len(values) == 1 and values[0] >= 2
    cells = {int(np.unique(annotation[truth == t])[0]) for t in (2, 3, 4)}
    assert len(cells) == 3
    kept_1, kept_20, kept_40 = annotation[4, 4], annotation[4, 10], annotation[0, 26]
    assert min(kept_1, kept_20, kept_40) >= 2  # the result's other objects stay cells
    assert len({int(kept_1), int(kept_20), int(kept_40)} | cells) == 6
    assert (annotation[result == 30] == 1).all()  # erased false positive: background
    assert annotation[10, 15] == 1  # the result's background


def test_erasing_never_marks_a_true_object_background(bench):
    truth = truth_labels()
    result = np.zeros(truth.shape, np.int32)
    result[1:9, 0:9] = 7  # one blob over truth 1 (IoU 25 / 72): a false positive
    fixes = bench.Fixes([], [result == 7])
    annotation = bench.correct_annotation(result, truth, fixes)
    assert (annotation[truth == 1] == 0).all()  # unannotated, not background
    assert (annotation[(result == 7) & (truth == 0)] == 1).all()
    fixes = bench.Fixes([1], [result == 7])
    for mode in bench.MODES:  # a fixed true object wins over the erased pixels
        annotation = bench.build_annotation(mode, result, truth, fixes)
        assert (annotation[truth == 1] >= 2).all()


def test_paint_annotation_only_fixed_objects_and_their_rings(bench):
    truth, result = truth_labels(), result_labels()
    fixes = bench.Fixes([2], [result == 30])
    annotation = bench.paint_annotation(truth, fixes)
    assert (annotation[truth == 2] == 2).all() and annotation.max() == 2
    # Ring of radius max(3, 0.25 x 5.6) = 3 px around truth 2 ...
    assert annotation[4, 9] == 1 and annotation[4, 8] == 0
    assert annotation[1, 14] == 1 and annotation[9, 14] == 1 and annotation[10, 14] == 0
    assert annotation[4, 17] == 1
    # ... minus the other true objects, which stay unannotated.
    assert (annotation[truth == 4] == 0).all()
    assert (annotation[truth == 1] == 0).all() and (annotation[truth == 3] == 0).all()
    assert (annotation[result == 30] == 1).all()  # the erased false positive
    assert annotation[0, 26] == 0  # the result plays no part otherwise
    ring = (annotation == 1) & (result != 30)
    assert ring.sum() < 11 * 11 - 25  # within the 3 px dilation's bounding box


def test_ring_radius(bench):
    assert bench.ring_radius(1) == 3.0
    assert bench.ring_radius(int(np.pi * 20**2)) == pytest.approx(10.0, abs=0.01)


def test_validation_names_are_the_last_tenth_sorted(bench):
    names = [f"img{i:02d}.tif" for i in range(25)][::-1]
    assert bench.validation_names(names) == ["img23.tif", "img24.tif"]


def test_worst_images_lowest_first_ties_by_index(bench):
    assert bench.worst_images([0.9, 0.5, 0.7, 0.5, 0.95], 3) == [1, 3, 2]


def test_fewest_fixes_and_verdict(bench):
    rows = [bench.Round("correct", i, 5 * i, f1, 0.0) for i, f1 in ((1, 0.6), (2, 0.71))]
    assert bench.fewest_fixes(rows, 0.7) == 10
    assert bench.fewest_fixes(rows, 0.8) is None
    assert bench.verdict(10, 20, 30).startswith("met")
    assert bench.verdict(11, 20, 30).startswith("missed")
    assert bench.verdict(None, 20, 30).startswith("missed")
    assert bench.verdict(10, None, 20).startswith("met")  # painting needs more than 20
    assert bench.verdict(11, None, 20).startswith("undecided")


@pytest.mark.data
def test_validation_split_matches_train_builtin(bench):
    if not (bench.DATA / "images").is_dir():
        pytest.skip(f"no nuclei data at {bench.DATA}")
    data = bench.load_validation()
    every = sorted(p.name for p in (bench.DATA / "images").glob("*.tif"))
    assert [name for name, _, _ in data] == every[-(len(every) // 10) :]
    assert len(data) == 39
    _, image, truth = data[0]
    assert image.shape == truth.shape and truth.max() > 0


def test_report_body_table_and_verdict(bench):
    args = bench.parse_args([])
    rows = [
        bench.Round("paint", 1, 18, 0.66, 100.0),
        bench.Round("correct", 1, 18, 0.72, 90.0),
        bench.Round("paint", 2, 36, 0.73, 100.0),
    ]
    body = bench.report_body(rows, 0.65, [("a.tif", 0.6), ("b.tif", 0.7)], args)
    lines = body.splitlines()
    assert "- Target: F1 >= baseline + 0.05 = 0.7000" in lines
    assert (
        "- Fewest fixed objects to reach it: correct 18 fixed objects, paint 36 fixed "
        "objects" in lines
    )
    assert (
        "- Correcting needs at most half of painting's fixed objects: met: 18 vs 36 "
        "fixed objects" in lines
    )
    table = [line for line in lines if line.startswith("| correct") or line.startswith("| paint")]
    assert table == [
        "| correct | 0 | 0 | 0.6500 | - |",
        "| correct | 1 | 18 | 0.7200 | 90 |",
        "| paint | 0 | 0 | 0.6500 | - |",
        "| paint | 1 | 18 | 0.6600 | 100 |",
        "| paint | 2 | 36 | 0.7300 | 100 |",
    ]
    assert "a.tif (0.600), b.tif (0.700)" in body


def test_reviewing_a_whole_image_fixes_every_mistake(bench, monkeypatch):
    """--protocol image: every mistake fixed; correct keeps the rest of the result,
    paint annotates only the fixed objects; unreviewed images stay unannotated."""
    monkeypatch.setattr(bench, "UNSURE_BAND", 0)  # every pixel of the result converted
    truth, result = truth_labels(), result_labels()
    mistakes = bench.rank_mistakes(truth, result)
    fixes, corrected = bench.review_image("correct", result, truth)
    assert fixes.count == len(mistakes) >= 4
    assert sorted(fixes.truth_ids) == [2, 3, 4]
    assert (corrected > 0).all() and corrected[4, 4] >= 2  # truth 1, matched, kept
    _, painted = bench.review_image("paint", result, truth)
    assert (painted[truth == 1] == 0).all()  # not a mistake: not painted
    assert all((painted[truth == t] >= 2).all() for t in (2, 3, 4))

    state = bench.ModeState("correct", [result, result], [bench.Fixes(), bench.Fixes()])
    first = bench._image_round(state, 1, [truth, truth])
    np.testing.assert_array_equal(first[0], corrected)
    assert not first[1].any()  # the second image is not reviewed yet
    second = bench._image_round(state, 2, [truth, truth])
    np.testing.assert_array_equal(second[0], corrected)  # kept as made
    assert (second[1] > 0).all()


def test_correcting_leaves_the_result_s_boundaries_unannotated_by_default(bench):
    """The dock's default band: kept result objects lose 2 px at their boundaries, the
    fixed true objects are painted whole."""
    truth, result = truth_labels(), result_labels()
    assert bench.UNSURE_BAND == 2
    fixes = bench.choose_fixes(truth, result, bench.Fixes(), 3)
    annotation = bench.correct_annotation(result, truth, fixes)
    assert annotation[2, 4] == 0 and annotation[4, 4] >= 2  # truth 1's edge, its centre
    for truth_id in fixes.truth_ids:
        assert (annotation[truth == truth_id] >= 2).all()

"""benchmarks/gpu_check.py on the CPU: its metrics, report, section replacement, the
no-CUDA exit, and its measuring functions run with ``device="cpu"`` on a tiny model."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model
from napari_unet.core.tiling import plan_tiles

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.py"
TINY = UNetConfig(depth=2, base_width=4)


@pytest.fixture(scope="module")
def gpu_check():
    # As when run as a script: benchmarks/ on sys.path, so gpu_check finds _report.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("gpu_check")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def tiny():
    return random_model(TINY, seed=0, name="tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 96 x 120 crop of the bundled nuclei sample (real nuclei, so Otsu finds some)."""
    from napari_unet._sample_data import nuclei_image

    return np.ascontiguousarray(nuclei_image()[200:296, 300:420])


def blobs() -> np.ndarray:
    """``(40, 60)`` uint8: two bright disks on a dark background."""
    rows, cols = np.mgrid[:40, :60]
    inside = ((rows - 12) ** 2 + (cols - 15) ** 2 < 36) | ((rows - 25) ** 2 + (cols - 42) ** 2 < 64)
    return np.where(inside, 200, 20).astype(np.uint8)


# ----------------------------------------------------------------------------- metrics
def test_max_probability_difference(gpu_check):
    a = np.zeros((2, 3, 4), np.float32)
    b = a.copy()
    assert gpu_check.max_probability_difference(a, b) == 0.0
    b[1, 2, 3] = 0.25
    b[0, 0, 0] = -0.125
    assert gpu_check.max_probability_difference(a, b) == 0.25
    assert gpu_check.max_probability_difference(np.zeros(0), np.zeros(0)) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        gpu_check.max_probability_difference(a, a[0])


def test_pixel_disagreement(gpu_check):
    a = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], np.uint8)
    b = a.copy()
    b[0, 0], b[1, 1] = 1, 0
    assert gpu_check.pixel_disagreement(a, a) == 0.0
    assert gpu_check.pixel_disagreement(a, b) == 0.25
    with pytest.raises(ValueError, match="differ in shape"):
        gpu_check.pixel_disagreement(a, a.T)


def test_instance_disagreement_ignores_renumbering(gpu_check, rng):
    labels = np.zeros((30, 30), np.int32)
    labels[2:8, 2:8], labels[10:20, 5:9], labels[22:28, 20:29] = 1, 2, 3
    renumbered = np.array([0, 7, 3, 12])[labels]  # same objects, other ids
    assert gpu_check.instance_disagreement(labels, renumbered) == 0.0
    # a random permutation of many ids
    many = rng.integers(0, 50, size=(20, 20))
    permutation = np.concatenate([[0], rng.permutation(np.arange(1, 50)) + 100])
    assert gpu_check.instance_disagreement(many, permutation[many]) == 0.0


def test_instance_disagreement_counts_splits_and_missing_objects(gpu_check):
    a = np.zeros((10, 10), np.int32)
    a[0:4, 0:10] = 1  # 40 pixels
    a[6:8, 0:5] = 2  # 10 pixels
    split = a.copy()
    split[0:4, 7:10] = 5  # object 1 split: its smaller part (12 pixels) is not matched
    assert gpu_check.instance_disagreement(a, split) == pytest.approx(12 / 100)
    missing = a.copy()
    missing[a == 2] = 0  # object 2 missing: its 10 pixels disagree
    assert gpu_check.instance_disagreement(a, missing) == pytest.approx(10 / 100)
    assert gpu_check.instance_disagreement(missing, a) == pytest.approx(10 / 100)
    merged = a.copy()
    merged[4:6, 0:5] = 1
    merged[a == 2] = 1  # 2 merged into 1 (and the gap between them filled): 20 pixels
    assert gpu_check.instance_disagreement(a, merged) == pytest.approx(20 / 100)
    assert gpu_check.instance_disagreement(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        gpu_check.instance_disagreement(a, a[:5])


def test_object_count_and_throughput(gpu_check):
    assert gpu_check.object_count(np.array([[0, 3, 3], [7, 0, 1]])) == 3
    assert gpu_check.object_count(np.zeros((4, 4))) == 0
    assert gpu_check.megapixels_per_second(2_000_000, 0.5) == 4.0
    with pytest.raises(ValueError, match="positive"):
        gpu_check.megapixels_per_second(100, 0.0)


def test_mirror_tile(gpu_check):
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    big = gpu_check.mirror_tile(image, (10, 11))  # more than twice the image each way
    assert big.shape == (10, 11) and big.dtype == image.dtype
    np.testing.assert_array_equal(big[:3, :4], image)
    np.testing.assert_array_equal(big[3], image[2, np.r_[0:4, 3, 2, 1, 0, 0, 1, 2]])
    np.testing.assert_array_equal(big[:3, 4:8], image[:, ::-1])
    np.testing.assert_array_equal(gpu_check.mirror_tile(image, (2, 2)), image[:2, :2])
    with pytest.raises(ValueError, match="positive"):
        gpu_check.mirror_tile(image, (0, 5))


def test_pseudo_annotations_find_the_objects(gpu_check):
    labels = gpu_check.pseudo_annotations(blobs())
    assert labels.dtype == np.int32 and labels.shape == (40, 60)
    assert gpu_check.object_count(labels) == 2
    assert labels[12, 15] != 0 and labels[25, 42] != 0 and labels[0, 0] == 0


# ----------------------------------------------------------------------------- report
def results_fixture(gpu_check):
    return gpu_check.Results(
        model="nuclei",
        sample="bundled nuclei sample (520 x 696)",
        exactness=[
            gpu_check.Exactness(700, 4, 3.1e-3, 0.00012, 0.0004, 126, 127, 50 * 2**20, None)
        ],
        throughput=[gpu_check.Throughput(700, (3072, 3072), 36, 3, 81.25, 79.5, 300 * 2**20)],
        training=[
            gpu_check.Training(True, 4, 316, 50, 21.456, 0.61, 0.22, 900 * 2**20),
            gpu_check.Training(False, 4, 316, 50, 12.3, 0.61, 0.25, None),
        ],
    )


def machine_fixture(gpu_check):
    return gpu_check.Machine(
        gpu="NVIDIA A100-SXM4-80GB, 79 GiB",
        torch="2.13.0+cu128",
        cuda="12.8",
        cudnn="91002",
        python="3.11.7",
        system="Linux 6.1",
    )


def test_format_section(gpu_check):
    section = gpu_check.format_section(
        results_fixture(gpu_check),
        machine_fixture(gpu_check),
        command="python benchmarks/gpu_check.py --steps 50",
        date="2026-12-02 07:00 UTC",
        revision="abc1234",
    )
    lines = section.splitlines()
    assert lines[0] == "<!-- BEGIN gpu_check -->" and lines[1] == "## GPU check"
    assert lines[-1] == "<!-- END gpu_check -->" and section.endswith("\n")
    assert "- Command: `python benchmarks/gpu_check.py --steps 50`" in lines
    assert "- Date: 2026-12-02 07:00 UTC, git abc1234" in lines
    assert any(
        "NVIDIA A100-SXM4-80GB" in x and "CUDA 12.8" in x and "2.13.0+cu128" in x for x in lines
    )
    assert "| 700 | 4 | 3.10e-03 | 0.0120 % | 0.0400 % | 126 / 127 | 50 / n/a |" in lines
    assert "| 700 | 3072 x 3072 | 36 | 81.2 | 79.5 (of 3) | 300 |" in lines
    assert "| yes | 4 | 316 | 50 | 21.5 | 0.610 -> 0.220 | 900 |" in lines
    assert "| no | 4 | 316 | 50 | 12.3 | 0.610 -> 0.250 | n/a |" in lines
    # Every table row has as many cells as its header.
    for table_start in [
        i for i, x in enumerate(lines) if x.startswith("| ---") or x.startswith("| :")
    ]:
        width = lines[table_start].count("|")
        row = table_start + 1
        while row < len(lines) and lines[row].startswith("| "):
            assert lines[row].count("|") == width, lines[row]
            row += 1


SECTION = "<!-- BEGIN gpu_check -->\n## GPU check\n\nnew numbers\n<!-- END gpu_check -->\n"


def test_replace_section_replaces_the_marked_section_only(gpu_check):
    text = (
        "# Benchmarks\n\nintro\n\n<!-- BEGIN other -->\n## Other\n\nkeep me\n<!-- END other -->\n"
        "\n<!-- BEGIN gpu_check -->\n## GPU check\n\nold numbers\n<!-- END gpu_check -->\n"
        "\n<!-- BEGIN last -->\n## Last\n\nkeep me too\n<!-- END last -->\n"
    )
    replaced = gpu_check.replace_section(text, SECTION)
    assert "old numbers" not in replaced and replaced.count("new numbers") == 1
    assert replaced == text.replace("old numbers", "new numbers")
    assert gpu_check.replace_section(replaced, SECTION) == replaced  # idempotent


def test_replace_section_replaces_a_hand_written_heading(gpu_check):
    text = "# Benchmarks\n\n## GPU check\n\nto do\n\n## Next\n\nkeep\n"
    replaced = gpu_check.replace_section(text, SECTION)
    assert replaced == "# Benchmarks\n\n" + SECTION + "## Next\n\nkeep\n"


def test_replace_section_appends_or_starts_the_document(gpu_check):
    text = "# Benchmarks\n\n## Tiling\n\nnumbers\n"
    assert gpu_check.replace_section(text, SECTION) == text + "\n" + SECTION
    started = gpu_check.replace_section("", SECTION.rstrip("\n"))
    assert started.startswith("# Benchmarks\n") and started.endswith(SECTION)


def test_write_section(gpu_check, tmp_path):
    doc = tmp_path / "benchmarks.md"
    gpu_check.write_section(doc, SECTION)
    first = doc.read_text(encoding="utf-8")
    assert first.endswith(SECTION)
    gpu_check.write_section(doc, SECTION.replace("new", "newer"))
    assert doc.read_text(encoding="utf-8") == first.replace("new numbers", "newer numbers")


# ----------------------------------------------------------------------------- no CUDA
def test_no_cuda_message(gpu_check):
    assert gpu_check.no_cuda_message("2.13.0+cpu", False) == (
        "no CUDA GPU found (torch 2.13.0+cpu, cuda available: False); nothing measured"
    )


def test_main_without_cuda_says_so_and_writes_nothing(gpu_check, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    doc = tmp_path / "benchmarks.md"
    assert gpu_check.main(["--doc", str(doc), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert out == gpu_check.no_cuda_message(torch.__version__, False) + "\n"
    assert not doc.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_script_without_cuda_exits_0(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--doc", str(doc)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"no CUDA GPU found (torch {torch.__version__}, cuda available: False); nothing measured\n"
    )
    assert doc.read_text(encoding="utf-8") == "# Benchmarks\n"


# ----------------------------------------------------------------------------- measuring on CPU
def test_exactness_on_cpu_is_exact(gpu_check, tiny, image):
    # Off CUDA both predictors compute in float32: any difference would be a bug in the check.
    result = gpu_check.measure_exactness(tiny, image, "cpu", 60)
    assert result.tile_size == gpu_check.valid_tile_size(tiny, 60)
    assert result.tiles == plan_tiles(image.shape, TINY, tile_size=result.tile_size).total > 1
    assert result.max_probability_difference == 0.0
    assert result.class_disagreement == 0.0 and result.instance_disagreement == 0.0
    assert result.objects_float32 == result.objects_mixed
    assert result.peak_memory_float32 is None and result.peak_memory_mixed is None


def test_throughput_on_cpu(gpu_check, tiny, image):
    result = gpu_check.measure_throughput(tiny, image, "cpu", 60, repeats=2)
    assert result.image_shape == image.shape and result.repeats == 2
    assert result.tiles == plan_tiles(image.shape, TINY, tile_size=result.tile_size).total
    assert 0 < result.median_megapixels_per_second <= result.best_megapixels_per_second
    assert result.peak_memory is None
    with pytest.raises(ValueError, match="repeats"):
        gpu_check.measure_throughput(tiny, image, "cpu", 60, repeats=0)


def test_training_on_cpu(gpu_check, tiny, image):
    labels = gpu_check.pseudo_annotations(image)
    result = gpu_check.measure_training(
        tiny, [image], [labels], "cpu", mixed_precision=True, steps=2, warmup=1, batch_size=2
    )
    assert result.mixed_precision is False  # mixed precision only exists on CUDA
    assert result.steps == 2 and result.batch_size == 2 and result.patch_size > 0
    assert result.steps_per_second > 0
    assert math.isfinite(result.first_loss) and math.isfinite(result.last_loss)
    assert result.peak_memory is None


def test_run_checks_and_report_end_to_end(gpu_check, tiny, image, tmp_path):
    results = gpu_check.run_checks(
        tiny,
        image,
        "cpu",
        tile_sizes=[60, 100],
        image_size=160,
        repeats=1,
        steps=1,
        warmup=1,
        batch_size=2,
    )
    assert [e.tile_size for e in results.exactness] == [t.tile_size for t in results.throughput]
    assert len(results.exactness) == 2 and results.throughput[0].image_shape == (160, 160)
    assert [r.mixed_precision for r in results.training] == [False, False]
    section = gpu_check.format_section(
        results,
        gpu_check.describe_machine("cpu"),
        command="python benchmarks/gpu_check.py",
        date="today",
        revision="abc",
    )
    assert "- GPU: none (cpu)" in section and "- Model: `tiny`" in section
    doc = tmp_path / "benchmarks.md"
    gpu_check.write_section(doc, section)
    assert doc.read_text(encoding="utf-8").count("## GPU check") == 1

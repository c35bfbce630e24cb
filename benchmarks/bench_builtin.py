"""Built-in models: segmentation latency, and what fine-tuning buys.

1. Latency: segmenting a 512x512 image with the default built-in model, from the call to
   the instance labels (model loaded, process warm). Target <= 0.3 s on the 2-core CPU.
2. Fine-tuning: start from the built-in `nuclei` model, fine-tune on 3 annotated images of
   a held-out set and score the rest of that set before and after (F1 at IoU 0.5, DSB mean
   AP), once per training seed. The held-out sets come from its validation split (the last
   10 % of DSB 2018 by name, never trained on): the 360 x 360 images (one setup), the same
   images resampled to 2x magnification, and the 520 x 696 images. Other held-out images
   are scored too, to show what fine-tuning costs elsewhere.

    python benchmarks/bench_builtin.py
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

# Run as a script, benchmarks/ is on sys.path: _report is importable directly.
from _report import write_section
from napari_unet.core.metrics import dsb_average_precision, f1_score
from napari_unet.core.modelfile import default_model_name, load_model, resolve_model
from napari_unet.core.segment import (
    SegmentOptions,
    recommended_options,
    segment,
)
from napari_unet.core.train import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMMAND = "python benchmarks/bench_builtin.py"


def latency(repeats: int = 10) -> tuple[str, float, float]:
    """Best and median seconds to segment a 512x512 crop of real data."""
    name = default_model_name()
    bundle = load_model(resolve_model(name))
    options = SegmentOptions(**recommended_options(bundle, "labels"), device="cpu")
    if name == "em-membranes":
        image = tifffile.imread(DATA / "em-isbi2012" / "images.tif")[18]
    else:
        names = sorted((DATA / "nuclei-dsb2018" / "images").glob("*.tif"))
        image = next(
            im for im in (tifffile.imread(p) for p in names[-40:]) if min(im.shape) >= 512
        )[:512, :512]
    # warm-up; it also builds the cached predictor, which the widget keeps between clicks
    segment(bundle, image, options=options)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment(bundle, image, options=options)
        times.append(time.perf_counter() - start)
    return name, min(times), float(np.median(times))


def held_out_split() -> list[str]:
    names = sorted(p.name for p in (DATA / "nuclei-dsb2018" / "images").glob("*.tif"))
    return names[-(len(names) // 10) :]


def read(kind: str, name: str, zoom: float = 1.0) -> np.ndarray:
    """A DSB 2018 image or label image, resampled by ``zoom`` (labels by nearest neighbour)."""
    array = tifffile.imread(DATA / "nuclei-dsb2018" / kind / name)
    if zoom == 1.0:
        return array
    return ndi.zoom(array, zoom, order=1 if kind == "images" else 0)


@dataclass(frozen=True)
class HeldOutSet:
    """Held-out images of one size, optionally resampled as if seen at another magnification."""

    description: str
    shape: tuple[int, int]
    zoom: float = 1.0

    def split(self) -> tuple[list[str], list[str]]:
        """``(tune, rest)``: the first :data:`TUNE_COUNT` images by name (not chosen by
        score) and the others."""
        group = [n for n, shape in held_out_shapes().items() if shape == self.shape]
        return group[:TUNE_COUNT], group[TUNE_COUNT:]


@functools.cache
def held_out_shapes() -> dict[str, tuple[int, ...]]:
    """Image shape of every held-out image by name (read once: splits ask again and again)."""
    return {name: read("images", name).shape for name in held_out_split()}


def scores(bundle, names: list[str], options: SegmentOptions, zoom: float = 1.0):
    """Mean ``(F1 at IoU 0.5, DSB mean AP)`` of ``bundle`` on the images ``names``."""
    f1, ap = [], []
    for name in names:
        labels = segment(bundle, read("images", name, zoom), options=options)
        truth = read("labels", name, zoom)
        f1.append(f1_score(truth, labels, 0.5))
        ap.append(dsb_average_precision(truth, labels))
    return float(np.mean(f1)), float(np.mean(ap))


TUNE_COUNT = 3
#: The fine-tuning recipe (fixed before any of the results below were seen).
STEPS, LEARNING_RATE = 150, 5e-4
SEEDS = (0, 1, 2)
#: Held-out sets from the nuclei model's validation split (the last 10 % of DSB 2018 by
#: name, never trained on). A user fine-tunes for a set like these: annotate a few images
#: of an experiment, segment the rest of it.
SETS = (
    HeldOutSet("360 x 360 images: one setup, large nuclei", (360, 360)),
    HeldOutSet(
        "the same images at 2x magnification (resampled): nuclei larger than the model "
        "was trained on, as from a stronger objective",
        (360, 360),
        zoom=2.0,
    ),
    HeldOutSet("520 x 696 images: nuclei of several sizes", (520, 696)),
)


def tuned_model(base, tune: list[str], seed: int, zoom: float = 1.0):
    """``(model, wall seconds)``: ``base`` fine-tuned on the images ``tune`` (full masks)."""
    config = TrainConfig(
        steps=STEPS,
        batch_size=2,
        patch_size=316,
        learning_rate=LEARNING_RATE,
        seed=seed,
        device="cpu",
        # The protocol of the recorded results: every tuned-on image trains, and the
        # base model's post-processing is kept (bench_holdout measures re-tuning).
        holdout="off",
        tune_postprocess=False,
    )
    start = time.perf_counter()
    trainer = Trainer(
        base,
        [read("images", n, zoom) for n in tune],
        [read("labels", n, zoom) for n in tune],
        convention="dense",
        config=config,
        name="nuclei-tuned",
    )
    for _ in trainer.run():
        pass
    return trainer.last_bundle(), time.perf_counter() - start


@dataclass
class SetResult:
    """Scores of one held-out set before and after fine-tuning, per training seed."""

    before: tuple[float, float]
    gains: list[tuple[float, float]]
    tuned_on: tuple[tuple[float, float], tuple[float, float]]
    wall: float
    first_model: object

    @property
    def improves(self) -> bool:
        """Every seed raises both F1 and mean AP on the rest of the set."""
        return all(f1 > 0 and ap > 0 for f1, ap in self.gains)


def fine_tune_set(base, held_out: HeldOutSet, options: SegmentOptions) -> SetResult:
    tune, rest = held_out.split()
    before = scores(base, rest, options, held_out.zoom)
    gains, first = [], None
    for seed in SEEDS:
        tuned, wall = tuned_model(base, tune, seed, held_out.zoom)
        first = first or (tuned, wall)
        after = scores(tuned, rest, options, held_out.zoom)
        gains.append((after[0] - before[0], after[1] - before[1]))
    tuned_on = (
        scores(base, tune, options, held_out.zoom),
        scores(first[0], tune, options, held_out.zoom),
    )
    return SetResult(before, gains, tuned_on, first[1], first[0])


def _change(before: tuple[float, float], after: tuple[float, float]) -> str:
    return " | ".join(
        f"{b:.4f} -> {a:.4f} ({a - b:+.4f})" for b, a in zip(before, after, strict=True)
    )


def fine_tuning() -> list[str]:
    base = load_model(resolve_model("nuclei"))
    options = SegmentOptions(**recommended_options(base, "labels"), device="cpu")
    rows, details = [], []
    results = []
    for held_out in SETS:
        result = fine_tune_set(base, held_out, options)
        results.append(result)
        tune, rest = held_out.split()
        mean = [float(np.mean(v)) for v in zip(*result.gains, strict=True)]
        rows.append(
            f"| {held_out.description} | {len(rest)} | {result.before[0]:.4f} / "
            f"{result.before[1]:.4f} | "
            + "; ".join(f"{f:+.4f} / {a:+.4f}" for f, a in result.gains)
            + f" | {mean[0]:+.4f} / {mean[1]:+.4f} | {'yes' if result.improves else 'no'} |"
        )
        details.append(
            f"| {held_out.description}: the {len(tune)} images tuned on | "
            f"{_change(*result.tuned_on)} |"
        )
        print(rows[-1], flush=True)
    first_set = SETS[0]
    seen = {n for held_out in SETS for part in held_out.split() for n in part}
    others = [n for n in held_out_split() if n not in seen]
    others_after = scores(results[0].first_model, others, options)
    details.append(
        f"| other held-out images ({len(others)}, other setups), model tuned on the "
        f"{first_set.description.split(':')[0]} | "
        f"{_change(scores(base, others, options), others_after)} |"
    )
    not_improved = [r.before[0] for r in results if not r.improves]
    improved = [
        held_out.description.split(":")[0]
        for held_out, r in zip(SETS, results, strict=True)
        if r.improves
    ]
    return [
        f"Start from the built-in `nuclei` model, fine-tune on the first {TUNE_COUNT} images "
        f"of a held-out set by name with their full masks ({STEPS} steps, batch 2, patch 316, "
        f"lr {LEARNING_RATE:g}, Adam, last weights; {results[0].wall:.0f} s on CPU), and score "
        "the rest of that set before and after (F1 @ IoU 0.5 / DSB mean AP over IoU "
        "0.5:0.95, the model's recommended post-processing), once per training seed "
        f"{', '.join(map(str, SEEDS))}:",
        "",
        "| held-out set | rest | before (F1 / mean AP) | change per seed (F1 / mean AP) | "
        "mean change | every seed improves both |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Seed 0's model on the images it was tuned on, and on held-out images of other setups:",
        "",
        "| images | F1 @ IoU 0.5 | DSB mean AP |",
        "| --- | --- | --- |",
        *details,
        "",
        "Target (issue 3), fine-tuning on a few images of a held-out set improves the rest of "
        f"it, every seed: {'met on ' + '; '.join(improved) if improved else 'MISSED'}"
        + (
            f"; not met on {len(SETS) - len(improved)} of {len(SETS)} sets, where the "
            f"built-in model already scored F1 {min(not_improved):.2f} or more. Fine-tuning "
            "pays where the built-in model does poorly; on images it already segments well, "
            "three images move it within the luck of a run."
            if not_improved
            else "."
        ),
        "",
        f"The recipe ({STEPS} steps, lr {LEARNING_RATE:g}) is the one this benchmark used from "
        "its first version. A version of 2026-12-01 chose the recipe on the 520 x 696 set instead, "
        "among 150 / 300 steps and lr 2e-4 / 5e-4, by the worst seed: every candidate lost on "
        "every seed there (worst change -0.025 to -0.043), and the one chosen (300 steps, lr "
        "5e-4) lost F1 on every seed on the 360 x 360 set (-0.0022, -0.0022, -0.0017). An "
        "earlier design fine-tuned on the 3 held-out images the model scored worst on and "
        "scored all 36 others, of mixed setups: those did not improve (F1 -0.004, mean AP "
        "-0.064): fine-tuning adapts a model to the kind of images it is shown.",
    ]


def main() -> None:
    torch.set_num_threads(2)
    name, best, median = latency()
    body = [
        f"Segmenting a 512x512 image with the default built-in model `{name}` (model "
        "loaded, process warm), from `segment(...)` to int32 instance labels, including "
        "normalisation, overlap-tile inference and post-processing:",
        "",
        f"- best {best * 1e3:.0f} ms, median {median * 1e3:.0f} ms of 10 runs; target "
        f"<= 300 ms: {'met' if best <= 0.3 else 'MISSED'} (best), "
        f"{'met' if median <= 0.3 else 'missed'} (median).",
        "",
    ]
    print("\n".join(body), flush=True)
    body += fine_tuning()
    print("\n".join(body), flush=True)
    write_section("builtin", "Built-in models: latency and fine-tuning", COMMAND, "\n".join(body))


if __name__ == "__main__":
    main()

"""The held-out score on real data: reported during training against offline (issue 18).

For each of ``--images`` nuclei validation images (the last 10 % of
../shared/data/nuclei-dsb2018 sorted by name, never used to train or tune the built-in
``nuclei`` model; the first ones holding at least ``--min-cells`` nuclei), its ground-truth
labels are the annotation (dense convention) and the built-in ``nuclei`` model is
fine-tuned on it for ``--steps`` steps with the default hold-out (``"auto"``: about 20 % of
the cells of one image, with the background around them) and post-processing re-tuned on
the training part, as the Fine-tune dock does. Recorded per image:

- the held-out score the trainer reported for its kept weights (what the dock shows);
- the same score computed offline: the saved model file loaded again, the image segmented
  through the public ``segment`` path at the model's own scale, the held-out part split
  again from the annotation by :func:`napari_unet.core.holdout.split_holdout` (nothing
  taken from the trainer), scored by :func:`napari_unet.core.holdout.holdout_score` with
  the settings the file records; the two must be equal;
- the held-out F1 of the built-in model before fine-tuning (its own post-processing), the
  fine-tuned model's at the base's post-processing, and with the re-tuned one.

    python benchmarks/bench_holdout.py --report
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from _report import write_section
from napari_unet.core.holdout import holdout_score, split_holdout
from napari_unet.core.modelfile import load_model, save_model
from napari_unet.core.registry import resolve_model
from napari_unet.core.segment import recommended_options, segment
from napari_unet.core.train import TrainConfig, Trainer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nuclei-dsb2018"
SECTION = "holdout"
TITLE = "Held-out score: reported during fine-tuning against offline (nuclei)"
#: Largest difference between the reported and the offline score that counts as equal.
TOLERANCE = 1e-9


def validation_images(count: int, min_cells: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, (H, W) image, (H, W) labels)`` of the first ``count`` validation images
    with at least ``min_cells`` nuclei."""
    names = sorted(p.name for p in (DATA / "images").glob("*.tif"))
    chosen = []
    for name in names[-(len(names) // 10) :]:
        labels = tifffile.imread(DATA / "labels" / name)
        if len(np.unique(labels)) - 1 >= min_cells:
            chosen.append((name, tifffile.imread(DATA / "images" / name), labels))
        if len(chosen) == count:
            break
    return chosen


def probabilities(model, image: np.ndarray) -> np.ndarray:
    """``(K, H, W)`` probabilities of ``model`` at its own scale (nothing resampled)."""
    return segment(
        model, image, output="probabilities", device="cpu", diameter=model.object_diameter
    )


def one_image(name: str, image: np.ndarray, labels: np.ndarray, args) -> dict:
    """Fine-tune on one image with the default hold-out; the scores of one table row."""
    base = load_model(resolve_model("nuclei"))
    config = TrainConfig(steps=args.steps, batch_size=4, seed=args.seed, device="cpu")
    started = time.perf_counter()
    trainer = Trainer(base, image, labels, convention="dense", config=config, name="tuned")
    finished = list(trainer.run())[-1]
    seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(save_model(trainer.best_bundle(), Path(folder) / "t.safetensors"))
    record = model.provenance["holdout"]
    held_out = split_holdout([labels], "dense", config.holdout, seed=config.seed).holdout
    tuned = probabilities(model, image)
    base_options = recommended_options(base, "labels")
    before = holdout_score(probabilities(base, image), held_out, base_options)
    return {
        "name": name,
        "held_out": record["held_out"],
        "reported": finished.best_score,
        "offline": holdout_score(tuned, held_out, record["postprocess"]),
        "before": before,
        "reported_tuned": trainer.tuned_score,
        "offline_tuned": holdout_score(tuned, held_out, recommended_options(model, "labels")),
        "tuning": trainer.tuning_summary(),
        "seconds": seconds,
        "kept": f"{trainer.best_step}/{trainer.step}",
    }


def report_body(rows: list[dict], args) -> str:
    """Markdown table of the rows and the verdict."""
    lines = [
        f"Built-in `nuclei` fine-tuned for {args.steps} steps (batch 4, lr 1e-3, seed "
        f"{args.seed}, torch threads {args.threads}) on one validation image each, its ground "
        "truth as the annotation, hold-out `auto`, post-processing re-tuned on the training "
        "part. *reported*: the kept weights' held-out F1@0.5 as the trainer (and the dock) "
        "reports it; *offline*: the saved file reloaded, the image segmented by `segment`, the "
        "held-out part split again from the annotation, scored with the file's settings.",
        "",
        "| image | held out | F1 before | reported | offline | re-tuned reported | "
        "re-tuned offline | kept step | s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['name'][:12]} | {r['held_out']} | {r['before']:.4f} | {r['reported']:.4f} | "
            f"{r['offline']:.4f} | {r['reported_tuned']:.4f} | {r['offline_tuned']:.4f} | "
            f"{r['kept']} | {r['seconds']:.0f} |"
        )
    worst = max(
        max(abs(r["reported"] - r["offline"]), abs(r["reported_tuned"] - r["offline_tuned"]))
        for r in rows
    )
    verdict = "equal" if worst <= TOLERANCE else "NOT equal"
    lines += [
        "",
        f"Largest difference between reported and offline: {worst:.2e} ({verdict}; tolerance "
        f"{TOLERANCE:g}). Re-tuning, per image: "
        + "; ".join(f"{r['name'][:12]}: {r['tuning']}" for r in rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--min-cells", type=int, default=25)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="write docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"bench_holdout: {DATA} is missing; nothing to measure", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = []
    for name, image, labels in validation_images(args.images, args.min_cells):
        rows.append(one_image(name, image, labels, args))
        r = rows[-1]
        print(
            f"{name}: held out {r['held_out']}; F1 before {r['before']:.4f}, reported "
            f"{r['reported']:.4f}, offline {r['offline']:.4f}; re-tuned reported "
            f"{r['reported_tuned']:.4f}, offline {r['offline_tuned']:.4f} ({r['seconds']:.0f} s)",
            flush=True,
        )
    body = report_body(rows, args)
    print(body)
    if args.report:
        command = "python benchmarks/bench_holdout.py " + " ".join(
            sys.argv[1:] if argv is None else argv
        )
        write_section(SECTION, TITLE, command.strip(), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train, evaluate and package the built-in models from ../shared/data.

Anyone can rerun this; it writes ``src/napari_unet/models/NAME.safetensors`` and the model
card ``NAME.md`` with the data, split, command, steps, wall time and validation scores.

    python scripts/train_builtin.py em-membranes --steps 1200
    python scripts/train_builtin.py nuclei --steps 1500

Splits (fixed, so the numbers are reproducible):
- em-membranes: ISBI 2012 slices 0-15 train, 16-19 validation.
- nuclei: DSB 2018 images sorted by name; the last 10 % are validation, the rest train.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.events import TrainStep, Validation
from napari_unet.core.metrics import (
    dsb_average_precision,
    em_rand_error,
    f1_score,
    pixel_error,
)
from napari_unet.core.model import SMALL
from napari_unet.core.modelfile import save_model
from napari_unet.core.postprocess import instance_labels
from napari_unet.core.segment import SegmentOptions, segment
from napari_unet.core.train import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODELS = ROOT / "src" / "napari_unet" / "models"


@dataclass
class Dataset:
    train_images: list[np.ndarray]
    train_labels: list[np.ndarray]
    val_images: list[np.ndarray]
    val_labels: list[np.ndarray]
    convention: str
    description: str


def load_em() -> Dataset:
    images = tifffile.imread(DATA / "em-isbi2012" / "images.tif")
    labels = tifffile.imread(DATA / "em-isbi2012" / "labels.tif")
    return Dataset(
        list(images[:16]),
        list(labels[:16]),
        list(images[16:]),
        list(labels[16:]),
        "binary",
        "ISBI 2012 EM segmentation challenge training stack (Cardona et al. 2010; "
        "Arganda-Carreras et al. 2015), 20 slices of 512x512: slices 0-15 train, 16-19 "
        "validation. Labels: 1 = cell interior, 0 = membrane.",
    )


def load_nuclei() -> Dataset:
    names = sorted(p.name for p in (DATA / "nuclei-dsb2018" / "images").glob("*.tif"))
    n_val = len(names) // 10
    read = lambda kind, name: tifffile.imread(DATA / "nuclei-dsb2018" / kind / name)  # noqa: E731
    train, val = names[:-n_val], names[-n_val:]
    return Dataset(
        [read("images", n) for n in train],
        [read("labels", n) for n in train],
        [read("images", n) for n in val],
        [read("labels", n) for n in val],
        "dense",
        f"Kaggle Data Science Bowl 2018 stage 1 train, fixed (BBBC038, CC0): {len(names)} "
        f"images sorted by name, the first {len(train)} train, the last {n_val} validation.",
    )


def evaluate(kind: str, bundle, data: Dataset, options: SegmentOptions) -> dict[str, float]:
    """Scores of ``bundle`` on the validation split."""
    scores: dict[str, list[float]] = {}
    for image, truth in zip(data.val_images, data.val_labels, strict=True):
        if kind == "em-membranes":
            mask = segment(bundle, image, options=replace(options, output="mask"))
            scores.setdefault("pixel_error", []).append(pixel_error(truth > 0, mask > 0))
            scores.setdefault("adapted_rand_error", []).append(em_rand_error(truth > 0, mask > 0))
        else:
            labels = segment(bundle, image, options=options)
            scores.setdefault("f1_iou50", []).append(f1_score(truth, labels, 0.5))
            scores.setdefault("dsb_map_50_95", []).append(dsb_average_precision(truth, labels))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def tune_postprocess(kind: str, bundle, images, truths, options: SegmentOptions) -> SegmentOptions:
    """Threshold (and, for nuclei, split_touching) with the best score on some TRAINING
    images, never on the validation split."""
    best = max(
        (
            _tuned(kind, bundle, images, truths, replace(options, split_touching=split))
            for split in ((False,) if kind == "em-membranes" else (False, True))
        ),
        key=lambda pair: pair[1],
    )[0]
    print(f"post-processing tuned on {len(images)} training images: {best}", flush=True)
    return best


def _tuned(kind, bundle, images, truths, options: SegmentOptions) -> tuple[SegmentOptions, float]:
    candidates = np.round(np.arange(0.3, 0.86, 0.05), 2)
    totals = np.zeros(len(candidates))
    for image, truth in zip(images, truths, strict=True):
        probabilities = segment(
            bundle, image, options=SegmentOptions(output="probabilities", device="cpu")
        )
        for i, threshold in enumerate(candidates):
            mask = probabilities[1] > threshold
            if kind == "em-membranes":
                totals[i] -= em_rand_error(truth > 0, mask) + pixel_error(truth > 0, mask)
            else:
                labels = instance_labels(
                    mask, min_size=options.min_size, split_touching=options.split_touching
                )
                totals[i] += f1_score(truth, labels, 0.5)
    best = int(np.argmax(totals))
    return replace(options, threshold=float(candidates[best])), float(totals[best])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", choices=["em-membranes", "nuclei"])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch-size", type=int, default=508)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop after this wall time (best weights kept); the schedule assumes --steps",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_em() if args.model == "em-membranes" else load_nuclei()
    postprocess = (
        SegmentOptions(output="labels", device="cpu")
        if args.model == "em-membranes"
        else SegmentOptions(output="labels", device="cpu", split_touching=True, min_size=15)
    )
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        schedule="cosine",
        augment=AugmentConfig(),
        validation_every=max(args.steps // 20, 1),
        validation_patches=16,
        seed=args.seed,
        device="cpu",
    )
    trainer = Trainer(
        SMALL,
        data.train_images,
        data.train_labels,
        convention=data.convention,
        config=config,
        validation=(data.val_images, data.val_labels),
        name=args.model,
    )
    started = time.perf_counter()
    run = trainer.run()
    for event in run:
        if args.minutes is not None and time.perf_counter() - started > 60 * args.minutes:
            run.close()  # keeps the best weights, like Stop in the GUI
            print(f"time budget of {args.minutes} min reached at step {trainer.step}", flush=True)
            break
        if isinstance(event, TrainStep) and event.step % 20 == 0:
            print(
                f"step {event.step}/{event.total_steps} loss {event.loss:.4f} "
                f"lr {event.learning_rate:.2e} elapsed {event.elapsed:.0f}s eta {event.eta:.0f}s",
                flush=True,
            )
        elif isinstance(event, Validation):
            print(
                f"  validation loss {event.loss:.4f} accuracy {event.accuracy:.4f}"
                f"{' (best)' if event.is_best else ''}",
                flush=True,
            )
    wall = time.perf_counter() - started
    bundle = trainer.best_bundle()
    tune_count = 3 if args.model == "em-membranes" else 20
    step_between = max(len(data.train_images) // tune_count, 1)
    postprocess = tune_postprocess(
        args.model,
        bundle,
        data.train_images[::step_between][:tune_count],
        data.train_labels[::step_between][:tune_count],
        postprocess,
    )
    bundle.provenance.update(
        {
            "data": data.description,
            "wall_time_seconds": round(wall, 1),
            "command": "python scripts/train_builtin.py "
            + " ".join(sys.argv[1:] if argv is None else argv),
            "postprocess": {
                "threshold": postprocess.threshold,
                "min_size": postprocess.min_size,
                "split_touching": postprocess.split_touching,
            },
        }
    )
    scores = evaluate(args.model, bundle, data, postprocess)
    bundle.provenance["validation_scores"] = scores
    print("validation scores:", scores, flush=True)
    MODELS.mkdir(parents=True, exist_ok=True)
    save_model(bundle, MODELS / f"{args.model}.safetensors")
    write_card(args.model, bundle, data, scores, wall, config, trainer)
    return 0


def write_card(name, bundle, data, scores, wall, config, trainer) -> None:
    lines = [
        f"# Model card: {name}",
        "",
        f"- Architecture: U-Net `small` preset ({bundle.config.to_dict()}), valid convolutions.",
        f"- Data: {data.description}",
        f"- Annotation convention: {data.convention}",
        f"- Command: `{bundle.provenance['command']}`",
        f"- Steps: {trainer.step} (best validation loss at step {trainer.best_step}), batch "
        f"{config.batch_size}, input patch {trainer.patch_input} px, Adam, cosine schedule from "
        f"lr {config.learning_rate}, elastic deformation + flips + rotations + intensity.",
        f"- Loss: pixel-weighted cross-entropy, paper eq. 2 weights (w0 = {config.w0}, "
        f"sigma = {config.sigma} px) with class balance.",
        f"- Wall time: {wall / 60:.1f} min on a 2-core CPU "
        f"(torch threads {torch.get_num_threads()}).",
        f"- Trained: {bundle.provenance.get('trained')}",
        "",
        "## Validation scores (held-out split above)",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4f} |" for k, v in scores.items()],
        "",
        f"Post-processing used for the scores: {bundle.provenance['postprocess']}.",
        "",
    ]
    (MODELS / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

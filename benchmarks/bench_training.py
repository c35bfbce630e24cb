"""How much of a training step is data preparation (patches, augmentation, weight maps)?

Target (issue: training core): augmentation + weights take <= 10 % of the step time.

The paper's weight map (eq. 2) is computed once per annotated plane when the data is
prepared and then deformed together with the image every step, so per step the data work
is: cut patches, elastic deformation + flips + rotations + intensity of image, labels and
weights. The benchmark times those parts and the whole step (forward, loss, backward,
optimiser) of the real :class:`~napari_unet.core.train.Trainer`, and reports the one-off
weight-map cost amortised over the run.

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import tifffile
import torch

# Run as a script, benchmarks/ is on sys.path: _report is importable directly.
from _report import write_section
from napari_unet.core.annotations import targets_from_annotation
from napari_unet.core.augment import augment_batch
from napari_unet.core.model import SMALL
from napari_unet.core.train import IGNORE, TrainConfig, Trainer
from napari_unet.core.train_data import sample_patches
from napari_unet.core.weights import weight_map

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMMAND = "python benchmarks/bench_training.py"


def load_nuclei(count: int = 8) -> tuple[list[np.ndarray], list[np.ndarray]]:
    names = sorted((DATA / "nuclei-dsb2018" / "images").glob("*.tif"))[:count]
    images = [tifffile.imread(p) for p in names]
    labels = [tifffile.imread(DATA / "nuclei-dsb2018" / "labels" / p.name) for p in names]
    return images, labels


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(trainer: Trainer, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    config = trainer.config
    out = (trainer.patch_output, trainer.patch_output)

    def sample():
        return sample_patches(trainer.planes, config.batch_size, rng, trainer.geometry)

    batch = sample()

    def augment():
        augment_batch(*batch, config.augment, crop_targets_to=out, ignore_index=IGNORE)

    list(trainer.run(steps=2))  # warm up kernels and allocator
    step = best_of(lambda: trainer._train_step(config.learning_rate, None), repeats)
    return {
        "sample": best_of(sample, repeats),
        "augment": best_of(augment, repeats),
        "step": step,
    }


def weight_map_seconds(labels: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for plane in labels:
        targets = targets_from_annotation(plane, "dense")
        weight_map(targets.instances, classes=targets.classes)
    return time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    images, labels = load_nuclei()
    rows = []
    verdicts = []
    for patch, batch in ((316, 4), (508, 2)):
        config = TrainConfig(steps=2, batch_size=batch, patch_size=patch, device="cpu")
        trainer = Trainer(SMALL, images, labels, convention="dense", config=config)
        timing = measure(trainer, repeats=5)
        weights_once = weight_map_seconds(labels)
        run_steps = 1000
        per_step_weights = weights_once / run_steps
        data = timing["sample"] + timing["augment"] + per_step_weights
        share = data / timing["step"]
        ms = {key: value * 1e3 for key, value in timing.items()}
        rows.append(
            f"| {patch} px x {batch} | {ms['step']:.0f} | {ms['sample']:.1f} "
            f"| {ms['augment']:.1f} | {weights_once * 1e3:.0f} "
            f"({per_step_weights * 1e3:.2f} per step over {run_steps} steps) "
            f"| {100 * share:.1f} % |"
        )
        verdicts.append(share <= 0.10)
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "Real `Trainer` on 8 DSB 2018 nuclei images (dense labels), `small` U-Net, CPU. "
            "Step = sampling + augmentation + forward + weighted loss + backward + Adam; "
            "times are the best of 5. The data-preparation share counts patch sampling, the "
            "augmentation (elastic deformation of image, labels and weights, flips, rotations, "
            "intensity) and the weight maps of all 8 planes (computed once when the data is "
            "prepared, amortised over a 1000-step run).",
            "",
            "| input patch x batch | step ms | sampling ms | augmentation ms | weight maps ms "
            "(once) | data share of step |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            f"Target <= 10 %: {'met' if all(verdicts) else 'MISSED'} for "
            f"{sum(verdicts)} of {len(verdicts)} configurations.",
        ]
    )
    write_section("training", "Training step: data preparation share", COMMAND, body)


if __name__ == "__main__":
    main()

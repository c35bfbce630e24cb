"""Scale awareness (issue 15): built-in models on inputs at another magnification.

1. ``nuclei`` on its held-out DSB images (the validation split: the last 10 % of DSB 2018 by
   name, never trained on or tuned on) at native scale and resampled 0.75x, 1.5x and 2x,
   with no metadata and default settings (``diameter="auto"``, the model's default), against
   the same images segmented at the model's scale with rescaling off (``diameter`` equal to
   the model's own: factor 1, the behaviour before scale awareness). Target: F1 at IoU 0.5
   within 0.02 of native at 1.5x and 2x, within 0.05 at 0.75x.
2. ``em-membranes`` on its validation slices (18, 19) upsampled 2x and written to a TIFF as
   2 nm per pixel, segmented by the command-line tool with default settings (the pixel size
   read from the file): adapted Rand error against the upsampled membrane labels within
   0.01 of native. The result TIFF must carry the input's 2 nm pixel size.
3. Cost: ``auto`` against one pass at the scale it chose (and against one pass at the
   model's scale) on 512 x 512 images, target <= 1.6x; the cost of resampling inside the
   tile loop against the model's time, target <= 10 %.

    python benchmarks/bench_scale.py [--no-report]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi

from _report import write_section
from napari_unet.core.calibration import read_calibration
from napari_unet.core.events import ScaleChosen
from napari_unet.core.metrics import em_labels_rand_error, f1_score
from napari_unet.core.modelfile import load_model, resolve_model
from napari_unet.core.segment import SegmentOptions, recommended_options, segment_iter

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COMMAND = "python benchmarks/bench_scale.py"
ZOOMS = (1.0, 0.75, 1.5, 2.0)
TARGETS = {0.75: 0.05, 1.5: 0.02, 2.0: 0.02}


def held_out_names() -> list[str]:
    """The nuclei model's validation split: the last 10 % of DSB 2018 by name."""
    names = sorted(p.name for p in (DATA / "nuclei-dsb2018" / "images").glob("*.tif"))
    return names[-(len(names) // 10) :]


def read_dsb(kind: str, name: str, zoom: float) -> np.ndarray:
    """A DSB image (linear) or label image (nearest) resampled by ``zoom``."""
    array = tifffile.imread(DATA / "nuclei-dsb2018" / kind / name)
    if zoom == 1.0:
        return array
    return ndi.zoom(array, zoom, order=1 if kind == "images" else 0)


def run(bundle, image, options: SegmentOptions):
    """``(result, ScaleChoice, seconds)`` of one segmentation."""
    started = time.perf_counter()
    generator = segment_iter(bundle, image, options=options)
    choice = None
    try:
        while True:
            event = next(generator)
            if isinstance(event, ScaleChosen):
                choice = event.choice
    except StopIteration as stop:
        result = stop.value
    return result, choice, time.perf_counter() - started


def nuclei_scores() -> tuple[list[str], dict[float, float]]:
    """Rows of the nuclei table and the mean F1 (default settings) per zoom."""
    bundle = load_model(resolve_model("nuclei"))
    base = recommended_options(bundle, "labels")
    defaults = SegmentOptions(**base, device="cpu")
    fixed = SegmentOptions(**base, device="cpu", diameter=bundle.object_diameter)
    names = held_out_names()
    rows, means = [], {}
    for zoom in ZOOMS:
        auto_f1, fixed_f1, factors = [], [], []
        for name in names:
            image, truth = read_dsb("images", name, zoom), read_dsb("labels", name, zoom)
            labels, choice, _ = run(bundle, image, defaults)
            auto_f1.append(f1_score(truth, labels, 0.5))
            factors.append(choice.factor)
            labels, _, _ = run(bundle, image, fixed)
            fixed_f1.append(f1_score(truth, labels, 0.5))
        means[zoom] = float(np.mean(auto_f1))
        rescaled = sum(abs(f - 1.0) > 1e-9 for f in factors)
        rows.append(
            f"| {zoom:g}x | {len(names)} | {np.mean(fixed_f1):.4f} | {means[zoom]:.4f} | "
            f"{np.median(factors):.3f} (x{min(factors):.2f} to x{max(factors):.2f}) | "
            f"{rescaled} |"
        )
    return rows, means


def em_error(zoom_2x: bool, workdir: Path) -> tuple[float, str]:
    """Mean adapted Rand error of the CLI's default segmentation of slices 18-19, and the
    pixel size the result TIFF carries."""
    images = tifffile.imread(DATA / "em-isbi2012" / "images.tif")[18:20]
    truth = tifffile.imread(DATA / "em-isbi2012" / "labels.tif")[18:20]
    errors, carried = [], ""
    for index, (image, mask) in enumerate(zip(images, truth, strict=True)):
        nm = 4.0
        if zoom_2x:
            image, mask, nm = ndi.zoom(image, 2, order=1), ndi.zoom(mask, 2, order=0), 2.0
        source = workdir / f"em{index}_{nm:g}nm.tif"
        # ImageJ stores the resolution as pixels per unit and the unit in its metadata.
        tifffile.imwrite(
            source, image, imagej=True, resolution=(1 / nm, 1 / nm), metadata={"unit": "nm"}
        )
        output = workdir / f"em{index}_{nm:g}nm_labels.tif"
        subprocess.run(
            [sys.executable, "-m", "napari_unet.cli", "segment", str(source), "-o", str(output),
             "--model", "em-membranes", "--device", "cpu", "--overwrite"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        errors.append(em_labels_rand_error(mask > 0, tifffile.imread(output)))
        calibration = read_calibration(output)
        carried = str(calibration.pixel_size) if calibration else "none"
    return float(np.mean(errors)), carried


def costs(bundle) -> list[str]:
    """Cost of auto and of resampling inside the tile loop, on 512 x 512 images."""
    base = recommended_options(bundle, "labels")
    auto = SegmentOptions(**base, device="cpu")
    crops = [
        im[:512, :512]
        for im in (read_dsb("images", n, 1.0) for n in held_out_names())
        if min(im.shape) >= 512
    ]
    kept = next(c for c in crops if not run(bundle, c, auto)[1].resamples)
    large = next(c for c in crops if run(bundle, c, auto)[1].resamples)
    big = ndi.zoom(kept, 2.0, order=1)[:512, :512]  # the same nuclei at 2x, 512 x 512
    lines = []
    for label, picture in (
        ("held-out crop whose objects measure the model's size", kept),
        ("held-out crop of larger objects", large),
        ("the first crop at 2x", big),
    ):
        run(bundle, picture, auto)  # warm the predictor for these sizes
        _, choice, _ = run(bundle, picture, auto)
        chosen = SegmentOptions(
            **base, device="cpu", diameter=bundle.object_diameter / choice.factor
        )
        at_model = SegmentOptions(**base, device="cpu", diameter=bundle.object_diameter)
        t_auto = best(lambda o=auto, p=picture: run(bundle, p, o))
        t_chosen = best(lambda o=chosen, p=picture: run(bundle, p, o))
        t_model = best(lambda o=at_model, p=picture: run(bundle, p, o))
        lines.append(
            f"- {label} (auto chose x{choice.factor:.3f}): auto {t_auto:.3f} s; one pass at the "
            f"model's scale (rescaling off) {t_model:.3f} s: **{t_auto / t_model:.2f}x** "
            f"(target <= 1.6x); one pass at the scale auto chose {t_chosen:.3f} s "
            f"({t_auto / t_chosen:.2f}x)"
        )
    # Resampling inside the tile loop: the 2x image segmented at x0.5 through the lazy
    # resampled view, against the same pixels resampled beforehand and segmented at x1.
    half = SegmentOptions(**base, device="cpu", diameter=2 * bundle.object_diameter)
    pre = ndi.zoom(big, 0.5, order=1)
    fixed = SegmentOptions(**base, device="cpu", diameter=bundle.object_diameter)
    run(bundle, pre, fixed)
    t_inside = best(lambda: run(bundle, big, half))
    t_model = best(lambda: run(bundle, pre, fixed))
    lines.append(
        f"- resampling inside the tile loop: 2x 512 x 512 image at x0.5 {t_inside:.3f} s, the "
        f"same pixels resampled beforehand {t_model:.3f} s: "
        f"**{100 * (t_inside / t_model - 1):+.1f} %** of the model's time (target <= 10 %)"
    )
    return lines


def best(call, repeats: int = 5) -> float:
    """Best wall time of ``repeats`` calls (the machine's noise is one-sided)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows, means = nuclei_scores()
    with tempfile.TemporaryDirectory() as tmp:
        em_native, _ = em_error(False, Path(tmp))
        em_2x, carried = em_error(True, Path(tmp))
    cost_lines = costs(load_model(resolve_model("nuclei")))
    verdicts = [
        f"- {zoom:g}x: F1 {means[zoom]:.4f} vs native {means[1.0]:.4f}, difference "
        f"{means[zoom] - means[1.0]:+.4f} (target within {limit}: "
        f"{'met' if abs(means[zoom] - means[1.0]) <= limit else 'MISSED'})"
        for zoom, limit in TARGETS.items()
    ]
    em_met = "met" if abs(em_2x - em_native) <= 0.01 else "MISSED"
    body = "\n".join(
        [
            "`nuclei` on its held-out images (validation split, never trained on), no "
            "metadata. Said plainly: one design choice was made after seeing these images: auto "
            "measures first at half the scale, because measuring at the model's scale split the "
            "80 px nuclei of their 2x versions into fragments (F1 0.06-0.18 on those images); "
            "the tolerances were chosen on the training split. *factor 1*: segmented at the "
            "model's scale (rescaling off, as before issue 15); *default*: default settings, "
            "i.e. `diameter=auto` (a first pass on a "
            "central crop measures the objects; the image is resampled when they are more than "
            "20 % larger or 50 % smaller than the model's; the asymmetry was chosen on 45 "
            "images of the training split, see `AUTO_TOLERANCE_BELOW` in core/scaling.py).",
            "",
            "| images resampled | images | F1@0.5 factor 1 | F1@0.5 default (auto) | "
            "factor auto chose: median (range) | images rescaled |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *verdicts,
            "",
            "`em-membranes` (4 nm per pixel) on validation slices 18-19 through the CLI "
            "(`napari-unet segment IMAGE -o OUT --model em-membranes`), default settings: "
            f"native 4 nm TIFF adapted Rand error {em_native:.4f}; upsampled 2x and written as "
            f"2 nm per pixel (ImageJ TIFF) {em_2x:.4f}, difference {em_2x - em_native:+.4f} "
            f"(target within 0.01: {em_met}); the result TIFF carries {carried}.",
            "",
            "Cost (best of 5, warm predictor):",
            *cost_lines,
        ]
    )
    print(body)
    if not args.no_report:
        write_section("scale", "Scale awareness: inputs at another magnification", COMMAND, body)


if __name__ == "__main__":
    main()

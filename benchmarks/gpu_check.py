"""GPU check: mixed precision against float32, throughput, fine-tuning speed and GPU memory.

Run it on a machine with a CUDA GPU:

    python benchmarks/gpu_check.py

With the built-in ``nuclei`` model on the bundled nuclei sample it measures

1. tile exactness of mixed precision (float16 autocast, what segmentation uses on CUDA)
   against float32, at each tile size: the largest difference of a class probability, and
   the fractions of pixels whose class (the mask) or whose object (the instance labels,
   ids matched one to one) differ;
2. segmentation throughput in megapixels per second at each tile size, on the sample
   mirror-tiled to a larger image;
3. fine-tuning steps per second with and without mixed precision;
4. the peak GPU memory (``torch.cuda.max_memory_allocated``) of each of these,

and writes them as the "GPU check" section of docs/benchmarks.md (replacing the previous
one). Without a CUDA GPU it prints one line saying so and exits 0, writing nothing.

The metrics, the report and the section replacement are plain functions tested on the
CPU (tests/test_gpu_check.py); the measuring functions take a ``device`` and run there
too, with a tiny model.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components

# Run as a script, benchmarks/ is on sys.path: _report is importable directly.
from _report import DOC, HEADER, git_revision
from napari_unet._sample_data import NUCLEI_FILE, nuclei_image
from napari_unet.core.events import TrainStep
from napari_unet.core.modelfile import ModelBundle, load_model, resolve_model
from napari_unet.core.predictor import make_predictor
from napari_unet.core.segment import SegmentOptions, get_predictor, recommended_options, segment
from napari_unet.core.tiling import plan_tiles, round_tile_size
from napari_unet.core.train import TrainConfig, Trainer

#: Name of the section's markers in docs/benchmarks.md, and its heading.
SECTION = "gpu_check"
TITLE = "GPU check"
SCRIPT = "python benchmarks/gpu_check.py"

#: Requested tile input sizes (rounded to valid sizes of the model): small tiles (many
#: seams), the CPU default, and one tile for the whole sample.
DEFAULT_TILE_SIZES = (380, 700, 1212)
#: Side of the mirror-tiled image for throughput (9.4 megapixels).
DEFAULT_IMAGE_SIZE = 3072


# ----------------------------------------------------------------------------- metrics
def max_probability_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference between two probability arrays.

    Parameters
    ----------
    a, b : ndarray
        Same shape, e.g. ``(K, H, W)`` class probabilities.

    Returns
    -------
    float
        ``max |a - b|`` (0 for empty arrays, NaN if either holds NaN).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    _check_same_shape(a, b)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)))


def pixel_disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose value differs, for class masks ``(H, W)`` of one shape."""
    a, b = np.asarray(a), np.asarray(b)
    _check_same_shape(a, b)
    return float(np.count_nonzero(a != b)) / a.size if a.size else 0.0


def instance_disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose object differs between two instance label images.

    Ids are arbitrary (one object more near the top renumbers every object below it), so
    the objects of ``b`` are first matched one to one to those of ``a``, greedily by
    overlap, largest first; background (0) only matches background. A pixel agrees when
    it is background in both or its two objects are matched; so a split, a merge, a
    missing or an extra object all count as disagreement.

    Parameters
    ----------
    a, b : (H, W) ndarray of int
        Instance labels, 0 = background.

    Returns
    -------
    float
        In ``[0, 1]``; 0 when the two differ only by renumbering.
    """
    a = np.asarray(a).astype(np.int64, copy=False).ravel()
    b = np.asarray(b).astype(np.int64, copy=False).ravel()
    _check_same_shape(a, b)
    if a.size == 0:
        return 0.0
    agree = int(np.count_nonzero((a == 0) & (b == 0)))
    both = (a != 0) & (b != 0)
    # One integer per (a id, b id) pair, counted in one pass.
    keys, counts = np.unique(a[both] * (int(b.max()) + 1) + b[both], return_counts=True)
    pairs_a, pairs_b = np.divmod(keys, int(b.max()) + 1)
    used_a: set[int] = set()
    used_b: set[int] = set()
    for index in np.argsort(-counts, kind="stable"):
        id_a, id_b = int(pairs_a[index]), int(pairs_b[index])
        if id_a not in used_a and id_b not in used_b:
            used_a.add(id_a)
            used_b.add(id_b)
            agree += int(counts[index])
    return 1.0 - agree / a.size


def object_count(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids in ``labels``."""
    ids = np.unique(np.asarray(labels))
    return int(np.count_nonzero(ids))


def megapixels_per_second(pixels: int, seconds: float) -> float:
    """Throughput of ``pixels`` segmented in ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return pixels / 1e6 / seconds


def mirror_tile(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` ``(h, w)`` mirrored at its borders until it is ``shape`` ``(H, W)``.

    A larger image of the same kind of content, for throughput measurements.
    """
    rows, cols = shape
    if rows < 1 or cols < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    grown = np.pad(
        image,
        ((0, max(rows - image.shape[0], 0)), (0, max(cols - image.shape[1], 0))),
        mode="symmetric",
    )
    return np.ascontiguousarray(grown[:rows, :cols])


def pseudo_annotations(image: np.ndarray) -> np.ndarray:
    """Dense instance labels ``(H, W)`` int32 from an Otsu threshold of ``image``.

    Fine-tuning speed does not depend on what the labels say, only that there are
    objects and background; this keeps the check free of data beside the package.
    """
    image = np.asarray(image, dtype=np.float32)
    return connected_components(image > threshold_otsu(image)).astype(np.int32)


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"arrays differ in shape: {a.shape} and {b.shape}")


# ----------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new peak-memory measurement on ``device`` (nothing to do off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device | str) -> int | None:
    """Bytes allocated at the peak since :func:`reset_peak_memory`; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


@contextlib.contextmanager
def true_float32() -> Iterator[None]:
    """Convolutions in real float32: cuDNN may use TF32 for float32 by default (Ampere on)."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


# ----------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class Exactness:
    """Mixed precision against float32 at one tile size (fractions are of all pixels)."""

    tile_size: int
    tiles: int
    max_probability_difference: float
    class_disagreement: float
    instance_disagreement: float
    objects_float32: int
    objects_mixed: int
    peak_memory_float32: int | None
    peak_memory_mixed: int | None


@dataclass(frozen=True)
class Throughput:
    """Segmentation speed (``mask`` output, mixed precision on CUDA) at one tile size."""

    tile_size: int
    image_shape: tuple[int, int]
    tiles: int
    repeats: int
    best_megapixels_per_second: float
    median_megapixels_per_second: float
    peak_memory: int | None


@dataclass(frozen=True)
class Training:
    """Fine-tuning speed with or without mixed precision."""

    mixed_precision: bool
    batch_size: int
    patch_size: int
    steps: int
    steps_per_second: float
    first_loss: float
    last_loss: float
    peak_memory: int | None


def valid_tile_size(bundle: ModelBundle, requested: int) -> int:
    """The valid tile input size of ``bundle``'s network nearest to ``requested``."""
    return round_tile_size(bundle.config, requested)[0]


def measure_exactness(
    bundle: ModelBundle, image: np.ndarray, device: torch.device | str, tile_size: int
) -> Exactness:
    """Segment ``image`` ``(H, W)`` with mixed precision and with float32; compare.

    Mixed precision is the predictor segmentation uses (:func:`get_predictor`: float16
    autocast on CUDA); the reference is the same network in float32 with TF32 off. Off
    CUDA both run in float32, so every difference is 0.
    """
    device = torch.device(device)
    tile_size = valid_tile_size(bundle, tile_size)
    tiles = plan_tiles(image.shape, bundle.config, tile_size=tile_size).total
    predictors = {
        "mixed": get_predictor(bundle, str(device)),
        "float32": make_predictor(bundle.build(device), device, amp=False),
    }
    results: dict[str, dict[str, np.ndarray]] = {}
    peaks: dict[str, int | None] = {}
    for name, predictor in predictors.items():
        reset_peak_memory(device)
        with true_float32() if name == "float32" else contextlib.nullcontext():
            results[name] = {
                output: segment(
                    bundle,
                    image,
                    options=_options(bundle, output, tile_size, device),
                    predictor=predictor,
                )
                for output in ("probabilities", "mask", "labels")
            }
        peaks[name] = peak_memory(device)
    mixed, reference = results["mixed"], results["float32"]
    return Exactness(
        tile_size=tile_size,
        tiles=tiles,
        max_probability_difference=max_probability_difference(
            mixed["probabilities"], reference["probabilities"]
        ),
        class_disagreement=pixel_disagreement(mixed["mask"], reference["mask"]),
        instance_disagreement=instance_disagreement(mixed["labels"], reference["labels"]),
        objects_float32=object_count(reference["labels"]),
        objects_mixed=object_count(mixed["labels"]),
        peak_memory_float32=peaks["float32"],
        peak_memory_mixed=peaks["mixed"],
    )


def measure_throughput(
    bundle: ModelBundle,
    image: np.ndarray,
    device: torch.device | str,
    tile_size: int,
    *,
    repeats: int = 3,
) -> Throughput:
    """Megapixels per second of segmenting ``image`` ``(H, W)`` to a mask, as users do.

    One untimed run first (it builds the predictor and lets the GPU pick its kernels),
    then ``repeats`` timed runs; the result reaches the CPU, so the GPU has finished.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = torch.device(device)
    tile_size = valid_tile_size(bundle, tile_size)
    options = _options(bundle, "mask", tile_size, device)
    segment(bundle, image, options=options)
    reset_peak_memory(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment(bundle, image, options=options)
        seconds.append(time.perf_counter() - start)
    pixels = int(image.shape[-2]) * int(image.shape[-1])
    return Throughput(
        tile_size=tile_size,
        image_shape=(int(image.shape[-2]), int(image.shape[-1])),
        tiles=plan_tiles(image.shape, bundle.config, tile_size=tile_size).total,
        repeats=repeats,
        best_megapixels_per_second=megapixels_per_second(pixels, min(seconds)),
        median_megapixels_per_second=megapixels_per_second(pixels, statistics.median(seconds)),
        peak_memory=peak_memory(device),
    )


def measure_training(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    annotations: Sequence[np.ndarray],
    device: torch.device | str,
    *,
    mixed_precision: bool,
    steps: int = 30,
    warmup: int = 5,
    batch_size: int = 4,
    seed: int = 0,
) -> Training:
    """Fine-tuning steps per second of ``bundle`` on dense ``annotations``.

    Steps ``warmup + 1`` to ``warmup + steps`` are timed (the first ones allocate the
    optimiser state and let the GPU pick its kernels). Mixed precision only exists on
    CUDA: elsewhere ``mixed_precision`` is recorded as False.
    """
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps and warmup must be at least 1, got {steps} and {warmup}")
    device = torch.device(device)
    mixed = mixed_precision and device.type == "cuda"
    total = warmup + steps
    config = TrainConfig(
        steps=total,
        batch_size=batch_size,
        validation_every=total,  # one validation, after the last (untimed) step
        seed=seed,
        device=str(device),
        amp=mixed,
    )
    trainer = Trainer(bundle, images, annotations, convention="dense", config=config)
    reset_peak_memory(device)
    elapsed, losses = _timed_run(trainer)
    if len(elapsed) < total:
        raise RuntimeError(f"training stopped after {len(elapsed)} of {total} steps")
    return Training(
        mixed_precision=mixed,
        batch_size=batch_size,
        patch_size=trainer.patch_input,
        steps=steps,
        steps_per_second=steps / (elapsed[-1] - elapsed[warmup - 1]),
        first_loss=losses[0],
        last_loss=losses[-1],
        peak_memory=peak_memory(device),
    )


def _timed_run(trainer: Trainer) -> tuple[list[float], list[float]]:
    """Seconds since the start after each step, and each step's loss, from run()'s events.

    Each step reads its loss back (a GPU synchronisation), so the times are exact.
    """
    elapsed, losses = [], []
    for event in trainer.run():
        if isinstance(event, TrainStep):
            elapsed.append(event.elapsed)
            losses.append(event.loss)
    return elapsed, losses


def _options(
    bundle: ModelBundle, output: str, tile_size: int, device: torch.device
) -> SegmentOptions:
    """Segment options as users get them: the model's recommended post-processing."""
    return SegmentOptions(
        output=output,
        tile_size=tile_size,
        device=str(device),
        **recommended_options(bundle, output),
    )


# ----------------------------------------------------------------------------- running
@dataclass
class Results:
    """Everything one check measured."""

    model: str
    sample: str
    exactness: list[Exactness] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    training: list[Training] = field(default_factory=list)


def run_checks(
    bundle: ModelBundle,
    image: np.ndarray,
    device: torch.device | str,
    *,
    sample: str = "",
    tile_sizes: Sequence[int] = DEFAULT_TILE_SIZES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    repeats: int = 3,
    steps: int = 30,
    warmup: int = 5,
    batch_size: int = 4,
) -> Results:
    """Measure exactness and throughput at every tile size, then fine-tuning twice."""
    results = Results(model=bundle.name, sample=sample or f"{image.shape[0]} x {image.shape[1]}")
    large = mirror_tile(image, (image_size, image_size))
    for tile_size in tile_sizes:
        results.exactness.append(measure_exactness(bundle, image, device, tile_size))
        _progress(results.exactness[-1])
        results.throughput.append(
            measure_throughput(bundle, large, device, tile_size, repeats=repeats)
        )
        _progress(results.throughput[-1])
    annotations = pseudo_annotations(image)
    for mixed in (True, False):
        results.training.append(
            measure_training(
                bundle,
                [image],
                [annotations],
                device,
                mixed_precision=mixed,
                steps=steps,
                warmup=warmup,
                batch_size=batch_size,
            )
        )
        _progress(results.training[-1])
    return results


def _progress(result: object) -> None:
    print(result, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class Machine:
    """What ran the check."""

    gpu: str
    torch: str
    cuda: str | None
    cudnn: str | None
    python: str
    system: str


def describe_machine(device: torch.device | str) -> Machine:
    """GPU name and memory, torch, CUDA and cuDNN versions, Python and OS of this machine."""
    device = torch.device(device)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        gpu = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB"
    else:
        gpu = f"none ({device.type})"
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return Machine(
        gpu=gpu,
        torch=torch.__version__,
        cuda=torch.version.cuda,
        cudnn=None if cudnn is None else str(cudnn),
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
    )


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.4f} %"


def format_section(
    results: Results, machine: Machine, *, command: str, date: str, revision: str
) -> str:
    """The "GPU check" section of docs/benchmarks.md, between its BEGIN and END markers.

    Parameters
    ----------
    results : Results
        What :func:`run_checks` measured.
    machine : Machine
        What ran it (:func:`describe_machine`).
    command : str
        The exact command line.
    date : str
        When, e.g. ``"2026-12-02 07:00 UTC"``.
    revision : str
        The git revision measured.

    Returns
    -------
    str
        Markdown ending in a newline.
    """
    lines = [
        f"<!-- BEGIN {SECTION} -->",
        f"## {TITLE}",
        "",
        f"- Command: `{command}`",
        f"- Date: {date}, git {revision}",
        f"- GPU: {machine.gpu}; torch {machine.torch}, CUDA {machine.cuda or 'none'}, "
        f"cuDNN {machine.cudnn or 'none'}; Python {machine.python}, {machine.system}",
        f"- Model: `{results.model}`; image: {results.sample}",
        "- Peak memory: `torch.cuda.max_memory_allocated` during the measurement, MiB "
        "(model weights included).",
        "",
        "### Mixed precision against float32",
        "",
        "Float16 autocast (what segmentation uses on CUDA) against float32 with TF32 off. "
        "Pixels with another class: the thresholded masks differ; with another object: "
        "the instance labels differ after matching ids one to one.",
        "",
        "| tile size | tiles | max probability difference | pixels with another class "
        "| pixels with another object | objects float32 / mixed | peak MiB float32 / mixed |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in results.exactness:
        lines.append(
            f"| {e.tile_size} | {e.tiles} | {e.max_probability_difference:.2e} "
            f"| {_percent(e.class_disagreement)} | {_percent(e.instance_disagreement)} "
            f"| {e.objects_float32} / {e.objects_mixed} "
            f"| {_mib(e.peak_memory_float32)} / {_mib(e.peak_memory_mixed)} |"
        )
    lines += [
        "",
        "### Segmentation throughput",
        "",
        "The sample mirror-tiled to a larger image, segmented to a mask as users do "
        "(normalisation, tiles, threshold); after one untimed run.",
        "",
        "| tile size | image | tiles | megapixels/s best | median | peak MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in results.throughput:
        lines.append(
            f"| {t.tile_size} | {t.image_shape[0]} x {t.image_shape[1]} | {t.tiles} "
            f"| {t.best_megapixels_per_second:.3g} | {t.median_megapixels_per_second:.3g} "
            f"(of {t.repeats}) | {_mib(t.peak_memory)} |"
        )
    lines += [
        "",
        "### Fine-tuning",
        "",
        "Trainer steps (patch sampling, augmentation on the device, forward, loss, backward, "
        "optimiser) on Otsu pseudo-labels of the sample, after warm-up steps.",
        "",
        "| mixed precision | batch | patch | steps timed | steps/s | loss first -> last "
        "| peak MiB |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results.training:
        lines.append(
            f"| {'yes' if r.mixed_precision else 'no'} | {r.batch_size} | {r.patch_size} "
            f"| {r.steps} | {r.steps_per_second:.3g} | {r.first_loss:.3f} -> {r.last_loss:.3f} "
            f"| {_mib(r.peak_memory)} |"
        )
    lines += [f"<!-- END {SECTION} -->", ""]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """``text`` (a benchmarks document) with its GPU check section replaced by ``section``.

    The section between this check's BEGIN and END markers is replaced; failing that, a
    hand-written ``## GPU check`` heading and everything up to the next ``## `` heading;
    failing that, ``section`` is appended. An empty ``text`` starts the document.
    """
    if not section.endswith("\n"):
        section += "\n"
    marked = re.compile(
        rf"<!-- BEGIN {re.escape(SECTION)} -->.*?<!-- END {re.escape(SECTION)} -->\n?", re.S
    )
    if marked.search(text):
        return marked.sub(lambda _match: section, text, count=1)
    heading = re.compile(rf"^## {re.escape(TITLE)}[ \t]*\n.*?(?=^## |^<!-- BEGIN |\Z)", re.S | re.M)
    if heading.search(text):
        return heading.sub(lambda _match: section, text, count=1)
    if not text.strip():
        text = HEADER
    return text.rstrip("\n") + "\n\n" + section


def write_section(doc: Path, section: str) -> None:
    """Replace (or add) the GPU check section of the document ``doc``."""
    text = doc.read_text(encoding="utf-8") if doc.exists() else ""
    doc.write_text(replace_section(text, section), encoding="utf-8")


def no_cuda_message(torch_version: str, cuda_available: bool) -> str:
    """The one line printed where there is nothing to measure."""
    return (
        f"no CUDA GPU found (torch {torch_version}, cuda available: {cuda_available}); "
        "nothing measured"
    )


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=SCRIPT,
        description="Measure the CUDA path (mixed precision exactness, throughput, "
        "fine-tuning speed, GPU memory) and write it to docs/benchmarks.md.",
    )
    parser.add_argument("--tile-sizes", type=int, nargs="+", default=list(DEFAULT_TILE_SIZES))
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--repeats", type=int, default=3, help="timed segmentation runs")
    parser.add_argument("--steps", type=int, default=50, help="timed fine-tuning steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--doc", type=Path, default=DOC, help="document to write the section to")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(no_cuda_message(torch.__version__, False))
        return 0
    device = torch.device("cuda")
    argv = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([SCRIPT, *map(shlex.quote, argv)])
    image = nuclei_image()
    results = run_checks(
        load_model(resolve_model("nuclei")),
        image,
        device,
        sample=f"bundled nuclei sample `{NUCLEI_FILE.name}` ({image.shape[0]} x "
        f"{image.shape[1]}); throughput on it mirror-tiled to {args.image_size} x "
        f"{args.image_size}",
        tile_sizes=args.tile_sizes,
        image_size=args.image_size,
        repeats=args.repeats,
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
    )
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = format_section(
        results, describe_machine(device), command=command, date=now, revision=git_revision()
    )
    write_section(args.doc, section)
    print(section)
    print(f"wrote the {TITLE} section to {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Large images: peak memory of the whole process tree and throughput, 1 vs 2 dask workers.

A smooth, blobby uint8 image is written once as a zarr array (lazily, chunk by chunk,
with dask) under the work folder. Each configuration then runs the real command line in
a fresh subprocess::

    napari-unet segment image.zarr -o labels.zarr -m MODEL [--workers N]

while this script samples the resident memory (RSS) of that process *and all its
children* (dask worker processes) every 0.2 s; the peak of the sum is reported. The model
is the built-in ``nuclei`` model when installed, else the SMALL preset with random
weights (saved to a temporary file).

Configurations:

* ``in-process``: block-wise in the command's own process (torch with 2 threads);
* ``workers=1`` / ``workers=2``: a local dask.distributed cluster of single-thread worker
  processes (one torch thread each).

The SMALL U-Net runs at roughly 0.15-0.3 Mpx/s on 2 CPU cores, so a 16k x 16k image takes
15-30 min per configuration. By default the 16k x 16k image is therefore run *once*
(``workers=1``) for the memory figure, and the 1 vs 2 worker throughput is measured on a
4k x 4k crop (its own zarr); the report says which size each number comes from.

Run: ``python benchmarks/bench_large.py`` (full, ~1 h on 2 cores) or
``python benchmarks/bench_large.py --quick`` (a 1024 px smoke run that checks the
pipeline; its numbers are not meaningful).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Targets of issue 5.
PEAK_MEMORY_TARGET_MB = 2048


def make_image(path: Path, size: int, chunk: int = 1024) -> Path:
    """Write a deterministic smooth uint8 ``size x size`` image as a zarr array at ``path``."""
    import dask.array as da
    import numpy as np

    if path.exists():
        return path

    def blobs(block_info=None):
        (r0, r1), (c0, c1) = block_info[None]["array-location"]
        rows = np.arange(r0, r1, dtype=np.float32)[:, None]
        cols = np.arange(c0, c1, dtype=np.float32)[None, :]
        # Overlapping sines give round bright blobs ~20 px wide on a dark background.
        value = np.sin(rows / 7.1) * np.sin(cols / 6.3) + 0.3 * np.sin((rows + cols) / 53.0)
        return np.clip(255 * (value - 0.2), 0, 255).astype(np.uint8)

    image = da.map_blocks(blobs, chunks=((chunk,) * (size // chunk),) * 2, dtype=np.uint8)
    image.to_zarr(str(path), overwrite=True)
    return path


def model_file(workdir: Path) -> tuple[Path, str]:
    """The nuclei model if installed, else a random SMALL network saved under ``workdir``."""
    from napari_unet.core.model import SMALL
    from napari_unet.core.modelfile import random_model, resolve_model, save_model

    try:
        return resolve_model("nuclei"), "built-in nuclei model"
    except Exception:  # not installed yet
        path = save_model(  # the work folder is kept between runs
            random_model(SMALL, seed=0, name="small"), workdir / "small.safetensors", overwrite=True
        )
        return path, "SMALL preset, random weights"


def run_config(
    image: Path, model: Path, out: Path, workers: int | None, block_size: int = 2048
) -> dict:
    """Run the CLI once in a subprocess; return wall time and peak RSS of its process tree."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "napari_unet.cli",
        "segment",
        str(image),
        "-o",
        str(out),
        "-m",
        str(model),
        "--no-split-touching",
        "--block-size",
        str(block_size),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    parent = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    stderr = process.stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr}")
    return {"seconds": seconds, "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="memory run edge (16384)")
    parser.add_argument("--crop", type=int, default=4096, help="1 vs 2 worker edge (4096)")
    parser.add_argument("--block-size", type=int, default=2048, help="CLI --block-size (2048)")
    parser.add_argument(
        "--quick", action="store_true", help="1024 px smoke run, 512 px blocks, no big run"
    )
    parser.add_argument("--skip-big", action="store_true", help="only the 1 vs 2 worker runs")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_large")
    args = parser.parse_args()
    if args.quick:
        args.crop, args.block_size, args.skip_big = 1024, 512, True
    args.workdir.mkdir(parents=True, exist_ok=True)
    model, model_name = model_file(args.workdir)

    rows = []
    big_peak = None
    if not args.skip_big:
        image = make_image(args.workdir / f"image_{args.size}.zarr", args.size)
        big_out = args.workdir / "labels_big.zarr"
        result = run_config(image, model, big_out, 1, args.block_size)
        big_peak = result["peak_mb"]
        rows.append((f"{args.size} x {args.size}", "workers=1", result, args.size**2))
        shutil.rmtree(args.workdir / "labels_big.zarr", ignore_errors=True)
    crop = make_image(args.workdir / f"image_{args.crop}.zarr", args.crop)
    crop_label = f"{args.crop} x {args.crop}"
    for label, workers in (("in-process", None), ("workers=1", 1), ("workers=2", 2)):
        result = run_config(
            crop, model, args.workdir / "labels_crop.zarr", workers, args.block_size
        )
        rows.append((crop_label, label, result, args.crop**2))
        print(label, result, file=sys.stderr, flush=True)

    table = [
        "| image | configuration | wall time (s) | throughput (Mpx/s) "
        "| peak RSS, process tree (MB) |",
        "|---|---|---|---|---|",
    ]
    for size, label, result, pixels in rows:
        table.append(
            f"| {size} | {label} | {result['seconds']:.1f} | "
            f"{pixels / result['seconds'] / 1e6:.3f} | {result['peak_mb']:.0f} |"
        )
    crop_times = {label: result["seconds"] for size, label, result, _ in rows if size == crop_label}
    speedup = crop_times.get("workers=1", 0) / max(crop_times.get("workers=2", 1e-9), 1e-9)
    if big_peak is None:
        memory_verdict = "not measured (--skip-big)"
    else:
        met = "met" if big_peak < PEAK_MEMORY_TARGET_MB else "NOT met"
        memory_verdict = (
            f"{big_peak:.0f} MB at {args.size} x {args.size} with 1 worker: target "
            f"< {PEAK_MEMORY_TARGET_MB} MB {met}"
        )
    body = "\n".join(
        [
            f"Model: {model_name}; input: a smooth uint8 zarr (chunks 1024), output: OME-Zarr "
            f"labels (blocks of {args.block_size} px); each configuration is one run of the "
            "CLI in a fresh subprocess, memory sampled every 0.2 s over the process and its "
            "dask workers; wall times include starting the workers (a few seconds).",
            "",
            *table,
            "",
            f"- Peak memory: {memory_verdict}.",
            f"- 2 vs 1 worker speed-up on {args.crop} x {args.crop}: {speedup:.2f}x "
            f"(2 CPU cores; {'quick smoke run: not meaningful' if args.quick else 'one run'}).",
            f"- Machine load: {os.getloadavg()[0]:.1f} (1-min load average at the end).",
        ]
    )
    from _report import write_section

    flags = " --quick" if args.quick else ""
    flags += " --skip-big" if args.skip_big and not args.quick else ""
    write_section(
        "large",
        "Large images: memory and dask workers",
        f"python benchmarks/bench_large.py{flags}",
        body,
    )
    print(body)


if __name__ == "__main__":
    main()

"""Whole-process times of the command line: start-up, imports and set-up included.

Each command is started ``--runs`` times (after one unmeasured warm-up run, which fills
the OS file cache as a user's second call would find it) and timed from outside, from
the start of the process to its exit. Targets (issue 17): ``--help`` and ``models``
<= 1 s, ``segment`` of a 256 x 256 image with the built-in model <= 3 s end to end, and
an argument error answered without importing torch.

Usage::

    python benchmarks/bench_startup.py [--runs 7] [--no-write]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_unet._sample_data import nuclei_image

#: Name -> (arguments after ``napari-unet``, target in seconds or None).
CASES: dict[str, tuple[list[str], float | None]] = {
    "--help": (["--help"], 1.0),
    "models": (["models"], 1.0),
    "argument error (output .png)": (["segment", "{image}", "-o", "{folder}/x.png"], 1.0),
    "segment 256 x 256 (nuclei)": (
        ["segment", "{image}", "-o", "{folder}/labels.tif", "--model", "nuclei", "--overwrite"],
        3.0,
    ),
}


def time_command(argv: list[str], runs: int) -> list[float]:
    """Wall seconds of ``runs`` runs of ``argv`` (after one warm-up run)."""
    times = []
    for index in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        if index:  # the first run only warms the file cache
            times.append(time.perf_counter() - start)
    return times


def imports_torch(argv: list[str]) -> bool:
    """Whether the process imports torch (from ``-X importtime``)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "napari_unet.cli", *argv[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    return any(line.split("|")[-1].strip() == "torch" for line in done.stderr.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    executable = str(Path(sys.executable).with_name("napari-unet"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "nuclei256.tif"
        tifffile.imwrite(image, np.ascontiguousarray(nuclei_image()[:256, :256]))
        for name, (arguments, target) in CASES.items():
            argv = [executable] + [a.format(image=image, folder=folder) for a in arguments]
            times = time_command(argv, args.runs)
            torch_loaded = imports_torch(argv)
            best, median = min(times), statistics.median(times)
            verdict = "-" if target is None else ("met" if median <= target else "MISSED")
            rows.append((name, best, median, max(times), target, verdict, torch_loaded))
            print(f"{name:32s} min {best:.2f} s  median {median:.2f} s  torch {torch_loaded}")
    table = [
        "| command | min (s) | median (s) | max (s) | target (median) | imports torch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, best, median, worst, target, verdict, torch_loaded in rows:
        goal = f"<= {target:.0f} s: {verdict}" if target else "-"
        table.append(
            f"| `{name}` | {best:.2f} | {median:.2f} | {worst:.2f} | {goal} | "
            f"{'yes' if torch_loaded else 'no'} |"
        )
    body = (
        f"Whole processes, {args.runs} timed runs each after one warm-up run (wall clock "
        "from start to exit, imports and set-up included).\n\n" + "\n".join(table) + "\n"
    )
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section(
            "startup",
            "Command-line start-up (whole process)",
            f"python benchmarks/bench_startup.py --runs {args.runs}",
            body,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

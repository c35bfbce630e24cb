"""Cost of linking per-plane instance labels through a stack (target: <= 20 ms per plane).

Input: a stack of 512 x 512 planes holding non-overlapping discs (radius 6-8 px for 500
objects), one per cell of a jittered grid; every plane moves each disc by up to ~2 px and
numbers the discs in a new random order, as a 2-D model's per-plane labels would. The
timed call is ``link_planes(stack)`` (numpy input, int32 ids); the cost per plane is the
call's time divided by the number of planes. Each configuration is timed ``--repeats``
times (min and median wall clock, and min CPU time, which other processes on a shared
machine do not inflate) after one untimed warm-up call. A check that every disc kept one id
through the stack guards against timing a wrong answer.

Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_linking.py`` (``--no-write`` to print only).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from skimage.draw import disk

from _report import write_section
from napari_unet.core.linking import link_planes

COMMAND = "OMP_NUM_THREADS=1 python benchmarks/bench_linking.py"
TARGET_MS = 20.0
SIZE = 512
#: (objects per plane, planes, id dtype): the target's case first, then more objects (the
#: sparse overlap count) and uint64 ids above the pixel count (the sorting path).
CASES = ((500, 20, np.int32), (2000, 20, np.int32), (500, 20, np.uint64))


def moving_discs(n_objects: int, n_planes: int, dtype, seed: int = 0) -> np.ndarray:
    """(n_planes, SIZE, SIZE) labels of ``n_objects`` discs, ids shuffled in every plane."""
    rng = np.random.default_rng(seed)
    grid = int(np.ceil(np.sqrt(n_objects)))
    cell = SIZE / grid
    cells = rng.permutation(grid * grid)[:n_objects]
    centres = np.stack([cells // grid, cells % grid], axis=1) * cell + cell / 2
    radii = rng.uniform(0.25, 0.36, n_objects) * cell
    jitter = 0.08 * cell  # radius + jitter < cell / 2: discs never overlap
    # ids above the pixel count make link_planes sort instead of using a lookup table
    base = 2**40 if dtype == np.uint64 else 0
    labels = np.zeros((n_planes, SIZE, SIZE), dtype)
    for k in range(n_planes):
        ids = rng.permutation(n_objects) + 1 + base
        moved = centres + rng.uniform(-jitter, jitter, centres.shape)
        for i, ((cy, cx), r) in enumerate(zip(moved, radii, strict=True)):
            labels[k][disk((cy, cx), r, shape=(SIZE, SIZE))] = ids[i]
    return labels


def time_case(labels: np.ndarray, repeats: int) -> dict:
    linked = link_planes(labels)  # warm-up, and the correctness check below
    n_objects = len(np.unique(labels[0])) - 1
    if linked.max() != n_objects:
        raise SystemExit(f"linking lost discs: {linked.max()} ids for {n_objects} discs")
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        link_planes(labels)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    per_plane = 1000 / labels.shape[0]
    return {
        "min": min(wall) * per_plane,
        "median": statistics.median(wall) * per_plane,
        "cpu_min": min(cpu) * per_plane,
        "ids": int(linked.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the docs")
    args = parser.parse_args()
    rows = []
    target_row = None
    for n_objects, n_planes, dtype in CASES:
        result = time_case(moving_discs(n_objects, n_planes, dtype), args.repeats)
        ids = "uint64 ids >= 2**40" if dtype == np.uint64 else np.dtype(dtype).name
        row = (
            f"| {n_objects} | {n_planes} | {ids} | {result['min']:.1f} | {result['median']:.1f} "
            f"| {result['cpu_min']:.1f} | {result['ids']} |"
        )
        print(row, flush=True)
        rows.append(row)
        if target_row is None:
            target_row = result
    verdict = "met" if target_row["median"] <= TARGET_MS else "NOT met"
    body = "\n".join(
        [
            f"`link_planes` on stacks of {SIZE} x {SIZE} planes of non-overlapping discs that "
            "move by up to ~2 px from plane to plane, numbered in a new random order in every "
            f"plane; milliseconds per plane over {args.repeats} repeats after a warm-up "
            "(wall clock min and median; CPU time min). Every disc keeps one id through the "
            "stack (last column = objects per plane).",
            "",
            "| objects / plane | planes | input ids | min ms / plane | median ms / plane "
            "| CPU min ms / plane | linked ids |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Target: <= {TARGET_MS:.0f} ms per 512 x 512 plane with 500 objects: **{verdict}** "
            f"(median {target_row['median']:.1f} ms).",
        ]
    )
    if not args.no_write:
        write_section("linking", "Linking labels through a stack", COMMAND, body)


if __name__ == "__main__":
    main()

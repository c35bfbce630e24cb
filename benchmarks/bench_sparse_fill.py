"""Peak memory of filling sparse objects block by block (``fill_boundaries``).

A plane of ``--size`` x ``--size`` pixels with a few small objects far apart is stored
in a zarr array; its labels are filled block by block
(:func:`~napari_unet.core.seams.label_plane_in_blocks`, blocks of ``--block`` pixels)
into another zarr array. Each variant runs in a fresh process and reports its peak
resident memory: ``edges`` (this code: windows past
``seam_fill.DENSE_FILL_MAX_PIXELS`` are filled from object edges gathered chunk by chunk)
and ``dense`` (every window filled with a distance transform, however large: the code
before the edge fill). Target: peak < 1 GB whatever the plane's size (a 16384 px
plane's distance transform alone would need ~6.7 GB).

Run: ``python benchmarks/bench_sparse_fill.py [--size 8192] [--block 2048]
[--variants edges,dense] [--no-report]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MB = 1024.0


def run_variant(variant: str, size: int, block: int) -> dict:
    """Fill the plane in this process; return the peak memory and time."""
    import zarr

    from napari_unet.core import seam_fill
    from napari_unet.core.events import drain
    from napari_unet.core.postprocess import PlaneLabeller
    from napari_unet.core.seams import block_cores, label_plane_in_blocks

    if variant == "dense":
        seam_fill.DENSE_FILL_MAX_PIXELS = float("inf")
    folder = Path(tempfile.mkdtemp(prefix="bench-sparse-fill-"))
    chunks = (block, block)
    mask = zarr.create_array(
        str(folder / "mask.zarr"), shape=(size, size), dtype="u1", chunks=chunks
    )
    rng = np.random.default_rng(0)
    for row, col in rng.integers(0, size - 8, (12, 2)):  # 12 objects of 8 x 8 px
        mask[row : row + 8, col : col + 8] = 1
    out = zarr.create_array(str(folder / "out.zarr"), shape=(size, size), dtype="i4", chunks=chunks)
    unfilled = zarr.create_array(
        str(folder / "raw.zarr"), shape=(size, size), dtype="i4", chunks=chunks
    )
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    count = drain(
        label_plane_in_blocks(
            mask,
            block_cores((size, size), (block, block)),
            out,
            labeller=PlaneLabeller(fill_boundaries=True),
            margin=32,
            unfilled=unfilled,
        )
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    corner = np.asarray(out[:64, :64])
    return {
        "variant": variant,
        "objects": int(count),
        "peak_mb": peak,
        "before_mb": baseline,
        "seconds": seconds,
        "corner_filled": bool((corner > 0).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--block", type=int, default=2048)
    parser.add_argument("--variants", default="edges,dense")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_variant(args.child, args.size, args.block)))
        return
    results = []
    for variant in args.variants.split(","):
        command = [sys.executable, __file__, "--child", variant, "--size", str(args.size)]
        command += ["--block", str(args.block)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    rows = "\n".join(
        f"| {r['variant']} | {r['objects']} | {r['peak_mb']:.0f} | {r['seconds']:.1f} "
        f"| {'yes' if r['corner_filled'] else 'NO'} "
        f"| {'met' if r['peak_mb'] < TARGET_MB else 'MISSED'} |"
        for r in results
    )
    body = f"""
A {args.size} x {args.size} plane with 12 objects of 8 x 8 px (zarr, {args.block} px
chunks) labelled with fill block by block ({args.block} px blocks, margin 32) into zarr;
each variant in a fresh process (peak resident memory of the process, imports included).
`edges`: this code (windows past `seam_fill.DENSE_FILL_MAX_PIXELS` = 2560 x 2560 are filled
from object edges gathered {2048} px square at a time). `dense`: every window filled by a
distance transform however large (the code before). Target: peak < {TARGET_MB:.0f} MB.

| variant | objects | peak memory (MB) | seconds | every pixel filled | target |
|---|---|---|---|---|---|
{rows}
"""
    print(body)
    if args.no_report:
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import write_section

    write_section(
        "sparse-fill",
        "Fill between sparse objects, block by block: peak memory",
        f"python benchmarks/bench_sparse_fill.py --size {args.size} --block {args.block} "
        f"--variants {args.variants}",
        body,
    )


if __name__ == "__main__":
    main()

"""The options of ``napari-unet segment`` and its help text."""

from __future__ import annotations

import argparse
from typing import Any

from napari_unet.cli.common import add_channel_arguments, add_scale_arguments

_SEGMENT_EPILOG = """\
examples:
  napari-unet segment cells.tif -o cells_labels.tif --model nuclei
  napari-unet segment stack.tif -o masks.tif --model my_model.safetensors --output mask
  napari-unet segment a.png b.png c.tif -o results/ --tile-size 572 --device cpu
  napari-unet segment huge.ome.zarr -o labels.zarr --model nuclei --no-split-touching
  napari-unet segment huge.tif -o labels.zarr --workers 2        (local dask cluster)
  napari-unet segment huge.zarr -o labels.zarr --scheduler tcp://host:8786 --resume
  napari-unet segment tzcyx.tif -o labels.tif --channels 1          (one channel of an OME TIFF)
  napari-unet segment cells.tif -o labels.tif -m two_channel.safetensors --channel-axis 0
  napari-unet segment he.png -o labels.tif --rgb grey
  napari-unet segment cells.tif -o labels.tif --pixel-size 0.325um   (file has no pixel size)
  napari-unet segment cells.png -o labels.tif --diameter 40          (objects ~40 px across)

With several inputs OUTPUT is a folder (created if needed) receiving NAME_<output>.tif
for each input (NAME_<output>.zarr for zarr inputs or with --workers/--scheduler).
Results are int32 instance labels, uint8 masks, or float32 probabilities (K, H, W) per
plane, as TIFF or, for an OUTPUT ending in .zarr, as OME-Zarr (NGFF 0.4).

Images may have up to two leading axes (t, z) and a channel axis: (Y, X), (Z, Y, X),
(T, Z, Y, X), (C, Y, X), (T, Z, C, Y, X)... Every (Y, X) plane is segmented and the
result keeps the leading axes. The channel axis comes from OME/ImageJ metadata or
--channel-axis; --channels picks the channels the model reads, in order; each channel is
normalised on its own. With --link (default on for a z axis named in the file and a
.tif OUTPUT) each object keeps one id
through the stack: it takes the id of the object it overlaps most (IoU >= --link-iou) in
the previous plane. Along a time axis this is frame-to-frame overlap tracking: it does
not follow divisions, objects missing from a frame, or moves larger than an object.

Scale: the image is resampled to the model's scale and the result mapped back onto its
grid. An explicit --diameter decides first, then the pixel sizes (the file's or
--pixel-size, and the model's), then 'auto' for models recording their objects' size.
One line per input says the scale used and why; results keep the input's calibration.

Inputs may be TIFF, PNG, zarr arrays or OME-Zarr images (the full-resolution level is
used). A .zarr OUTPUT is written block by block without loading the image (large
TIFFs are read tile by tile): memory stays bounded, and an interrupted run continues
with --resume. --workers/--scheduler spread the blocks, then the planes' labelling,
over a dask.distributed cluster (results identical to one process). An option a
block-wise run cannot apply (such as --link) is refused when you give it, and left out
with a note when the model recommends it or it is the z-stack default. Each result's
line says the post-processing applied.
"""


def add_segment_parser(subparsers: Any) -> None:
    """Add ``segment`` and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "segment",
        help="segment TIFF/PNG/zarr images with a U-Net model",
        description="Segment TIFF (2D or stacks), PNG, zarr and OME-Zarr images; write TIFF "
        "or OME-Zarr results.",
        epilog=_SEGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="TIFF, PNG, zarr or OME-Zarr image(s)"
    )
    parser.add_argument(
        "-o",
        "--output-path",
        dest="output_path",
        required=True,
        metavar="OUTPUT",
        help="result .tif file or .zarr store (one input), or a folder (several inputs)",
    )
    parser.add_argument(
        "-m",
        "--model",
        metavar="NAME_OR_PATH",
        help="model name (see 'napari-unet models') or .safetensors file "
        "(default: the default built-in model)",
    )
    parser.add_argument(
        "--output",
        choices=("labels", "mask", "probabilities"),
        default="labels",
        help="what to write (default: labels)",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        metavar="N",
        help="tile input size in pixels, rounded to the nearest valid size "
        "(default: chosen for the model)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "mps"),
        default="auto",
        help="where to run the network (default: auto = GPU if available)",
    )
    _add_postprocess_arguments(parser)
    add_scale_arguments(parser)
    _add_run_arguments(parser)
    add_channel_arguments(parser)
    _add_stack_arguments(parser)
    _add_cluster_arguments(parser)


def _add_postprocess_arguments(parser: argparse.ArgumentParser) -> None:
    """How probabilities become labels (each defaults to the model's recommendation)."""
    parser.add_argument(
        "--threshold",
        type=float,
        metavar="F",
        help="foreground probability (default: the model's recommendation, else 0.5)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        metavar="N",
        help="drop objects below N pixels (default: the model's recommendation, else 0)",
    )
    parser.add_argument(
        "--split-touching",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="separate touching objects by watershed (default: the model's recommendation)",
    )
    parser.add_argument(
        "--fill-boundaries",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="grow objects until they touch, for thin-boundary models such as EM membranes "
        "(default: the model's recommendation)",
    )
    parser.add_argument(
        "--merge-boundaries",
        type=float,
        metavar="F",
        help="for thin-boundary models such as EM membranes: seed cells above --threshold, "
        "grow them along the predicted boundaries and merge neighbours whose shared border "
        "has a mean boundary probability below F; 0 turns it off (default: the model's "
        "recommendation)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Batches, blocks, and what to do with results that already exist."""
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="tiles per pass")
    parser.add_argument(
        "--block-size",
        type=int,
        default=2048,
        metavar="N",
        help="block edge in pixels for .zarr outputs, rounded to whole tiles: one block is "
        "one output chunk and one dask task (default: 2048)",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into the same .zarr OUTPUT, skipping finished blocks",
    )
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results that already exist (never an input, never a folder that is not "
        "a napari-unet result)",
    )


def _add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    """Colour images, and linking objects through a stack."""
    parser.add_argument(
        "--rgb",
        choices=("channels", "grey"),
        help="how to read an RGB image: as 3 channels (for a 3-channel model) or as grey "
        "(luminance); RGB images are refused without it",
    )
    parser.add_argument(
        "--link",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="labels: give an object the id of the object it overlaps most in the previous "
        "plane of the stack (z; frame to frame on a time axis), so it keeps one id "
        "(default: on when the file names the axis before y 'Z', for .tif outputs)",
    )
    parser.add_argument(
        "--link-iou",
        type=float,
        default=0.25,
        metavar="F",
        help="smallest overlap (intersection over union) to link two objects (default: 0.25)",
    )


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the blocks of a .zarr output are segmented."""
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="segment on a local dask cluster of N single-thread worker processes",
    )
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="segment on the dask.distributed cluster at ADDRESS (e.g. tcp://host:8786); "
        "every worker must see the input and OUTPUT paths",
    )

"""The options of ``napari-unet train`` and its help text."""

from __future__ import annotations

import argparse
from typing import Any

from napari_unet.cli.common import add_channel_arguments

_TRAIN_EPILOG = """\
examples:
  napari-unet train --images cells.tif --labels cells_annotations.tif -o mine.safetensors
  napari-unet train --images a.tif --images b.tif --labels la.tif --labels lb.tif \\
      --annotation dense --base nuclei --steps 300 -o nuclei_tuned.safetensors
  napari-unet train --images zcyx.ome.tif --labels zyx_labels.tif --base scratch \
      --channels 0,1 -o two_channel.safetensors
  napari-unet train --images stack.tif --labels stack_labels_fixed.tif --annotation result \
      --planes 3,5 --base nuclei -o nuclei_fixed.safetensors

Annotations: sparse = 0 not annotated (ignored), 1 background, 2, 3, ... one id per cell
(what the napari Fine-tune widget paints); dense = 0 background, 1..N objects; binary =
foreground/background masks; auto guesses; result = a (corrected) segmentation result,
0 background, one id per object, of which only the --planes count as annotated (all
planes by default; the others are ignored, as unpainted pixels are). Give one --labels
per --images, in order.
Images may be stacks (Z, Y, X), (T, Z, Y, X), with a channel axis (--channel-axis, or
the C axis of OME/ImageJ files): each label file has its image's shape without the
channel axis, and only planes with annotations are trained on. 'scratch' makes a new
network reading the chosen channels (--channels).
"""


def add_train_parser(subparsers: Any) -> None:
    """Add ``train`` and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model on annotated images",
        description="Fine-tune a model (or train one from scratch) on images and their "
        "annotations with the U-Net paper's weighted loss and elastic deformation.",
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--images", action="append", required=True, metavar="IMAGE", help="TIFF/PNG image"
    )
    parser.add_argument(
        "--labels", action="append", required=True, metavar="LABELS", help="annotation TIFF/PNG"
    )
    parser.add_argument(
        "-o",
        "--output-path",
        dest="output_path",
        required=True,
        metavar="MODEL_FILE",
        help="where to write the trained model (.safetensors)",
    )
    parser.add_argument(
        "--base",
        metavar="NAME_OR_PATH",
        help="model to fine-tune (default: the default built-in model; 'scratch' for a new "
        "small network reading the chosen channels)",
    )
    parser.add_argument("--steps", type=int, default=200, metavar="N", help="steps (200)")
    _add_annotation_arguments(parser)
    _add_optimisation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--name", help="model name stored in the file (default: file stem)")
    parser.add_argument(
        "--pixel-size",
        metavar="SIZE[UNIT]",
        help="the training images' pixel size, e.g. 0.325um or '4 nm', recorded in the model "
        "so images of other pixel sizes are resampled to it (default: read from the images' "
        "ImageJ or OME metadata; unknown when they record none)",
    )
    add_channel_arguments(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace MODEL_FILE if it already exists"
    )


def _add_annotation_arguments(parser: argparse.ArgumentParser) -> None:
    """How the labels files are read."""
    parser.add_argument(
        "--annotation",
        choices=("sparse", "dense", "binary", "auto", "result"),
        default="auto",
        help="how to read the labels (default: auto; 'result': a corrected segmentation "
        "result, see --planes)",
    )
    parser.add_argument(
        "--planes",
        metavar="LIST",
        help="with --annotation result: the planes of stacked labels files that count as "
        "annotated, counted from 0 as napari's sliders: '3,5', '0:3' (planes 0 to 2), "
        "'4:' (4 to the end); 'T/Z' items such as '0/3' or '1/0:2' for (T, Z, Y, X) "
        "files (default: every plane)",
    )
    parser.add_argument(
        "--boundary-band",
        type=int,
        default=2,  # core.annotations.RESULT_BOUNDARY_BAND, not imported for a fast --help
        metavar="PX",
        help="with --annotation result: leave this many px around the result's object "
        "boundaries unannotated, so training does not learn the result's own boundary "
        "placement (default 2; 0 keeps them)",
    )


def _add_optimisation_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimiser, the augmentation and the held-out annotations."""
    parser.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR")
    parser.add_argument("--batch-size", type=int, default=2, metavar="N")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--no-augment", action="store_true", help="no elastic deformation etc.")
    parser.add_argument(
        "--blur",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="transmitted light: blur each training patch by a Gaussian of standard deviation "
        "drawn in [0, SIGMA] px (default 0: off)",
    )
    parser.add_argument(
        "--invert-contrast",
        type=float,
        default=0.0,
        metavar="P",
        help="transmitted light: invert a training patch's contrast about its mean with "
        "probability P (the opposite DIC shear or phase halo; default 0: off)",
    )
    parser.add_argument(
        "--holdout",
        default="auto",
        metavar="WHAT",
        help="annotations kept out of training and scored (F1 at IoU 0.5; IoU for a mask), "
        "which choose the kept weights: 'auto' (one annotated plane of several, else about "
        "20%% of the cells of one image), '20%%', '1 plane' or 'off'",
    )

"""The small subcommands: ``models`` (list them), ``export`` (a bioimage.io package)
and ``sample`` (write a bundled sample image).

The core's model, I/O and export modules load torch: they are imported inside the
commands, so that ``napari-unet --help`` stays fast (start-up time only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_unet.cli.common import PROG, model_path
from napari_unet.core.safety import check_output


def add_models_parser(subparsers: Any) -> None:
    subparsers.add_parser(
        "models",
        help="list built-in and user models",
        description="List models, one per line: name, source (built-in/user), path, description. "
        "User models live in the folder named by $NAPARI_UNET_MODELS_DIR, or the per-user "
        "data folder.",
    )


def cmd_models(args: argparse.Namespace) -> int:
    from napari_unet.core.registry import builtin_models_dir, list_models, user_models_dir

    entries = list_models()
    if not entries:
        print(
            f"no models found (built-in: {builtin_models_dir()}, user: {user_models_dir()})",
            file=sys.stderr,
        )
        return 0
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        line = f"{entry.name:<{width}}  {entry.source:<8}  {entry.path}"
        print(f"{line}  {entry.description}" if entry.description else line)
    return 0


# ----------------------------------------------------------------------- export


def add_export_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a model as a bioimage.io package (deepImageJ, ilastik, QuPath...)",
        description="Write MODEL as a bioimage.io model package (.zip): TorchScript and "
        "PyTorch weights, the model's normalisation, a halo for tiled prediction, test "
        "images, cover, model card and citation. Needs the bioimageio extra: "
        "pip install 'napari-unet[bioimageio]'.",
    )
    parser.add_argument("model", metavar="MODEL", help="model name or .safetensors file")
    parser.add_argument(
        "-o", "--output-path", dest="output_path", required=True, metavar="ZIP",
        help="the package to write (NAME.zip)",
    )  # fmt: skip
    parser.add_argument(
        "--test-image", metavar="IMAGE", help="TIFF/PNG for the package's test input and cover "
        "(default: the bundled nuclei sample)",
    )  # fmt: skip
    parser.add_argument("--license", metavar="SPDX", help="licence id (default: the card's)")
    parser.add_argument(
        "--author", action="append", metavar="NAME", help="an author (repeat for several)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace ZIP if it exists")


def cmd_export(args: argparse.Namespace) -> int:
    output = Path(args.output_path)
    inputs = [args.test_image] if args.test_image else []
    check_output(output, inputs=inputs, overwrite=args.overwrite)
    from napari_unet.core.export import export_bioimageio
    from napari_unet.core.io import read_image
    from napari_unet.core.modelfile import load_model

    bundle = load_model(model_path(args.model))
    test_image = read_image(args.test_image) if args.test_image else None
    path = export_bioimageio(
        bundle,
        output,
        overwrite=args.overwrite,
        test_image=test_image,
        license=args.license,
        authors=args.author,
    )
    print(f"{PROG}: wrote the bioimage.io package of {bundle.name} to {path}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------- sample

#: Bundled sample name -> loader in napari_unet._sample_data (plain arrays, no Qt).
_SAMPLES = {"nuclei": "nuclei_image", "em": "em_stack", "dic": "dic_image"}


def add_sample_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="write a bundled sample image to a TIFF file",
        description="Write a sample image shipped with napari-unet: 'nuclei' (fluorescence, "
        "DSB 2018, CC0), 'em' (4 slices of the ISBI 2012 EM stack) or 'dic' (transmitted "
        "light: DIC of CHO cells, BBBC030, CC BY 3.0).",
    )
    parser.add_argument("name", choices=sorted(_SAMPLES))
    parser.add_argument("-o", "--output-path", dest="output_path", required=True, metavar="TIFF")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace TIFF if it already exists"
    )


def cmd_sample(args: argparse.Namespace) -> int:
    from napari_unet import _sample_data
    from napari_unet.core.io import write_image

    check_output(args.output_path, overwrite=args.overwrite)
    image = getattr(_sample_data, _SAMPLES[args.name])()
    path = write_image(Path(args.output_path), image, overwrite=args.overwrite)
    print(f"{PROG}: wrote the {args.name} sample {image.shape} to {path}", file=sys.stderr)
    return 0

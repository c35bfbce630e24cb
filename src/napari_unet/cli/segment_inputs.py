"""``napari-unet segment``'s inputs and outputs: where each result goes, the checks made
before any model loads, and what each input's file says of its axes and calibration.

The core's I/O and calibration modules are imported inside the functions that use them,
so that ``napari-unet --help`` stays fast (start-up time only).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_unet.cli.common import EXIT_BAD_INPUT, PROG, pixel_size_arg
from napari_unet.core.errors import InputError


def check_input(path: Path) -> None:
    from napari_unet.core.io import is_zarr_path

    if not (path.is_file() or (is_zarr_path(path) and path.is_dir())):
        raise InputError(f"input file not found: {path}")


def summary(failed: list[tuple[Path, str]], total: int) -> int:
    """Exit status of a several-input run; lists the inputs that failed."""
    if not failed:
        return 0
    names = ", ".join(str(source) for source, _ in failed)
    print(
        f"{PROG}: error: {len(failed)} of {total} inputs failed ({names}); the others were "
        "segmented",
        file=sys.stderr,
    )
    return EXIT_BAD_INPUT


def tile_size(requested: int | None, bundle: Any) -> int | None:
    from napari_unet.core.tiling import round_tile_size

    if requested is None:
        return None
    size, note = round_tile_size(bundle.config, requested)
    if note:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return size


def input_scale(source: Path, options: Any) -> tuple[Any, Any]:
    """The input's calibration (None when its file records none) and ``options`` with
    its pixel size: ``--pixel-size`` when given, else the file's."""
    from napari_unet.core.calibration import read_calibration

    calibration = read_calibration(source)
    if options.pixel_size is None and calibration is not None:
        options = replace(options, pixel_size=calibration.pixel_size)
    return calibration, options


def result_calibration(
    calibration: Any, ndim: int, channel_axis: int | None, args: Any, classes: int
) -> Any:
    """The calibration of a result (TIFF or OME-Zarr): the input's (``ndim`` axes as read, its pixel
    size replaced by ``--pixel-size`` when given) without its channel axis, with the
    class axis of probabilities; None when nothing is known."""
    from napari_unet.core.calibration import Calibration

    given = pixel_size_arg(args.pixel_size)
    if calibration is None:
        if given is None:
            return None
        calibration = Calibration.from_pixel_size(given, "yx")
        channel_axis = None  # only y and x are known
    else:
        if calibration.ndim != ndim:  # e.g. axes the reader squeezed: match by letter
            calibration = calibration.for_ndim(ndim)
        if given is not None:
            calibration = calibration.with_pixel_size(given)
    classes_axis = classes if args.output == "probabilities" else None
    try:
        return calibration.for_result(channel_axis, classes_axis)
    except InputError as error:  # the result matters more than its metadata
        print(f"{PROG}: note: the result records no calibration: {error}", file=sys.stderr)
        return None


def keeps_colour(args: argparse.Namespace) -> bool:
    """Whether colour images are read as they are (the user said how to read them)."""
    return args.rgb is not None or args.channel_axis is not None


def dims_for(source: Path, image: Any, options: Any, args, channels):
    """The image (grey if asked) and options with this input's channel axis and link.

    The channel axis and the default of ``link`` come from the file's axes
    (:func:`~napari_unet.core.io.read_axes`) unless given: its C axis; RGB samples (S)
    only with ``--rgb``; link on for labels when the last axis before Y other than C is Z
    (a block-wise run leaves that default out with a note:
    :func:`~napari_unet.core.frontend.run_options`).
    """
    from napari_unet.core.io import looks_rgb, read_axes, rgb_to_grey

    axes = read_axes(source)
    if axes is not None and len(axes) != len(image.shape):
        axes = None  # e.g. grey saved as RGB, read as one plane: the letters do not apply
    shape = tuple(int(s) for s in image.shape)
    colour = axes.endswith("S") if axes is not None else looks_rgb(shape)
    colour = colour and shape[-1] in (3, 4)
    channel_axis = args.channel_axis
    if colour and channel_axis is None:
        if args.rgb == "grey":
            image = rgb_to_grey(image)
            axes = axes[:-1] if axes is not None else None
        elif args.rgb == "channels":
            channel_axis = len(shape) - 1
    elif args.rgb is not None and not colour:
        print(f"{PROG}: note: {source.name} is not an RGB image; --rgb ignored", file=sys.stderr)
    if channel_axis is None and axes is not None and "C" in axes:
        channel_axis = axes.index("C")
    link = args.link
    if link is None:
        spatial = axes.replace("C", "").replace("S", "") if axes is not None else ""
        link = spatial.endswith("ZYX") and args.output == "labels"
    options = replace(options, channel_axis=channel_axis, channels=channels, link=bool(link))
    return image, options


def _result_suffix(source: Path, large: bool) -> str:
    from napari_unet.core.io import is_zarr_path

    return ".zarr" if large or is_zarr_path(source) else ".tif"


def is_zarr_output(path: Path) -> bool:
    return path.suffix.lower() == ".zarr"


def output_paths(
    inputs: list[Path], output_arg: str, kind: str, *, large: bool = False
) -> list[Path]:
    """One result path per input; a folder when several inputs or ``output_arg`` is a folder.

    ``output_arg`` is the text the user typed: a trailing ``/`` asks for a folder even for
    one input and even when it does not exist yet (``Path`` would drop that slash). In a
    folder, results are ``.zarr`` for zarr inputs or ``large`` (cluster) runs, else ``.tif``.
    The folder itself is created later, once every check has passed.
    """
    output = Path(output_arg)
    as_folder = len(inputs) > 1 or output_arg.endswith(("/", "\\", os.sep))
    as_folder = as_folder or (output.is_dir() and not is_zarr_output(output))
    if not as_folder:
        if output.suffix.lower() not in (".tif", ".tiff", ".zarr"):
            raise InputError(
                f"results are written as TIFF or zarr: use a .tif OUTPUT (or .zarr for "
                f"OME-Zarr), got {output.name!r}"
            )
        return [output]
    if output.exists() and not output.is_dir():
        raise InputError(
            f"OUTPUT {output} is a file, but a folder is needed (several inputs or a trailing "
            "'/'); give a folder name"
        )
    targets = [
        output / f"{path.stem.removesuffix('.ome')}_{kind}{_result_suffix(path, large)}"
        for path in inputs
    ]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, targets, strict=True):
        if target in seen:
            raise InputError(
                f"{seen[target]} and {source} would both be written to {target}; "
                "segment them into different folders"
            )
        seen[target] = source
    return targets

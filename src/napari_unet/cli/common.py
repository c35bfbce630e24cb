"""What every ``napari-unet`` subcommand shares: exit codes, the progress bar, arguments
read the same way by several subcommands, and one-line messages.

torch and the core's heavy modules are imported inside the functions that need them, so
that ``napari-unet --help`` answers without them (start-up time only).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.events import PlaneDone, Progress, TileDone

#: The command's name in messages.
PROG = "napari-unet"
#: Exit status for bad input (as argparse uses for bad arguments).
EXIT_BAD_INPUT = 2
#: Exit status when a run ended without reaching its goal (e.g. training diverged).
EXIT_FAILED = 1
#: Exit status after Ctrl+C (128 + SIGINT).
EXIT_INTERRUPTED = 130


def drain_with_progress(
    generator: Generator[Any, None, Any],
    *,
    description: str = "",
    unit: str = "tile",
    total_of: Callable[[Any], int | None] | None = None,
) -> Any:
    """Run ``generator`` to the end with a tqdm bar on stderr; return its return value.

    Parameters
    ----------
    generator : generator
        Yields progress events; returns the result.
    description : str
        Bar label.
    unit : str
        What one step counts.
    total_of : callable, optional
        Given an event, the bar's total (or None to keep it); called until it
        returns a number. The default reads ``TileDone.total`` (tiles of one plane).

    Each :class:`TileDone` (or any event with a ``done`` count) advances the bar.
    """
    from tqdm import tqdm

    total_of = total_of or (lambda event: getattr(event, "total", None))
    # created at the first event, which tells the total (no empty bar flashing first)
    bar: tqdm | None = None
    stage: str | None = None
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as finished:
                return finished.value
            if bar is None:
                bar = tqdm(
                    desc=description,
                    unit=unit,
                    total=total_of(event),
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                )
            elif bar.total is None and total_of(event) is not None:
                bar.reset(total=total_of(event))
            if isinstance(event, TileDone):
                bar.update(1)
            elif isinstance(event, Progress) and event.message not in (stage, "blocks"):
                # A new step after the blocks (e.g. "grow-and-merge ... of plane 0:
                # labelling blocks"): the bar says it and counts it from its start.
                stage = event.message
                bar.reset(total=event.total)
                bar.set_description(_stage_description(description, stage))
                bar.update(event.done)
            elif hasattr(event, "done") and not isinstance(event, PlaneDone):
                bar.update(event.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        generator.close()


def _stage_description(description: str, stage: str) -> str:
    """The bar's label during a step after the blocks (what the user waits for:
    labelling, mapping back)."""
    return f"{description}: {stage}" if description else stage


def add_scale_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pixel-size",
        metavar="SIZE[UNIT]",
        help="the inputs' pixel size, e.g. 0.325um, '4 nm' or 0.5,0.325um (y, x; default "
        "unit µm); the image is resampled to the model's pixel size (default: read from "
        "each file's ImageJ, OME-TIFF or OME-Zarr metadata)",
    )
    parser.add_argument(
        "--diameter",
        metavar="N|auto",
        help="the objects' typical diameter in the inputs, in pixels, or 'auto' to measure "
        "it in a first pass; the image is rescaled so objects have the model's size "
        "(default: auto for models recording their object size, unless pixel sizes decide)",
    )


def add_channel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--channel-axis",
        type=int,
        metavar="N",
        help="the images' channel axis (negative counts from the end, e.g. -1 for (Y, X, C)); "
        "default: the C axis of OME/ImageJ TIFFs and OME-Zarr, else none for one-channel "
        "models and the axis before (Y, X) for multichannel ones",
    )
    parser.add_argument(
        "--channels",
        metavar="LIST",
        help="channels to use, in order, e.g. 0,2 (default: all)",
    )


def pixel_size_arg(text: str | None) -> Any:
    """``--pixel-size`` as a :class:`~napari_unet.core.calibration.PixelSize` (None: not
    given); one line for zero, negative, NaN, unreadable sizes and unknown units."""
    if text is None:
        return None
    from napari_unet.core.calibration import parse_pixel_size

    try:
        return parse_pixel_size(text)
    except InputError as error:
        raise InputError(f"--pixel-size {text!r}: {error}") from None


def diameter_arg(text: str | None) -> float | str | None:
    """``--diameter``: ``"auto"``, a number of pixels above 0, or None (not given)."""
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(
            f"--diameter takes the objects' diameter in pixels (a number above 0) or "
            f"'auto', got {text!r}"
        )
    return value


def channel_list(text: str | None) -> tuple[int, ...] | None:
    """``"0,2"`` -> ``(0, 2)``; one-line error for anything else."""
    if text is None:
        return None
    try:
        chosen = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(
            f"--channels takes channel numbers separated by commas, e.g. 0,2; got {text!r}"
        ) from None
    return chosen


def report_device(requested: str | None) -> None:
    """Say once which device runs the network and why (``None``: the cluster's workers)."""
    if requested is None:
        print(f"{PROG}: running on the dask workers (each picks its own device)", file=sys.stderr)
        return
    from napari_unet.core.device import describe_device
    from napari_unet.core.model import pick_device

    print(
        f"{PROG}: running on {describe_device(pick_device(requested), requested)}", file=sys.stderr
    )


def model_path(name_or_path: str | None) -> Path:
    from napari_unet.core.registry import default_model_name, resolve_model

    if name_or_path is None:
        name_or_path = default_model_name()
        if name_or_path is None:
            raise InputError(
                "no built-in model is installed; choose one with --model NAME_OR_PATH "
                "(list models with 'napari-unet models')"
            )
    return resolve_model(name_or_path)


def error_message(error: BaseException) -> str:
    """One line for the user: the message of our errors, what went wrong for the others."""
    if isinstance(error, MemoryError):
        return (
            "out of memory; segment into a .zarr OUTPUT (read and written block by block) "
            "or use a smaller --tile-size"
        )
    if isinstance(error, OSError) and not isinstance(error, UNetError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return one_line(error)


def one_line(error: BaseException | Warning | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__

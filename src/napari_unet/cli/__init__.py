"""The ``napari-unet`` command: segment images and list models without napari.

Each subcommand is a ``cmd_NAME(args) -> int`` function registered in :data:`COMMANDS`
with a parser builder in :data:`PARSERS`; long work drains a core generator through
:func:`~napari_unet.cli.common.drain_with_progress`. Bad input ends with exit status 2
and one ``napari-unet: error: <reason>`` line on stderr, never a traceback.

Modules: :mod:`.common` (exit codes, progress bar, shared arguments and messages),
:mod:`.segment_parser` / :mod:`.segment` / :mod:`.segment_inputs` (``segment``: its
options, its calls into the segmentation pipeline, and the checks and metadata of its
inputs and outputs), :mod:`.train` (``train``), :mod:`.model_commands` (``models``,
``export``, ``sample``).

Start-up time: ``napari-unet --help`` must answer without importing torch
(benchmarks/bench_startup.py), so the command modules import the core's heavy modules
inside the functions that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from napari_unet import __version__
from napari_unet.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    PROG,
    drain_with_progress,
    error_message,
    one_line,
)
from napari_unet.cli.model_commands import (
    add_export_parser,
    add_models_parser,
    add_sample_parser,
    cmd_export,
    cmd_models,
    cmd_sample,
)
from napari_unet.cli.segment import cmd_segment
from napari_unet.cli.segment_parser import add_segment_parser
from napari_unet.cli.train import cmd_train
from napari_unet.cli.train_parser import add_train_parser
from napari_unet.core.errors import UNetError

_MAIN_EPILOG = """\
examples:
  napari-unet models                                  list built-in and user models
  napari-unet sample nuclei -o nuclei.tif             write a bundled sample image
  napari-unet segment cells.tif -o labels.tif --model nuclei
  napari-unet train --images a.tif --labels a_labels.tif -o mine.safetensors
  napari-unet export mine.safetensors -o mine.zip     bioimage.io package (deepImageJ...)
  napari-unet segment --help                          all segmentation options
"""

#: Subcommand name -> function running it.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": cmd_segment,
    "train": cmd_train,
    "models": cmd_models,
    "export": cmd_export,
    "sample": cmd_sample,
}
#: Subcommand name -> function adding its parser to the subparsers.
PARSERS: dict[str, Callable[[Any], None]] = {
    "segment": add_segment_parser,
    "train": add_train_parser,
    "models": add_models_parser,
    "export": add_export_parser,
    "sample": add_sample_parser,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Segment microscopy images with a U-Net (Ronneberger et al. 2015).",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in PARSERS.values():
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with _warnings_as_notes():
            return COMMANDS[args.command](args)
    except (UNetError, OSError, MemoryError) as error:
        print(f"{PROG}: error: {error_message(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; results already written are kept "
            "(a .zarr OUTPUT continues with --resume)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _warnings_as_notes():
    """Show our warnings (e.g. replaced NaN pixels) as one ``note:`` line each."""
    import warnings

    from napari_unet.core.errors import NonFiniteWarning

    def show(message, category, *_args, **_kwargs) -> None:
        print(f"{PROG}: note: {one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", NonFiniteWarning)
        previous, warnings.showwarning = warnings.showwarning, show
        try:
            yield
        finally:
            warnings.showwarning = previous


__all__ = [
    "COMMANDS",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "PARSERS",
    "PROG",
    "build_parser",
    "drain_with_progress",
    "main",
]

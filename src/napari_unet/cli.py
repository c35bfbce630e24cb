"""The ``napari-unet`` command: segment images and list models without napari.

Each subcommand is a small ``_cmd_NAME(args) -> int`` function registered in
:data:`COMMANDS` with a parser builder in :data:`PARSERS`; long work drains a core
generator through :func:`drain_with_progress`. Bad input ends with exit status 2 and
one ``napari-unet: error: <reason>`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from napari_unet import __version__
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.events import PlaneDone, TileDone

PROG = "napari-unet"
#: Exit status for bad input (as argparse uses for bad arguments).
EXIT_BAD_INPUT = 2
#: Exit status after Ctrl+C (128 + SIGINT).
EXIT_INTERRUPTED = 130

_SEGMENT_EPILOG = """\
examples:
  napari-unet segment cells.tif -o cells_labels.tif --model nuclei
  napari-unet segment stack.tif -o masks.tif --model my_model.safetensors --output mask
  napari-unet segment a.png b.png c.tif -o results/ --tile-size 572 --device cpu
  napari-unet segment huge.ome.zarr -o labels.zarr --model nuclei --no-split-touching
  napari-unet segment huge.tif -o labels.zarr --workers 2        (local dask cluster)
  napari-unet segment huge.zarr -o labels.zarr --scheduler tcp://host:8786 --resume

With several inputs OUTPUT is a folder (created if needed) receiving NAME_<output>.tif
for each input (NAME_<output>.zarr for zarr inputs or with --workers/--scheduler).
Results are int32 instance labels, uint8 masks, or float32 probabilities (K, H, W) per
plane, as TIFF or, for an OUTPUT ending in .zarr, as OME-Zarr (NGFF 0.4).

Inputs may be TIFF, PNG, zarr arrays or OME-Zarr images (the full-resolution level is
used). A .zarr OUTPUT is written block by block without loading the image (large
TIFFs are read tile by tile): memory stays bounded, and an interrupted run continues
with --resume. --workers/--scheduler spread the blocks over a dask.distributed
cluster (results identical to one process). Block-wise labels cannot split touching
objects (watershed).
"""

_MAIN_EPILOG = """\
examples:
  napari-unet models                                  list built-in and user models
  napari-unet sample nuclei -o nuclei.tif             write a bundled sample image
  napari-unet segment cells.tif -o labels.tif --model nuclei
  napari-unet train --images a.tif --labels a_labels.tif -o mine.safetensors
  napari-unet segment --help                          all segmentation options
"""


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
            elif hasattr(event, "done") and not isinstance(event, PlaneDone):
                bar.update(event.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
        generator.close()


# ---------------------------------------------------------------------- segment


def _add_segment_parser(subparsers: Any) -> None:
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
    parser.add_argument("--batch-size", type=int, default=1, metavar="N", help="tiles per pass")
    parser.add_argument(
        "--block-size",
        type=int,
        default=2048,
        metavar="N",
        help="block edge in pixels for .zarr outputs, rounded to whole tiles: one block is "
        "one output chunk and one dask task (default: 2048)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run into the same .zarr OUTPUT, skipping finished blocks",
    )
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


#: TIFF inputs above this many bytes are read tile by tile even for a TIFF output.
LAZY_TIFF_BYTES = 256 * 2**20


def _cmd_segment(args: argparse.Namespace) -> int:
    from napari_unet.core.largeimage import is_zarr_path
    from napari_unet.core.modelfile import load_model
    from napari_unet.core.segment import SegmentOptions, get_predictor, recommended_options
    from napari_unet.core.tiling import round_tile_size

    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not (path.is_file() or (is_zarr_path(path) and path.is_dir())):
            raise InputError(f"input file not found: {path}")
    large = args.workers is not None or args.scheduler is not None
    outputs = _output_paths(inputs, Path(args.output_path), args.output, large=large)
    if (large or args.resume) and not all(_is_zarr_output(target) for target in outputs):
        flag = "--resume" if args.resume and not large else "--workers/--scheduler"
        raise InputError(f"{flag} needs a zarr store: use an OUTPUT ending in .zarr")
    bundle = load_model(_model_path(args.model))
    tile_size = args.tile_size
    if tile_size is not None:
        tile_size, note = round_tile_size(bundle.config, tile_size)
        if note:
            print(f"{PROG}: note: {note}", file=sys.stderr)
    chosen = {
        "threshold": args.threshold,
        "min_size": args.min_size,
        "split_touching": args.split_touching,
        "fill_boundaries": args.fill_boundaries,
        "merge_boundaries": args.merge_boundaries,
    }
    recommended = recommended_options(bundle, args.output)
    if any(_is_zarr_output(target) for target in outputs):
        for key, what in _WHOLE_PLANE_ONLY.items():
            if chosen[key] is None and recommended.pop(key, False):
                print(
                    f"{PROG}: note: the model recommends {what}, which block-wise .zarr "
                    "outputs cannot do; skipped",
                    file=sys.stderr,
                )
    options = SegmentOptions(
        **{
            **recommended,
            **{key: value for key, value in chosen.items() if value is not None},
        },
        output=args.output,
        tile_size=tile_size,
        device=args.device,
        batch_size=args.batch_size,
    )
    with contextlib.ExitStack() as resources:
        client = _dask_client(args, resources) if large else None
        # Built (and cached) now so that a bad --device fails before any input is read;
        # in-memory runs let segment_iter pick whole maps or strips by the tile plan.
        predictor = None if large else get_predictor(bundle, options.device)
        for source, target in zip(inputs, outputs, strict=True):
            if _is_zarr_output(target):
                _segment_to_zarr(bundle, source, target, options, args, client, predictor)
            else:
                _segment_to_tiff(bundle, source, target, options)
            print(f"{source} -> {target}", file=sys.stderr)
    return 0


def _segment_to_tiff(bundle, source: Path, target: Path, options) -> None:
    from napari_unet.core.io import read_image, write_image
    from napari_unet.core.segment import segment_iter

    # Big TIFFs and zarr stores are read tile by tile; the result is in memory anyway.
    lazy = not source.is_file() or (
        source.suffix.lower() in (".tif", ".tiff") and source.stat().st_size > LAZY_TIFF_BYTES
    )
    image = read_image(source, lazy=lazy)
    generator = segment_iter(bundle, image, options=options)
    planes = image.shape[0] if image.ndim == 3 else 1
    result = drain_with_progress(
        generator,
        description=source.name,
        total_of=lambda event, planes=planes: getattr(event, "total", 0) * planes or None,
    )
    write_image(target, result)


def _segment_to_zarr(bundle, source: Path, target: Path, options, args, client, predictor):
    from napari_unet.core.largeimage import open_image, segment_blocks_iter

    if client is not None:
        from napari_unet.core.distributed import segment_distributed_iter

        generator = segment_distributed_iter(
            bundle,
            source,
            target,
            client=client,
            options=options,
            block_size=args.block_size,
            resume=args.resume,
        )
    else:
        generator = segment_blocks_iter(
            bundle,
            open_image(source),
            target,
            options=options,
            block_size=args.block_size,
            resume=args.resume,
            predictor=predictor,
        )
    drain_with_progress(_blocks_only(generator), description=source.name, unit="block")


def _blocks_only(generator: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Pass on the per-block progress only (tiles and the label merge are too fine)."""
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as finished:
                return finished.value
            if getattr(event, "message", None) == "blocks":
                yield event
    finally:
        generator.close()  # Ctrl+C: stop the run (and cancel queued dask tasks)


def _dask_client(args: argparse.Namespace, resources: contextlib.ExitStack) -> Any:
    from napari_unet.core.distributed import connect, local_client

    if args.scheduler is not None:
        return resources.enter_context(connect(args.scheduler))
    return resources.enter_context(local_client(args.workers))


def _result_suffix(source: Path, large: bool) -> str:
    from napari_unet.core.largeimage import is_zarr_path

    return ".zarr" if large or is_zarr_path(source) else ".tif"


def _is_zarr_output(path: Path) -> bool:
    return path.suffix.lower() == ".zarr"


#: Post-processing that needs whole planes, so block-wise outputs skip its recommendation.
_WHOLE_PLANE_ONLY = {
    "split_touching": "splitting touching objects",
    "fill_boundaries": "filling the boundaries between objects",
    "merge_boundaries": "merging cells across weak boundaries",
}


def _model_path(name_or_path: str | None) -> Path:
    from napari_unet.core.modelfile import default_model_name, resolve_model

    if name_or_path is None:
        name_or_path = default_model_name()
        if name_or_path is None:
            raise InputError(
                "no built-in model is installed; choose one with --model NAME_OR_PATH "
                "(list models with 'napari-unet models')"
            )
    return resolve_model(name_or_path)


def _output_paths(
    inputs: list[Path], output: Path, kind: str, *, large: bool = False
) -> list[Path]:
    """One result path per input; a folder when several inputs or ``output`` is a folder.

    In a folder, results are ``.zarr`` for zarr inputs or ``large`` (cluster) runs,
    else ``.tif``.
    """
    as_folder = len(inputs) > 1 or str(output).endswith(("/", "\\"))
    as_folder = as_folder or (output.is_dir() and not _is_zarr_output(output))
    if not as_folder:
        if output.suffix.lower() not in (".tif", ".tiff", ".zarr"):
            raise InputError(
                f"results are written as TIFF or zarr: use a .tif OUTPUT (or .zarr for "
                f"OME-Zarr), got {output.name!r}"
            )
        return [output]
    if output.exists() and not output.is_dir():
        raise InputError(f"with several inputs OUTPUT must be a folder, but {output} is a file")
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
    output.mkdir(parents=True, exist_ok=True)
    return targets


# ------------------------------------------------------------------------ train

_TRAIN_EPILOG = """\
examples:
  napari-unet train --images cells.tif --labels cells_annotations.tif -o mine.safetensors
  napari-unet train --images a.tif --images b.tif --labels la.tif --labels lb.tif \\
      --annotation dense --base nuclei --steps 300 -o nuclei_tuned.safetensors

Annotations: sparse = 0 not annotated (ignored), 1 background, 2, 3, ... one id per cell
(what the napari Fine-tune widget paints); dense = 0 background, 1..N objects; binary =
foreground/background masks; auto guesses. Give one --labels per --images, in order.
"""


def _add_train_parser(subparsers: Any) -> None:
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
        "small network)",
    )
    parser.add_argument("--steps", type=int, default=200, metavar="N", help="steps (200)")
    parser.add_argument(
        "--annotation",
        choices=("sparse", "dense", "binary", "auto"),
        default="auto",
        help="how to read the labels (default: auto)",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR")
    parser.add_argument("--batch-size", type=int, default=2, metavar="N")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--no-augment", action="store_true", help="no elastic deformation etc.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    parser.add_argument("--name", help="model name stored in the file (default: file stem)")


def _cmd_train(args: argparse.Namespace) -> int:
    from napari_unet.core.augment import AugmentConfig
    from napari_unet.core.io import read_image
    from napari_unet.core.model import SMALL
    from napari_unet.core.modelfile import load_model, save_model
    from napari_unet.core.train import TrainConfig, Trainer

    if len(args.images) != len(args.labels):
        raise InputError(
            f"{len(args.images)} --images but {len(args.labels)} --labels: give one --labels "
            "per --images, in the same order"
        )
    output = Path(args.output_path)
    if output.suffix != ".safetensors":
        raise InputError(f"model files end in .safetensors, got {output.name!r}")
    for path in [*args.images, *args.labels]:
        if not Path(path).is_file():
            raise InputError(f"file not found: {path}")
    base = SMALL if args.base == "scratch" else load_model(_model_path(args.base))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        augment=AugmentConfig(enabled=not args.no_augment),
        seed=args.seed,
        device=args.device,
    )
    trainer = Trainer(
        base,
        [read_image(p) for p in args.images],
        [read_image(p) for p in args.labels],
        convention=args.annotation,
        config=config,
        name=args.name or output.name.removesuffix(".safetensors"),
    )
    last_loss: list[float] = []
    events = _with_loss(trainer.run(), last_loss)
    try:
        drain_with_progress(events, description="training", unit="step")
    finally:
        # Ctrl+C keeps what was learnt so far, like Stop in the GUI.
        bundle = trainer.best_bundle()
        save_model(bundle, output)
        loss = f", last loss {last_loss[-1]:.4f}" if last_loss else ""
        print(f"{PROG}: saved {output} (step {trainer.step}{loss})", file=sys.stderr)
    return 0


def _with_loss(events: Generator[Any, None, Any], losses: list[float]):
    """Pass events through, recording losses and turning steps into progress counts."""
    from napari_unet.core.events import Progress, TrainStep

    for event in events:
        if isinstance(event, TrainStep):
            losses.append(event.loss)
            yield Progress(event.step, event.total_steps, f"loss {event.loss:.4f}")
        else:
            yield event


# ----------------------------------------------------------------------- models


def _add_models_parser(subparsers: Any) -> None:
    subparsers.add_parser(
        "models",
        help="list built-in and user models",
        description="List models, one per line: name, source (built-in/user), path, description. "
        "User models live in the folder named by $NAPARI_UNET_MODELS_DIR, or the per-user "
        "data folder.",
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from napari_unet.core.modelfile import builtin_models_dir, list_models, user_models_dir

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


# ----------------------------------------------------------------------- sample

#: Bundled sample name -> loader in napari_unet._sample_data (plain arrays, no Qt).
_SAMPLES = {"nuclei": "nuclei_image", "em": "em_stack"}


def _add_sample_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="write a bundled sample image to a TIFF file",
        description="Write a sample image shipped with napari-unet: 'nuclei' (fluorescence, "
        "DSB 2018, CC0) or 'em' (4 slices of the ISBI 2012 EM stack).",
    )
    parser.add_argument("name", choices=sorted(_SAMPLES))
    parser.add_argument("-o", "--output-path", dest="output_path", required=True, metavar="TIFF")


def _cmd_sample(args: argparse.Namespace) -> int:
    from napari_unet import _sample_data
    from napari_unet.core.io import write_image

    image = getattr(_sample_data, _SAMPLES[args.name])()
    path = write_image(Path(args.output_path), image)
    print(f"{PROG}: wrote the {args.name} sample {image.shape} to {path}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- main

#: Subcommand name -> function running it; ``train`` registers here too.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": _cmd_segment,
    "train": _cmd_train,
    "models": _cmd_models,
    "sample": _cmd_sample,
}
#: Subcommand name -> function adding its parser to the subparsers.
PARSERS: dict[str, Callable[[Any], None]] = {
    "segment": _add_segment_parser,
    "train": _add_train_parser,
    "models": _add_models_parser,
    "sample": _add_sample_parser,
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
        return COMMANDS[args.command](args)
    except (UNetError, OSError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; results already written are kept "
            "(a .zarr OUTPUT continues with --resume)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

"""The ``napari-unet`` command: segment images and list models without napari.

Each subcommand is a small ``_cmd_NAME(args) -> int`` function registered in
:data:`COMMANDS` with a parser builder in :data:`PARSERS`; long work drains a core
generator through :func:`drain_with_progress`. Bad input ends with exit status 2 and
one ``napari-unet: error: <reason>`` line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from napari_unet import __version__
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.events import PlaneDone, TileDone
from napari_unet.core.safety import check_output

PROG = "napari-unet"
#: Exit status for bad input (as argparse uses for bad arguments).
EXIT_BAD_INPUT = 2
#: Exit status when a run ended without reaching its goal (e.g. training diverged).
EXIT_FAILED = 1
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
  napari-unet export mine.safetensors -o mine.zip     bioimage.io package (deepImageJ...)
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
    _add_scale_arguments(parser)
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
    _add_channel_arguments(parser)
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


def _add_scale_arguments(parser: argparse.ArgumentParser) -> None:
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


def _add_channel_arguments(parser: argparse.ArgumentParser) -> None:
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


def _pixel_size_arg(text: str | None) -> Any:
    """``--pixel-size`` as a :class:`~napari_unet.core.calibration.PixelSize` (None: not
    given); one line for zero, negative, NaN, unreadable sizes and unknown units."""
    if text is None:
        return None
    from napari_unet.core.calibration import parse_pixel_size

    try:
        return parse_pixel_size(text)
    except InputError as error:
        raise InputError(f"--pixel-size {text!r}: {error}") from None


def _diameter_arg(text: str | None) -> float | str | None:
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


def _channel_list(text: str | None) -> tuple[int, ...] | None:
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


#: TIFF inputs above this many bytes are read tile by tile even for a TIFF output.
LAZY_TIFF_BYTES = 256 * 2**20


def _cmd_segment(args: argparse.Namespace) -> int:
    pixel_size, diameter = _pixel_size_arg(args.pixel_size), _diameter_arg(args.diameter)
    channels = _channel_list(args.channels)
    inputs = [Path(p) for p in args.inputs]
    large = args.workers is not None or args.scheduler is not None
    outputs = _output_paths(inputs, args.output_path, args.output, large=large)
    if (large or args.resume) and not all(_is_zarr_output(target) for target in outputs):
        flag = "--resume" if args.resume and not large else "--workers/--scheduler"
        raise InputError(f"{flag} needs a zarr store: use an OUTPUT ending in .zarr")
    # Before any model or image is read: nothing the user has may be lost, and a folder
    # that cannot be written fails now rather than after the computation.
    for target in outputs:
        _check_target(target, inputs, args)
    if len(inputs) == 1:
        _check_input(inputs[0])
    # torch and the model code load only now: argument errors above answer at once.
    from napari_unet.core.modelfile import load_model
    from napari_unet.core.segment import SegmentOptions

    bundle = load_model(_model_path(args.model))
    options = SegmentOptions(
        **_postprocess_options(args, bundle, zarr=any(map(_is_zarr_output, outputs))),
        output=args.output,
        tile_size=_tile_size(args.tile_size, bundle),
        device=args.device,
        batch_size=args.batch_size,
        link_iou=args.link_iou,
        pixel_size=pixel_size,
        diameter=diameter,
    )
    if large and args.rgb == "grey":
        raise InputError(
            "--rgb grey is not available with --workers/--scheduler (the workers read the "
            "files themselves); convert the images to grey first, or use --rgb channels"
        )
    failed: list[tuple[Path, str]] = []
    with contextlib.ExitStack() as resources:
        client = _dask_client(args, resources) if large else None
        # A missing --device fails here, before any input is read. The predictor is built
        # (and cached per model and device) by the first run: in memory, segment_iter
        # picks whole maps or strips by the tile plan, so building one now could be waste.
        _report_device(None if large else options.device)
        for source, target in zip(inputs, outputs, strict=True):
            try:
                _check_input(source)
                if _is_zarr_output(target):
                    _segment_to_zarr(bundle, source, target, options, args, client, channels)
                else:
                    _segment_to_tiff(bundle, source, target, options, args, channels)
            except (UNetError, OSError, MemoryError) as error:
                if len(inputs) == 1:
                    raise
                # One bad input must not cost the user the results of the others.
                failed.append((source, _error_message(error)))
                print(f"{PROG}: error: {source}: {failed[-1][1]}", file=sys.stderr)
                continue
            print(f"{source} -> {target}", file=sys.stderr)
    return _summary(failed, len(inputs))


def _check_target(target: Path, inputs: list[Path], args: argparse.Namespace) -> None:
    """Refuse an output that would lose data; stores are checked by the block-wise core."""
    if not _is_zarr_output(target):
        check_output(target, inputs=inputs, overwrite=args.overwrite)
        return
    from napari_unet.core.largeimage import check_store_output

    check_store_output(target, inputs=inputs, overwrite=args.overwrite, resume=args.resume)


def _report_device(requested: str | None) -> None:
    """Say once which device runs the network and why (``None``: the cluster's workers)."""
    if requested is None:
        print(f"{PROG}: running on the dask workers (each picks its own device)", file=sys.stderr)
        return
    from napari_unet.core.device import describe_device
    from napari_unet.core.model import pick_device

    print(
        f"{PROG}: running on {describe_device(pick_device(requested), requested)}", file=sys.stderr
    )


def _check_input(path: Path) -> None:
    from napari_unet.core.io import is_zarr_path

    if not (path.is_file() or (is_zarr_path(path) and path.is_dir())):
        raise InputError(f"input file not found: {path}")


def _summary(failed: list[tuple[Path, str]], total: int) -> int:
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


def _tile_size(requested: int | None, bundle: Any) -> int | None:
    from napari_unet.core.tiling import round_tile_size

    if requested is None:
        return None
    size, note = round_tile_size(bundle.config, requested)
    if note:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return size


def _postprocess_options(args: argparse.Namespace, bundle: Any, *, zarr: bool) -> dict:
    """The user's post-processing choices over the model's recommendations."""
    from napari_unet.core.segment import recommended_options

    chosen = {
        "threshold": args.threshold,
        "min_size": args.min_size,
        "split_touching": args.split_touching,
        "fill_boundaries": args.fill_boundaries,
        "merge_boundaries": args.merge_boundaries,
    }
    recommended = recommended_options(bundle, args.output)
    if zarr:
        for key, what in _WHOLE_PLANE_ONLY.items():
            if chosen[key] is None and recommended.pop(key, False):
                print(
                    f"{PROG}: note: the model recommends {what}, which block-wise .zarr "
                    "outputs cannot do; skipped",
                    file=sys.stderr,
                )
    return {**recommended, **{key: value for key, value in chosen.items() if value is not None}}


def _segment_to_tiff(bundle, source: Path, target: Path, options, args, channels) -> None:
    from napari_unet.core.io import RESULT_INFO_KEY, as_planes, read_image, write_image
    from napari_unet.core.segment import segment_iter

    # Big TIFFs and zarr stores are read tile by tile; the result is in memory anyway.
    lazy = not source.is_file() or (
        source.suffix.lower() in (".tif", ".tiff") and source.stat().st_size > LAZY_TIFF_BYTES
    )
    image = read_image(source, lazy=lazy, rgb=_keeps_colour(args))
    calibration, options = _input_scale(source, options)
    read_ndim = len(image.shape)
    image, options = _dims_for(source, image, options, args, channels, in_memory=True)
    stack, _ = as_planes(
        image,
        in_channels=bundle.config.in_channels,
        channel_axis=options.channel_axis,
        channels=options.channels,
    )
    generator = segment_iter(bundle, image, options=options)
    planes = int(stack.shape[0])
    chosen: list[Any] = []
    result = drain_with_progress(
        _announcing_scale(generator, source, chosen),
        description=source.name,
        total_of=lambda event, planes=planes: getattr(event, "total", 0) * planes or None,
    )
    # A colour axis turned grey is gone from the image: drop it from the calibration too.
    dropped = options.channel_axis if len(image.shape) == read_ndim else read_ndim - 1
    result_calibration = _result_calibration(
        calibration, read_ndim, dropped, args, bundle.config.num_classes
    )
    record = {RESULT_INFO_KEY: {"scale": chosen[0].record()}} if chosen else None
    write_image(
        target,
        result,
        overwrite=args.overwrite,
        calibration=result_calibration,
        description_extra=record,
    )


def _input_scale(source: Path, options: Any) -> tuple[Any, Any]:
    """The input's calibration (None when its file records none) and ``options`` with
    its pixel size: ``--pixel-size`` when given, else the file's."""
    from dataclasses import replace

    from napari_unet.core.calibration import read_calibration

    calibration = read_calibration(source)
    if options.pixel_size is None and calibration is not None:
        options = replace(options, pixel_size=calibration.pixel_size)
    return calibration, options


def _result_calibration(
    calibration: Any, ndim: int, channel_axis: int | None, args: Any, classes: int
) -> Any:
    """The calibration of a result (TIFF or OME-Zarr): the input's (``ndim`` axes as read, its pixel
    size replaced by ``--pixel-size`` when given) without its channel axis, with the
    class axis of probabilities; None when nothing is known."""
    from napari_unet.core.calibration import Calibration

    given = _pixel_size_arg(args.pixel_size)
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


def _announcing_scale(
    generator: Generator[Any, None, Any], source: Path, chosen: list[Any]
) -> Generator[Any, None, Any]:
    """Pass events on; print the scale the core chose for ``source`` (and why) in one
    line and remember it in ``chosen``."""
    from napari_unet.core.events import ScaleChosen

    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as finished:
                return finished.value
            if isinstance(event, ScaleChosen):
                chosen.append(event.choice)
                print(f"{PROG}: {source.name}: {scale_line(event.choice)}", file=sys.stderr)
                continue
            yield event
    finally:
        generator.close()


def scale_line(choice: Any) -> str:
    """ "scale: auto: objects measure 41 px (23 on a 360 x 360 px crop), the model's 20 px
    -> x0.488" (the core's reason says the factor and why)."""
    return f"scale: {choice.reason}"


def _keeps_colour(args: argparse.Namespace) -> bool:
    """Whether colour images are read as they are (the user said how to read them)."""
    return args.rgb is not None or args.channel_axis is not None


def _dims_for(source: Path, image: Any, options: Any, args, channels, *, in_memory: bool):
    """The image (grey if asked) and options with this input's channel axis and link.

    The channel axis and the default of ``link`` come from the file's axes
    (:func:`~napari_unet.core.io.read_axes`) unless given: its C axis; RGB samples (S)
    only with ``--rgb``; link on when the last axis before Y other than C is Z and the
    result is in memory (labels linking needs the whole result).
    """
    from dataclasses import replace

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
        along_z = spatial.endswith("ZYX")
        link = along_z and in_memory and args.output == "labels"
        if along_z and not in_memory and args.output == "labels":
            print(
                f"{PROG}: note: labels of {source.name} are not linked through z in a .zarr "
                "output (block-wise); write a .tif OUTPUT to link them",
                file=sys.stderr,
            )
    options = replace(options, channel_axis=channel_axis, channels=channels, link=bool(link))
    return image, options


def _segment_to_zarr(bundle, source: Path, target: Path, options, args, client, channels):
    from napari_unet.core.largeimage import open_image, segment_blocks_iter

    image = open_image(source)
    calibration, options = _input_scale(source, options)
    read_ndim = len(image.shape)
    image, options = _dims_for(source, image, options, args, channels, in_memory=False)
    # A colour axis turned grey is gone from the image: drop it from the calibration too.
    dropped = options.channel_axis if len(image.shape) == read_ndim else read_ndim - 1
    calibration = _result_calibration(
        calibration, read_ndim, dropped, args, bundle.config.num_classes
    )
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
            overwrite=args.overwrite,
            inputs=[source],
            calibration=calibration,
        )
    else:
        generator = segment_blocks_iter(
            bundle,
            image,
            target,
            options=options,
            block_size=args.block_size,
            resume=args.resume,
            overwrite=args.overwrite,
            inputs=[source],
            calibration=calibration,
        )
    drain_with_progress(
        _blocks_only(_announcing_scale(generator, source, [])),
        description=source.name,
        unit="block",
    )


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
    from napari_unet.core.io import is_zarr_path

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
    from napari_unet.core.registry import default_model_name, resolve_model

    if name_or_path is None:
        name_or_path = default_model_name()
        if name_or_path is None:
            raise InputError(
                "no built-in model is installed; choose one with --model NAME_OR_PATH "
                "(list models with 'napari-unet models')"
            )
    return resolve_model(name_or_path)


def _output_paths(
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
    as_folder = as_folder or (output.is_dir() and not _is_zarr_output(output))
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


# ------------------------------------------------------------------------ train

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
        "small network reading the chosen channels)",
    )
    parser.add_argument("--steps", type=int, default=200, metavar="N", help="steps (200)")
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
    _add_channel_arguments(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace MODEL_FILE if it already exists"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    if len(args.images) != len(args.labels):
        raise InputError(
            f"{len(args.images)} --images but {len(args.labels)} --labels: give one --labels "
            "per --images, in the same order"
        )
    output = Path(args.output_path)
    if output.suffix != ".safetensors":
        raise InputError(f"model files end in .safetensors, got {output.name!r}")
    pixel_size = _pixel_size_arg(args.pixel_size)
    _check_augment_args(args)
    _check_planes_argument(args)
    _check_holdout_argument(args)
    for path in [*args.images, *args.labels]:
        if not Path(path).is_file():
            raise InputError(f"file not found: {path}")
    # Before training: a model the user has is never replaced unasked, and an output
    # that cannot be written fails now, not after the steps.
    check_output(
        output, inputs=[*args.images, *args.labels], overwrite=args.overwrite, what="model"
    )
    # torch and the model code load only now: argument errors above answer at once.
    from napari_unet.core.augment import AugmentConfig
    from napari_unet.core.io import read_axes, read_image
    from napari_unet.core.modelfile import load_model
    from napari_unet.core.train import TrainConfig, Trainer

    channels = _channel_list(args.channels)
    images = [read_image(p, rgb=args.channel_axis is not None) for p in args.images]
    channel_axis = args.channel_axis
    if channel_axis is None:  # the C axis the files name, when they all agree
        axes = {read_axes(p) for p in args.images}
        known = axes.pop() if len(axes) == 1 else None
        if known is not None and "C" in known and len(known) == images[0].ndim:
            channel_axis = known.index("C")
    if args.base == "scratch":
        base = _scratch_config(images[0], channel_axis, channels)
    else:
        base = load_model(_model_path(args.base))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        optimizer=args.optimizer,
        augment=AugmentConfig(
            enabled=not args.no_augment, blur=args.blur, invert=args.invert_contrast
        ),
        seed=args.seed,
        device=args.device,
        pixel_size=pixel_size or _training_pixel_size([Path(p) for p in args.images]),
        holdout=args.holdout,
    )
    trainer = Trainer(
        base,
        images,
        _training_labels(args.labels, args.annotation, args.planes, args.boundary_band),
        convention="sparse" if args.annotation == "result" else args.annotation,
        config=config,
        name=args.name or output.name.removesuffix(".safetensors"),
        channel_axis=channel_axis,
        channels=channels,
    )
    _report_device(args.device)
    return _train_and_save(trainer, output, overwrite=args.overwrite)


def _check_augment_args(args: argparse.Namespace) -> None:
    """Raise :class:`InputError` for a bad --blur or --invert-contrast, before torch loads
    (AugmentConfig checks them again with its own limits)."""
    if not 0 <= args.blur <= 20:  # NaN fails too
        raise InputError(f"--blur must be in [0, 20] pixels, got {args.blur}")
    if not 0 <= args.invert_contrast <= 1:
        raise InputError(f"--invert-contrast must be in [0, 1], got {args.invert_contrast}")


def _check_holdout_argument(args: argparse.Namespace) -> None:
    """Refuse a --holdout the core cannot read, before torch loads."""
    from napari_unet.core.holdout import parse_holdout

    try:
        parse_holdout(args.holdout)
    except InputError as error:
        raise InputError(f"--holdout: {error}") from None


def _check_planes_argument(args: argparse.Namespace) -> None:
    """Refuse --planes without --annotation result, and a --planes list of bad syntax."""
    if args.boundary_band < 0:
        raise InputError(f"--boundary-band must be 0 px or more, got {args.boundary_band}")
    if args.planes is None:
        return
    if args.annotation != "result":
        raise InputError("--planes chooses planes of a result: use it with --annotation result")
    from napari_unet.core.annotations import parse_plane_text

    try:
        parse_plane_text(args.planes)
    except InputError as error:
        raise InputError(f"--planes: {error}") from None


def _training_labels(
    paths: list[str], annotation: str, planes: str | None, boundary_band: int = 0
) -> list[Any]:
    """The labels files as read; results (``annotation == "result"``) converted to sparse
    annotations of the ``planes`` list (every plane when None)."""
    from napari_unet.core.annotations import annotations_from_labels, planes_from_text
    from napari_unet.core.io import read_image

    if annotation != "result":
        return [read_image(p) for p in paths]
    converted = []
    for path in map(Path, paths):
        result = read_image(path)
        try:
            chosen = None if planes is None else planes_from_text(planes, result.shape[:-2])
        except InputError as error:
            raise InputError(f"--planes for {path.name}: {error}") from None
        annotations = annotations_from_labels(result, chosen, boundary_band=boundary_band)
        cells = max(int(annotations.max()) - 1, 0)
        which = "every plane" if chosen is None else f"{len(chosen)} plane(s)"
        print(
            f"{PROG}: {path.name}: {cells} object(s) of {which} as cells, the rest of "
            "those planes as background",
            file=sys.stderr,
        )
        converted.append(annotations)
    return converted


def _training_pixel_size(images: list[Path]) -> Any:
    """The pixel size the training images' files record (None when none does).

    Raises
    ------
    InputError
        When two images record different pixel sizes: one model has one scale.
    """
    from napari_unet.core.calibration import read_calibration

    known: dict[Path, Any] = {}
    for path in images:
        calibration = read_calibration(path)
        if calibration is not None and calibration.pixel_size is not None:
            known[path] = calibration.pixel_size
    sizes = list(dict.fromkeys(known.values()))
    if len(sizes) > 1:
        listed = ", ".join(f"{path.name}: {size}" for path, size in known.items())
        raise InputError(
            f"the training images record different pixel sizes ({listed}); train on images "
            "of one pixel size, or give the one to record with --pixel-size"
        )
    if not sizes:
        return None
    missing = [path.name for path in images if path not in known]
    if missing:
        print(
            f"{PROG}: note: {', '.join(missing)} record(s) no pixel size; taken as "
            f"{sizes[0]} like the other images",
            file=sys.stderr,
        )
    return sizes[0]


def _scratch_config(image: Any, channel_axis: int | None, channels: tuple[int, ...] | None):
    """The small new network, reading as many channels as are chosen from ``image``."""
    from dataclasses import replace

    from napari_unet.core.io import as_planes
    from napari_unet.core.model import SMALL

    count = 1
    if channels is not None:
        count = len(channels)
    elif channel_axis is not None:
        count = int(image.shape[channel_axis]) if -image.ndim <= channel_axis < image.ndim else 1
    # The image's own checks first (axis, channel range, at most 8 channels), in one line.
    as_planes(image, in_channels=count, channel_axis=channel_axis, channels=channels)
    return replace(SMALL, in_channels=count)


def _train_and_save(trainer: Any, output: Path, *, overwrite: bool) -> int:
    """Run ``trainer`` with a progress bar; save its best weights once a step has completed.

    Ctrl+C keeps what was learnt so far, like Stop in the GUI. Nothing is written before
    the first completed step, and a failing save never hides why training stopped.
    """
    from napari_unet.core.events import TrainingFinished

    last_loss: list[float] = []
    finished: list[TrainingFinished] = []
    events = _with_loss(trainer.run(), last_loss, finished)
    try:
        drain_with_progress(events, description="training", unit="step")
    except BaseException as error:
        if trainer.has_progress:
            _save_after_interruption(trainer, output, overwrite=overwrite, cause=error)
        raise
    reason = finished[-1].reason if finished else "no step completed"
    if not trainer.has_progress:
        raise InputError(f"training stopped before its first step ({reason}); nothing was saved")
    _save(trainer, output, overwrite=overwrite, last_loss=last_loss)
    if trainer.diverged is not None:
        print(f"{PROG}: error: training stopped: {trainer.diverged}", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _save(trainer: Any, output: Path, *, overwrite: bool, last_loss: list[float]) -> None:
    from napari_unet.core.modelfile import save_model

    bundle = trainer.best_bundle()
    save_model(bundle, output, overwrite=overwrite)
    loss = f", last loss {last_loss[-1]:.4f}" if last_loss else ""
    kept = f"weights of step {bundle.provenance.get('steps', trainer.step)}"
    print(f"{PROG}: saved {output} ({kept}, {trainer.step} steps run{loss})", file=sys.stderr)
    print(f"{PROG}: {_recorded_scale(bundle)}", file=sys.stderr)
    scored = trainer.tuning_summary() or trainer.holdout_note
    if scored:
        print(f"{PROG}: {scored}", file=sys.stderr)


def _recorded_scale(bundle: Any) -> str:
    """ "the model records objects of 22.4 px at 0.325 µm/px" (what it knows of its scale)."""
    diameter, pixel_size = bundle.object_diameter, bundle.pixel_size
    objects = (
        f"objects of {diameter:.1f} px (median diameter)"
        if diameter is not None
        else "no object size"
    )
    where = f" at {pixel_size}/px" if pixel_size is not None else " (pixel size unknown)"
    return f"the model records {objects}{where}"


def _save_after_interruption(
    trainer: Any, output: Path, *, overwrite: bool, cause: BaseException
) -> None:
    """Save the best weights after ``cause`` stopped training; report a failing save only."""
    try:
        _save(trainer, output, overwrite=overwrite, last_loss=[])
    except Exception as error:  # the original error is re-raised by the caller
        print(
            f"{PROG}: error: could not save the weights learnt so far: {_error_message(error)}",
            file=sys.stderr,
        )
    else:
        if isinstance(cause, KeyboardInterrupt):
            print(f"{PROG}: training interrupted at step {trainer.step}", file=sys.stderr)


def _with_loss(events: Generator[Any, None, Any], losses: list[float], finished: list):
    """Pass events through, recording losses and the end, turning steps into progress."""
    from napari_unet.core.events import Progress, TrainingFinished, TrainStep

    for event in events:
        if isinstance(event, TrainStep):
            losses.append(event.loss)
            yield Progress(event.step, event.total_steps, f"loss {event.loss:.4f}")
        else:
            if isinstance(event, TrainingFinished):
                finished.append(event)
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


def _add_export_parser(subparsers: Any) -> None:
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


def _cmd_export(args: argparse.Namespace) -> int:
    output = Path(args.output_path)
    inputs = [args.test_image] if args.test_image else []
    check_output(output, inputs=inputs, overwrite=args.overwrite)
    from napari_unet.core.export import export_bioimageio
    from napari_unet.core.io import read_image
    from napari_unet.core.modelfile import load_model

    bundle = load_model(_model_path(args.model))
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


def _add_sample_parser(subparsers: Any) -> None:
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


def _cmd_sample(args: argparse.Namespace) -> int:
    from napari_unet import _sample_data
    from napari_unet.core.io import write_image

    check_output(args.output_path, overwrite=args.overwrite)
    image = getattr(_sample_data, _SAMPLES[args.name])()
    path = write_image(Path(args.output_path), image, overwrite=args.overwrite)
    print(f"{PROG}: wrote the {args.name} sample {image.shape} to {path}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- main

#: Subcommand name -> function running it; ``train`` registers here too.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "segment": _cmd_segment,
    "train": _cmd_train,
    "models": _cmd_models,
    "export": _cmd_export,
    "sample": _cmd_sample,
}
#: Subcommand name -> function adding its parser to the subparsers.
PARSERS: dict[str, Callable[[Any], None]] = {
    "segment": _add_segment_parser,
    "train": _add_train_parser,
    "models": _add_models_parser,
    "export": _add_export_parser,
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
        with _warnings_as_notes():
            return COMMANDS[args.command](args)
    except (UNetError, OSError, MemoryError) as error:
        print(f"{PROG}: error: {_error_message(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; results already written are kept "
            "(a .zarr OUTPUT continues with --resume)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


def _error_message(error: BaseException) -> str:
    """One line for the user: the message of our errors, what went wrong for the others."""
    if isinstance(error, MemoryError):
        return (
            "out of memory; segment into a .zarr OUTPUT (read and written block by block) "
            "or use a smaller --tile-size"
        )
    if isinstance(error, OSError) and not isinstance(error, UNetError) and error.strerror:
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror}{where}"
    return _one_line(error)


@contextlib.contextmanager
def _warnings_as_notes():
    """Show our warnings (e.g. replaced NaN pixels) as one ``note:`` line each."""
    import warnings

    from napari_unet.core.errors import NonFiniteWarning

    def show(message, category, *_args, **_kwargs) -> None:
        print(f"{PROG}: note: {_one_line(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", NonFiniteWarning)
        previous, warnings.showwarning = warnings.showwarning, show
        try:
            yield
        finally:
            warnings.showwarning = previous


def _one_line(error: BaseException | Warning | str) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

"""``napari-unet segment``: the command, and every call it makes into the core's one
segmentation pipeline (:func:`napari_unet.core.pipeline.run`: in memory for a TIFF
output, block-wise into a :class:`~napari_unet.core.pipeline.StoreTarget` for a .zarr
one; :mod:`~napari_unet.core.distributed` runs the same blocks on a dask cluster).

Options a block-wise run cannot apply follow the one policy of every front end,
:func:`~napari_unet.core.frontend.run_options`: one the user gave is refused in one line
before any input is read; one the model recommends (or the z-stack link default) is
left out with a note. Each result's line says the post-processing it applied.

The pipeline modules load torch: they are imported inside the functions that call them,
so that ``napari-unet --help`` stays fast (start-up time only).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

from napari_unet.cli.common import (
    PROG,
    channel_list,
    diameter_arg,
    drain_with_progress,
    error_message,
    model_path,
    pixel_size_arg,
    report_device,
)
from napari_unet.cli.segment_inputs import (
    check_input,
    dims_for,
    input_scale,
    is_zarr_output,
    keeps_colour,
    output_paths,
    result_calibration,
    summary,
    tile_size,
)
from napari_unet.core.errors import InputError, UNetError
from napari_unet.core.safety import check_output

#: TIFF inputs above this many bytes are read tile by tile even for a TIFF output.
LAZY_TIFF_BYTES = 256 * 2**20


def cmd_segment(args: argparse.Namespace) -> int:
    """``napari-unet segment``: every input into its result; exit status."""
    # The arguments' own errors first, then the outputs', then the model's and inputs'.
    scale = {"pixel_size": pixel_size_arg(args.pixel_size), "diameter": diameter_arg(args.diameter)}
    channels = channel_list(args.channels)
    inputs = [Path(p) for p in args.inputs]
    large = args.workers is not None or args.scheduler is not None
    outputs = _checked_outputs(args, inputs, large=large)
    # torch and the model code load only now: argument errors above answer at once.
    from napari_unet.core.modelfile import load_model

    bundle = load_model(model_path(args.model))
    options, recommended = _segment_options(args, bundle, **scale)
    if any(map(is_zarr_output, outputs)):
        _refuse_users_whole_plane_options(options, recommended, args)
    if large and args.rgb == "grey":
        raise InputError(
            "--rgb grey is not available with --workers/--scheduler (the workers read the "
            "files themselves); convert the images to grey first, or use --rgb channels"
        )
    with contextlib.ExitStack() as resources:
        client = _dask_client(args, resources) if large else None
        # A missing --device fails here, before any input is read. The predictor is built
        # (and cached per model and device) by the first run: in memory, segment_iter
        # picks whole maps or strips by the tile plan, so building one now could be waste.
        report_device(None if large else options.device)
        failed = _segment_each(
            bundle, inputs, outputs, options, recommended, args, client, channels
        )
    return summary(failed, len(inputs))


def _checked_outputs(args: argparse.Namespace, inputs: list[Path], *, large: bool) -> list[Path]:
    """One result path per input, each checked before any model or image is read:
    nothing the user has may be lost, and a folder that cannot be written fails now
    rather than after the computation."""
    outputs = output_paths(inputs, args.output_path, args.output, large=large)
    if (large or args.resume) and not all(is_zarr_output(target) for target in outputs):
        flag = "--resume" if args.resume and not large else "--workers/--scheduler"
        raise InputError(f"{flag} needs a zarr store: use an OUTPUT ending in .zarr")
    for target in outputs:
        _check_target(target, inputs, args)
    if len(inputs) == 1:
        check_input(inputs[0])
    return outputs


def _segment_options(
    args: argparse.Namespace, bundle: Any, *, pixel_size: Any, diameter: Any
) -> tuple[Any, frozenset[str]]:
    """The core's :class:`~napari_unet.core.options.SegmentOptions` of this run (the
    input's own channel axis, link and pixel size are filled in per input), and the
    names of the options the model recommended (the user gave no flag for them)."""
    from napari_unet.core.options import SegmentOptions

    postprocess, recommended = _postprocess_options(args, bundle)
    options = SegmentOptions(
        **postprocess,
        output=args.output,
        tile_size=tile_size(args.tile_size, bundle),
        device=args.device,
        batch_size=args.batch_size,
        link_iou=args.link_iou,
        pixel_size=pixel_size,
        diameter=diameter,
    )
    return options, recommended


def _refuse_users_whole_plane_options(
    options: Any, recommended: frozenset[str], args: argparse.Namespace
) -> None:
    """Refuse, in one line and before any input is read, an option the user gave that a
    block-wise (.zarr) run cannot apply (``--link`` included: the inputs' own link
    default is decided per input)."""
    from napari_unet.core.frontend import run_options

    run_options(replace(options, link=bool(args.link)), block_wise=True, recommended=recommended)


def _applied_options(
    options: Any,
    recommended: frozenset[str],
    args: argparse.Namespace,
    source: Path,
    *,
    block_wise: bool,
) -> Any:
    """The options the run of ``source`` applies
    (:func:`~napari_unet.core.frontend.run_options`), each one left out said in a note:
    the model's recommendations and, without ``--link``/``--no-link``, the input's own
    link default are not the user's."""
    from napari_unet.core.frontend import run_options

    not_users = recommended | ({"link"} if args.link is None else set())
    options, notes = run_options(options, block_wise=block_wise, recommended=not_users)
    for note in notes:
        print(f"{PROG}: note: {source.name}: {note}", file=sys.stderr)
    return options


def _segment_each(
    bundle, inputs, outputs, options, recommended, args, client, channels
) -> list[tuple[Path, str]]:
    """Segment every input into its output; the inputs that failed, with why.

    With one input its error is raised; with several, one bad input must not cost the
    user the results of the others.
    """
    from napari_unet.core.frontend import applied_postprocessing

    failed: list[tuple[Path, str]] = []
    for source, target in zip(inputs, outputs, strict=True):
        try:
            check_input(source)
            run = (bundle, source, target, options, recommended, args, channels)
            if is_zarr_output(target):
                applied = _segment_to_zarr(*run, client)
            else:
                applied = _segment_to_tiff(*run)
        except (UNetError, OSError, MemoryError) as error:
            if len(inputs) == 1:
                raise
            failed.append((source, error_message(error)))
            print(f"{PROG}: error: {source}: {failed[-1][1]}", file=sys.stderr)
            continue
        print(f"{source} -> {target} ({applied_postprocessing(applied)})", file=sys.stderr)
    return failed


def _check_target(target: Path, inputs: list[Path], args: argparse.Namespace) -> None:
    """Refuse an output that would lose data; stores are checked by the block-wise core."""
    if not is_zarr_output(target):
        check_output(target, inputs=inputs, overwrite=args.overwrite)
        return
    from napari_unet.core.largeimage import check_store_output

    check_store_output(target, inputs=inputs, overwrite=args.overwrite, resume=args.resume)


def _postprocess_options(args: argparse.Namespace, bundle: Any) -> tuple[dict, frozenset[str]]:
    """The user's post-processing choices over the model's recommendations, and the
    names of the recommendations the user left as they are."""
    from napari_unet.core.options import recommended_options

    chosen = {
        "threshold": args.threshold,
        "min_size": args.min_size,
        "split_touching": args.split_touching,
        "fill_boundaries": args.fill_boundaries,
        "merge_boundaries": args.merge_boundaries,
    }
    recommended = recommended_options(bundle, args.output)
    given = {key: value for key, value in chosen.items() if value is not None}
    return {**recommended, **given}, frozenset(recommended) - frozenset(given)


def _segment_to_tiff(bundle, source: Path, target: Path, options, recommended, args, channels):
    """Segment ``source`` in memory into the TIFF ``target``; return the options applied."""
    from napari_unet.core.io import RESULT_INFO_KEY, as_planes, read_image, write_image
    from napari_unet.core.pipeline import run

    # Big TIFFs and zarr stores are read tile by tile; the result is in memory anyway.
    lazy = not source.is_file() or (
        source.suffix.lower() in (".tif", ".tiff") and source.stat().st_size > LAZY_TIFF_BYTES
    )
    image = read_image(source, lazy=lazy, rgb=keeps_colour(args))
    calibration, options = input_scale(source, options)
    read_ndim = len(image.shape)
    image, options = dims_for(source, image, options, args, channels)
    options = _applied_options(options, recommended, args, source, block_wise=False)
    stack, _ = as_planes(
        image,
        in_channels=bundle.config.in_channels,
        channel_axis=options.channel_axis,
        channels=options.channels,
    )
    generator = run(bundle, image, options=options)
    planes = int(stack.shape[0])
    chosen: list[Any] = []
    result = drain_with_progress(
        _announcing_scale(generator, source, chosen),
        description=source.name,
        total_of=lambda event, planes=planes: getattr(event, "total", 0) * planes or None,
    )
    # A colour axis turned grey is gone from the image: drop it from the calibration too.
    dropped = options.channel_axis if len(image.shape) == read_ndim else read_ndim - 1
    written_calibration = result_calibration(
        calibration, read_ndim, dropped, args, bundle.config.num_classes
    )
    record = {RESULT_INFO_KEY: {"scale": chosen[0].record()}} if chosen else None
    write_image(
        target,
        result,
        overwrite=args.overwrite,
        calibration=written_calibration,
        description_extra=record,
    )
    return options


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


def _segment_to_zarr(
    bundle, source: Path, target: Path, options, recommended, args, channels, client
):
    """Segment ``source`` block-wise into the store ``target`` (on the dask cluster of
    ``client`` when given); return the options applied."""
    from napari_unet.core.pipeline import StoreTarget, run
    from napari_unet.core.sources import open_image

    image = open_image(source)
    calibration, options = input_scale(source, options)
    read_ndim = len(image.shape)
    image, options = dims_for(source, image, options, args, channels)
    options = _applied_options(options, recommended, args, source, block_wise=True)
    # A colour axis turned grey is gone from the image: drop it from the calibration too.
    dropped = options.channel_axis if len(image.shape) == read_ndim else read_ndim - 1
    calibration = result_calibration(
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
        store = StoreTarget(
            target,
            block_size=args.block_size,
            resume=args.resume,
            overwrite=args.overwrite,
            calibration=calibration,
            inputs=(source,),
        )
        generator = run(bundle, image, options=options, out=store)
    drain_with_progress(
        _blocks_and_steps(_announcing_scale(generator, source, [])),
        description=source.name,
        unit="block",
    )
    return options


def _blocks_and_steps(generator: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Pass on the progress of the blocks and of each step after them (labelling the
    planes, mapping back), which the bar names; tiles are too fine to show."""
    try:
        while True:
            try:
                event = next(generator)
            except StopIteration as finished:
                return finished.value
            if getattr(event, "message", None):
                yield event
    finally:
        generator.close()  # Ctrl+C: stop the run (and cancel queued dask tasks)


def _dask_client(args: argparse.Namespace, resources: contextlib.ExitStack) -> Any:
    from napari_unet.core.distributed import connect, local_client

    if args.scheduler is not None:
        return resources.enter_context(connect(args.scheduler))
    return resources.enter_context(local_client(args.workers))

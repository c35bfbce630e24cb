"""The store of a block-wise run: result array, block records, scratch arrays, run record.

:class:`BlockStore` knows the layout (see :mod:`napari_unet.core.blockwise`);
:func:`check_store_output` refuses, before any work, an output that would lose data;
:func:`prepare_store` creates the store or reopens one to resume, after comparing its
run record (:func:`~napari_unet.core.runrecord.run_record`) with this run's.

zarr is optional: imported where a store is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from napari_unet.core.blockplan import Block, BlockPlan
from napari_unet.core.calibration_axes import Calibration
from napari_unet.core.calibration_write import ngff_transformations
from napari_unet.core.errors import OutputError
from napari_unet.core.outputs import OUT_DTYPES
from napari_unet.core.runrecord import (
    RECORD_KEYS,
    SCRATCH_NAMES,
    label_scratches,
    refuse_other_settings,
)
from napari_unet.core.safety import STORE_MARK, check_writable, overlaps
from napari_unet.core.stores import (
    STORE_FORMAT,
    WORK_GROUP,
    _recognisably_ours,
    _refuse_replacing,
    default_axes,
    open_output_store,
)


def check_store_output(
    path: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> bool:
    """Refuse, before any work, a store output that would lose data or cannot be written.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` store to write.
    inputs : iterable of path-like
        Files and stores the run reads: the store may not be, contain or lie in one.
    overwrite : bool
        Whether an existing store of ours may be replaced.
    resume : bool
        Whether an existing store of ours is continued.

    Returns
    -------
    bool
        Whether an existing store is to be resumed (``False``: a new store is created).

    Raises
    ------
    OutputError
        In one line: an input would be overwritten; ``path`` is a file, a folder that is
        not a napari-unet store, or holds other files; it exists and neither
        ``overwrite`` nor ``resume`` is given; a store to resume is damaged; or the
        place cannot be written.
    """
    path = Path(path)
    inputs = [Path(source) for source in inputs]
    for source in inputs:
        if overlaps(source, path):
            raise OutputError(
                f"the output {path} would overwrite the input {source}; choose another output"
            )
    exists = path.exists() or path.is_symlink()
    if exists and resume:
        BlockStore(path).check_record()
        for folder in (path, path / "0", path / WORK_GROUP):
            if folder.is_dir():
                check_writable(folder)
        return True
    if exists:
        _refuse_replacing(path, overwrite=overwrite)
    check_writable(path.parent)
    return False


class BlockStore:
    """The output zarr store of a block-wise run: result array, block records, scratch.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder.
    model_grid : bool
        Whether the run segments at the model's scale (the image resampled): blocks are
        then written into a model-grid scratch array (:meth:`target`) and mapped back
        into the result by :func:`map_back`.
    """

    def __init__(self, path: str | os.PathLike, *, model_grid: bool = False) -> None:
        self.path = Path(path)
        self.model_grid = model_grid

    @property
    def records(self) -> Path:
        """Folder of the per-block JSON records."""
        return self.path / WORK_GROUP

    def create(
        self,
        shape: tuple[int, ...],
        dtype: Any,
        chunks: tuple[int, ...],
        run: dict,
        *,
        overwrite: bool = False,
        scratch: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
        calibration: Calibration | None = None,
    ):
        """Create a fresh store for ``run`` (replacing a store of ours only with
        ``overwrite``, see :func:`open_output_store`); return the result array.

        ``scratch`` is ``(shape, chunks)`` of the model-grid arrays of a resampled run
        (the blocks' result, and the labels scratch); by default they are the result's.
        ``calibration`` (the result's) gives the multiscales' axes, units and scale.
        """
        import zarr

        channels = run["output"] == "probabilities"
        axes, transformations = default_axes(len(shape), channels=channels), None
        if calibration is not None:
            axes, transformations = ngff_transformations(calibration, len(shape))
        array = open_output_store(
            self.path,
            shape,
            dtype,
            chunks,
            axes=axes,
            name=run["output"],
            overwrite=overwrite,
            transformations=transformations,
        )
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        work = root.create_group(WORK_GROUP)
        scratch_shape, scratch_chunks = scratch if scratch is not None else (shape, chunks)
        if scratch is not None:
            work.create_array(
                "model", shape=scratch_shape, dtype=dtype, chunks=scratch_chunks, fill_value=0
            )
        for name, dtype in label_scratches(run).items():
            work.create_array(
                name, shape=scratch_shape, dtype=dtype, chunks=scratch_chunks, fill_value=0
            )
        root.attrs[STORE_MARK] = {**run, "complete": False}
        return array

    def run_record(self) -> dict[str, Any] | None:
        """The run record of an existing store, or ``None`` when there is none."""
        import zarr

        if not self.path.exists():
            return None
        try:
            root = zarr.open_group(str(self.path), mode="r")
        except Exception:  # not a zarr group: nothing to resume
            return None
        return dict(root.attrs).get(STORE_MARK)

    def check_record(self) -> dict[str, Any]:
        """The run record of a store to resume, checked for damage (no image or plan needed).

        Returns
        -------
        dict
            The record (``format``, ``output``... and ``complete``).

        Raises
        ------
        OutputError
            ``"cannot resume PATH: ...; <what to do>"`` when ``path`` is not a folder,
            not a napari-unet store, or its ``.zattrs`` or ``.zgroup`` is missing or damaged.
        """
        path = self.path
        if path.is_symlink() or not path.is_dir():
            raise OutputError(
                f"cannot resume {path}: it is a file (or a link), not a napari-unet result store; "
                "choose another output"
            )
        if not _recognisably_ours(path):
            raise OutputError(
                f"cannot resume {path}: it is not a napari-unet result store (it is never "
                "deleted); choose another output"
            )
        try:
            attrs = json.loads((path / ".zattrs").read_text())
        except FileNotFoundError:
            raise _damaged(path, "its run record (.zattrs) is missing") from None
        except (OSError, ValueError) as error:
            raise _damaged(
                path, f"its run record (.zattrs) is damaged (not valid JSON: {error})"
            ) from None
        record = attrs.get(STORE_MARK) if isinstance(attrs, dict) else None
        if not isinstance(record, dict):
            raise _damaged(path, "its run record (.zattrs) has no napari-unet entry")
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise _damaged(path, f"its run record is damaged (no {', '.join(missing[:3])})")
        if record["format"] != STORE_FORMAT:
            raise _damaged(
                path, f"it was written by another napari-unet version (format {record['format']})"
            )
        try:
            json.loads((path / ".zgroup").read_text())
        except (OSError, ValueError):
            raise _damaged(path, "its zarr metadata (.zgroup) is missing or damaged") from None
        return record

    def check_resumable(
        self,
        plan: BlockPlan,
        run: dict[str, Any],
        result_shape: tuple[int, ...],
        scratch_shape: tuple[int, ...] | None = None,
    ) -> None:
        """Check a store passed :meth:`check_record` can continue ``run``, before any work.

        Parameters
        ----------
        plan : BlockPlan
        run : dict
            This run's record; ``stats`` (known only after reading the image) is
            compared later, by :func:`prepare_store`.
        result_shape : tuple of int
            Of the result array ``"0"``.
        scratch_shape : tuple of int, optional
            Of the model-grid arrays (the labels scratch, and the blocks' result of a
            resampled run); default ``result_shape``.

        Raises
        ------
        InputError
            When the store was written with other settings (a different run, not damage).
        OutputError
            When its result array, labels scratch or a block record is missing or damaged.
        """
        import zarr

        record = self.check_record()
        output = run["output"]
        if output == "labels" and record.get("output") == "labels" and "postprocess" not in record:
            raise _damaged(
                self.path,
                "it was written by an older napari-unet, which labelled blocks one by one "
                "(no whole-plane post-processing)",
            )
        refuse_other_settings(self.path, record, run, ignore=("stats",))
        scratch_shape = result_shape if scratch_shape is None else scratch_shape
        try:
            result = zarr.open_array(str(self.path / "0"), mode="r", zarr_format=2)
        except Exception:  # missing or damaged .zarray: zarr raises many types
            raise _damaged(self.path, "its result array (0) is missing or damaged") from None
        if result.shape != result_shape or result.dtype != OUT_DTYPES[output]:
            raise _damaged(
                self.path,
                f"its result array (0) is {result.shape} {result.dtype}, not "
                f"{result_shape} {OUT_DTYPES[output]}",
            )
        scratches = list(label_scratches(record))
        scratches += ["model"] if self.model_grid else []
        for name in scratches if not record["complete"] else ():
            try:
                scratch = zarr.open_array(str(self.records / name), mode="r", zarr_format=2)
            except Exception:
                scratch = None
            if scratch is None or scratch.shape != scratch_shape:
                what = SCRATCH_NAMES[name]
                raise _damaged(
                    self.path,
                    f"its {what} ({WORK_GROUP}/{name}) is gone while the run is unfinished",
                )
        blocks = {block.key: block for block in plan.blocks}
        done = set()
        for path in sorted(self.records.glob("*.json")) if self.records.is_dir() else ():
            try:
                block_record = json.loads(path.read_text())
            except (OSError, ValueError):
                raise _damaged(
                    self.path, f"its block record {path.name} is damaged (not JSON)"
                ) from None
            why = _block_record_problem(blocks.get(path.stem), block_record, output)
            if why:
                raise _damaged(self.path, f"its block record {path.name} is damaged ({why})")
            done.add(path.stem)
        if record["complete"] and len(done) < len(blocks):
            raise _damaged(
                self.path,
                f"it is marked complete but {len(blocks) - len(done)} block records are missing",
            )

    def set_complete(self, complete: bool) -> None:
        """Record whether every step (blocks, label merge) has finished."""
        import zarr

        root = zarr.open_group(str(self.path), mode="r+", zarr_format=2)
        root.attrs[STORE_MARK] = {**dict(root.attrs)[STORE_MARK], "complete": complete}

    def result(self, mode: str = "r+") -> Any:
        """The result array ``"0"``."""
        import zarr

        return zarr.open_array(str(self.path / "0"), mode=mode, zarr_format=2)

    def raw(self, mode: str = "r+") -> Any:
        """Scratch array of the labels before filling (labels runs that fill only)."""
        return self._scratch("raw", mode)

    def mask(self, mode: str = "r+") -> Any:
        """Scratch array of the class mask the labels are made from (labels runs)."""
        return self._scratch("mask", mode)

    def foreground(self, mode: str = "r+") -> Any:
        """Scratch array of the foreground probability (labels runs with grow-and-merge)."""
        return self._scratch("foreground", mode)

    def _scratch(self, name: str, mode: str) -> Any:
        import zarr

        return zarr.open_array(str(self.records / name), mode=mode, zarr_format=2)

    def target(self, mode: str = "r+") -> Any:
        """The array blocks are written into: the result, or with ``model_grid`` the
        model-grid scratch array that :func:`map_back` maps onto the result."""
        import zarr

        if not self.model_grid:
            return self.result(mode)
        return zarr.open_array(str(self.records / "model"), mode=mode, zarr_format=2)

    def done(self) -> dict[str, dict[str, Any]]:
        """Records of the finished blocks, by block key."""
        if not self.records.is_dir():
            return {}
        return {
            path.stem: json.loads(path.read_text()) for path in sorted(self.records.glob("*.json"))
        }

    def mark_done(self, block: Block, record: dict[str, Any]) -> None:
        """Write ``block``'s record atomically (after its data), which marks it finished."""
        target = self.records / f"{block.key}.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(record, separators=(",", ":")))
        os.replace(partial, target)


def prepare_store(
    path: str | os.PathLike,
    plan: BlockPlan,
    run: dict[str, Any],
    result_shape: tuple[int, ...],
    *,
    resume: bool,
    overwrite: bool = False,
    scratch_shape: tuple[int, ...] | None = None,
    calibration: Calibration | None = None,
) -> BlockStore:
    """Create the store for ``run``, or with ``resume`` reopen a matching one.

    Call :func:`check_store_output` (and, to resume, :meth:`BlockStore.check_resumable`)
    first: this only compares the records and creates. ``scratch_shape`` is the shape of
    the model-grid result of a resampled run (``run["scale"]`` holds its factors): blocks
    go into a scratch array of that shape, the result has ``result_shape``.

    Raises
    ------
    InputError
        When resuming a store written for a different image, model or settings.
    OutputError
        When creating over something :func:`open_output_store` may not replace.
    """
    store = BlockStore(path, model_grid=scratch_shape is not None)
    existing = store.run_record() if resume else None
    if existing is not None:
        refuse_other_settings(store.path, existing, run)
        return store
    channels = result_shape[-3] if run["output"] == "probabilities" else None
    chunks = (1,) * (len(result_shape) - 2 - (channels is not None))
    if channels is not None:
        chunks += (channels,)
    scratch = None
    block_shape = plan.block_shape
    if scratch_shape is not None:
        scratch = (scratch_shape, (*chunks, *block_shape))
        # the result is mapped back chunk by chunk: chunks of a block's size bound memory
        block_shape = tuple(min(e, s) for e, s in zip(block_shape, result_shape[-2:], strict=True))
    store.create(
        result_shape,
        OUT_DTYPES[run["output"]],
        (*chunks, *block_shape),
        run,
        overwrite=overwrite,
        scratch=scratch,
        calibration=calibration,
    )
    return store


def _damaged(path: Path, what: str) -> OutputError:
    return OutputError(f"cannot resume {path}: {what}; rerun with --overwrite to start again")


def _block_record_problem(block: Block | None, record: Any, output: str) -> str | None:
    """What is wrong with a finished block's record, or ``None`` (cheap shape checks).

    A block's data (and for labels its scratch mask) is written before its record, so
    the record only needs to name the block."""
    if block is None:
        return "no such block in this run"
    if not isinstance(record, dict) or record.get("rows") != [block.rows.start, block.rows.stop]:
        return "wrong rows"
    return None

"""Writing outputs without ever losing what the user already has.

Every file napari-unet writes (TIFF results, model files) goes through
:func:`atomic_write`: the data is written to a temporary file beside the target and
renamed over it only when complete, so an interrupted write leaves the old file intact
and no partial file. :func:`check_output` runs before any computation and refuses an
output that is, contains or lies inside an input, an existing file without
``overwrite``, a folder that is not a store of ours, or a place that cannot be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_unet.core.errors import OutputError

#: Attribute key that marks a zarr store as a napari-unet result.
STORE_MARK = "napari_unet"
#: Prefix of temporary files, so a leftover one is recognisable (and ignored by listings).
TEMP_PREFIX = ".napari-unet-partial-"


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s suffix (writers that look at it still work).
    On any exception, ``KeyboardInterrupt`` included, the temporary file is removed and
    ``target`` is left exactly as it was.

    Parameters
    ----------
    target : path-like
        The file to (re)place; its folder is created if needed.

    Yields
    ------
    Path
        Where the caller writes the complete content.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{target.stem}-", suffix=target.suffix, dir=target.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        # mkstemp makes the file private (0600); give it the mode a plain open() would,
        # or the replaced file's own.
        os.chmod(temporary, _mode_for(target))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _mode_for(target: Path) -> int:
    """Permission bits of ``target`` if it exists, else what the umask gives a new file."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # /proc tells without changing it; os.umask can only be read by setting it, which
    # races with other threads creating files.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_our_store(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr store written by napari-unet (safe to replace)."""
    attrs = Path(path) / ".zattrs"
    try:
        return STORE_MARK in json.loads(attrs.read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_output(
    target: str | os.PathLike,
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = False,
    resume: bool = False,
    what: str = "result",
) -> None:
    """Refuse an output that would destroy an input or other data, before any work.

    Parameters
    ----------
    target : path-like
        The file or ``.zarr`` store to write.
    inputs : iterable of path-like
        Files and stores read by the run.
    overwrite : bool
        Whether an existing result of ours (or model file) may be replaced.
    resume : bool
        Whether an existing store is continued (so it is expected to exist).
    what : str
        Names the output in messages ("result", "model").

    Raises
    ------
    OutputError
        With one line saying what would be lost and what to do.
    """
    target = Path(target)
    for source in inputs:
        if overlaps(Path(source), target):
            raise OutputError(
                f"the output {target} would overwrite the input {source}; choose another output"
            )
    if target.exists() or target.is_symlink():
        _check_existing(target, overwrite=overwrite, resume=resume, what=what)
    check_writable(target.parent)


def _check_existing(target: Path, *, overwrite: bool, resume: bool, what: str) -> None:
    if target.is_dir():
        if not is_our_store(target):
            raise OutputError(
                f"{target} is a folder that is not a napari-unet result store; it is never "
                "deleted: choose another output"
            )
        if resume:
            return
    elif not target.is_file():
        raise OutputError(f"{target} exists and is not a regular file; choose another output")
    if not overwrite:
        flag = "--overwrite or --resume" if target.is_dir() else "--overwrite"
        raise OutputError(
            f"{target} already exists; pass {flag} to replace it, or choose another output"
        )
    if what == "model" and target.is_dir():
        raise OutputError(f"{target} is a folder, not a model file; choose another output")


def overlaps(source: Path, target: Path) -> bool:
    """Whether writing ``target`` could change ``source`` (same path, or one inside the other)."""
    with contextlib.suppress(OSError):
        if source.exists() and target.exists() and os.path.samefile(source, target):
            return True
    source, target = source.resolve(), target.resolve()
    return source == target or source in target.parents or target in source.parents


def check_writable(folder: str | os.PathLike) -> None:
    """Create ``folder`` if needed and check a file can be written in it.

    Raises
    ------
    OutputError
        When the folder cannot be created or written (read-only, no permission, a file
        in the way).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=TEMP_PREFIX):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputError(
            f"cannot write to {folder} ({reason}); choose an output folder you can write to"
        ) from error


def free_path(target: str | os.PathLike) -> Path:
    """``target`` if nothing is there, else the first free ``NAME-2.SUFFIX``, ``NAME-3``...

    For widgets, which pick a new name instead of asking to replace a user's file.
    """
    target = Path(target)
    if not (target.exists() or target.is_symlink()):
        return target
    index = 2
    while True:
        candidate = target.with_name(f"{target.stem}-{index}{target.suffix}")
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate
        index += 1


__all__ = [
    "STORE_MARK",
    "TEMP_PREFIX",
    "atomic_write",
    "check_output",
    "check_writable",
    "free_path",
    "is_our_store",
    "overlaps",
]

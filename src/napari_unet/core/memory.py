"""Memory checks: refuse, in one line and before any work, an allocation larger than the
memory available (:func:`check_fits_in_memory`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.core.errors import InputError

#: Returned by :func:`available_memory` when the platform does not say.
UNKNOWN_MEMORY = 2**62


def available_memory() -> int:
    """Bytes of memory a new allocation can use without swapping, as the OS reports it.

    Linux: ``MemAvailable`` of ``/proc/meminfo``, lowered to what a cgroup (v2) memory
    limit still allows (containers); elsewhere ``os.sysconf`` (available, else physical
    pages); when nothing answers, :data:`UNKNOWN_MEMORY` (so nothing is refused).
    """
    memory = _meminfo_available()
    if memory is None:
        memory = _sysconf_memory()
    limit = _cgroup_remaining()
    if limit is not None:
        memory = limit if memory is None else min(memory, limit)
    return UNKNOWN_MEMORY if memory is None else memory


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _sysconf_memory() -> int | None:
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            continue
    return None


def _cgroup_remaining() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return max(0, int(limit) - int(used))
    except (OSError, ValueError):
        return None


def check_fits_in_memory(
    nbytes: int,
    what: str,
    *,
    hint: str = "segment into a .zarr output (-o result.zarr), which works tile by tile",
) -> None:
    """Refuse, in one line, an allocation larger than :func:`available_memory`.

    Parameters
    ----------
    nbytes : int
        Bytes the allocation needs.
    what : str
        What needs them, the subject of the message, e.g. ``"the result"`` or
        ``"reading x.tif (a 100000 x 100000 uint16 image)"``.
    hint : str
        What to do instead.

    Raises
    ------
    InputError
        ``"<what> needs 18.6 GB, more than the memory available (3.2 GB); <hint>"``.
    """
    available = available_memory()
    if nbytes > available:
        raise InputError(
            f"{what} needs {format_bytes(nbytes)}, more than the memory available "
            f"({format_bytes(available)}); {hint}"
        )


def format_bytes(nbytes: int) -> str:
    """``nbytes`` for people: ``"512 bytes"``, ``"1.5 KB"``, ``"18.6 GB"`` (units of 1024)."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    value = float(nbytes)
    for unit in ("KB", "MB", "GB", "TB", "PB"):
        value /= 1024
        if value < 1024 or unit == "PB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def describe_array(shape: tuple[int, ...], dtype: Any) -> str:
    """``"100000 x 100000 uint16"`` for an array's shape and dtype."""
    return f"{' x '.join(str(int(s)) for s in shape)} {np.dtype(dtype)}"

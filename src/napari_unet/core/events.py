"""Small, immutable progress events yielded by the core's long-running generators.

The GUI receives them through ``thread_worker``'s ``yielded`` signal and the CLI
drains them into a progress bar; neither needs to know how the work is done.
Arrays inside events are never written to by the core after being yielded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TileDone:
    """One overlap-tile finished.

    Attributes
    ----------
    plane : int
        Index of the plane in the stack (0 for a 2D image).
    index, total : int
        Tile number within this plane and the plane's tile count.
    region : tuple of slice
        ``(rows, cols)`` the tile covers in image coordinates.
    data : ndarray
        The tile's result: ``(h, w)`` mask/labels or ``(K, h, w)`` probabilities.
    """

    plane: int
    index: int
    total: int
    region: tuple[slice, slice]
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class PlaneDone:
    """A whole plane is finished; ``data`` is its final result (e.g. instance labels)."""

    plane: int
    data: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Progress:
    """Generic progress: ``done`` of ``total`` units, with a short message."""

    done: int
    total: int
    message: str = ""

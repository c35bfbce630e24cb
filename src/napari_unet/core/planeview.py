"""A lazy window onto an array: some axes fixed at one index, the others read on demand.

Every part of the pipeline that hands on "plane 3 of this stack" or "channel-and-plane at
t = 1, z = 2" without reading it uses :class:`PlaneView`: a zarr store, a lazy TIFF or a
resampled view is then read one window at a time (``array[3]`` would read the whole plane
of some of them, and a Python ``_PlaneStack`` would return another view). Writing goes
through the same key, so the block-wise plane labelling reads and writes stores window
by window. :func:`full_key` is the one normaliser of numpy-style keys the lazy
array-likes of the core share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def full_key(key: Any, ndim: int, *, what: str = "this array") -> tuple:
    """``key`` as one entry per axis: its Ellipsis expanded, missing axes full slices.

    Parameters
    ----------
    key : int, slice, array-like, Ellipsis or tuple of them
        A numpy-style key without new axes (``None``).
    ndim : int
        Axes of the indexed array-like.
    what : str
        How error messages name the indexed array-like ("a resampled view").

    Returns
    -------
    tuple
        ``ndim`` entries.

    Raises
    ------
    IndexError
        For a new axis (``None``) or more entries than axes.
    """
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key):
        raise IndexError(f"new axes are not supported when indexing {what}")
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = ndim - (len(key) - 1)
        key = (*key[:at], *(slice(None),) * fill, *key[at + 1 :])
    if len(key) > ndim:
        raise IndexError(f"too many indices for {what} of {ndim} axes")
    return (*key, *(slice(None),) * (ndim - len(key)))


class PlaneView:
    """``array`` at ``key`` (an int on each fixed axis, ``slice(None)`` on each kept
    axis), as an array-like of the kept axes that reads and writes only what it is asked.

    ``view[k]`` reads ``array`` at ``key`` refined by ``k`` (one entry per kept axis) and
    ``view[k] = value`` writes there. ``read`` replaces the reading (e.g. for a stack
    whose own ``__getitem__`` returns views); it gets the refined full key.

    Parameters
    ----------
    array : array-like
        numpy, zarr, dask, a lazy view... anything indexable with a tuple key.
    key : tuple
        One entry per axis of ``array``: ints or ``slice(None)``.
    read : callable, optional
        ``read(full_key) -> np.ndarray``; by default ``np.asarray(array[full_key])``.
    """

    def __init__(
        self, array: Any, key: tuple, *, read: Callable[[tuple], np.ndarray] | None = None
    ) -> None:
        key = tuple(key)
        if len(key) != len(array.shape) or not all(
            isinstance(k, (int, np.integer)) or k == slice(None) for k in key
        ):
            raise IndexError(
                f"a view of a {tuple(array.shape)} array needs one int or full slice per axis, "
                f"got {key}"
            )
        self.array, self.key = array, key
        self.shape = tuple(
            int(n) for n, k in zip(array.shape, key, strict=True) if isinstance(k, slice)
        )
        self.dtype = array.dtype
        self.ndim = len(self.shape)
        self._read = read

    @classmethod
    def at(cls, array: Any, leading: tuple[int, ...], **kwargs: Any) -> PlaneView:
        """The view of ``array[(*leading, ...)]``: its first ``len(leading)`` axes fixed."""
        kept = len(array.shape) - len(leading)
        if kept < 0:
            raise IndexError(f"a {tuple(array.shape)} array has fewer axes than {leading}")
        return cls(array, (*(int(i) for i in leading), *(slice(None),) * kept), **kwargs)

    def _in_array(self, key: Any) -> tuple:
        """``key`` (of the view's axes) as a full key of ``array``."""
        refined = iter(full_key(key, self.ndim, what="a plane view"))
        return tuple(next(refined) if isinstance(k, slice) else k for k in self.key)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        full = self._in_array(key)
        return self._read(full) if self._read is not None else np.asarray(self.array[full])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[self._in_array(key)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)


__all__ = ["PlaneView", "full_key"]

"""An array-like that records every read, for tests that pin what a lazy path reads.

Imported by the tests as ``from recorded_reads import RecordedReads`` (``tests/`` is on
``sys.path`` under pytest).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RecordedReads:
    """``data`` behind ``__getitem__`` / ``__setitem__``, recording each read: its key
    (``keys``), the shape of the window read (``reads``) and its pixel count (``areas``)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.keys: list[Any] = []
        self.reads: list[tuple[int, ...]] = []
        self.areas: list[int] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        window = self.data[key]
        self.keys.append(key)
        self.reads.append(np.shape(window))
        self.areas.append(int(np.size(window)))
        return window

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

"""An array-like that records the windows read from it (tests of what a lazy path reads)."""

from __future__ import annotations

from typing import Any

import numpy as np


class RecordedReads:
    """Wraps ``data`` and appends every ``__getitem__`` key to ``keys``."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.keys: list[Any] = []

    def __getitem__(self, key: Any) -> np.ndarray:
        self.keys.append(key)
        return self.data[key]

"""File formats shared by the readers and the calibration: zarr stores and tifffile's log.

A module of its own below :mod:`napari_unet.core.io` and
:mod:`napari_unet.core.calibration`, which both read TIFF and zarr files.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

ZARR_METADATA = (".zgroup", ".zarray", "zarr.json")


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zarr store (a ``.zarr`` path or a folder with zarr metadata)."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return True
    return path.is_dir() and any((path / name).exists() for name in ZARR_METADATA)


class TiffLog(logging.Filter):
    """Collect (and silence) what tifffile logs while a file is read.

    tifffile logs damage it works around (bad offsets, odd tags) to stderr; a user gets
    one line instead, with the logged reason when the read fails after all.
    """

    #: Errors tifffile logs about one bad tag value, which it skips harmlessly.
    HARMLESS = ("<TiffTag.fromfile>", "for tag #")

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.errors: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        self.messages.append(message)
        if record.levelno >= logging.ERROR and not any(h in message for h in self.HARMLESS):
            self.errors.append(message)
        return False

    def damage(self) -> str | None:
        """The first structural error tifffile logged (a broken page chain, series...)."""
        return tidy(self.errors[0]) if self.errors else None

    def __enter__(self) -> TiffLog:
        logging.getLogger("tifffile").addFilter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger("tifffile").removeFilter(self)


def tidy(text: str) -> str:
    """One short line of a tifffile message, without its object names."""
    # "<tifffile.TiffPages @8> invalid offset ..." -> "invalid offset ...": the objects
    # mean nothing to a user.
    text = " ".join(re.sub(r"<tifffile\.[^>]*>\s*", "", text).split())
    return text if len(text) <= 120 else text[:117] + "..."

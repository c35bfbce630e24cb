"""Sample images for *File > Open Sample > napari-unet*, and plain loaders for scripts.

The files live in ``napari_unet/samples/`` (sources and citations in its README.md).
:func:`em_stack`, :func:`nuclei_image` and :func:`dic_image` return plain arrays (used by
the CLI and the wheel check); the ``*_sample`` functions return napari ``LayerData`` tuples, which
need no Qt, so this module never imports napari or Qt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
EM_STACK_FILE = SAMPLES_DIR / "em_isbi2012_slices16-19.tif"
NUCLEI_FILE = SAMPLES_DIR / "nuclei_dsb2018_b1f23c4d27afed8a.tif"
DIC_FILE = SAMPLES_DIR / "dic_cho_bbbc030_cho07.tif"

#: napari LayerData: (data, layer keyword arguments, layer type).
LayerData = tuple[np.ndarray, dict[str, Any], str]


def em_stack() -> np.ndarray:
    """Serial-section TEM of a *Drosophila* larva nerve cord (ISBI 2012, slices 16-19).

    Returns
    -------
    (4, 512, 512) uint8 ndarray
    """
    return tifffile.imread(EM_STACK_FILE)


def nuclei_image() -> np.ndarray:
    """Fluorescent nuclei (Data Science Bowl 2018 / BBBC038, image b1f23c4d27afed8a).

    Returns
    -------
    (520, 696) uint8 ndarray
    """
    return tifffile.imread(NUCLEI_FILE)


def dic_image() -> np.ndarray:
    """DIC (transmitted light) image of CHO cells (BBBC030 v1, a crop of image cho07).

    Returns
    -------
    (512, 640) uint8 ndarray
    """
    return tifffile.imread(DIC_FILE)


def em_stack_sample() -> list[LayerData]:
    """napari sample: the EM stack as an image layer named "EM stack"."""
    return [(em_stack(), {"name": "EM stack", "colormap": "gray"}, "image")]


def nuclei_sample() -> list[LayerData]:
    """napari sample: the nuclei image as an image layer named "nuclei"."""
    return [(nuclei_image(), {"name": "nuclei", "colormap": "gray"}, "image")]


def dic_sample() -> list[LayerData]:
    """napari sample: the DIC image as an image layer named "DIC cells"."""
    return [(dic_image(), {"name": "DIC cells", "colormap": "gray"}, "image")]


__all__ = [
    "dic_image",
    "dic_sample",
    "em_stack",
    "em_stack_sample",
    "nuclei_image",
    "nuclei_sample",
]

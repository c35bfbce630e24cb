"""Telling fluorescence, transmitted-light and EM images apart: synthetic cases, and every
image of the real data."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_unet.core.imagekind import (
    DARK_BACKGROUND,
    DARK_TAIL,
    SAMPLE_SIDE,
    background_level,
    dark_tail,
    image_kind,
    plane_sample,
)


def _fluorescence(rng: np.random.Generator) -> np.ndarray:
    """Bright discs on a dark, noisy background."""
    rows, cols = np.mgrid[:200, :300]
    image = rng.normal(15, 4, (200, 300))
    for r, c in rng.integers(20, 180, (12, 2)):
        image[(rows - r) ** 2 + (cols - c * 1.5) ** 2 < 150] += 180
    return np.clip(image, 0, 255).astype(np.uint8)


def _em(rng: np.random.Generator) -> np.ndarray:
    """Mid-grey grainy cells parted by dark membranes."""
    rows, cols = np.mgrid[:200, :300]
    image = rng.normal(140, 25, (200, 300))
    image[(rows % 37 < 3) | ((cols + rows // 3) % 41 < 3)] -= 90
    return np.clip(image, 0, 255).astype(np.uint8)


def _dic(rng: np.random.Generator) -> np.ndarray:
    """Cells in relief on an even grey background: one side lit, the other shadowed."""
    rows, cols = np.mgrid[:200, :300]
    image = rng.normal(100, 2, (200, 300))
    for r, c in rng.integers(20, 180, (5, 2)):  # under 1 % of the pixels in shadow
        inside = (rows - r) ** 2 + (cols - c * 1.5) ** 2 < 50
        image[inside & (rows + cols < r + c * 1.5)] += 60
        image[inside & (rows + cols >= r + c * 1.5)] -= 60
    return np.clip(image, 0, 255).astype(np.uint8)


def test_relief_on_an_even_background_is_transmitted_light(rng):
    dic, fluorescence = _dic(rng), _fluorescence(rng)
    assert background_level(dic) < DARK_BACKGROUND
    assert dark_tail(fluorescence) < DARK_TAIL <= dark_tail(dic)
    assert image_kind(dic) == "transmitted"
    assert image_kind(dic.astype(np.float32) * 40 + 7) == "transmitted"


def test_dark_background_is_fluorescence_and_grey_texture_em(rng):
    fluorescence, em = _fluorescence(rng), _em(rng)
    assert background_level(fluorescence) < DARK_BACKGROUND <= background_level(em)
    assert image_kind(fluorescence) == "fluorescence"
    assert image_kind(em) == "em"
    # Inverted contrast (dark objects on bright background) is not fluorescence.
    assert image_kind(255 - fluorescence) == "em"


def test_the_guess_ignores_scale_and_offset_of_intensities(rng):
    em = _em(rng).astype(np.float32)
    assert image_kind(em * 1000.0 - 5e4) == "em"
    fluorescence = _fluorescence(rng).astype(np.uint16) * 200 + 100
    assert image_kind(fluorescence) == "fluorescence"


def test_flat_tiny_and_nan_planes_say_nothing():
    assert image_kind(np.full((64, 64), 7, np.uint8)) is None
    assert image_kind(np.arange(16.0).reshape(4, 4)) is None
    assert image_kind(np.full((64, 64), np.nan)) is None


def test_a_plane_sample_is_small_and_from_the_middle_plane():
    stack = np.zeros((3, 1000, 700), np.uint8)
    stack[1] = 5  # the middle plane
    sample = plane_sample(stack)
    assert sample.shape[0] <= SAMPLE_SIDE and sample.shape[1] <= SAMPLE_SIDE
    assert sample.shape[0] >= SAMPLE_SIDE // 2 and np.all(sample == 5)
    assert np.shares_memory(sample, stack)  # a view: nothing copied

    lazy = da.from_array(stack, chunks=(1, 100, 100))
    crop = plane_sample(lazy)
    assert isinstance(crop, np.ndarray) and crop.shape == (SAMPLE_SIDE, SAMPLE_SIDE)
    assert np.all(crop == 5)
    assert plane_sample(np.ones((10, 12))).shape == (10, 12)


@pytest.mark.data
def test_real_em_and_nuclei_images_are_told_apart(shared_data):
    """Every ISBI 2012 EM slice reads as EM, every DSB 2018 nuclei image as fluorescence
    (the evidence for DARK_BACKGROUND; the margins are in the module's docstring)."""
    em = tifffile.imread(shared_data / "em-isbi2012" / "images.tif")
    em_levels = [background_level(plane_sample(plane)) for plane in em]
    nuclei_levels = [
        background_level(plane_sample(tifffile.imread(path)))
        for path in sorted((shared_data / "nuclei-dsb2018" / "images").glob("*.tif"))
    ]
    assert len(em_levels) == 20 and len(nuclei_levels) == 398
    assert min(em_levels) >= DARK_BACKGROUND > max(nuclei_levels)


@pytest.mark.data
def test_real_dic_images_are_transmitted_light(shared_data):
    """All 60 BBBC030 DIC images read as transmitted light, no DSB 2018 nuclei image does
    (the evidence for DARK_TAIL; the margins are in the module's docstring)."""
    dic = sorted((shared_data / "dic-cho-bbbc030").glob("*/images/*.tif"))
    nuclei = sorted((shared_data / "nuclei-dsb2018" / "images").glob("*.tif"))
    assert len(dic) == 60 and len(nuclei) == 398
    dic_tails = [dark_tail(plane_sample(tifffile.imread(path))) for path in dic]
    nuclei_tails = [dark_tail(plane_sample(tifffile.imread(path))) for path in nuclei]
    assert min(dic_tails) >= DARK_TAIL > max(nuclei_tails)
    assert {image_kind(plane_sample(tifffile.imread(path))) for path in dic} == {"transmitted"}

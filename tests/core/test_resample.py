"""Resampling to the model's scale and back: correct operators, regions exactly equal to the
whole, lazy reads of only what a region needs, over numpy, zarr, dask and lazy planes."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from napari_unet.core import resample
from napari_unet.core.io import as_planes
from napari_unet.core.resample import Resampled, axis_operator, resampled_size
from napari_unet.core.resample_back import (
    input_region,
    nearest_indices,
    tile_to_input_grid,
    to_input_grid,
)


def _reference_matrix(n: int, m: int) -> np.ndarray:
    """The (m, n) operator from its definition, in float64, by numerical integration
    (shrinking) or explicit interpolation (enlarging)."""
    matrix = np.zeros((m, n))
    for j in range(m):
        if m < n:  # area: overlap of [i, i + 1) with [j n / m, (j + 1) n / m)
            low, high = j * n / m, (j + 1) * n / m
            for i in range(n):
                matrix[j, i] = max(0.0, min(i + 1, high) - max(i, low)) / (high - low)
        elif m > n:  # linear between input centres, edges repeated
            centre = min(max((j + 0.5) * n / m - 0.5, 0.0), n - 1.0)
            left = min(int(np.floor(centre)), n - 1)
            right = min(left + 1, n - 1)
            matrix[j, left] += 1 - (centre - left)
            matrix[j, right] += centre - left
        else:
            matrix[j, j] = 1.0
    return matrix


def _dense(op) -> np.ndarray:
    matrix = np.zeros((op.size_out, op.size_in))
    for j in range(op.size_out):
        np.add.at(matrix[j], op.taps[j], op.weights[j])
    return matrix


@pytest.mark.parametrize(("n", "m"), [(10, 5), (10, 3), (7, 7), (5, 13), (3, 8), (1, 4), (9, 1)])
def test_operators_follow_their_definition(n, m):
    op = axis_operator(n, m)
    np.testing.assert_allclose(_dense(op), _reference_matrix(n, m), atol=1e-6)
    np.testing.assert_allclose(op.weights.sum(axis=1), 1.0, rtol=1e-6)  # a constant stays
    assert (np.diff(op.taps, axis=0) >= 0).all() and (np.diff(op.taps, axis=1) >= 0).all()


def test_halving_averages_two_by_two_blocks():
    image = np.random.default_rng(0).random((6, 8)).astype(np.float32)
    expected = image.reshape(3, 2, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(np.asarray(Resampled(image, 0.5)), expected, rtol=1e-6)


def test_sizes_follow_the_rounding_rule():
    assert resampled_size(101, 0.5) == 50 and resampled_size(3, 0.1) == 1
    view = Resampled(np.zeros((2, 101, 60)), (0.5, 1.5))
    assert view.shape == (2, 50, 90) and view.dtype == np.float32 and view.ndim == 3


@st.composite
def _cases(draw):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    factor = (draw(st.floats(0.1, 3.0)), draw(st.floats(0.1, 3.0)))
    view_shape = (resampled_size(height, factor[0]), resampled_size(width, factor[1]))
    key = []
    for size in view_shape:
        start = draw(st.integers(0, size - 1))
        stop = draw(st.integers(start + 1, size))
        key.append(slice(start, stop, draw(st.sampled_from([1, 1, 2, 3]))))
    return (height, width), factor, tuple(key), draw(st.integers(1, 9))


@settings(max_examples=150, deadline=None)
@given(_cases())
def test_any_region_is_bitwise_that_region_of_the_whole(case):
    (height, width), factor, key, span = case
    image = np.random.default_rng(height * 41 + width).random((2, height, width))
    whole = np.asarray(Resampled(image, factor))
    region = Resampled(image, factor)[(slice(None), *key)]
    np.testing.assert_array_equal(region, whole[(slice(None), *key)])
    # read in small blocks (as a strided subsample of a huge plane is): still bitwise equal
    original = resample.MAX_READ_SPAN
    resample.MAX_READ_SPAN = span
    try:
        np.testing.assert_array_equal(Resampled(image, factor)[(slice(None), *key)], region)
    finally:
        resample.MAX_READ_SPAN = original
    # and the whole equals the dense operators in float64 (to float32 rounding)
    rows = _reference_matrix(height, whole.shape[1])
    cols = _reference_matrix(width, whole.shape[2])
    np.testing.assert_allclose(whole, rows @ image @ cols.T, rtol=1e-5, atol=1e-6)


def test_integer_keys_negative_steps_and_ellipsis_index_like_numpy():
    image = np.random.default_rng(1).random((3, 30, 20))
    view = Resampled(image, 0.7)
    whole = np.asarray(view)
    for key in [
        (1, 5),
        (Ellipsis, 3),
        (slice(None), slice(None, None, -2), 4),
        (-1, slice(3, 9), slice(None, None, -1)),
        (Ellipsis, -1, slice(2, 5)),
    ]:
        np.testing.assert_array_equal(view[key], whole[key])


def test_the_round_trip_2x_then_back_keeps_a_smooth_image():
    noise = np.random.default_rng(0).normal(size=(90, 70))
    smooth = ndimage.gaussian_filter(noise, 6, mode="wrap")
    smooth = (smooth / np.abs(smooth).max()).astype(np.float32)
    up = Resampled(smooth, 2.0)
    back = np.asarray(Resampled(up, size=smooth.shape))
    inner = (slice(2, -2), slice(2, -2))  # edges are repeated, not extrapolated
    assert np.abs(back - smooth)[inner].max() < 0.01
    # and down then up loses only what the smooth image does not have
    down = Resampled(smooth, 0.5)
    again = np.asarray(Resampled(down, size=smooth.shape))
    assert np.abs(again - smooth)[inner].max() < 0.05


def test_other_axes_and_channels_are_untouched():
    rng = np.random.default_rng(2)
    image = rng.random((2, 3, 16, 12))  # (T, C, Y, X)
    view = np.asarray(Resampled(image, 0.5))
    for t in range(2):
        for c in range(3):
            np.testing.assert_array_equal(view[t, c], np.asarray(Resampled(image[t, c], 0.5)))
    # channels last: y and x named explicitly
    colour = np.moveaxis(image[0], 0, -1)  # (Y, X, C)
    last = np.asarray(Resampled(colour, 0.5, yx_axes=(0, 1)))
    np.testing.assert_array_equal(np.moveaxis(last, -1, 0), view[0])


class _Recording:
    """An array-like that records the windows read from it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.keys: list[tuple] = []

    def __getitem__(self, key):
        self.keys.append(key)
        return self.array[key]


def test_a_region_reads_only_the_input_under_its_taps():
    image = _Recording(np.random.default_rng(3).random((1000, 800)).astype(np.float32))
    view = Resampled(image, 0.25)
    view[100:110, 50:60]
    ((rows, cols),) = image.keys
    assert (rows.start, rows.stop) == (400, 440) and (cols.start, cols.stop) == (200, 240)
    image.keys.clear()
    Resampled(image, 2.0)[100:110, 50:60]  # enlarging: input rows 49.75..54.75
    ((rows, cols),) = image.keys
    assert (rows.start, rows.stop) == (49, 56) and (cols.start, cols.stop) == (24, 31)


def test_a_strided_subsample_of_a_huge_plane_is_read_in_bounded_blocks(monkeypatch):
    monkeypatch.setattr(resample, "MAX_READ_SPAN", 100)
    image = _Recording(np.random.default_rng(4).random((600, 500)).astype(np.float32))
    view = Resampled(image, 0.5)
    sample = view[::7, ::9]
    np.testing.assert_array_equal(sample, np.asarray(Resampled(image.array, 0.5))[::7, ::9])
    assert len(image.keys) > 1
    assert all(k.stop - k.start <= 100 + 2 for key in image.keys[1:] for k in key)


def test_zarr_dask_and_lazy_planes_give_the_numpy_result(tmp_path):
    image = np.random.default_rng(5).integers(0, 4000, (2, 50, 40)).astype(np.uint16)
    expected = np.asarray(Resampled(image, 0.6))
    stored = zarr.open_array(
        str(tmp_path / "a.zarr"), mode="w", shape=image.shape, chunks=(1, 16, 16), dtype="u2"
    )
    stored[:] = image
    planes, _ = as_planes(np.moveaxis(stored[:], 0, -1)[None], channel_axis=-1, in_channels=2)
    for source in (stored, da.from_array(image, chunks=(1, 20, 20))):
        np.testing.assert_array_equal(np.asarray(Resampled(source, 0.6)), expected)
    lazy = Resampled(planes, 0.6)  # (1, C, H, W) planes of a channels-last image
    np.testing.assert_array_equal(lazy[0, :, 3:20, 5:9], expected[:, 3:20, 5:9])
    # picklable (dask.distributed sends it to workers) with the zarr array inside
    again = pickle.loads(pickle.dumps(Resampled(stored, 0.6)))
    np.testing.assert_array_equal(again[1, 10:30], expected[1, 10:30])


def test_bool_and_integer_inputs_become_float32():
    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    view = np.asarray(Resampled(mask, 0.5))
    assert view.dtype == np.float32
    np.testing.assert_array_equal(view, np.repeat([[1.0], [1.0], [0.0], [0.0]], 4, axis=1))


# ------------------------------------------------------------- back to the input grid


def test_nearest_takes_the_model_pixel_under_each_input_centre():
    assert nearest_indices(5, 10).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert nearest_indices(10, 5).tolist() == [1, 3, 5, 7, 9]
    assert nearest_indices(2, 3).tolist() == [0, 1, 1]  # centres 1/3, 1, 5/3 model pixels


@pytest.mark.parametrize(("model_size", "input_size"), [((13, 17), (40, 30)), ((40, 30), (13, 17))])
def test_labels_keep_their_ids_and_regions_equal_the_whole(model_size, input_size):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 50, model_size).astype(np.int32)
    whole = to_input_grid(labels, input_size, kind="labels")
    assert whole.shape == input_size and whole.dtype == np.int32
    assert set(np.unique(whole)) <= set(np.unique(labels))
    if input_size[0] > model_size[0]:  # enlarged: every model pixel shows
        assert set(np.unique(whole)) == set(np.unique(labels))
    region = (slice(3, 11), slice(2, 9))
    np.testing.assert_array_equal(
        to_input_grid(labels, input_size, kind="labels", region=region), whole[region]
    )
    probabilities = rng.random((2, *model_size)).astype(np.float32)
    linear = to_input_grid(probabilities, input_size, kind="probabilities")
    assert linear.shape == (2, *input_size) and linear.dtype == np.float32
    np.testing.assert_array_equal(
        to_input_grid(probabilities, input_size, kind="probabilities", region=region),
        linear[(slice(None), *region)],
    )


def test_model_tiles_map_to_input_regions_that_tile_the_image():
    model_size, input_size = (25, 30), (61, 47)
    labels = np.random.default_rng(7).integers(0, 9, model_size).astype(np.int32)
    probabilities = ndimage.gaussian_filter(
        np.random.default_rng(8).random((1, *model_size)), (0, 3, 3)
    ).astype(np.float32)
    covered = np.zeros(input_size, int)
    whole_labels = to_input_grid(labels, input_size, kind="labels")
    whole_probabilities = to_input_grid(probabilities, input_size, kind="probabilities")
    for rows in (slice(0, 10), slice(10, 20), slice(20, 25)):
        for cols in (slice(0, 16), slice(16, 30)):
            tile = (rows, cols)
            region, data = tile_to_input_grid(
                labels[tile], tile, model_size, input_size, kind="labels"
            )
            covered[region] += 1
            np.testing.assert_array_equal(data, whole_labels[region])
            assert region == input_region(tile, model_size, input_size)
            region, preview = tile_to_input_grid(
                probabilities[(slice(None), *tile)], tile, model_size, input_size,
                kind="probabilities",
            )  # fmt: skip
            assert preview.shape == (1, *data.shape)
            # a preview from the tile alone: exact away from the tile's border
            inner = (slice(None), slice(2, -2), slice(2, -2))
            np.testing.assert_allclose(
                preview[inner], whole_probabilities[(slice(None), *region)][inner], rtol=1e-6
            )
    assert (covered == 1).all()

"""Normalisation: hand-worked stats, every dtype alike, constant planes, lazy subsampling."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest

from napari_unet.core import normalise
from napari_unet.core.errors import InputError


def test_percentile_stats_of_a_ramp_are_the_percentile_values():
    # np.percentile of 0..100 at p is exactly p (linear interpolation on 101 values)
    stats = normalise.compute_stats(np.arange(101), {"method": "percentile", "low": 1, "high": 99})
    assert stats == {"offset": 1.0, "scale": 98.0}
    np.testing.assert_allclose(normalise.apply(np.array([1, 50, 99]), stats), [0.0, 0.5, 1.0])


def test_default_spec_is_percentile_1_to_99_8():
    # 0..1000: the 1st percentile is 10, the 99.8th is 998
    stats = normalise.compute_stats(np.arange(1001).reshape(7, 143))
    assert stats == pytest.approx({"offset": 10.0, "scale": 988.0})


def test_minmax_maps_min_to_0_and_max_to_1():
    image = np.array([[0, 50], [100, 200]])
    stats = normalise.compute_stats(image, {"method": "minmax"})
    assert stats == {"offset": 0.0, "scale": 200.0}
    result = normalise.apply(image, stats)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, [[0.0, 0.25], [0.5, 1.0]])


def test_fixed_ignores_the_image():
    stats = normalise.compute_stats(
        np.array([[3, 9]]), {"method": "fixed", "offset": 0, "scale": 255}
    )
    assert stats == {"offset": 0.0, "scale": 255.0}
    np.testing.assert_allclose(
        normalise.apply(np.array([0, 51, 255], np.uint8), stats), [0, 0.2, 1]
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64])
def test_every_dtype_normalises_the_same_values_the_same(dtype):
    values = np.array([[2, 4, 6], [8, 10, 12]])
    spec = {"method": "minmax"}
    image = values.astype(dtype)
    result = normalise.apply(image, normalise.compute_stats(image, spec))
    np.testing.assert_allclose(result, (values - 2) / 10, rtol=1e-6)


def test_bool_is_zero_and_one():
    image = np.array([[True, False], [False, False]])
    stats = normalise.compute_stats(image, {"method": "minmax"})
    assert stats == {"offset": 0.0, "scale": 1.0}
    np.testing.assert_array_equal(normalise.apply(image, stats), [[1, 0], [0, 0]])


@pytest.mark.parametrize("spec", [None, {"method": "minmax"}])
def test_constant_image_normalises_to_zeros_without_dividing_by_zero(spec):
    image = np.full((4, 5), 7, np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = normalise.compute_stats(image, spec)
        result = normalise.apply(image, stats)
    assert stats == {"offset": 7.0, "scale": 1.0}
    np.testing.assert_array_equal(result, np.zeros((4, 5)))


def test_nan_and_inf_are_ignored_by_the_stats():
    image = np.array([np.nan, 1.0, 3.0, np.inf, -np.inf])
    assert normalise.compute_stats(image, {"method": "minmax"}) == {"offset": 1.0, "scale": 2.0}


def test_uint16_large_values_keep_precision():
    # float32 alone would round 60001 - 60000 badly; stats and apply work in float64
    image = np.array([60000, 60001, 60002], np.uint16)
    result = normalise.apply(image, normalise.compute_stats(image, {"method": "minmax"}))
    np.testing.assert_array_equal(result, [0.0, 0.5, 1.0])


def test_apply_does_not_modify_its_input():
    tile = np.array([[10, 20]], np.float32)
    normalise.apply(tile, {"offset": 10.0, "scale": 10.0})
    np.testing.assert_array_equal(tile, [[10, 20]])


def test_subsample_strides_the_spatial_axes():
    image = np.arange(100 * 100).reshape(100, 100)
    sample = normalise.subsample(image, max_pixels=100)
    np.testing.assert_array_equal(sample, image[::10, ::10])


class _RecordingArray:
    """A lazy array-like that records reads and refuses to be loaded whole."""

    def __init__(self, data: np.ndarray) -> None:
        self._data = data
        self.shape = data.shape
        self.dtype = data.dtype
        self.reads: list = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self._data[key]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole lazy array was loaded")


def test_huge_lazy_plane_is_read_only_through_a_strided_subsample(monkeypatch):
    monkeypatch.setattr(normalise, "MAX_STAT_PIXELS", 1000)
    data = np.arange(200 * 300, dtype=np.float64).reshape(200, 300)
    lazy = _RecordingArray(data)
    stats = normalise.compute_stats(lazy, {"method": "minmax"})
    assert len(lazy.reads) == 1
    sample = data[lazy.reads[0]]
    assert sample.size <= 1000
    # step ceil(sqrt(60000 / 1000)) = 8: the min is pixel (0, 0), the max pixel (192, 296)
    assert stats == {"offset": 0.0, "scale": 192 * 300 + 296}


def test_dask_plane_stats_match_numpy_on_small_images():
    data = np.random.default_rng(0).integers(0, 4000, (64, 80)).astype(np.uint16)
    lazy = da.from_array(data, chunks=16)
    assert normalise.compute_stats(lazy) == normalise.compute_stats(data)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"method": "zscore"}, "unknown normalisation method 'zscore'"),
        ({"method": "percentile", "low": 99, "high": 1}, "0 <= low < high <= 100"),
        ({"method": "fixed", "offset": 0}, "needs 'offset' and 'scale'"),
        ({"method": "fixed", "offset": 0, "scale": 0}, "finite non-zero scale"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(InputError, match=message):
        normalise.validate_spec(spec)


def test_validate_spec_fills_defaults():
    assert normalise.validate_spec({"method": "percentile"}) == normalise.DEFAULT_SPEC
    assert normalise.validate_spec(None) == normalise.DEFAULT_SPEC

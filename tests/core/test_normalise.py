"""Normalisation: hand-worked stats, every dtype alike, constant planes, lazy subsampling."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest

from napari_unet.core import normalise
from napari_unet.core.errors import InputError, NonFiniteWarning
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model
from napari_unet.core.segment import segment


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
    with pytest.warns(NonFiniteWarning):
        stats = normalise.compute_stats(image, {"method": "minmax"})
    assert stats == {"offset": 1.0, "scale": 2.0}


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


# ------------------------------------------------------------------ non-finite pixels


def test_apply_replaces_nan_and_inf_by_the_low_level():
    tile = np.array([[np.nan, 10.0, np.inf], [-np.inf, 30.0, 20.0]], np.float32)
    result = normalise.apply(tile, {"offset": 10.0, "scale": 20.0})
    assert normalise.NON_FINITE_VALUE == 0.0
    np.testing.assert_array_equal(result, [[0.0, 0.0, 0.0], [0.0, 1.0, 0.5]])


def test_apply_replaces_values_beyond_float32_range_too():
    # finite in float64, infinite once cast to float32: it would reach the network as inf
    result = normalise.apply(np.array([1e300, 2.0]), {"offset": 0.0, "scale": 2.0})
    np.testing.assert_array_equal(result, [0.0, 1.0])


def test_stats_count_the_non_finite_pixels_of_a_plane_in_one_warning():
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    image[0, :4] = np.nan
    image[5, 5] = np.inf
    image[9, 9] = -np.inf
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        normalise.compute_stats(image, where="plane 3")
    assert [str(w.message) for w in caught] == [
        "plane 3: 6 NaN/infinite pixels replaced by the low intensity level before segmentation"
    ]
    assert caught[0].category is NonFiniteWarning
    assert caught[0].filename == __file__  # points at the caller, not at normalise.py


def test_one_non_finite_pixel_is_singular_and_where_is_optional():
    image = np.ones((4, 4))
    image[1, 1] = np.nan
    with pytest.warns(NonFiniteWarning) as caught:
        normalise.compute_stats(image, {"method": "fixed", "offset": 0, "scale": 1})
    assert str(caught[0].message) == (
        "1 NaN/infinite pixel replaced by the low intensity level before segmentation"
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_finite_planes_do_not_warn(dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalise.compute_stats(np.arange(20, dtype=dtype).reshape(4, 5))


def test_a_lazy_plane_gets_an_estimate_from_its_subsample(monkeypatch):
    monkeypatch.setattr(normalise, "MAX_STAT_PIXELS", 1000)
    data = np.arange(200 * 300, dtype=np.float64).reshape(200, 300)
    data[:, :150] = np.nan  # the left half; the subsample (step 8) has 19 of its 38 columns
    lazy = _RecordingArray(data)
    with pytest.warns(NonFiniteWarning, match=r"^plane 0: about 30000 NaN/infinite pixels "):
        normalise.compute_stats(lazy, where="plane 0")
    assert len(lazy.reads) == 1  # still only the subsample


def test_integer_planes_are_not_read_for_the_count_with_fixed_stats():
    lazy = _RecordingArray(np.zeros((50, 50), np.uint16))
    normalise.compute_stats(lazy, {"method": "fixed", "offset": 0, "scale": 1})
    assert lazy.reads == []


@pytest.mark.parametrize(
    "spec", [None, {"method": "minmax"}, {"method": "fixed", "offset": 0, "scale": 1}]
)
@pytest.mark.parametrize("lazy", [False, True])
def test_a_plane_without_finite_pixels_is_refused_in_one_line(spec, lazy):
    image = np.full((6, 7), np.nan, np.float32)
    image[0, 0] = np.inf
    with pytest.raises(InputError) as caught:
        normalise.compute_stats(da.from_array(image) if lazy else image, spec, where="plane 2")
    assert str(caught.value) == (
        "plane 2: the image has no finite pixel values (all NaN or infinite); check how it was "
        "exported, or segment another plane or region"
    )


def test_an_empty_plane_is_not_called_non_finite():
    assert normalise.compute_stats(np.zeros((0, 5), np.float32)) == {"offset": 0.0, "scale": 1.0}


def test_nan_and_inf_pixels_never_spread_through_segmentation():
    """One +inf pixel used to turn a 112 x 112 square of probabilities into NaN."""
    model = random_model(UNetConfig(depth=2, base_width=4, padding="valid", norm="batch"), seed=1)
    image = np.random.default_rng(0).integers(0, 4000, (150, 140)).astype(np.float32)
    bad = [(75, 70), (3, 4), (140, 20), (10, 130)]
    for (row, col), value in zip(bad, [np.inf, np.nan, -np.inf, np.nan], strict=True):
        image[row, col] = value
    with pytest.warns(NonFiniteWarning) as caught:
        probabilities = segment(model, image, output="probabilities", device="cpu")
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    messages = [str(w.message) for w in caught if w.category is NonFiniteWarning]
    assert messages == [
        "4 NaN/infinite pixels replaced by the low intensity level before segmentation"
    ]
    # they are segmented as pixels at the low level: as if they had held that value
    with pytest.warns(NonFiniteWarning):
        stats = normalise.compute_stats(image)
    clean = np.where(np.isfinite(image), image, stats["offset"]).astype(np.float32)
    expected = segment(model, clean, output="probabilities", device="cpu")
    np.testing.assert_allclose(probabilities, expected, atol=1e-3)

"""Overlap-tile geometry, lazy mirrored reads and stitching (core/tiling.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_unet.core.errors import InputError
from napari_unet.core.events import TileDone
from napari_unet.core.model import SMALL, UNet, UNetConfig, is_valid_input_size, margin
from napari_unet.core.tiling import (
    AxisTiles,
    default_tile_size,
    iter_tiles,
    plan_tiles,
    predict_plane,
    read_region,
    reflect_indices,
    round_tile_size,
    smallest_tile_size,
)

TINY_VALID = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")
TINY_SAME = TINY_VALID.with_(padding="same")


def plus_one_same(x: np.ndarray) -> np.ndarray:
    """Position-equivariant fake ``same`` predictor (MONAI's ``lambda x: x + 1``)."""
    return x + 1


def plus_one_valid(m: int):
    """Position-equivariant fake ``valid`` predictor: crops ``m`` px per side, adds one."""

    def predict(x: np.ndarray) -> np.ndarray:
        return x[..., m:-m, m:-m] + 1

    return predict


def torch_predictor(net: UNet):
    net.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()

    return predict


def whole_image_reference(image: np.ndarray, net: UNet, config: UNetConfig, context: int):
    """One forward pass over the image mirror-padded by ``context`` to a valid size."""
    height, width = image.shape[-2:]
    step = 2**config.depth

    def padded_length(size: int) -> int:
        total = size + 2 * context
        while not is_valid_input_size(config, total) or total - 2 * margin(config) < size:
            total += 1
        assert (total - size - 2 * context) < 2 * step + 8
        return total

    pad_rows = padded_length(height) - height - context
    pad_cols = padded_length(width) - width - context
    padded = np.pad(image, ((context, pad_rows), (context, pad_cols)), mode="symmetric")
    probs = torch_predictor(net)(padded[None, None].astype(np.float32))[0]
    offset = context - margin(config)
    return probs[:, offset : offset + height, offset : offset + width]


# --- mirroring -------------------------------------------------------------------------


def test_reflect_indices_hand_worked():
    assert reflect_indices(-3, 6, 3).tolist() == [2, 1, 0, 0, 1, 2, 2, 1, 0]
    assert reflect_indices(0, 3, 3).tolist() == [0, 1, 2]
    assert reflect_indices(-2, 3, 1).tolist() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("size", "before", "after"), [(20, 92, 100), (5, 0, 3), (1, 4, 4), (7, 30, 1)]
)
def test_reflect_indices_match_numpy_symmetric_pad_even_when_wider_than_image(size, before, after):
    axis = np.arange(size)
    expected = np.pad(axis, (before, after), mode="symmetric")
    assert np.array_equal(axis[reflect_indices(-before, size + after, size)], expected)


def test_read_region_mirrors_a_tiny_image_beyond_its_size(rng):
    image = rng.random((20, 30)).astype(np.float32)
    expected = np.pad(image, ((92, 100), (92, 98)), mode="symmetric")
    assert np.array_equal(read_region(image, (-92, 120), (-92, 128)), expected)


def test_read_region_keeps_leading_channel_axis(rng):
    image = rng.random((3, 10, 12))
    region = read_region(image, (-2, 5), (8, 15))
    expected = np.pad(image, ((0, 0), (2, 0), (0, 3)), mode="symmetric")[:, 0:7, 8:15]
    assert np.array_equal(region, expected)


class RecordingArray:
    """An array-like that records every slice read from it (like a lazy zarr source)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.reads: list[tuple[slice, ...]] = []

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]


def test_read_region_reads_only_the_bounding_box_of_the_mirrored_window(rng):
    source = RecordingArray(rng.random((100, 200)))
    read_region(source, (-5, 20), (150, 210))
    ((rows, cols),) = source.reads
    # rows -5..-1 mirror to 4..0, so rows 0..19; cols 200..209 mirror to 199..190.
    assert (rows.start, rows.stop) == (0, 20)
    assert (cols.start, cols.stop) == (150, 200)


# --- geometry --------------------------------------------------------------------------


def test_plan_tiles_small_preset_2048_is_two_by_two_tiles_of_1212():
    grid = plan_tiles((2048, 2048), SMALL, tile_size=1212)
    axis = AxisTiles(size=2048, stride=1024, context=92, input_size=1212, output_size=1028, count=2)
    assert grid.rows == axis and grid.cols == axis
    assert grid.total == 4
    assert grid.region(3) == (slice(1024, 2048), slice(1024, 2048))
    assert grid.read_window(1) == ((-92, 1120), (932, 2144))


def test_plan_tiles_adapts_stride_to_minimise_waste():
    # 2049 px with at most 1024 px stride: 3 tiles; ceil(2049 / 3) = 683 -> stride 688
    # (next multiple of 16), input 688 + 2 * 92 + 4 = 876.
    rows = plan_tiles((2049, 64), SMALL, tile_size=1212).rows
    assert (rows.count, rows.stride, rows.input_size, rows.output_size) == (3, 688, 876, 692)
    assert rows.kept(2) == slice(1376, 2049)


def test_plan_tiles_axes_are_independent():
    grid = plan_tiles((300, 1000), SMALL, tile_size=(1212, 500))
    # cols: max stride (500 - 188) // 16 * 16 = 304 -> 4 tiles of stride 256, input 444.
    assert (grid.rows.count, grid.rows.stride, grid.rows.input_size) == (1, 304, 492)
    assert (grid.cols.count, grid.cols.stride, grid.cols.input_size) == (4, 256, 444)
    assert is_valid_input_size(SMALL, 444) and is_valid_input_size(SMALL, 492)


def test_plan_tiles_image_smaller_than_a_tile_is_one_mirrored_tile():
    grid = plan_tiles((20, 30), SMALL)
    assert grid.total == 1
    assert grid.input_shape == (220, 220)  # 32 + 2 * 92 + 4
    assert grid.region(0) == (slice(0, 20), slice(0, 30))


def test_plan_tiles_same_network_rounds_halo_to_pooling_grid():
    grid = plan_tiles((500, 500), SMALL.with_(padding="same"), tile_size=256, halo=10)
    rows = grid.rows
    assert (rows.context, rows.stride, rows.count, rows.input_size) == (16, 176, 3, 208)
    assert rows.out_offset == 16 and rows.output_size == rows.input_size


@pytest.mark.parametrize("shape", [(1, 1), (301, 517), (17, 400), (1000, 33)])
@pytest.mark.parametrize("config", [TINY_VALID, TINY_SAME, SMALL])
def test_tile_regions_partition_the_image(shape, config):
    grid = plan_tiles(shape, config, tile_size=300)
    cover = np.zeros(shape, dtype=int)
    for index in range(grid.total):
        cover[grid.region(index)] += 1
    assert (cover == 1).all()
    assert all(is_valid_input_size(config, s) for s in grid.input_shape)


def test_plan_tiles_rejects_too_small_tile_with_the_minimum():
    with pytest.raises(InputError, match=r"tile size 150 is too small.*use at least 204"):
        plan_tiles((100, 100), SMALL, tile_size=150)


def test_plan_tiles_rejects_wrong_channels():
    with pytest.raises(InputError, match=r"expects 1 channel.*shape \(3, 10, 10\)"):
        plan_tiles((3, 10, 10), SMALL)
    with pytest.raises(InputError, match="expects 2 channels but the image is 2D"):
        plan_tiles((10, 10), SMALL.with_(in_channels=2))
    with pytest.raises(InputError, match="one plane"):
        plan_tiles((2, 1, 10, 10), SMALL)


def test_round_tile_size():
    assert round_tile_size(SMALL, 1212) == (1212, None)
    size, message = round_tile_size(SMALL, 1000)
    assert size == 1004 and is_valid_input_size(SMALL, 1004)
    assert "tile size 1000 is not valid" in message and "using 1004" in message
    # Below the smallest usable tile, one message: the planner's own, never "using 188"
    # followed by "188 too small".
    with pytest.raises(InputError, match=r"tile size 10 is too small .* use at least 204$"):
        round_tile_size(SMALL, 10)
    assert smallest_tile_size(SMALL) == 204
    assert plan_tiles((500, 500), SMALL, tile_size=204).rows.input_size == 204
    with pytest.raises(InputError, match=r"tile size 203 is too small .* use at least 204$"):
        plan_tiles((500, 500), SMALL, tile_size=203)
    assert round_tile_size(SMALL.with_(padding="same"), 1000) == (
        992,
        "tile size 1000 is not valid for this same U-Net of depth 4 (it must be a multiple "
        "of 2**depth, at least 144); using 992",
    )


def test_default_tile_size_is_valid():
    for config in (SMALL, SMALL.with_(padding="same"), TINY_VALID):
        assert is_valid_input_size(config, default_tile_size(config))


# --- stitching with fake predictors ------------------------------------------------------


@pytest.mark.parametrize("shape", [(301, 517), (3, 301, 517), (5, 7)])
def test_same_grid_stitches_plus_one_exactly(rng, shape):
    image = rng.random(shape).astype(np.float32)
    config = TINY_SAME.with_(in_channels=shape[0] if len(shape) == 3 else 1)
    grid = plan_tiles(shape, config, tile_size=64, halo=8)
    result = predict_plane(image, plus_one_same, grid, batch_size=3)
    expected = image + 1 if image.ndim == 3 else (image + 1)[None]
    assert result.dtype == np.float32
    assert np.array_equal(result, expected)


def test_valid_grid_stitches_plus_one_exactly(rng):
    image = rng.random((301, 517)).astype(np.float32)
    grid = plan_tiles(image.shape, SMALL, tile_size=300)
    assert grid.total > 4
    result = predict_plane(image, plus_one_valid(92), grid)
    assert np.array_equal(result[0], image + 1)


def test_iter_tiles_yields_one_event_per_tile(rng):
    image = rng.random((100, 150)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY_SAME, tile_size=48, halo=8)
    events = list(iter_tiles(image, plus_one_same, grid, plane=4, batch_size=2))
    assert len(events) == grid.total == 4 * 5
    assert all(isinstance(e, TileDone) and e.plane == 4 and e.total == grid.total for e in events)
    assert [e.index for e in events] == list(range(grid.total))
    for event in events:
        rows, cols = event.region
        assert event.data.shape == (1, rows.stop - rows.start, cols.stop - cols.start)
        assert np.array_equal(event.data[0], image[rows, cols] + 1)


def test_transform_is_applied_to_each_tile(rng):
    image = rng.random((90, 70)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY_SAME, tile_size=48, halo=8)
    result = predict_plane(image, plus_one_same, grid, transform=lambda t: 2 * t - 1)
    np.testing.assert_allclose(result[0], 2 * image, rtol=0, atol=1e-6)


def test_predict_plane_writes_into_memmap_and_zarr(rng, tmp_path):
    image = rng.random((80, 120)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY_SAME, tile_size=48, halo=8)
    memmap = np.lib.format.open_memmap(tmp_path / "p.npy", "w+", np.float32, (1, 80, 120))
    assert predict_plane(image, plus_one_same, grid, out=memmap) is memmap
    assert np.array_equal(np.load(tmp_path / "p.npy")[0], image + 1)
    source = zarr.create_array(tmp_path / "in.zarr", shape=image.shape, chunks=(32, 32), dtype="f4")
    source[:] = image
    out = zarr.create_array(
        tmp_path / "out.zarr", shape=(1, 80, 120), chunks=(1, 32, 32), dtype="f4"
    )
    predict_plane(source, plus_one_same, grid, out=out)
    assert np.array_equal(out[0], image + 1)


def test_predict_plane_rejects_mismatched_out_and_predictor(rng):
    image = rng.random((40, 40)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY_SAME, tile_size=48, halo=8)
    with pytest.raises(InputError, match=r"out has shape \(2, 40, 40\)"):
        predict_plane(image, plus_one_same, grid, out=np.zeros((2, 40, 40), np.float32))
    with pytest.raises(InputError, match="predictor returned shape"):
        predict_plane(image, plus_one_valid(2), grid)
    with pytest.raises(InputError, match="does not match the tile grid"):
        predict_plane(image[:30], plus_one_same, grid)


# --- the real network ---------------------------------------------------------------------


def test_valid_unet_tiled_equals_whole_image():
    net = UNet(TINY_VALID).eval()
    image = np.random.default_rng(1).random((301, 517)).astype(np.float32)
    grid = plan_tiles(image.shape, TINY_VALID, tile_size=120)
    assert grid.rows.count >= 3 and grid.cols.count >= 5
    tiled = predict_plane(image, torch_predictor(net), grid, batch_size=2)
    whole = whole_image_reference(image, net, TINY_VALID, margin(TINY_VALID))
    assert np.abs(tiled - whole).max() <= 1e-5


def test_small_preset_tiled_equals_whole_image_with_stride_not_multiple_of_output():
    # SMALL: outputs are 16k + 4 px; the stride is a multiple of 16 so pooling grids align.
    net = UNet(SMALL).eval()
    image = np.random.default_rng(2).random((301, 517)).astype(np.float32)
    grid = plan_tiles(image.shape, SMALL, tile_size=(300, 400))
    assert grid.total >= 4
    tiled = predict_plane(image, torch_predictor(net), grid)
    whole = whole_image_reference(image, net, SMALL, margin(SMALL))
    assert np.abs(tiled - whole).max() <= 1e-5


def test_same_unet_tiled_has_no_seams_in_the_interior():
    net = UNet(TINY_SAME).eval()
    image = np.random.default_rng(3).random((150, 230)).astype(np.float32)
    whole = whole_image_reference(image, net, TINY_SAME, 32)
    # A halo beyond the receptive field: tiles equal the whole mirrored image.
    wide = plan_tiles(image.shape, TINY_SAME, tile_size=128, halo=32)
    assert wide.total > 4
    tiled_wide = predict_plane(image, torch_predictor(net), wide)
    assert np.abs(tiled_wide - whole).max() <= 1e-5
    # The default (smaller) halo: differences stay small everywhere, so no visible seams.
    narrow = plan_tiles(image.shape, TINY_SAME, tile_size=64)
    tiled = predict_plane(image, torch_predictor(net), narrow)
    assert np.abs(tiled - whole).max() < 1e-2

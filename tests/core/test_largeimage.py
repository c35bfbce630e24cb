"""Large images: lazy inputs, OME-Zarr output, block-wise segmentation equal to segment(),
bounded memory, and interrupt + resume."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.events import Progress, ScaleChosen, TileDone
from napari_unet.core.largeimage import (
    BlockStore,
    finish_labels,
    full_resolution,
    open_image,
    open_output_store,
    plan_blocks,
    segment_blocks_iter,
    segment_to_zarr,
)
from napari_unet.core.model import UNetConfig, margin
from napari_unet.core.modelfile import random_model
from napari_unet.core.segment import SegmentOptions, segment
from recorded_reads import RecordedReads

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
#: Valid for TINY (20 px margin): strides of at most 84 px; 256 px blocks are 3 x 3 tiles.
TILE = 124


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=1, name="tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    noise = np.random.default_rng(0).normal(size=(600, 700))
    return ndimage.gaussian_filter(noise, 6).astype(np.float32)


@pytest.fixture(scope="module")
def threshold(model, image) -> float:
    # An untrained network's output is nearly constant; thresholding at its median
    # still gives hundreds of objects, many cut by block borders.
    probabilities = segment(model, image, tile_size=TILE, output="probabilities")
    return float(np.median(probabilities[1]))


def _drain(generator):
    while True:
        try:
            next(generator)
        except StopIteration as finished:
            return finished.value


# ------------------------------------------------------------- lazy inputs


def test_full_resolution_takes_level_zero_of_multiscale_data():
    levels = [np.zeros((8, 8)), np.zeros((4, 4)), np.zeros((2, 2))]
    assert full_resolution(levels) is levels[0]
    assert full_resolution(tuple(levels)) is levels[0]
    assert full_resolution(levels[1]) is levels[1]
    assert full_resolution(levels, multiscale=False) is levels
    with pytest.raises(InputError, match="no levels"):
        full_resolution([], multiscale=True)


def test_ome_zarr_round_trip_with_valid_multiscales_metadata(tmp_path):
    data = np.arange(30 * 40, dtype=np.int32).reshape(30, 40)
    array = open_output_store(tmp_path / "out.zarr", data.shape, np.int32, (16, 16))
    array[:] = data
    root = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    (multiscale,) = root.attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [axis["name"] for axis in multiscale["axes"]] == ["y", "x"]
    assert all(axis["type"] == "space" for axis in multiscale["axes"])
    (dataset,) = multiscale["datasets"]
    assert dataset["path"] == "0"
    assert dataset["coordinateTransformations"] == [{"type": "scale", "scale": [1.0, 1.0]}]
    assert (tmp_path / "out.zarr" / ".zgroup").is_file()  # NGFF 0.4 is zarr format 2
    back = open_image(tmp_path / "out.zarr")
    assert back.chunks == (16, 16)
    np.testing.assert_array_equal(back[:], data)


def test_open_image_takes_the_first_dataset_of_an_ome_zarr_pyramid(tmp_path):
    root = zarr.open_group(str(tmp_path / "pyramid.zarr"), mode="w", zarr_format=2)
    root.create_array("s1", shape=(5, 5), dtype="u1")[:] = 1
    root.create_array("s0", shape=(10, 10), dtype="u1")[:] = 7
    datasets = [{"path": "s0"}, {"path": "s1"}]
    root.attrs["multiscales"] = [{"version": "0.4", "datasets": datasets}]
    image = open_image(tmp_path / "pyramid.zarr")
    assert image.shape == (10, 10) and int(image[3, 3]) == 7


def test_open_image_reads_a_plain_zarr_array_and_a_tiff_lazily(tmp_path):
    import tifffile

    data = np.random.default_rng(1).integers(0, 9, (50, 60), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=data.shape, dtype="u1")[:] = data
    np.testing.assert_array_equal(open_image(tmp_path / "plain.zarr")[:], data)
    tifffile.imwrite(tmp_path / "tiled.tif", data, tile=(16, 16))
    lazy = open_image(tmp_path / "tiled.tif")
    assert isinstance(lazy, zarr.Array)
    np.testing.assert_array_equal(lazy[10:20, 30:35], data[10:20, 30:35])


def test_a_zarr_group_without_arrays_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match="zarr group without image arrays"):
        open_image(tmp_path / "empty.zarr")
    with pytest.raises(InputError, match="input file not found"):
        open_image(tmp_path / "absent.zarr")


# ---------------------------------------------------------------- blocks


def test_blocks_are_whole_tiles_on_the_pooling_grid_and_tile_the_plane():
    plan = plan_blocks((600, 700), TINY, planes=2, tile_size=TILE, block_size=256)
    step = 2**TINY.depth
    # 600 / 700 px in tiles of at most 84 px: 8 tiles of 76 rows, 9 of 80 columns
    assert (plan.grid.rows.stride, plan.grid.cols.stride) == (76, 80)
    assert plan.block_shape == (228, 240)  # 3 x 3 tiles
    covered = np.zeros((2, 600, 700), int)
    for block in plan.blocks:
        assert block.rows.start % step == 0 and block.cols.start % step == 0
        covered[block.plane, block.rows, block.cols] += 1
        for tile in block.tiles:
            rows, cols = plan.grid.region(tile)
            assert block.rows.start <= rows.start and rows.stop <= block.rows.stop
            assert block.cols.start <= cols.start and cols.stop <= block.cols.stop
    assert (covered == 1).all()
    assert sum(len(b.tiles) for b in plan.blocks) == 2 * plan.grid.total
    assert plan.seams == ([228, 456], [240, 480])


@pytest.mark.parametrize("output", ["labels", "mask", "probabilities"])
def test_block_wise_equals_segment(tmp_path, model, image, threshold, output):
    options = SegmentOptions(output=output, tile_size=TILE, threshold=threshold, min_size=4)
    expected = segment(model, image, options=options)
    result = segment_to_zarr(model, image, tmp_path / "o.zarr", options=options, block_size=256)
    if output == "labels":
        assert expected.max() > 50  # many objects, some cut by the block seams
    np.testing.assert_array_equal(result[:], expected)
    assert result.dtype == expected.dtype


def test_a_stack_is_segmented_plane_by_plane(tmp_path, model, image, threshold):
    stack = np.stack([image[:300, :350], image[300:, 350:] * 3])
    options = SegmentOptions(tile_size=TILE, threshold=threshold)
    expected = segment(model, stack, options=options)
    result = segment_to_zarr(model, stack, tmp_path / "s.zarr", options=options, block_size=170)
    np.testing.assert_array_equal(result[:], expected)
    axes = zarr.open_group(str(tmp_path / "s.zarr")).attrs["multiscales"][0]["axes"]
    assert [axis["name"] for axis in axes] == ["z", "y", "x"]


class RecordingArray:
    """An array-like that records every region read and refuses to be read whole."""

    def __init__(self, data: np.ndarray, max_pixels: int) -> None:
        self.data, self.max_pixels = data, max_pixels
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.largest = 0

    def __getitem__(self, key):
        region = self.data[key]
        self.largest = max(self.largest, region.size)
        if region.size > self.max_pixels:
            raise AssertionError(f"read {region.shape}: more than a tile window")
        return region

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole image was materialised")


def test_the_image_is_read_one_tile_window_at_a_time(
    tmp_path, model, image, threshold, monkeypatch
):
    from napari_unet.core import normalise

    # Stats come from a strided subsample: make it smaller than a tile for this image.
    monkeypatch.setattr(normalise, "MAX_STAT_PIXELS", 2_000)
    source = RecordingArray(image, max_pixels=TILE * TILE)
    options = SegmentOptions(tile_size=TILE, threshold=threshold)
    result = segment_to_zarr(model, source, tmp_path / "r.zarr", options=options, block_size=256)
    assert 0 < source.largest <= TILE * TILE
    np.testing.assert_array_equal(result[:], segment(model, image, options=options))


@pytest.mark.slow  # ~10-20 s: 36 Mpx through a tiny network on one thread
def test_an_image_larger_than_the_memory_budget_is_segmented_with_bounded_memory(tmp_path, model):
    size = 6000
    # A smooth float32 image generated block by block: 144 MB if materialised.
    image = da.fromfunction(
        lambda r, c: (np.sin(r / 37.0) * np.cos(c / 23.0)).astype(np.float32),
        shape=(size, size),
        chunks=(1000, 1000),
        dtype=np.float32,
    )
    image_bytes = size * size * 4
    options = SegmentOptions(output="labels", tile_size=508, threshold=0.5)
    tracemalloc.start()
    try:
        result = segment_to_zarr(
            model, image, tmp_path / "big.zarr", options=options, block_size=1024
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.shape == (size, size)
    assert peak < image_bytes / 3, f"peak {peak / 2**20:.0f} MiB, image {image_bytes / 2**20:.0f}"
    plan = plan_blocks((size, size), TINY, tile_size=508, block_size=1024)
    assert len(BlockStore(tmp_path / "big.zarr").done()) == len(plan.blocks) == 49
    # The untrained network calls every pixel foreground at 0.5: one object spanning all
    # 49 blocks must come out as the single id 1 after the merge.
    assert (result[::97, ::97] == 1).all()


# -------------------------------------------------------- interrupt, resume


def test_interrupted_run_is_readable_and_resume_gives_the_uninterrupted_result(
    tmp_path, model, image, threshold
):
    options = SegmentOptions(tile_size=TILE, threshold=threshold, min_size=3)
    expected = segment(model, image, options=options)
    path = tmp_path / "resume.zarr"
    run = segment_blocks_iter(model, image, path, options=options, block_size=256)
    finished = 0
    for event in run:
        assert isinstance(event, (TileDone, Progress))
        if isinstance(event, Progress) and event.message == "blocks":
            finished += 1
            if finished == 3:
                break
    run.close()  # what Cancel (or Ctrl+C) does
    store = BlockStore(path)
    assert sorted(store.done()) == ["p0_r0_c0", "p0_r0_c1", "p0_r0_c2"]
    partial = open_image(path)[:]  # readable: the finished blocks, local ids
    assert (partial[:228] > 0).any() and not partial[228:].any()
    # before the merge: block-local ids, small objects not yet removed
    mask = segment(model, image, tile_size=TILE, threshold=threshold, output="mask")
    np.testing.assert_array_equal(partial[:228] > 0, mask[:228] > 0)
    assert store.run_record()["complete"] is False

    resumed = segment_blocks_iter(model, image, path, options=options, block_size=256, resume=True)
    tiles = sum(isinstance(event, TileDone) for event in resumed)
    plan = plan_blocks(image.shape, TINY, tile_size=TILE, block_size=256)
    assert tiles == sum(len(b.tiles) for b in plan.blocks[3:])  # finished blocks skipped
    np.testing.assert_array_equal(open_image(path)[:], expected)
    assert store.run_record()["complete"] is True


def test_label_merge_is_idempotent(tmp_path, model, image, threshold):
    options = SegmentOptions(tile_size=TILE, threshold=threshold)
    path = tmp_path / "m.zarr"
    result = segment_to_zarr(model, image, path, options=options, block_size=256)
    first = result[:]
    plan = plan_blocks(image.shape, TINY, tile_size=TILE, block_size=256)
    for _ in finish_labels(BlockStore(path), plan):
        pass
    np.testing.assert_array_equal(open_image(path)[:], first)


def test_resume_refuses_a_store_written_with_other_settings(tmp_path, model, image, threshold):
    path = tmp_path / "x.zarr"
    options = SegmentOptions(tile_size=TILE, threshold=threshold)
    segment_to_zarr(model, image, path, options=options, block_size=256)
    other = SegmentOptions(tile_size=TILE, threshold=0.9)
    with pytest.raises(InputError, match=r"cannot resume .* different threshold"):
        segment_to_zarr(model, image, path, options=other, block_size=256, resume=True)


def test_linking_is_refused_block_wise_and_whole_plane_labelling_is_not(tmp_path, model, image):
    stack = np.stack([image[:200, :200]] * 2)
    with pytest.raises(
        InputError, match=r"linking labels through z .* not available for block-wise"
    ):
        segment_to_zarr(model, stack, tmp_path / "w.zarr", options=SegmentOptions(link=True))
    assert not (tmp_path / "w.zarr").exists()  # refused before any work
    whole_plane = SegmentOptions(split_touching=True, fill_boundaries=True, tile_size=TILE)
    result = segment_to_zarr(model, stack, tmp_path / "s.zarr", options=whole_plane)
    np.testing.assert_array_equal(result[:], segment(model, stack, options=whole_plane))


# ------------------------------------------------------- at the model's scale


@pytest.fixture(scope="module")
def scaled(model):
    """The tiny model recording objects of 10 px (so a diameter resamples the image)."""
    return replace(model, object_diameter=10.0)


@pytest.mark.parametrize(
    ("output", "diameter"),
    [("labels", 16.0), ("labels", 7.0), ("mask", 7.0), ("probabilities", 16.0)],
)
def test_block_wise_equals_in_memory_at_the_model_scale(
    tmp_path, scaled, image, threshold, output, diameter
):
    options = SegmentOptions(
        output=output, tile_size=TILE, threshold=threshold, min_size=4, diameter=diameter
    )
    expected = segment(scaled, image, options=options)
    run = segment_blocks_iter(scaled, image, tmp_path / "o.zarr", options=options, block_size=128)
    events = []
    try:
        while True:
            events.append(next(run))
    except StopIteration as finished:
        result = finished.value
    assert isinstance(events[0], ScaleChosen) and events[0].choice.factor == 10 / diameter
    classes = (2,) if output == "probabilities" else ()
    assert result.shape == expected.shape == (*classes, 600, 700)
    if output == "labels":
        assert expected.max() > 20
    np.testing.assert_array_equal(result[:], expected)
    # tiles are reported on the image's grid
    covered = np.zeros(image.shape, int)
    for event in events:
        if isinstance(event, TileDone):
            covered[event.region] += 1
    assert (covered == 1).all()
    record = BlockStore(tmp_path / "o.zarr").run_record()
    assert record["scale"]["factor"] == [10 / diameter] * 2 and record["complete"]
    assert record["scale"]["source"] == "diameter"


def test_resume_continues_at_the_same_scale_and_refuses_another(tmp_path, scaled, image, threshold):
    options = SegmentOptions(tile_size=TILE, threshold=threshold, diameter=16)
    expected = segment(scaled, image, options=options)
    path = tmp_path / "r.zarr"
    run = segment_blocks_iter(scaled, image, path, options=options, block_size=128)
    blocks = 0
    for event in run:
        blocks += isinstance(event, Progress) and event.message == "blocks"
        if blocks == 2:
            break
    run.close()
    for other in (replace(options, diameter=20), replace(options, diameter=None)):
        with pytest.raises(InputError, match=r"cannot resume .* written at scale x0\.625") as error:
            segment_to_zarr(scaled, image, path, options=other, block_size=128, resume=True)
        assert "\n" not in str(error.value) and "--diameter" in str(error.value)
    result = segment_to_zarr(scaled, image, path, options=options, block_size=128, resume=True)
    np.testing.assert_array_equal(result[:], expected)


def _faithful_predictor(batch: np.ndarray) -> np.ndarray:
    """Foreground where the normalised tile is above one half: objects keep their size."""
    crop = margin(TINY)
    foreground = (batch[:, 0, crop:-crop, crop:-crop] > 0.5).astype(np.float32)
    return np.stack([1 - foreground, foreground], axis=1)


def test_auto_reads_only_a_central_crop_before_choosing(tmp_path, model):
    rows, cols = np.indices((900, 800))
    spots = np.sin(rows / 9.0) * np.sin(cols / 9.0) > 0.5  # round spots ~ 20 px across
    source = RecordedReads(spots.astype(np.float32))
    run = segment_blocks_iter(
        replace(model, object_diameter=10.0),
        source,
        tmp_path / "a.zarr",
        options=SegmentOptions(tile_size=TILE),
        predictor=_faithful_predictor,
    )
    choice = next(run).choice
    run.close()
    assert [(k.start, k.stop) for k in source.keys[0]] == [(90, 810), (40, 760)]  # the crop
    assert choice.source == "auto" and 15 < choice.measured_diameter < 25
    assert choice.factor_yx[0] == pytest.approx(10 / choice.measured_diameter)
    assert "a central 720 x 720 px crop, seen at x0.5" in choice.reason


def test_memory_stays_bounded_at_the_model_scale(tmp_path, model):
    size = 4000
    stored = zarr.open_array(
        str(tmp_path / "in.zarr"), mode="w", shape=(size, size), chunks=(500, 500), dtype="f4"
    )
    for r in range(0, size, 500):  # smooth, compressible: 64 MB decompressed
        rows = np.arange(r, r + 500)[:, None]
        stored[r : r + 500] = (np.sin(rows / 37.0) * np.cos(np.arange(size) / 23.0)).astype("f4")
    image_bytes = size * size * 4
    options = SegmentOptions(tile_size=TILE, threshold=0.5, diameter=40)  # x0.25
    tracemalloc.start()
    try:
        result = segment_to_zarr(
            replace(model, object_diameter=10.0), stored, tmp_path / "o.zarr", options=options,
            block_size=256,
        )  # fmt: skip
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.shape == (size, size)
    assert peak < image_bytes / 4, f"peak {peak / 2**20:.0f} MiB, image {image_bytes / 2**20:.0f}"
    # the untrained network calls every pixel foreground at 0.5: one object everywhere
    assert (result[::97, ::97] == 1).all()


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_the_store_keeps_the_calibration_given(tmp_path, model, image, output):
    from napari_unet.core.calibration import Calibration, PixelSize, read_calibration

    pixel = PixelSize(0.325, 0.325, "µm")
    calibration = Calibration.from_pixel_size(pixel, "yx")
    if output == "probabilities":
        calibration = calibration.for_result(None, classes=2)
    options = SegmentOptions(output=output, tile_size=TILE, pixel_size=pixel)
    segment_to_zarr(model, image, tmp_path / "c.zarr", options=options, calibration=calibration)
    back = read_calibration(tmp_path / "c.zarr")
    assert back.pixel_size == pixel
    assert back.axes == ("cyx" if output == "probabilities" else "yx")


@pytest.mark.parametrize("output", ["labels", "probabilities"])
def test_a_stack_is_resampled_plane_by_plane_block_wise(tmp_path, scaled, image, output):
    stack = np.stack([image[:300, :350], image[300:, 350:] * 3])
    options = SegmentOptions(output=output, tile_size=TILE, diameter=14.0)  # x0.71
    expected = segment(scaled, stack, options=options)
    result = segment_to_zarr(scaled, stack, tmp_path / "s.zarr", options=options, block_size=100)
    np.testing.assert_array_equal(result[:], expected)


# ------------------------------------------------ whole-plane labelling, resume


def test_an_interrupted_plane_labelling_is_finished_on_resume(tmp_path, model, image, threshold):
    options = SegmentOptions(
        tile_size=TILE, threshold=threshold, split_touching=True, fill_boundaries=True, min_size=5
    )
    path = tmp_path / "f.zarr"
    run = segment_blocks_iter(model, image, path, options=options, block_size=256)
    labelling = 0
    for event in run:
        if isinstance(event, Progress) and "of plane 0" in event.message:
            labelling += 1
            if labelling == 12:  # all blocks labelled, halfway through numbering them
                break
    run.close()
    store = BlockStore(path)
    assert len(store.done()) == 9 and store.run_record()["complete"] is False
    resumed = segment_blocks_iter(model, image, path, options=options, block_size=256, resume=True)
    events = list(resumed)
    assert not any(isinstance(e, TileDone) for e in events)  # no block computed again
    result = open_image(path)
    expected = segment_to_zarr(model, image, tmp_path / "u.zarr", options=options, block_size=256)
    np.testing.assert_array_equal(result[:], expected[:])
    assert store.run_record()["complete"] is True
    assert any("numbering labels" in getattr(e, "message", "") for e in events)


def test_resume_refuses_a_store_of_the_old_per_block_labels(tmp_path, model, image, threshold):
    options = SegmentOptions(tile_size=TILE, threshold=threshold)
    path = tmp_path / "old.zarr"
    run = segment_blocks_iter(model, image, path, options=options, block_size=256)
    next(run)
    run.close()
    root = zarr.open_group(str(path), mode="r+", zarr_format=2)
    record = dict(root.attrs)["napari_unet"]
    del record["postprocess"]  # as written before plane labelling existed
    root.attrs["napari_unet"] = record
    with pytest.raises(OutputError, match=r"cannot resume .* older napari-unet.* --overwrite"):
        segment_to_zarr(model, image, path, options=options, block_size=256, resume=True)


def test_a_resampled_run_labels_whole_planes_on_the_model_grid(tmp_path, scaled, image, threshold):
    options = SegmentOptions(
        tile_size=TILE,
        threshold=threshold,
        diameter=16,
        split_touching=True,
        fill_boundaries=True,
        min_size=4,
    )
    expected = segment(scaled, image, options=options)
    result = segment_to_zarr(scaled, image, tmp_path / "s.zarr", options=options, block_size=128)
    assert BlockStore(tmp_path / "s.zarr", model_grid=True).mask().shape != image.shape
    error = adapted_rand_error(expected, result[:])[0]
    assert error <= 0.005, error

"""The one pipeline: the block-wise and in-memory paths of pipeline.run give the same
results through the same tile loop; the sink chooses the path; a numpy result too large
for memory is refused in one line naming the .zarr alternative."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage

from napari_unet.core import memory
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, Progress, TileDone
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model
from napari_unet.core.options import SegmentOptions
from napari_unet.core.pipeline import StoreTarget, run, run_kind

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
#: Valid for TINY: 84 px strides, so 256 px blocks are 3 x 3 tiles and the 600 x 700
#: image below is 3 x 3 blocks.
TILE = 124
BLOCK = 256


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=1, name="tiny")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    noise = np.random.default_rng(3).normal(size=(600, 700))
    return ndimage.gaussian_filter(noise, 6).astype(np.float32)


@pytest.fixture(scope="module")
def threshold(model, image) -> float:
    # An untrained network's output is nearly constant: its median gives many objects.
    probabilities = _run(model, image, SegmentOptions(output="probabilities", tile_size=TILE))
    return float(np.median(probabilities[1]))


def _run(model, image, options, out=None, events=None):
    generator = run(model, image, options=options, out=out)
    while True:
        try:
            event = next(generator)
        except StopIteration as finished:
            return finished.value
        if events is not None:
            events.append(event)


def _same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the labels ``a`` and ``b`` are one labelling with other ids (0 kept)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_renumbering_check_tells_a_relabelling_from_a_different_labelling():
    a = np.array([[1, 1, 0], [2, 0, 3]])
    assert _same_up_to_renumbering(a, np.array([[7, 7, 0], [5, 0, 9]]))
    assert not _same_up_to_renumbering(a, np.array([[7, 7, 0], [7, 0, 9]]))  # merged
    assert not _same_up_to_renumbering(a, np.array([[7, 5, 0], [2, 0, 3]]))  # split


@pytest.mark.parametrize("output", ["labels", "mask", "probabilities"])
def test_block_wise_and_in_memory_give_the_same_result(tmp_path, model, image, threshold, output):
    options = SegmentOptions(output=output, tile_size=TILE, threshold=threshold, min_size=6)
    in_memory = _run(model, image, options)
    store = StoreTarget(tmp_path / "out.zarr", block_size=BLOCK)
    block_wise = _run(model, image, options, out=store)[:]
    assert block_wise.dtype == in_memory.dtype
    if output == "labels":
        # many objects, some across block seams; small ones dropped by min_size in both
        assert in_memory.max() > 50
        assert _same_up_to_renumbering(block_wise, in_memory)
        sizes = np.bincount(in_memory.ravel())[1:]
        assert sizes[sizes > 0].min() >= 6
    np.testing.assert_array_equal(block_wise, in_memory)


def test_both_paths_report_the_same_tiles(tmp_path, model, image, threshold):
    options = SegmentOptions(output="mask", tile_size=TILE, threshold=threshold)
    in_memory, block_wise = [], []
    _run(model, image, options, events=in_memory)
    _run(
        model,
        image,
        options,
        out=StoreTarget(tmp_path / "o.zarr", block_size=BLOCK),
        events=block_wise,
    )

    def tiles(events):
        done = {e.index: e for e in events if isinstance(e, TileDone)}
        return {i: (e.region, e.data) for i, e in done.items()}

    memory_tiles, block_tiles = tiles(in_memory), tiles(block_wise)
    assert memory_tiles.keys() == block_tiles.keys() and len(memory_tiles) > 9
    for index, (region, data) in memory_tiles.items():
        assert block_tiles[index][0] == region
        np.testing.assert_array_equal(block_tiles[index][1], data)


def test_a_wrong_predictor_is_refused_the_same_way_on_both_paths(tmp_path, model, image):
    def wrong(batch):  # the input's size, not the network's output size
        return np.zeros((batch.shape[0], 2, *batch.shape[2:]), np.float32)

    options = SegmentOptions(output="mask", tile_size=TILE)
    messages = []
    for out in (None, StoreTarget(tmp_path / "o.zarr", block_size=BLOCK)):
        with pytest.raises(InputError, match="the predictor returned shape") as error:
            generator = run(model, image, options=options, out=out, predictor=wrong)
            list(generator)
        messages.append(str(error.value))
    assert messages[0] == messages[1]


def test_the_sink_chooses_the_path(tmp_path, model, image, threshold):
    options = SegmentOptions(output="labels", tile_size=TILE, threshold=threshold)
    target = StoreTarget(tmp_path / "labels.zarr", block_size=BLOCK)
    given = np.zeros(image.shape, np.int32)
    assert run_kind(target) == "block-wise"
    assert run_kind(None) == run_kind(given) == "in memory"

    events = []
    stored = _run(model, image, options, out=target, events=events)
    assert isinstance(stored, zarr.Array)
    assert (target.path / "0").is_dir()
    blocks = [e for e in events if isinstance(e, Progress) and e.message == "blocks"]
    assert len(blocks) == 9 and not any(isinstance(e, PlaneDone) for e in events)

    events = []
    result = _run(model, image, options, out=given, events=events)
    assert result is given
    assert [e.plane for e in events if isinstance(e, PlaneDone)] == [0]
    assert not any(isinstance(e, Progress) for e in events)
    np.testing.assert_array_equal(given, stored[:])


def test_a_result_too_large_for_memory_is_refused_naming_the_zarr_alternative(
    tmp_path, model, image, monkeypatch
):
    def never(batch):
        raise AssertionError("the network ran before the refusal")

    # the image's labels need 600 * 700 * 4 bytes: more than this
    monkeypatch.setattr(memory, "available_memory", lambda: 600 * 700)
    options = SegmentOptions(output="labels", tile_size=TILE)
    with pytest.raises(
        InputError, match=r"result.*more than the memory available.*\.zarr"
    ) as error:
        next(run(model, image, options=options, predictor=never))
    assert "\n" not in str(error.value)
    # the alternative it names works with the same memory: block by block into a store
    result = _run(model, image, options, out=StoreTarget(tmp_path / "big.zarr", block_size=BLOCK))
    assert result.shape == image.shape


def test_choosing_planes_is_refused_for_a_store(tmp_path, model, image):
    stack = np.stack([image, image])
    target = StoreTarget(tmp_path / "o.zarr")
    with pytest.raises(InputError, match="holds every plane"):
        next(run(model, stack, out=target, planes=[1]))
    assert not target.path.exists()

"""The one pipeline: the block-wise and in-memory paths of pipeline.run give the same
results through the same tile loop; the sink chooses the path; a numpy result too large
for memory is refused in one line naming the .zarr alternative."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_unet.core import memory
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, Progress, TileDone
from napari_unet.core.model import UNetConfig, margin
from napari_unet.core.modelfile import random_model
from napari_unet.core.options import SegmentOptions
from napari_unet.core.pipeline import StoreTarget, run, run_kind
from napari_unet.core.postprocess import PlaneLabeller

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


def _run(model, image, options, out=None, events=None, predictor=None):
    generator = run(model, image, options=options, out=out, predictor=predictor)
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


# ------------------------------------------- whole-plane labelling, block-wise


def _shown_predictor(batch: np.ndarray) -> np.ndarray:
    """Foreground probability = the normalised image (clipped), cropped as the network
    crops: the test's image says exactly what the "network" predicts."""
    crop = margin(TINY)
    foreground = np.clip(batch[:, 0, crop:-crop, crop:-crop], 0.0, 1.0).astype(np.float32)
    return np.stack([1 - foreground, foreground], axis=1)


@pytest.fixture(scope="module")
def sparse_discs() -> np.ndarray:
    """600 x 700: pairs of touching discs (a watershed splits them), single discs and
    specks of 2-12 px, far apart (fill reaches across the empty space), some cut by
    the 256 px block seams."""
    rng = np.random.default_rng(7)
    rows, cols = np.indices((600, 700))
    image = np.zeros((600, 700), np.float32)
    centres = [(250, 260), (120, 500), (480, 120), (520, 520), (60, 60), (300, 640)]
    for index, (r, c) in enumerate(centres):
        radius = rng.uniform(9, 14)
        for dr, dc in ((0, 0), (0, 1.6 * radius)) if index % 2 == 0 else ((0, 0),):
            image[(rows - r - dr) ** 2 + (cols - c - dc) ** 2 < radius**2] = 1.0
    for r, c in rng.integers(20, 580, size=(8, 2)):  # specks, removed by min_size 30
        image[r : r + rng.integers(1, 4), c : c + rng.integers(2, 4)] = 1.0
    return image


@pytest.mark.parametrize(
    "post",
    [
        {"split_touching": True},
        {"fill_boundaries": True},
        {"min_size": 30},
        {"split_touching": True, "fill_boundaries": True, "min_size": 30},
    ],
    ids=["split", "fill", "min-size", "split-fill-min-size"],
)
def test_whole_plane_labelling_is_the_same_block_wise(tmp_path, model, sparse_discs, post):
    options = SegmentOptions(tile_size=TILE, **post)
    in_memory = _run(model, sparse_discs, options, predictor=_shown_predictor)
    events = []
    target = StoreTarget(tmp_path / "w.zarr", block_size=BLOCK)
    block_wise = _run(
        model, sparse_discs, options, out=target, events=events, predictor=_shown_predictor
    )[:]
    assert _same_up_to_renumbering(block_wise, in_memory)
    if post.get("split_touching"):  # the three pairs were split
        assert in_memory.max() >= 9
    if post.get("fill_boundaries"):  # every pixel belongs to an object, however far
        assert (in_memory > 0).all()
    if post.get("min_size"):
        assert np.bincount(in_memory.ravel())[1:].min() >= 30
    # the user sees what is applied: every step of the plane labelling names it
    labelled = [e.message for e in events if isinstance(e, Progress) and e.message != "blocks"]
    described = PlaneLabeller(**post).describe()
    assert labelled and all(m.startswith(f"{described} of plane 0: ") for m in labelled)
    assert any("labelling blocks" in m for m in labelled)
    assert any("filling the boundaries" in m for m in labelled) == bool(post.get("fill_boundaries"))


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    """600 x 700 Voronoi cells (interior 0.95) whose borders are strong (0.05) or weak
    (0.6): grow-and-merge merges cells across weak borders, several blocks wide."""
    rng = np.random.default_rng(11)
    seeds = rng.uniform((0, 0), (600, 700), size=(120, 2))
    rows, cols = np.indices((600, 700))
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1)
    cell = cKDTree(seeds).query(pixels)[1].reshape(600, 700)
    weak = rng.random(120) < 0.2  # a border is weak when its lower cell id is "weak"
    image = np.full((600, 700), 0.95, np.float32)
    for axis in (0, 1):
        here, there = (cell[:-1], cell[1:]) if axis == 0 else (cell[:, :-1], cell[:, 1:])
        border = here != there
        value = np.where(weak[np.minimum(here, there)], 0.6, 0.05)
        target = image[:-1] if axis == 0 else image[:, :-1]
        np.copyto(target, np.minimum(target, value), where=border)
    # noise breaks the ties of a synthetic image (the watershed floods equal values in
    # an order that depends on where the image starts); real predictions have none
    noise = rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(image, 0.7) + noise, 0, 1)


def test_grow_and_merge_is_the_same_block_wise(tmp_path, model, cells):
    # cells of ~60 px: the model says so (margin 4 diameters), at the model's scale
    model = replace(model, object_diameter=60.0)
    options = SegmentOptions(
        tile_size=TILE, threshold=0.9, merge_boundaries=0.5, min_size=10, diameter=60.0
    )
    in_memory = _run(model, cells, options, predictor=_shown_predictor)
    events = []
    target = StoreTarget(tmp_path / "g.zarr", block_size=BLOCK)
    block_wise = _run(model, cells, options, out=target, events=events, predictor=_shown_predictor)[
        :
    ]
    assert 20 < in_memory.max() < 110 and (in_memory > 0).all()  # merged, filling the plane
    assert _same_up_to_renumbering(block_wise, in_memory)
    messages = {e.message for e in events if isinstance(e, Progress)}
    assert (
        "grow-and-merge (seeds above 0.9, merge below 0.5, min size 10) of plane 0: "
        "labelling blocks" in messages
    )


@pytest.mark.data
@pytest.mark.slow
def test_em_slice_block_wise_with_the_model_recommendations_equals_in_memory(tmp_path, shared_data):
    """em-membranes' grow-and-merge through pipeline.run, into a store of 3 x 3 blocks
    (tiles of 252 px: 64 px strides, the smallest blocks of 192 px), against in memory."""
    from skimage.metrics import adapted_rand_error

    from napari_unet.core.modelfile import load_model, resolve_model
    from napari_unet.core.options import recommended_options

    image = tifffile.imread(shared_data / "em-isbi2012" / "images.tif")[2]
    model = load_model(resolve_model("em-membranes"))
    recommended = recommended_options(model, "labels")
    assert recommended["merge_boundaries"] > 0
    options = SegmentOptions(
        **recommended, tile_size=252, device="cpu", diameter=model.object_diameter
    )
    in_memory = _run(model, image, options)
    events = []
    target = StoreTarget(tmp_path / "em.zarr", block_size=192)
    block_wise = _run(model, image, options, out=target, events=events)[:]
    blocks = [e for e in events if isinstance(e, Progress) and e.message == "blocks"]
    assert blocks[-1].total == 9
    error = adapted_rand_error(in_memory, block_wise)[0]
    print(f"em-membranes {recommended}, 3 x 3 blocks of 192 px: ARE {error:.5f}")
    assert in_memory.max() > 100
    assert _same_up_to_renumbering(block_wise, in_memory) or error <= 0.005

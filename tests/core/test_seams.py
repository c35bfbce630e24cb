"""Whole-plane instance labels computed block by block equal the in-memory labels.

Synthetic planes are built so that blocks cut through objects: touching discs (split,
min size), a tessellation of cells with thin membranes, some of them faint (fill,
grow-and-merge). The real-data tests segment an ISBI 2012 EM slice and a DSB 2018 image
with the built-in models and compare the in-memory labels of the recommended
post-processing with the block-wise ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.events import Progress, drain
from napari_unet.core.modelfile import load_model, resolve_model
from napari_unet.core.planeview import PlaneView
from napari_unet.core.postprocess import PlaneLabeller, foreground_probability, semantic_mask
from napari_unet.core.seams import (
    block_cores,
    default_margin,
    label_plane_in_blocks,
)
from napari_unet.core.segment import SegmentOptions, recommended_options, segment
from recorded_reads import RecordedReads

SHAPE = (160, 224)


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` have the same background and a one-to-one id mapping."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs.T) == len(np.unique(a)) == len(np.unique(b))


def in_blocks(mask, labeller, block, margin, *, foreground=None, out=None, min_size=0):
    out = np.zeros(np.shape(mask), np.int32) if out is None else out
    cores = block_cores(tuple(np.shape(mask)), block)
    count = drain(
        label_plane_in_blocks(
            mask,
            cores,
            out,
            labeller=labeller,
            margin=margin,
            foreground=foreground,
            min_size=min_size,
        )
    )
    labels = np.asarray(out[:, :])
    assert count == labels.max() == len(np.unique(labels[labels > 0]))
    return labels


@pytest.fixture
def discs(rng) -> np.ndarray:
    """Two classes of discs of radius 6..12, many touching or overlapping: (160, 224) uint8."""
    rows, cols = np.indices(SHAPE)
    mask = np.zeros(SHAPE, np.uint8)
    for _ in range(70):
        r, c, radius = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1]), rng.uniform(6, 12)
        mask[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 1 + (rng.random() < 0.3)
    mask[rng.random(SHAPE) < 0.002] = 1  # specks, removed by min_size
    return mask


@pytest.fixture
def cells(rng) -> np.ndarray:
    """Foreground probability of cells filling the plane: (160, 224) float32, 1 inside,
    falling to ~0 on 2-pixel membranes, one membrane in four faint (0.6: merged)."""
    seeds = np.ones(SHAPE, bool)
    points = (rng.uniform(0, SHAPE[0], 45).astype(int), rng.uniform(0, SHAPE[1], 45).astype(int))
    seeds[points] = False
    _, nearest = ndimage.distance_transform_edt(seeds, return_indices=True)
    cell = np.ravel_multi_index(tuple(nearest), SHAPE)
    faint = rng.random(cell.max() + 1) < 0.25
    membrane = np.zeros(SHAPE, bool)
    weak = np.zeros(SHAPE, bool)
    for axis in (0, 1):
        border = np.diff(cell, axis=axis) != 0
        pad = [(0, 0), (0, 0)]
        pad[axis] = (0, 1)
        near = np.pad(border, pad)
        membrane |= near
        weak |= near & faint[cell]
    foreground = np.clip(ndimage.distance_transform_edt(~membrane) / 3.0, 0, 1)
    foreground = np.where(weak & (foreground < 0.6), 0.6, foreground)
    return (foreground * 0.98 + rng.uniform(0, 0.02, SHAPE)).astype(np.float32)


# ------------------------------------------------------------------ synthetic


@pytest.mark.parametrize("block", [(32, 32), (48, 80), (160, 224)])
def test_connected_components_are_the_whole_plane_labels_exactly(discs, block):
    whole = PlaneLabeller(min_size=20)(discs)
    # min size in the windows, with the margin that makes it safe ...
    labeller = PlaneLabeller(min_size=20)
    assert np.array_equal(in_blocks(discs, labeller, block, default_margin(labeller)), whole)
    # ... or after merging, with a one-pixel margin
    plain = PlaneLabeller()
    assert np.array_equal(in_blocks(discs, plain, block, 1, min_size=20), whole)


@pytest.mark.parametrize(("block", "margin"), [((32, 32), 40), ((48, 80), 48), ((64, 64), 100)])
def test_split_touching_discs_equal_the_whole_plane_labels(discs, block, margin):
    labeller = PlaneLabeller(min_size=20, split_touching=True)
    whole = labeller(discs)
    assert whole.max() > PlaneLabeller(min_size=20)(discs).max()  # some discs were split
    assert same_up_to_renumbering(in_blocks(discs, labeller, block, margin), whole)


@pytest.mark.parametrize("block", [(32, 32), (40, 96)])
def test_filled_cells_equal_the_whole_plane_labels(cells, block):
    labeller = PlaneLabeller(min_size=10, fill_boundaries=True)
    mask = semantic_mask(cells[None], threshold=0.5)
    whole = labeller(mask)
    assert (whole > 0).all()
    assert same_up_to_renumbering(in_blocks(mask, labeller, block, 48), whole)


@pytest.mark.parametrize("block", [(32, 32), (40, 96)])
def test_filling_between_sparse_objects_equals_the_whole_plane_labels(block):
    """Three small objects far apart: most blocks hold none, and their pixels' nearest
    object lies several blocks away; the fill pass grows their windows until it knows."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:14, 12:15] = 1
    mask[150:155, 30:33] = 1
    mask[70:73, 200:204] = 1
    mask[100, 100] = 1  # a speck below min_size: it attracts nothing
    labeller = PlaneLabeller(min_size=4, fill_boundaries=True)
    whole = labeller(mask)
    assert whole.max() == 3 and (whole > 0).all()
    unfilled = zarr.create_array({}, shape=SHAPE, chunks=block, dtype="int32")
    out = np.zeros(SHAPE, np.int32)
    events = list(
        label_plane_in_blocks(
            mask, block_cores(SHAPE, block), out, labeller=labeller, margin=4, unfilled=unfilled
        )
    )
    np.testing.assert_array_equal(out, whole)  # even the ids: no joins needed
    np.testing.assert_array_equal(unfilled[:], PlaneLabeller(min_size=4)(mask))
    filled = [e for e in events if e.message == "filling the boundaries"]
    assert [e.done for e in filled] == list(range(1, len(block_cores(SHAPE, block)) + 1))


def test_a_plane_without_objects_stays_empty_when_filled():
    labeller = PlaneLabeller(fill_boundaries=True)
    mask = np.zeros(SHAPE, np.uint8)
    assert not in_blocks(mask, labeller, (32, 32), 8).any()


@pytest.mark.parametrize(("block", "margin"), [((32, 32), 64), ((48, 80), 80)])
def test_grown_and_merged_cells_equal_the_whole_plane_labels(cells, block, margin):
    labeller = PlaneLabeller(threshold=0.9, merge_boundaries=0.55, min_size=5)
    mask = semantic_mask(cells[None], threshold=0.9)
    whole = labeller(mask, cells)
    unmerged = PlaneLabeller(threshold=0.9, merge_boundaries=0.01, min_size=5)(mask, cells)
    assert 10 < whole.max() < unmerged.max()  # the faint membranes were merged over
    blocks = in_blocks(mask, labeller, block, margin, foreground=cells)
    assert same_up_to_renumbering(blocks, whole)


def test_a_margin_too_small_for_grow_and_merge_changes_the_labels(cells):
    labeller = PlaneLabeller(threshold=0.9, merge_boundaries=0.55, min_size=5)
    mask = semantic_mask(cells[None], threshold=0.9)
    blocks = in_blocks(mask, labeller, (32, 32), 1, foreground=cells)
    assert not same_up_to_renumbering(blocks, labeller(mask, cells))


def test_zarr_input_and_output_give_the_numpy_result(discs, tmp_path):
    labeller = PlaneLabeller(min_size=20, split_touching=True)
    expected = in_blocks(discs, labeller, (48, 48), 40)
    stored = zarr.create_array(
        str(tmp_path / "mask.zarr"), shape=SHAPE, dtype="u1", chunks=(32, 32)
    )
    stored[:] = discs
    out = zarr.create_array(str(tmp_path / "labels.zarr"), shape=SHAPE, dtype="i4", chunks=(50, 50))
    assert np.array_equal(in_blocks(stored, labeller, (48, 48), 40, out=out), expected)


def test_planes_of_a_stack_are_labelled_in_place(discs, tmp_path):
    stack = zarr.create_array(
        str(tmp_path / "stack.zarr"), shape=(2, 3, *SHAPE), dtype="u1", chunks=(1, 1, 40, 40)
    )
    stack[1, 2] = discs
    out = zarr.create_array(
        str(tmp_path / "out.zarr"), shape=(2, 3, *SHAPE), dtype="i4", chunks=(1, 1, 40, 40)
    )
    labeller = PlaneLabeller(min_size=20)
    labels = in_blocks(
        PlaneView.at(stack, (1, 2)), labeller, (48, 48), 20, out=PlaneView.at(out, (1, 2))
    )
    assert np.array_equal(labels, labeller(discs))
    assert np.array_equal(out[1, 2], labels) and not out[0].any() and not out[1, :2].any()
    whole = [(slice(0, SHAPE[0]), slice(0, SHAPE[1]))]
    with pytest.raises(InputError, match="expected a 2D mask"):  # a view of (3, H, W)
        label_plane_in_blocks(
            PlaneView.at(stack, (1,)),
            whole,
            np.zeros(SHAPE, np.int32),
            labeller=labeller,
            margin=20,
        )


def test_reads_one_window_per_block_and_yields_progress(cells):
    mask = RecordedReads(semantic_mask(cells[None], threshold=0.9))
    foreground = RecordedReads(cells)
    labeller = PlaneLabeller(threshold=0.9, merge_boundaries=0.55)
    cores = block_cores(SHAPE, (40, 56))
    out = np.zeros(SHAPE, np.int32)
    events = list(
        label_plane_in_blocks(mask, cores, out, labeller=labeller, margin=20, foreground=foreground)
    )
    assert all(isinstance(event, Progress) for event in events)
    assert [event.done for event in events] == list(range(1, 2 * len(cores) + 1))
    assert {event.total for event in events} == {2 * len(cores)}
    for reads in (mask.reads, foreground.reads):
        assert len(reads) == len(cores)
        assert max(reads) == (40 + 2 * 20, 56 + 2 * 20)


def test_default_margin_follows_the_labelling_and_the_object_size():
    assert default_margin(PlaneLabeller()) == 1
    assert default_margin(PlaneLabeller(min_size=30)) == 30
    grow = PlaneLabeller(threshold=0.9, merge_boundaries=0.5)
    assert default_margin(grow, object_diameter=26.4) == 106
    assert default_margin(grow, object_diameter=2.0) == 32
    assert default_margin(grow) == 64
    assert default_margin(PlaneLabeller(split_touching=True, min_size=500)) == 500


def test_bad_blocks_margins_and_outputs_are_refused(discs):
    labeller, out = PlaneLabeller(), np.zeros(SHAPE, np.int32)
    gap = block_cores(SHAPE, (80, 112))[:-1]
    overlap = [*block_cores(SHAPE, (80, 112)), (slice(0, 10), slice(0, 10))]
    for cores in (gap, overlap, []):
        with pytest.raises(InputError, match="must cover the 160 x 224 plane exactly once"):
            label_plane_in_blocks(discs, cores, out, labeller=labeller, margin=1)
    cores = block_cores(SHAPE, (80, 112))
    with pytest.raises(InputError, match="margin around blocks must be at least 1"):
        label_plane_in_blocks(discs, cores, out, labeller=labeller, margin=0)
    with pytest.raises(OutputError, match="int32"):
        label_plane_in_blocks(discs, cores, out.astype(np.uint8), labeller=labeller, margin=1)
    with pytest.raises(OutputError, match="shape"):
        label_plane_in_blocks(discs, cores, out[:10], labeller=labeller, margin=1)
    with pytest.raises(InputError, match="same shape"):
        label_plane_in_blocks(
            discs, cores, out, labeller=labeller, margin=1, foreground=np.zeros((3, 3))
        )
    with pytest.raises(InputError, match="needs the foreground probability"):
        drain(
            label_plane_in_blocks(
                discs, cores, out, labeller=PlaneLabeller(merge_boundaries=0.5), margin=1
            )
        )
    assert not out.any()  # refused before writing anything


# ------------------------------------------------------------------ real data


def _probabilities(name: str, image: np.ndarray):
    model = load_model(resolve_model(name))
    # The model's own diameter: the image is labelled as it is, not resampled.
    options = SegmentOptions(output="probabilities", device="cpu", diameter=model.object_diameter)
    return model, segment(model, image, options=options)


def _compare(model, image, probabilities, block: int, **override) -> float:
    """Block-wise against in-memory labels of one plane; the adapted Rand error."""
    recommended = {**recommended_options(model, "labels"), **override}
    labeller = PlaneLabeller(**recommended)
    mask = semantic_mask(probabilities, threshold=labeller.threshold)
    foreground = foreground_probability(probabilities) if labeller.needs_foreground else None
    whole = labeller(mask, foreground)
    options = SegmentOptions(
        **recommended, output="labels", device="cpu", diameter=model.object_diameter
    )
    # The labeller is the in-memory path's post-processing of the same probabilities.
    assert same_up_to_renumbering(segment(model, image, options=options), whole)
    margin = default_margin(labeller, object_diameter=model.object_diameter)
    blocks = in_blocks(mask, labeller, (block, block), margin, foreground=foreground)
    error = adapted_rand_error(whole, blocks)[0]
    print(f"{model.name} {recommended} blocks {block} margin {margin}: ARE {error:.5f}")
    return error


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("plane", [0, 2, 13])
def test_em_slice_grown_and_merged_in_4x4_blocks_equals_in_memory(shared_data: Path, plane):
    image = tifffile.imread(shared_data / "em-isbi2012" / "images.tif")[plane]
    model, probabilities = _probabilities("em-membranes", image)
    assert recommended_options(model, "labels")["merge_boundaries"] > 0
    assert _compare(model, image, probabilities, 128) <= 0.005


@pytest.mark.data
@pytest.mark.slow
def test_dsb_image_split_in_blocks_is_close_to_in_memory(shared_data: Path):
    folder = shared_data / "nuclei-dsb2018" / "images"
    image = tifffile.imread(folder / "a102535b0e88374b.tif")  # 603 x 1272, 400 nuclei
    model, probabilities = _probabilities("nuclei", image)
    assert _compare(model, image, probabilities, 128, split_touching=True) <= 0.005


@pytest.mark.data
@pytest.mark.slow
def test_em_slice_filled_in_blocks_equals_in_memory(shared_data: Path):
    image = tifffile.imread(shared_data / "em-isbi2012" / "images.tif")[5]
    model, probabilities = _probabilities("em-membranes", image)
    override = {"merge_boundaries": 0.0, "threshold": 0.5, "fill_boundaries": True, "min_size": 20}
    assert _compare(model, image, probabilities, 128, **override) == 0.0


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("block", [128, 256])
def test_dsb_nuclei_filled_in_blocks_equal_in_memory(shared_data: Path, block):
    """Sparse nuclei: each background pixel takes its nearest nucleus however far, so
    windows grow until they know it (B's fixed margin gave adapted Rand error 0.44-0.56)."""
    folder = shared_data / "nuclei-dsb2018" / "images"
    image = tifffile.imread(folder / "a102535b0e88374b.tif")  # 603 x 1272, 400 nuclei
    model, probabilities = _probabilities("nuclei", image)
    for extra in ({"fill_boundaries": True}, {"fill_boundaries": True, "split_touching": True}):
        error = _compare(model, image, probabilities, block, **extra)
        assert error == 0.0 if len(extra) == 1 else error <= 0.005

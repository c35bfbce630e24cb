"""Probabilities -> semantic mask -> instance labels, and merging labels across block seams."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.core.errors import InputError
from napari_unet.core.postprocess import (
    PlaneLabeller,
    grow_and_merge,
    instance_labels,
    merge_labels_across_seams,
    semantic_mask,
)


def same_up_to_permutation(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` have the same background and a one-to-one id mapping."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(pairs.T) == len(np.unique(a)) == len(np.unique(b))


def label_blocks_independently(mask: np.ndarray, row_seams, col_seams) -> np.ndarray:
    rows = [0, *row_seams, mask.shape[0]]
    cols = [0, *col_seams, mask.shape[1]]
    labels = np.zeros(mask.shape, dtype=np.int32)
    offset = 0
    for r0, r1 in itertools.pairwise(rows):
        for c0, c1 in itertools.pairwise(cols):
            block, count = ndimage.label(mask[r0:r1, c0:c1])
            labels[r0:r1, c0:c1] = np.where(block > 0, block + offset, 0)
            offset += count
    return labels


def test_semantic_mask_two_classes_thresholds_foreground():
    probs = np.array([[[0.9, 0.4, 0.5]], [[0.1, 0.6, 0.5]]], dtype=np.float32)
    assert semantic_mask(probs).tolist() == [[0, 1, 0]]
    assert semantic_mask(probs, threshold=0.05).tolist() == [[1, 1, 1]]
    assert semantic_mask(probs, threshold=0.7).tolist() == [[0, 0, 0]]
    assert semantic_mask(probs).dtype == np.uint8


def test_semantic_mask_many_classes_is_argmax():
    probs = np.array([[[0.2, 0.7]], [[0.5, 0.1]], [[0.3, 0.2]]])
    assert semantic_mask(probs).tolist() == [[1, 0]]


def test_semantic_mask_rejects_bad_input():
    with pytest.raises(InputError, match=r"shape \(K, H, W\), got \(4, 4\)"):
        semantic_mask(np.zeros((4, 4)))
    with pytest.raises(InputError, match="threshold must be between 0 and 1"):
        semantic_mask(np.zeros((2, 4, 4)), threshold=2)


def test_instance_labels_connected_components_and_min_size():
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[0:2, 0:2] = 1  # 4 px
    mask[4:6, 4:8] = 1  # 8 px
    mask[0, 7] = 1  # 1 px
    mask[2, 2] = 1  # touches the first square only diagonally: separate object
    labels = instance_labels(mask)
    assert labels.dtype == np.int32 and labels.max() == 4
    assert len(np.unique(labels[0:2, 0:2])) == 1
    filtered = instance_labels(mask, min_size=4)
    assert filtered.max() == 2  # consecutive ids after removal
    assert filtered[0, 7] == 0 and filtered[2, 2] == 0
    assert (filtered[4:6, 4:8] > 0).all()


def test_instance_labels_keeps_classes_apart():
    mask = np.array([[1, 1, 2, 2]], dtype=np.uint8)
    assert instance_labels(mask).tolist() == [[1, 1, 2, 2]]


def test_split_touching_separates_two_overlapping_discs():
    rows, cols = np.mgrid[0:40, 0:70]
    mask = ((rows - 20) ** 2 + (cols - 20) ** 2 < 15**2) | (
        (rows - 20) ** 2 + (cols - 45) ** 2 < 15**2
    )
    assert instance_labels(mask).max() == 1
    split = instance_labels(mask, split_touching=True)
    assert split.max() == 2
    assert split[20, 20] != split[20, 45]
    assert ((split > 0) == mask).all()


def test_split_touching_keeps_objects_without_a_peak():
    mask = np.zeros((10, 10), dtype=bool)
    mask[5, 1:9] = True  # a thin line
    assert instance_labels(mask, split_touching=True, min_distance=20).max() == 1


def test_object_spanning_four_blocks_gets_one_id():
    mask = np.zeros((20, 20), dtype=bool)
    mask[6:14, 6:14] = True  # crosses both seams at 10
    mask[0:3, 0:3] = True
    blocks = label_blocks_independently(mask, [10], [10])
    assert len(np.unique(blocks[6:14, 6:14])) == 4
    merged = merge_labels_across_seams(blocks, ([10], [10]))
    assert len(np.unique(merged[6:14, 6:14])) == 1
    assert set(np.unique(merged)) == {0, 1, 2}


def test_merge_equals_whole_image_labelling_up_to_permutation(rng):
    mask = ndimage.binary_opening(rng.random((120, 150)) > 0.45)
    row_seams, col_seams = [17, 64, 100], [30, 31, 90]
    merged = merge_labels_across_seams(
        label_blocks_independently(mask, row_seams, col_seams), (row_seams, col_seams)
    )
    whole = instance_labels(mask)
    assert whole.max() > 20
    assert merged.max() == whole.max()
    assert same_up_to_permutation(merged, whole)


def test_merge_does_not_join_objects_touching_diagonally_across_a_seam():
    labels = np.array([[1, 0], [0, 2]])
    assert merge_labels_across_seams(labels, ([1], [1])).tolist() == [[1, 0], [0, 2]]


def test_fill_boundaries_grows_cells_over_thin_membranes():
    # Two cells separated by a 3 px membrane, with a membrane border around them.
    mask = np.zeros((12, 20), np.uint8)
    mask[1:11, 1:9] = 1
    mask[1:11, 12:19] = 1
    labels = instance_labels(mask, fill_boundaries=True)
    assert set(np.unique(labels)) == {1, 2}  # every pixel belongs to a cell
    assert (labels[:, :10] == labels[5, 4]).all()  # column 9 and 10: nearer the left cell
    assert (labels[:, 11:] == labels[5, 15]).all()
    assert labels[5, 4] != labels[5, 15]
    # small specks are dropped before growing, not grown into cells
    mask[5, 10] = 1
    assert labels.max() == instance_labels(mask, min_size=2, fill_boundaries=True).max()
    assert instance_labels(np.zeros((4, 4), np.uint8), fill_boundaries=True).max() == 0


def _two_cells_with_a_leaky_membrane() -> np.ndarray:
    """Foreground probability (40, 61): two cells either side of a 3 px membrane (columns
    29-31, as thick as EM membranes are predicted), whose middle 4 rows are a gap the
    model half believes in (probability 0.7)."""
    foreground = np.full((40, 61), 0.95, np.float32)
    foreground[:, 29:32] = 0.05
    foreground[18:22, 29:32] = 0.7
    return foreground


def test_grow_and_merge_keeps_cells_apart_across_a_gap_in_their_membrane():
    foreground = _two_cells_with_a_leaky_membrane()
    # One low threshold lets the gap join the cells, and no later step could split them.
    assert instance_labels(foreground > 0.65).max() == 1
    regions = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.75)
    assert regions.max() == 2
    assert len(np.unique(regions[:, :29])) == 1 and len(np.unique(regions[:, 32:])) == 1
    assert regions[0, 0] != regions[0, -1]
    assert regions.min() == 1  # the membrane is shared out: every pixel has a cell


def test_grow_and_merge_joins_a_cell_cut_by_weak_interior_structure():
    foreground = np.full((40, 60), 0.95, np.float32)
    foreground[:, 0] = foreground[:, -1] = 0.02  # the cell's own membrane
    foreground[19:22, :] = 0.6  # e.g. an organelle edge: seeds at 0.9 are cut here
    assert instance_labels(foreground > 0.9).max() == 2
    merged = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.75)
    assert np.unique(merged).tolist() == [1]
    never = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.0)
    assert never.max() == 2  # 0 never merges


def test_grow_and_merge_merges_weakest_borders_first_with_length_weighted_means():
    # Three seeds in a row; borders A|B mean 0.3 and B|C mean 0.6 (boundary probability).
    foreground = np.full((20, 62), 0.95, np.float32)
    foreground[:, 19:22] = 0.7  # boundary 0.3
    foreground[:, 40:43] = 0.4  # boundary 0.6
    regions = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.5)
    assert regions.max() == 2
    assert regions[0, 0] == regions[0, 30] != regions[0, 50]
    # After A+B merge, their border with C is still the B|C border alone: mean 0.6.
    assert grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.61).max() == 1


def test_grow_and_merge_drops_small_seeds_and_handles_no_seed():
    foreground = _two_cells_with_a_leaky_membrane()
    foreground[2:9, 2:9] = 0.5  # below the seed threshold: a 3x3 seed apart from its cell
    foreground[4:7, 4:7] = 0.95
    assert grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.0).max() == 3
    without = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.0, min_size=10)
    assert without.max() == 2 and without[5, 5] == without[20, 10]  # joined its cell
    empty = grow_and_merge(np.full((8, 8), 0.2, np.float32), seed_threshold=0.9, merge_below=0.5)
    assert empty.dtype == np.int32 and not empty.any()


@pytest.mark.parametrize(
    ("foreground", "options", "message"),
    [
        (np.zeros((2, 8, 8)), {}, "2D probability map"),
        (np.zeros((8, 8)), {"seed_threshold": 1.5}, "seed_threshold must be between 0 and 1"),
        (np.zeros((8, 8)), {"merge_below": -0.1}, "merge_below must be between 0 and 1"),
    ],
)
def test_grow_and_merge_rejects_bad_input(foreground, options, message):
    with pytest.raises(InputError, match=message):
        grow_and_merge(foreground, **{"seed_threshold": 0.9, "merge_below": 0.5, **options})


def test_plane_labeller_applies_the_options_it_holds():
    foreground = _two_cells_with_a_leaky_membrane()
    mask = (foreground > 0.65).astype(np.uint8)
    grow = PlaneLabeller(threshold=0.9, merge_boundaries=0.75)
    assert grow.needs_foreground and not grow.connectivity_only
    expected = grow_and_merge(foreground, seed_threshold=0.9, merge_below=0.75)
    assert np.array_equal(grow(mask, foreground), expected)
    mask[5, 2] = 0
    mask[5, 5] = 2  # a one-pixel object of another class
    assert PlaneLabeller()(mask).max() == 2
    assert PlaneLabeller(min_size=2)(mask).max() == 1
    assert PlaneLabeller().connectivity_only
    filled = PlaneLabeller(fill_boundaries=True, min_size=2)
    assert not filled.connectivity_only and filled(mask).min() == 1
    split = instance_labels(mask, split_touching=True, min_size=2)
    assert np.array_equal(PlaneLabeller(split_touching=True, min_size=2)(mask), split)
    assert pickle.loads(pickle.dumps(grow)) == grow  # dask workers receive it pickled


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"merge_boundaries": -0.5}, "merge_boundaries must be between 0 and 1"),
        ({"min_size": -1}, "min_size must be >= 0"),
    ],
)
def test_plane_labeller_rejects_bad_options(options, message):
    with pytest.raises(InputError, match=message):
        PlaneLabeller(**options)
    with pytest.raises(InputError, match="needs the foreground probability"):
        PlaneLabeller(merge_boundaries=0.5)(np.zeros((4, 4), np.uint8))

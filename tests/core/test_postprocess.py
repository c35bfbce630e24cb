"""Probabilities -> semantic mask -> instance labels, and merging labels across block seams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from napari_unet.core.errors import InputError
from napari_unet.core.postprocess import (
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

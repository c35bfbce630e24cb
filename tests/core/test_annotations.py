"""Annotation conventions -> training targets (classes, instances, annotated)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.core.annotations import (
    IGNORE,
    Targets,
    check_annotation_matches,
    detect_convention,
    targets_from_annotation,
)
from napari_unet.core.errors import AnnotationError

# A 6x7 sparse painting: 0 = not annotated, 1 = background, 2 and 3 = two cells.
SPARSE = np.array(
    [
        [1, 1, 0, 0, 0, 0, 0],
        [1, 2, 2, 0, 0, 0, 0],
        [0, 2, 2, 0, 0, 3, 0],
        [0, 0, 0, 0, 3, 3, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 1, 1],
    ]
)


def test_sparse_painting_maps_to_ignore_background_and_cells():
    targets = targets_from_annotation(SPARSE, "sparse")

    expected_classes = np.where(SPARSE == 0, IGNORE, np.where(SPARSE == 1, 0, 1))
    np.testing.assert_array_equal(targets.classes, expected_classes)
    np.testing.assert_array_equal(targets.annotated, SPARSE != 0)
    assert targets.classes.dtype == np.int64
    assert targets.instances.dtype == np.int32
    # Two cells, numbered 1..2, exactly on the painted cell pixels.
    assert set(np.unique(targets.instances).tolist()) == {0, 1, 2}
    assert len(np.unique(targets.instances[SPARSE == 2])) == 1
    assert len(np.unique(targets.instances[SPARSE == 3])) == 1
    np.testing.assert_array_equal(targets.instances > 0, targets.classes == 1)


def test_same_label_on_two_separate_cells_gives_two_instances():
    painting = np.ones((5, 9), dtype=np.int32)
    painting[1:4, 1:3] = 2
    painting[1:4, 6:8] = 2  # the user forgot to switch label

    targets = targets_from_annotation(painting, "sparse")

    assert targets.instances.max() == 2
    assert targets.instances[2, 1] != targets.instances[2, 6]


def test_touching_cells_are_split_by_a_background_line_on_the_lower_id():
    dense = np.zeros((4, 6), dtype=np.uint16)
    dense[:, 1:3] = 5
    dense[:, 3:5] = 7

    split = targets_from_annotation(dense, "dense")
    kept = targets_from_annotation(dense, "dense", separate_touching=False)

    # Column 2 (id 5, next to id 7) becomes background, column 3 (id 7) stays.
    np.testing.assert_array_equal(split.classes[:, 2], 0)
    np.testing.assert_array_equal(split.instances[:, 2], 0)
    np.testing.assert_array_equal(split.classes[:, [1, 3, 4]], 1)
    assert split.instances[0, 1] != split.instances[0, 3]
    np.testing.assert_array_equal(kept.classes, (dense > 0).astype(int))


def test_diagonal_contact_is_split_too():
    dense = np.zeros((4, 4), dtype=np.int32)
    dense[:2, :2] = 1
    dense[2:, 2:] = 2

    targets = targets_from_annotation(dense, "dense")

    assert targets.classes[1, 1] == 0  # the lower id's corner, 8-adjacent to id 2
    assert targets.classes[2, 2] == 1


def test_dense_mask_is_fully_annotated_with_zero_as_background():
    dense = np.zeros((8, 8), dtype=np.uint16)
    dense[1:3, 1:3] = 1
    dense[5:7, 4:8] = 9

    targets = targets_from_annotation(dense, "dense")

    assert targets.annotated.all()
    np.testing.assert_array_equal(targets.classes, (dense > 0).astype(int))
    assert targets.instances.max() == 2


@pytest.mark.parametrize("foreground", [1, 255, True])
def test_binary_mask_foreground_is_the_non_zero_value(foreground):
    mask = np.zeros((6, 6), dtype=bool if foreground is True else np.uint8)
    mask[1:3, 1:3] = foreground
    mask[4:6, 3:6] = foreground

    targets = targets_from_annotation(mask, "binary")

    np.testing.assert_array_equal(targets.classes, (mask != 0).astype(int))
    assert targets.annotated.all()
    assert targets.instances.max() == 2


def test_binary_diagonal_membrane_separates_cells():
    # A one-pixel membrane (0) along the anti-diagonal: the two interiors touch only
    # diagonally, so 4-connected components keep them apart.
    mask = np.ones((5, 5), dtype=np.uint8)
    mask[np.arange(5), 4 - np.arange(5)] = 0

    targets = targets_from_annotation(mask, "binary")

    assert targets.instances.max() == 2


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1], "binary"),
        ([0, 255], "binary"),
        ([1], "binary"),
        ([0, 1, 2], "sparse"),
        ([0, 2, 3], "sparse"),
        ([0, 1, 255], "sparse"),
    ],
)
def test_auto_detection_rule(values, expected):
    annotation = np.array([values * 2], dtype=np.int32)
    assert detect_convention(annotation) == expected


def test_auto_reads_a_painting_as_sparse():
    auto = targets_from_annotation(SPARSE)
    explicit = targets_from_annotation(SPARSE, "sparse")
    np.testing.assert_array_equal(auto.classes, explicit.classes)


def test_input_is_never_modified_and_read_only_input_works():
    dense = np.zeros((4, 6), dtype=np.int32)
    dense[:, 1:3] = 1
    dense[:, 3:5] = 2
    original = dense.copy()
    dense.flags.writeable = False

    for convention in ("sparse", "dense", "auto"):
        targets_from_annotation(dense, convention)

    np.testing.assert_array_equal(dense, original)


def test_stack_is_handled_plane_by_plane_and_checked_as_a_whole():
    stack = np.zeros((2, *SPARSE.shape), dtype=np.int32)
    stack[1] = SPARSE  # only the second plane is painted: normal for a stack

    targets = targets_from_annotation(stack, "sparse")

    assert targets.classes.shape == stack.shape
    assert not targets.annotated[0].any()
    np.testing.assert_array_equal(targets.classes[1], targets_from_annotation(SPARSE).classes)
    assert targets.instances[1].max() == 2


@pytest.mark.parametrize(
    ("annotation", "convention", "message"),
    [
        (np.zeros((4, 4), np.int32), "sparse", "Nothing is annotated"),
        (np.zeros((4, 4), np.int32), "auto", "Nothing is annotated"),
        (np.ones((4, 4), np.int32), "sparse", "paint at least one cell with label 2 or higher"),
        (np.full((4, 4), 2), "sparse", "paint some background with label 1"),
        (np.zeros((4, 4), np.uint8), "binary", "no foreground"),
        (np.zeros((4, 4), np.uint8), "dense", "no object"),
        (np.arange(16).reshape(4, 4), "binary", "convention='dense'"),
        (np.ones((4, 4), np.float32), "auto", "must be integers, got dtype float32"),
        (np.full((4, 4), -2), "sparse", "must be 0 or more"),
        (np.ones((2, 2, 2, 2), np.int32), "auto", "one image (H, W) or a stack (N, H, W)"),
        (np.ones((4, 4), np.int32), "semantic", "Unknown annotation convention 'semantic'"),
    ],
)
def test_bad_annotations_get_actionable_errors(annotation, convention, message):
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        targets_from_annotation(annotation, convention)


def test_annotation_shape_must_match_image():
    check_annotation_matches((64, 64), (64, 64))
    with pytest.raises(
        AnnotationError, match=r"shape \(64, 32\) but the image has shape \(64, 64\)"
    ):
        check_annotation_matches((64, 64), (64, 32))


def test_targets_is_frozen():
    targets = targets_from_annotation(SPARSE, "sparse")
    assert isinstance(targets, Targets)
    with pytest.raises(AttributeError):
        targets.classes = targets.instances  # type: ignore[misc]


@pytest.mark.data
def test_real_em_membrane_labels_read_as_binary(shared_data):
    labels = tifffile.imread(shared_data / "em-isbi2012" / "labels.tif")[0]

    targets = targets_from_annotation(labels)

    np.testing.assert_array_equal(targets.classes, (labels == 1).astype(int))
    # Many cells, each a 4-connected interior bounded by membrane.
    assert targets.instances.max() > 50


@pytest.mark.data
def test_real_dense_nuclei_masks_keep_every_nucleus(shared_data):
    path = shared_data / "nuclei-dsb2018" / "labels" / "0ea221716cf13710.tif"
    mask = tifffile.imread(path)

    targets = targets_from_annotation(mask, "dense")

    # Every nucleus survives the one-pixel split (a split may add a few fragments).
    n_nuclei = len(np.unique(mask)) - 1
    assert n_nuclei <= targets.instances.max() <= n_nuclei * 1.1
    touching = (mask[:, 1:] != mask[:, :-1]) & (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
    assert touching.any()
    # No two different instances are 4-adjacent any more.
    inst = targets.instances
    assert not ((inst[:, 1:] != inst[:, :-1]) & (inst[:, 1:] > 0) & (inst[:, :-1] > 0)).any()

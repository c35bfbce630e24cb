"""Correcting a result: instance labels -> sparse annotations of chosen planes (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from napari_unet.core.annotations import (
    SPARSE_BACKGROUND,
    SPARSE_UNANNOTATED,
    annotations_from_labels,
    targets_from_annotation,
)
from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.plane_text import planes_from_text


def _result_stack() -> np.ndarray:
    """(3, 8, 9) int32 labels: plane 0 ids 4 and 90, plane 1 ids 7 and 4, plane 2 empty."""
    labels = np.zeros((3, 8, 9), np.int32)
    labels[0, 1:3, 1:3] = 4
    labels[0, 5:7, 5:8] = 90
    labels[1, 0:2, 6:9] = 7
    labels[1, 4:7, 1:4] = 4
    return labels


def test_a_2d_result_becomes_background_and_consecutive_distinct_cells():
    labels = np.zeros((6, 7), np.int64)
    labels[0:2, 0:2] = 5
    labels[3:5, 4:6] = 200
    labels[5, 0] = 9
    before = labels.copy()

    annotations = annotations_from_labels(labels)

    assert annotations.shape == labels.shape and annotations.dtype == np.uint16
    np.testing.assert_array_equal(annotations[labels == 0], SPARSE_BACKGROUND)
    # 5, 9, 200 -> 2, 3, 4: in the order of their values, consecutive
    assert annotations[0, 0] == 2 and annotations[5, 0] == 3 and annotations[3, 4] == 4
    assert set(np.unique(annotations).tolist()) == {1, 2, 3, 4}
    np.testing.assert_array_equal(labels, before)  # the input is untouched
    assert not np.shares_memory(annotations, labels)
    np.testing.assert_array_equal(annotations_from_labels(labels, [()]), annotations)


def test_only_the_chosen_plane_of_a_stack_is_annotated():
    labels = _result_stack()

    annotations = annotations_from_labels(labels, [(1,)])

    assert (annotations[[0, 2]] == SPARSE_UNANNOTATED).all()
    plane = annotations[1]
    np.testing.assert_array_equal(plane == SPARSE_BACKGROUND, labels[1] == 0)
    assert plane[4, 1] == 2 and plane[0, 6] == 3  # ids 4 and 7, in order of value
    assert set(np.unique(plane).tolist()) == {1, 2, 3}


def test_all_planes_share_one_numbering_and_an_empty_plane_is_all_background():
    labels = _result_stack()

    annotations = annotations_from_labels(labels)

    # ids 4, 7, 90 -> 2, 3, 4 in every plane; id 4 keeps one cell id across planes
    assert annotations[0, 1, 1] == annotations[1, 4, 1] == 2
    assert annotations[1, 0, 6] == 3 and annotations[0, 5, 5] == 4
    assert (annotations[2] == SPARSE_BACKGROUND).all()  # "no cells here" is an annotation
    assert (annotations > 0).all()


def test_planes_of_a_tzyx_stack_and_repeated_planes():
    labels = np.zeros((2, 3, 5, 5), np.uint8)
    labels[0, 2, 1:3, 1:3] = 3
    labels[1, 0, 3:, 3:] = 1

    annotations = annotations_from_labels(labels, [(0, 2), (1, 0), (0, 2)])

    annotated = [(t, z) for t in range(2) for z in range(3) if annotations[t, z].any()]
    assert annotated == [(0, 2), (1, 0)]
    assert annotations[0, 2, 1, 1] == 3 and annotations[1, 0, 4, 4] == 2  # ids 1, 3 -> 2, 3
    assert annotations[0, 2, 0, 0] == annotations[1, 0, 0, 0] == SPARSE_BACKGROUND


def test_a_plane_without_objects_is_a_valid_annotation():
    annotations = annotations_from_labels(np.zeros((4, 5), np.uint16))

    assert (annotations == SPARSE_BACKGROUND).all()
    targets = targets_from_annotation(annotations, "sparse", require_both_classes=False)
    assert (targets.classes == 0).all()


def test_the_annotation_trains_as_the_result_s_cells():
    labels = _result_stack()

    targets = targets_from_annotation(annotations_from_labels(labels, [(0,)]), "sparse")

    assert targets.annotated[0].all() and not targets.annotated[1:].any()
    assert targets.instances[0].max() == 2  # the two objects of plane 0
    np.testing.assert_array_equal(targets.classes[0] == 1, labels[0] > 0)


def test_many_objects_get_uint32_and_bool_masks_are_labels():
    labels = np.arange(300 * 300, dtype=np.uint32).reshape(300, 300)  # 89 999 objects
    annotations = annotations_from_labels(labels)
    assert annotations.dtype == np.uint32 and annotations.max() == 300 * 300
    assert annotations[0, 0] == SPARSE_BACKGROUND and annotations[0, 1] == 2

    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    np.testing.assert_array_equal(annotations_from_labels(mask), np.where(mask, 2, 1))


class _RecordedStack:
    """A lazy (Z, H, W) stack recording which planes are read."""

    def __init__(self, data: np.ndarray) -> None:
        self._data, self.shape, self.dtype, self.read = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.read.append(key)
        return self._data[key]


def test_only_the_chosen_planes_of_a_lazy_stack_are_read():
    stack = _RecordedStack(_result_stack())

    annotations = annotations_from_labels(stack, [(2,), (0,)])

    assert stack.read == [(2,), (0,)]
    assert annotations[1].max() == 0 and annotations[0].max() == 3


@pytest.mark.parametrize(
    ("labels", "planes", "error", "words"),
    [
        (np.zeros((4, 4), np.float32), None, AnnotationError, "must be integers"),
        (np.full((4, 4), -2, np.int16), None, AnnotationError, "found -2"),
        (np.zeros(5, np.uint8), None, AnnotationError, "1 dimensions"),
        (np.zeros((1, 2, 3, 4, 5), np.uint8), None, AnnotationError, "5 dimensions"),
        (np.zeros((0, 4, 4), np.uint8), None, AnnotationError, "Nothing to convert"),
        (np.zeros((3, 4, 4), np.uint8), [], InputError, "Nothing to convert"),
        (np.zeros((3, 4, 4), np.uint8), [(3,)], InputError, "out of range"),
        (np.zeros((3, 4, 4), np.uint8), [(-1,)], InputError, "out of range"),
        (np.zeros((3, 4, 4), np.uint8), [(0, 1)], InputError, "1 leading axis"),
        (np.zeros((2, 3, 4, 4), np.uint8), [(1,)], InputError, "2 leading axis"),
        (np.zeros((4, 4), np.uint8), [(0,)], InputError, "2-D labels are one plane"),
        (np.zeros((3, 4, 4), np.uint8), [(1.5,)], InputError, "whole numbers"),
    ],
)
def test_bad_labels_or_planes_are_refused_in_one_line(labels, planes, error, words):
    with pytest.raises(error, match=words) as raised:
        annotations_from_labels(labels, planes)
    assert "\n" not in str(raised.value)


@settings(max_examples=60, deadline=None)
@given(
    labels=hnp.arrays(
        np.uint16,
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.sampled_from([0, 0, 1, 2, 7, 300, 65535]),
    ),
    data=st.data(),
)
def test_ids_map_one_to_one_onto_consecutive_cells_in_the_chosen_planes(labels, data):
    chosen = data.draw(st.sets(st.integers(0, len(labels) - 1), min_size=1))
    before = labels.copy()

    annotations = annotations_from_labels(labels, [(z,) for z in sorted(chosen)])

    np.testing.assert_array_equal(labels, before)
    others = [z for z in range(len(labels)) if z not in chosen]
    assert (annotations[others] == SPARSE_UNANNOTATED).all()
    source, made = labels[sorted(chosen)], annotations[sorted(chosen)]
    np.testing.assert_array_equal(made == SPARSE_BACKGROUND, source == 0)
    pairs = set(zip(source[source > 0].tolist(), made[source > 0].tolist(), strict=True))
    objects = sorted({label for label, _ in pairs})
    # one cell id per object id and back, numbered 2, 3, ... in order of value
    assert sorted(pairs) == [(label, 2 + rank) for rank, label in enumerate(objects)]


@pytest.mark.parametrize(
    ("text", "leading", "planes"),
    [
        ("3,5", (6,), [(3,), (5,)]),
        ("0:3", (6,), [(0,), (1,), (2,)]),
        (" 4: , 1", (6,), [(4,), (5,), (1,)]),
        (":", (2,), [(0,), (1,)]),
        ("1/0:2", (2, 3), [(1, 0), (1, 1)]),
        ("0/2,0/2", (2, 3), [(0, 2)]),
    ],
)
def test_plane_lists_read_as_the_sliders_count(text, leading, planes):
    assert planes_from_text(text, leading) == planes


@pytest.mark.parametrize(
    ("text", "leading", "words"),
    [
        ("", (3,), "No planes"),
        ("x", (3,), "not a plane number"),
        ("1:2:3", (3,), "not a plane number"),
        ("-1", (3,), "not a plane number"),
        ("3", (3,), "out of range"),
        ("2:1", (3,), "out of range or empty"),
        ("0:4", (3,), "out of range"),
        ("1", (2, 3), "each item needs 2 part"),
        ("1", (), "one 2-D plane"),
    ],
)
def test_bad_plane_lists_are_refused_in_one_line(text, leading, words):
    with pytest.raises(InputError, match=words):
        planes_from_text(text, leading)


def test_a_boundary_band_leaves_the_result_s_boundaries_unannotated():
    """Two touching squares and a lone one: a band of 1 px unannotates the pixels on
    either side of every boundary (between the touching pair too); 2 px one more ring."""
    labels = np.zeros((30, 40), np.int32)
    labels[5:15, 5:15], labels[5:15, 15:25], labels[20:26, 30:36] = 3, 7, 9
    whole = annotations_from_labels(labels)
    one = annotations_from_labels(labels, boundary_band=1)
    two = annotations_from_labels(labels, boundary_band=2)
    assert one[10, 14] == one[10, 15] == 0  # both sides of the touching border
    assert one[10, 4] == 0 and one[10, 5] == 0 and one[10, 6] != 0  # outside and inside
    assert two[10, 6] == 0 and two[10, 3] == 0 and two[10, 7] == whole[10, 7]
    for banded in (one, two):
        kept = banded != 0
        np.testing.assert_array_equal(banded[kept], whole[kept])
        assert set(np.unique(banded[kept])) == set(np.unique(whole))  # every cell survives
    assert (two == 0).sum() > (one == 0).sum() > 0
    with pytest.raises(InputError, match="boundary band must be 0 px or more"):
        annotations_from_labels(labels, boundary_band=-1)

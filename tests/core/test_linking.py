"""Linking per-plane instance labels through a stack (z-stitching, frame-to-frame tracking)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from skimage.draw import disk
from skimage.metrics import adapted_rand_error

from napari_unet.core import linking
from napari_unet.core.errors import InputError
from napari_unet.core.linking import link_planes, link_stack

# --- helpers --------------------------------------------------------------------------


def touching_balls() -> np.ndarray:
    """(30, 96, 96) ground truth: 8 balls of radius 9-12 in two rows, neighbours touching.

    Where two balls would overlap, each voxel goes to the ball whose (radius-scaled) centre
    is nearer, so neighbours share a flat face, as touching nuclei do.
    """
    shape = (30, 96, 96)
    yx = [(y, x) for y in (36, 56) for x in (18, 38, 58, 78)]
    zs = (14, 16, 13, 15, 17, 12, 15, 16)
    radii = (11, 10, 12, 9, 10, 12, 11, 10)
    z, y, x = np.indices(shape)
    nearest = np.full(shape, np.inf)
    truth = np.zeros(shape, np.int32)
    for i, ((cy, cx), cz, r) in enumerate(zip(yx, zs, radii, strict=True), start=1):
        distance = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / r
        inside = (distance <= 1) & (distance < nearest)
        truth[inside] = i
        nearest[inside] = distance[inside]
    return truth


def per_plane_ids(truth: np.ndarray, seed: int = 1) -> np.ndarray:
    """What a 2-D model gives: each plane's objects numbered 1..k in a shuffled order."""
    rng = np.random.default_rng(seed)
    planes = np.zeros_like(truth)
    for k, plane in enumerate(truth):
        ids = np.unique(plane[plane > 0])
        lut = np.zeros(truth.max() + 1, np.int32)
        lut[ids] = rng.permutation(ids.size) + 1
        planes[k] = lut[plane]
    return planes


def with_gap_lines(truth: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Clear the pixels where two objects touch in a plane, as a 2-D model separates them."""
    out = planes.copy()
    for axis in (1, 2):
        a = np.moveaxis(truth, axis, -1)
        touching = (a[..., :-1] != a[..., 1:]) & (a[..., :-1] > 0) & (a[..., 1:] > 0)
        np.moveaxis(out, axis, -1)[..., :-1][touching] = 0
    return out


def rand_error(truth: np.ndarray, labels: np.ndarray) -> float:
    return float(adapted_rand_error(truth, labels)[0])


def reference_link(labels: np.ndarray, min_iou: float) -> np.ndarray:
    """The contract written out plainly: greedy best IoU first, ties by (previous, current)
    input ids, new ids in plane order then input-id order."""
    out = np.zeros(labels.shape, np.int32)
    next_id = 1
    previous: dict[int, int] = {}
    for k, plane in enumerate(labels):
        ids = [int(i) for i in np.unique(plane) if i != 0]
        current: dict[int, int] = {}
        if k > 0:
            before = labels[k - 1]
            candidates = []
            for p in previous:
                for c in ids:
                    inter = int(np.sum((before == p) & (plane == c)))
                    if inter:
                        union = int(np.sum(before == p)) + int(np.sum(plane == c)) - inter
                        if inter / union >= min_iou:
                            candidates.append((-(inter / union), p, c))
            taken = set()
            for _, p, c in sorted(candidates):
                if p not in taken and c not in current:
                    taken.add(p)
                    current[c] = previous[p]
        for c in ids:
            if c not in current:
                current[c] = next_id
                next_id += 1
        for c, new in current.items():
            out[k][plane == c] = new
        previous = current
    return out


def square(shape, top, left, size, value=1) -> np.ndarray:
    plane = np.zeros(shape, np.int32)
    plane[top : top + size, left : left + size] = value
    return plane


# --- the measured test ----------------------------------------------------------------


@pytest.mark.parametrize("gaps", [False, True], ids=["exact_slices", "gap_lines"])
def test_touching_balls_linked_get_one_id_per_ball_unlinked_do_not(gaps):
    truth = touching_balls()
    # the balls really touch: some voxel of one ball has a 6-neighbour in another
    assert np.any(
        (truth[:, :, :-1] != truth[:, :, 1:]) & (truth[:, :, :-1] > 0) & (truth[:, :, 1:] > 0)
    )
    planes = per_plane_ids(truth)
    if gaps:
        planes = with_gap_lines(truth, planes)
    linked = link_planes(planes)

    assert rand_error(truth, linked) <= 0.05
    # unlinked: ids restart per plane (unrelated balls share ids) ...
    assert rand_error(truth, planes) > 0.5
    # ... and even made unique per plane, each ball is cut into one object per slice
    unique_per_plane = np.where(planes > 0, planes + 100 * np.arange(30)[:, None, None], 0)
    assert rand_error(truth, unique_per_plane) > 0.5


def test_touching_balls_each_ball_body_is_one_linked_id():
    truth = touching_balls()
    linked = link_planes(per_plane_ids(truth))
    for ball in range(1, truth.max() + 1):
        ids, counts = np.unique(linked[truth == ball], return_counts=True)
        # only the pole (a few voxels where the slice shrinks below min_iou) may split off
        assert counts.max() >= 0.98 * counts.sum()
        assert 0 not in ids
    # no id spans two balls
    for new in range(1, linked.max() + 1):
        assert np.unique(truth[linked == new]).size == 1


# --- the rule ---------------------------------------------------------------------------


def test_overlap_exactly_at_min_iou_links_and_above_it_does_not():
    # two 10x10 squares, the second moved 6 px: overlap 40, union 160, IoU exactly 0.25
    labels = np.stack([square((20, 30), 5, 5, 10, 3), square((20, 30), 5, 11, 10, 8)])
    assert link_planes(labels, min_iou=0.25)[1, 10, 15] == 1
    high = link_planes(labels, min_iou=0.26)
    assert high[0, 10, 8] == 1 and high[1, 10, 15] == 2


def test_two_objects_on_one_previous_object_best_iou_takes_the_id():
    before = square((20, 40), 0, 0, 20, 5)  # 400 px
    after = np.zeros((20, 40), np.int32)
    after[0:20, 0:5] = 1  # IoU 100 / 400 = 0.25, lower id
    after[0:20, 5:20] = 2  # IoU 300 / 400 = 0.75
    linked = link_planes(np.stack([before, after]), min_iou=0.2)
    assert linked[1, 0, 10] == linked[0, 0, 0] == 1  # the better match, not the first id
    assert linked[1, 0, 0] == 2  # one-to-one: the other gets a new id


def test_one_object_on_two_previous_objects_continues_only_the_best():
    before = np.zeros((20, 40), np.int32)
    before[:, 0:6] = 4  # overlaps the merged object little
    before[:, 6:20] = 9  # overlaps it most
    after = square((20, 40), 0, 0, 20, 1)
    linked = link_planes(np.stack([before, after]), min_iou=0.1)
    assert linked[0, 0, 0] == 1 and linked[0, 0, 10] == 2
    assert linked[1, 0, 0] == 2  # takes the id of the best IoU; id 1 ends (no merges)


def test_matching_is_best_iou_first_not_first_come():
    # previous A overlaps current Y (IoU 0.6) and X (IoU 0.35); previous B overlaps X only
    # (IoU 0.125). Best first: A-Y, then B-X. Taking current objects in id order (X first)
    # would give X the id of A and leave Y a new id.
    shape = (10, 60)
    before = np.zeros(shape, np.int32)
    before[:, 0:30] = 1  # A: 300 px
    before[:, 30:50] = 2  # B: 200 px
    after = np.zeros(shape, np.int32)
    after[:, 18:34] = 1  # X: 160 px; overlaps A 120 (IoU 120/340), B 40 (IoU 40/320)
    after[:, 0:18] = 2  # Y: 180 px; overlaps A 180 (IoU 0.6)
    labels = np.stack([before, after])
    linked = link_planes(labels, min_iou=0.1)
    assert linked[0, 0, 0] == 1 and linked[0, 0, 40] == 2
    assert linked[1, 0, 5] == 1  # Y continues A
    assert linked[1, 0, 25] == 2  # X continues B
    np.testing.assert_array_equal(linked, reference_link(labels, 0.1))


def test_background_stays_zero_and_empty_plane_breaks_the_chain():
    disc = square((12, 12), 2, 2, 6, 5)
    labels = np.stack([disc, np.zeros_like(disc), disc, disc])
    linked = link_planes(labels)
    np.testing.assert_array_equal(linked == 0, labels == 0)
    # no gap closing: the object after the empty plane is a new one
    assert [linked[k, 4, 4] for k in (0, 2, 3)] == [1, 2, 2]


def test_moving_disc_keeps_its_id_while_motion_is_below_its_radius_then_new_id_after_jump():
    radius, shape = 10, (64, 160)
    centres = [20, 27, 34, 41, 48, 80, 86]  # steps of 7 px (0.7 r), then a jump of 32 px (3.2 r)
    frames = np.zeros((len(centres), *shape), np.int32)
    for t, cx in enumerate(centres):
        frames[t][disk((32, cx), radius, shape=shape)] = 3 + t  # ids unrelated across frames
    linked = link_planes(frames)
    ids = [int(linked[t, 32, cx]) for t, cx in enumerate(centres)]
    assert ids == [1, 1, 1, 1, 1, 2, 2]


def test_single_plane_and_empty_stack():
    plane = np.array([[0, 40, 40], [7, 0, 1000]])
    np.testing.assert_array_equal(link_planes(plane[None]), [[[0, 2, 2], [1, 0, 3]]])
    empty = link_planes(np.zeros((0, 4, 5), np.uint16))
    assert empty.shape == (0, 4, 5) and empty.dtype == np.int32


def test_plane_without_background():
    labels = np.stack([np.full((4, 4), 9), np.full((4, 4), 2)])
    np.testing.assert_array_equal(link_planes(labels), np.ones((2, 4, 4)))


# --- properties -----------------------------------------------------------------------


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=hnp.arrays(
        np.int64,
        st.tuples(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7)),
        elements=st.integers(0, 5),
    ),
    min_iou=st.floats(0.01, 1.0),
)
def test_random_stacks_follow_the_contract(labels, min_iou):
    original = labels.copy()
    linked = link_planes(labels, min_iou=min_iou)
    np.testing.assert_array_equal(labels, original)
    assert linked.dtype == np.int32 and linked.shape == labels.shape
    np.testing.assert_array_equal(linked, reference_link(labels, min_iou))
    # ids 1..M, each a run of consecutive planes, one object per plane
    ids = np.unique(linked[linked > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    for new in ids:
        planes = np.flatnonzero((linked == new).any(axis=(1, 2)))
        np.testing.assert_array_equal(planes, np.arange(planes[0], planes[-1] + 1))
    for plane_in, plane_out in zip(labels, linked, strict=True):
        pairs = np.unique(np.stack([plane_in.ravel(), plane_out.ravel()]), axis=1)
        # the plane's partition is kept: input ids and output ids correspond one-to-one
        assert np.unique(pairs[0]).size == np.unique(pairs[1]).size == pairs.shape[1]
        assert not np.any((pairs[0] == 0) != (pairs[1] == 0))


def random_discs(n_planes=6, n_objects=60, size=96, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n_planes, size, size), np.int32)
    centres = rng.uniform(0, size, (n_objects, 2))
    for k in range(n_planes):
        ids = rng.permutation(n_objects) + 1
        moved = centres + rng.normal(0, 2, centres.shape)
        for i, (cy, cx) in enumerate(moved):
            labels[k][disk((cy, cx), 6, shape=(size, size))] = ids[i]
    return labels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.uint64])
def test_dtypes_and_huge_ids_give_the_same_linking(dtype):
    labels = random_discs()
    expected = link_planes(labels)
    assert expected.max() < labels.size  # sanity: the discs were linked
    np.testing.assert_array_equal(link_planes(labels.astype(dtype)), expected)
    # ids far above the pixel count take the sorting path: same answer
    huge = np.where(labels > 0, labels.astype(np.uint64) + np.uint64(2**40), 0).astype(dtype)
    if np.iinfo(dtype).max > 2**40:
        np.testing.assert_array_equal(link_planes(huge), expected)


def test_sparse_overlap_counting_equals_dense(monkeypatch):
    labels = random_discs()
    dense = link_planes(labels)
    monkeypatch.setattr(linking, "DENSE_CELLS_PER_PIXEL", 0.0)
    np.testing.assert_array_equal(link_planes(labels), dense)
    np.testing.assert_array_equal(dense, reference_link(labels, 0.25))


def test_input_untouched_and_read_only_input_accepted():
    labels = random_discs()
    labels.flags.writeable = False
    before = labels.copy()
    linked = link_planes(labels)
    np.testing.assert_array_equal(labels, before)
    assert not np.shares_memory(linked, labels)


# --- link_stack -----------------------------------------------------------------------


def test_link_stack_links_z_for_each_time_point_with_ids_unique_overall():
    stack = np.stack([random_discs(seed=s) for s in (1, 2, 3)])  # (T, Z, H, W)
    linked = link_stack(stack)
    assert linked.shape == stack.shape and linked.dtype == np.int32
    offset = 0
    for t in range(3):
        alone = link_planes(stack[t])
        np.testing.assert_array_equal(linked[t], np.where(alone > 0, alone + offset, 0))
        offset += alone.max()
    ids = np.unique(linked[linked > 0])
    np.testing.assert_array_equal(ids, np.arange(1, offset + 1))


def test_link_stack_along_time_axis():
    stack = np.stack([random_discs(seed=s) for s in (1, 2, 3)])  # (T, Z, H, W)
    linked = link_stack(stack, axis=0)
    offset = 0
    for z in range(stack.shape[1]):
        alone = link_planes(stack[:, z])
        np.testing.assert_array_equal(linked[:, z], np.where(alone > 0, alone + offset, 0))
        offset += alone.max()
    assert linked.max() == offset


def test_link_stack_on_3d_equals_link_planes():
    labels = random_discs()
    np.testing.assert_array_equal(link_stack(labels, min_iou=0.5), link_planes(labels, min_iou=0.5))


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((4, 4), int), r"must be a stack of planes \(N, H, W\), got shape \(4, 4\)"),
        (np.zeros((2, 3, 4, 4), int), r"got shape \(2, 3, 4, 4\); stack the per-plane"),
        (np.zeros((2, 4, 4), np.float32), "must have an integer dtype, got float32"),
        (np.zeros((2, 4, 4), bool), "must have an integer dtype, got bool"),
        (np.full((2, 4, 4), -3), r"contain negative ids \(smallest -3\)"),
    ],
)
def test_bad_labels_are_refused_in_one_line(labels, message):
    with pytest.raises(InputError, match=message) as caught:
        link_planes(labels)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("min_iou", [0, 0.0, -0.1, 1.5, float("nan"), "0.3", True, None])
def test_bad_min_iou_is_refused_in_one_line(min_iou):
    with pytest.raises(InputError, match=r"min_iou must be .*in \(0, 1\], got") as caught:
        link_planes(np.zeros((2, 4, 4), int), min_iou=min_iou)
    assert "\n" not in str(caught.value)


def test_min_iou_of_one_links_only_identical_objects():
    labels = np.stack(
        [square((10, 10), 0, 0, 4), square((10, 10), 0, 0, 4), square((10, 10), 0, 1, 4)]
    )
    assert [int(link_planes(labels, min_iou=1)[k, 1, 2]) for k in range(3)] == [1, 1, 2]


@pytest.mark.parametrize(
    ("shape", "axis", "message"),
    [
        ((4, 4), -3, r"need at least 3 axes .* got shape \(4, 4\)"),
        ((2, 3, 4, 4), -1, r"cannot link along axis -1 .* choose one of axes -4..-3"),
        ((2, 3, 4, 4), -2, "cannot link along axis -2"),
        ((2, 3, 4, 4), 2, "cannot link along axis 2"),
        ((2, 3, 4, 4), -5, "cannot link along axis -5"),
        ((2, 3, 4, 4), 1.0, "must be an integer, got 1.0"),
    ],
)
def test_link_stack_bad_axis_is_refused_in_one_line(shape, axis, message):
    with pytest.raises(InputError, match=message) as caught:
        link_stack(np.zeros(shape, int), axis=axis)
    assert "\n" not in str(caught.value)

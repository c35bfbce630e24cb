"""The one lazy plane view of the core: reads and writes only the window asked for."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.planes import as_planes
from napari_unet.core.planeview import PlaneView, full_key
from napari_unet.core.sources import plane_of
from recorded_reads import RecordedReads


@pytest.fixture
def stack() -> np.ndarray:
    return np.arange(2 * 3 * 5 * 7, dtype=np.int32).reshape(2, 3, 5, 7)


def test_a_view_reads_only_the_window_asked_for(stack):
    recorded = RecordedReads(stack)
    view = PlaneView.at(recorded, (1, 2))

    assert view.shape == (5, 7) and view.ndim == 2 and view.dtype == stack.dtype
    assert recorded.keys == []  # making the view reads nothing
    np.testing.assert_array_equal(view[1:3, 4], stack[1, 2, 1:3, 4])
    assert recorded.keys == [(1, 2, slice(1, 3), 4)]
    np.testing.assert_array_equal(view[..., -1], stack[1, 2, :, -1])
    np.testing.assert_array_equal(np.asarray(view), stack[1, 2])


def test_a_view_writes_through_to_its_array(stack):
    view = PlaneView.at(stack, (0, 1))
    view[2:4, :3] = -1
    assert (stack[0, 1, 2:4, :3] == -1).all()
    assert (stack[0, 1] == -1).sum() == 6 and (stack == -1).sum() == 6


def test_kept_axes_may_sit_between_fixed_ones(stack):
    """A (t, c, y, x)-like key: the channel axis kept, the time axis fixed (the docks'
    planes with their channel axis)."""
    view = PlaneView(stack, (slice(None), 1, slice(None), 3))
    assert view.shape == (2, 5) and len(view) == 2
    np.testing.assert_array_equal(view[1, 2:], stack[1, 1, 2:, 3])


def test_a_read_hook_gets_the_full_key(stack):
    keys = []

    def read(key):
        keys.append(key)
        return np.asarray(stack[key])

    view = PlaneView.at(stack, (1,), read=read)
    np.testing.assert_array_equal(view[2], stack[1, 2])
    assert keys == [(1, 2, slice(None), slice(None))]


def test_the_planes_of_a_stack_and_of_a_source_are_lazy_views(stack):
    recorded = RecordedReads(stack)
    plane = plane_of(recorded, 1, 3)
    assert isinstance(plane, PlaneView) and recorded.keys == []
    np.testing.assert_array_equal(plane[0, :2, :2], stack[1, 0, :2, :2])

    source = RecordedReads(stack)
    planes, _ = as_planes(source)  # a lazy stack of the 6 (t, z) planes
    lazy = planes[4]  # (t=1, z=1)
    assert isinstance(lazy, PlaneView) and lazy.shape == (5, 7) and source.keys == []
    np.testing.assert_array_equal(lazy[1:2, 3:], stack[1, 1, 1:2, 3:])
    np.testing.assert_array_equal(np.asarray(lazy), stack[1, 1])


@pytest.mark.parametrize(
    ("key", "message"),
    [((0, None), "new axes"), ((0, 1, 2), "too many indices")],
)
def test_keys_numpy_would_refuse_are_refused_plainly(key, message):
    with pytest.raises(IndexError, match=message):
        full_key(key, 2)


def test_a_view_needs_an_int_or_full_slice_per_axis(stack):
    with pytest.raises(IndexError, match="one int or full slice per axis"):
        PlaneView(stack, (0, slice(1, 2), slice(None), slice(None)))
    with pytest.raises(IndexError, match="one int or full slice per axis"):
        PlaneView(stack, (0, 1))


def test_full_key_expands_the_ellipsis_and_pads():
    assert full_key((Ellipsis, 3), 3) == (slice(None), slice(None), 3)
    assert full_key(2, 3) == (2, slice(None), slice(None))
    assert full_key((1, Ellipsis), 2) == (1, slice(None))

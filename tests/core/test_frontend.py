"""The rules around a run's result (core/frontend.py): foreground, stores, option policy."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_unet.core.frontend import (
    NO_LINK_NOTE,
    NO_SPLIT_NOTE,
    applied_postprocessing,
    default_store_path,
    foreground,
    links_planes,
    plane_in_stack,
    round_tile,
    run_options,
    store_path,
)
from napari_unet.core.model import UNetConfig
from napari_unet.core.postprocess import foreground_probability
from napari_unet.core.segment import SegmentOptions


def _softmax(classes: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(*shape[:-2], classes, *shape[-2:]))
    exp = np.exp(logits)
    return (exp / exp.sum(axis=-3, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("classes", [1, 2, 3])
def test_foreground_is_the_cores_rule_for_one_plane_and_lazily_for_a_stack(classes):
    plane = _softmax(classes, (5, 7))
    np.testing.assert_array_equal(foreground(plane), foreground_probability(plane))

    stack = _softmax(classes, (2, 3, 5, 7), seed=1)  # (t, z, K, H, W)
    lazy = foreground(da.from_array(stack, chunks=(1, 1, classes, 5, 7)))
    assert isinstance(lazy, da.Array) and lazy.shape == (2, 3, 5, 7)
    expected = [[foreground_probability(stack[t, z]) for z in range(3)] for t in range(2)]
    np.testing.assert_allclose(lazy.compute(), np.array(expected), atol=1e-7)


def test_store_paths_end_in_zarr_and_a_plane_gets_its_own():
    default = default_store_path("cells")
    assert default == Path(tempfile.gettempdir()) / "napari-unet" / "cells.zarr"
    assert store_path(None, "cells") == default
    assert store_path("", "cells") == default
    assert store_path("/data/out", "cells") == Path("/data/out.zarr")
    assert store_path("/data/out.ZARR", "cells") == Path("/data/out.ZARR")
    assert store_path("/data/out.zarr", "cells", plane=4) == Path("/data/out-plane4.zarr")


def test_a_plane_is_placed_in_its_stack_with_zeros_elsewhere():
    plane = da.from_array(np.full((3, 4), 7, np.int32), chunks=(3, 4))
    stack = plane_in_stack(plane, (1, 2), (2, 3)).compute()
    assert stack.shape == (2, 3, 3, 4)
    assert (stack[1, 2] == 7).all()
    stack[1, 2] = 0
    assert not stack.any()
    assert plane_in_stack(plane, (), ()) is plane


def test_only_instance_labels_of_a_whole_stack_link():
    assert links_planes(True, "labels", 3, one_plane=False)
    assert not links_planes(True, "labels", 3, one_plane=True)  # one plane: nothing to link
    assert not links_planes(True, "labels", 1, one_plane=False)
    assert not links_planes(True, "mask", 3, one_plane=False)
    assert not links_planes(False, "labels", 3, one_plane=False)


def test_block_wise_runs_leave_whole_plane_options_out_and_say_so():
    asked = SegmentOptions(
        min_size=9, split_touching=True, fill_boundaries=True, merge_boundaries=0.3, link=True
    )
    assert run_options(asked, block_wise=False) == (asked, [])
    applied, notes = run_options(asked, block_wise=True)
    assert notes == [NO_SPLIT_NOTE, NO_LINK_NOTE]
    assert (applied.split_touching, applied.fill_boundaries, applied.merge_boundaries) == (
        False,
        False,
        0.0,
    )
    assert applied.min_size == 9 and not applied.link  # min size applies at every size
    mask, notes = run_options(SegmentOptions(output="mask", split_touching=True), block_wise=True)
    assert notes == [] and mask.split_touching  # nothing whole-plane to drop for a mask


def test_the_applied_post_processing_in_words():
    options = SegmentOptions(threshold=0.4, min_size=20, merge_boundaries=0.3, link=True)
    assert applied_postprocessing(options) == (
        "post-processing: threshold 0.4, min size 20 px, grow-and-merge below 0.3, linked through z"
    )
    applied, _ = run_options(options, block_wise=True)
    assert applied_postprocessing(applied) == "post-processing: threshold 0.4, min size 20 px"
    mask = SegmentOptions(output="mask", threshold=0.6, min_size=20)
    assert applied_postprocessing(mask) == "post-processing: threshold 0.6"
    probabilities = SegmentOptions(output="probabilities")
    assert applied_postprocessing(probabilities) == "post-processing: none (probabilities)"


def test_a_tile_size_is_rounded_for_the_network_with_a_note():
    config = UNetConfig(depth=2, base_width=4, padding="valid")
    unchanged, note = round_tile(SegmentOptions(tile_size=None), config)
    assert unchanged.tile_size is None and note is None
    rounded, note = round_tile(SegmentOptions(tile_size=101), config)
    assert rounded.tile_size != 101 and "101" in note and str(rounded.tile_size) in note
    again, note = round_tile(rounded, config)
    assert again.tile_size == rounded.tile_size and note is None

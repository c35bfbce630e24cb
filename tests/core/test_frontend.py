"""The rules around a run's result (core/frontend.py): foreground, stores, option policy."""

from __future__ import annotations

import re
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from napari_unet.core.errors import InputError
from napari_unet.core.frontend import (
    applied_postprocessing,
    default_store_path,
    foreground,
    left_out_note,
    links_planes,
    plane_in_stack,
    round_tile,
    run_options,
    store_path,
)
from napari_unet.core.model import UNetConfig
from napari_unet.core.options import WHOLE_PLANE_OPTIONS, blockwise_refused, whole_plane_options
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


#: Every option a labels run can be asked for, each in use.
EVERYTHING = SegmentOptions(
    threshold=0.4,
    min_size=9,
    split_touching=True,
    fill_boundaries=True,
    merge_boundaries=0.3,
    link=True,
    pixel_size="0.5 um",
    diameter=12.0,
)
#: Each option a block-wise run cannot honour, alone (the policy's entries, whatever they are).
EACH_REFUSED = [pytest.param(option, id=option.name) for option in blockwise_refused(EVERYTHING)]
#: The names of the whole-plane options a block-wise run applies (after the blocks).
APPLIED_BLOCKWISE = {o.name for o in WHOLE_PLANE_OPTIONS if o.blockwise}


def _off(options: SegmentOptions, names) -> SegmentOptions:
    """``options`` with the switches ``names`` off (merge_boundaries at 0)."""
    return replace(options, **{name: type(getattr(options, name))() for name in names})


def test_every_whole_plane_option_is_in_use_in_everything():
    # the parametrisations below cover the whole policy
    assert {o.name for o in whole_plane_options(EVERYTHING)} == {
        o.name for o in WHOLE_PLANE_OPTIONS
    }
    assert blockwise_refused(EVERYTHING)  # link needs the whole result whatever else does
    # split, fill and grow-and-merge are applied block-wise (the planes are labelled after
    # the blocks, docs/blockwise-postprocessing.md): only link is refused
    assert APPLIED_BLOCKWISE == {"split_touching", "fill_boundaries", "merge_boundaries"}
    assert [o.name for o in blockwise_refused(EVERYTHING)] == ["link"]


def test_in_memory_runs_apply_every_option():
    assert run_options(EVERYTHING, block_wise=False) == (EVERYTHING, [])
    names = {f.name for f in fields(SegmentOptions)}
    assert run_options(EVERYTHING, block_wise=False, recommended=names) == (EVERYTHING, [])


@pytest.mark.parametrize("option", EACH_REFUSED)
def test_a_whole_plane_option_the_user_set_is_refused_block_wise(option):
    asked = _off(EVERYTHING, {o.name for o in WHOLE_PLANE_OPTIONS} - {option.name})
    with pytest.raises(InputError) as refused:
        run_options(asked, block_wise=True)
    assert str(refused.value) == option.blockwise_message()
    # the others recommended, this one the user's: still refused
    others = {o.name for o in WHOLE_PLANE_OPTIONS} - {option.name}
    with pytest.raises(InputError, match=re.escape(option.blockwise_message())):
        run_options(asked, block_wise=True, recommended=others)


@pytest.mark.parametrize("option", EACH_REFUSED)
def test_a_recommended_whole_plane_option_is_left_out_block_wise_with_its_note(option):
    asked = _off(EVERYTHING, {o.name for o in WHOLE_PLANE_OPTIONS} - {option.name})
    applied, notes = run_options(asked, block_wise=True, recommended={option.name})
    assert notes == [left_out_note(option)]
    assert option.what in notes[0] and option.needs in notes[0]
    assert applied == _off(asked, {option.name}) and not option.in_use(applied)


def test_every_recommended_whole_plane_option_gets_its_note_and_nothing_else_changes():
    recommended = {o.name for o in WHOLE_PLANE_OPTIONS}
    applied, notes = run_options(EVERYTHING, block_wise=True, recommended=recommended)
    used = blockwise_refused(EVERYTHING)
    assert notes == [left_out_note(o) for o in used]
    assert len(set(notes)) == len(used)  # one note each, none merged or lost
    assert applied == _off(EVERYTHING, {o.name for o in used})
    assert blockwise_refused(applied) == ()
    assert {o.name for o in whole_plane_options(applied)} == APPLIED_BLOCKWISE
    assert (applied.threshold, applied.min_size) == (0.4, 9)  # apply at every size


def test_options_outside_the_policy_pass_through_block_wise_unchanged():
    asked = _off(EVERYTHING, {o.name for o in WHOLE_PLANE_OPTIONS})
    applied_to_labels = sorted(APPLIED_BLOCKWISE)
    assert applied_to_labels  # split, fill, grow-and-merge
    # the labels options the block-wise core applies, set by the user: kept as they are
    user_set = replace(asked, **{name: getattr(EVERYTHING, name) for name in applied_to_labels})
    assert run_options(user_set, block_wise=True) == (user_set, [])
    # a mask or probabilities run has no instance labels: nothing of the policy applies
    for output in ("mask", "probabilities"):
        other = replace(EVERYTHING, output=output)
        assert whole_plane_options(other) == ()
        assert run_options(other, block_wise=True) == (other, [])


def test_the_applied_post_processing_in_words():
    options = SegmentOptions(threshold=0.4, min_size=20, merge_boundaries=0.3, link=True)
    assert applied_postprocessing(options) == (
        "post-processing: threshold 0.4, min size 20 px, grow-and-merge below 0.3, linked through z"
    )
    recommended = {"merge_boundaries", "link"}
    applied, notes = run_options(options, block_wise=True, recommended=recommended)
    words = applied_postprocessing(applied)
    assert words.startswith("post-processing: threshold 0.4, min size 20 px")
    # what a block-wise run leaves out is in its notes, never in what it says it applied
    assert "grow-and-merge below 0.3" in words  # applied block-wise, as in memory
    assert "linked through z" not in words and len(notes) == 1
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

"""The Segment widget on lazy images: block-wise into a zarr store, never loaded whole."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from dock_fields import open_dock

from napari_unet._widgets.segment import SegmentWidget
from napari_unet.core import normalise
from napari_unet.core.events import Progress
from napari_unet.core.frontend import applied_postprocessing
from napari_unet.core.largeimage import BlockStore, segment_to_zarr
from napari_unet.core.modelfile import load_model, save_model
from napari_unet.core.options import SegmentOptions, blockwise_refused
from napari_unet.core.segment import segment

TIMEOUT_MS = 60_000
#: A valid tile size of the tiny model: 600 x 700 images give several tiles and blocks.
TILE = 92
#: Rounded to 2 tiles (208 px): 3 x 4 blocks on a 600 x 700 plane.
BLOCK = 200


class WholeReadForbidden(AssertionError):
    """Raised when the whole image is materialised."""


class NoWholeRead(da.Array):
    """A dask array the segmentation worker cannot compute or convert whole.

    Its slices are plain dask arrays, so tile reads work. napari itself reads the
    displayed plane whole on the main thread (that is display, not segmentation), so
    only reads from other threads (the widget's worker) are refused.
    """

    def __array__(self, *args, **kwargs):
        _refuse_off_main_thread()
        return super().__array__(*args, **kwargs)

    def compute(self, **kwargs):
        _refuse_off_main_thread()
        return super().compute(**kwargs)


def _refuse_off_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise WholeReadForbidden("the segmentation loaded the whole image")


def no_whole_read(image: np.ndarray, chunks: int = 100) -> NoWholeRead:
    lazy = da.from_array(image, chunks=chunks)
    return NoWholeRead(lazy.dask, lazy.name, lazy.chunks, meta=lazy._meta)


@pytest.fixture
def large_blobs() -> np.ndarray:
    """(600, 700) uint8: bright discs, some across block borders, on a noisy background."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[:600, :700]
    image = rng.normal(20, 5, (600, 700))
    for r, c in rng.integers(0, [600, 700], size=(40, 2)):
        image[(rows - r) ** 2 + (cols - c) ** 2 < 225] += 150
    return np.clip(image, 0, 255).astype(np.uint8)


def _threshold(model: Path, image: np.ndarray) -> float:
    """A threshold that makes the random tiny model mark ~30 % of pixels as foreground."""
    probabilities = segment(
        load_model(model), image, output="probabilities", tile_size=TILE, device="cpu"
    )
    return round(float(np.quantile(probabilities[1], 0.7)), 4)


def _expected(model: Path, image: np.ndarray, threshold: float, **options) -> np.ndarray:
    return segment(
        load_model(model), image, threshold=threshold, tile_size=TILE, device="cpu", **options
    )


def _make_widget(viewer, model: Path, store: Path, threshold: float = 0.5) -> SegmentWidget:
    widget = open_dock(viewer, "Segment")
    widget.add_model_file(model)
    widget.set_options(device="cpu")
    widget.set_options(threshold=threshold)
    widget.set_options(tile_size=TILE)
    widget.set_options(block_size=BLOCK)
    widget.set_options(output_store=store)
    return widget


def _wait_done(qtbot, widget: SegmentWidget) -> None:
    qtbot.waitUntil(lambda: not widget.is_running, timeout=TIMEOUT_MS)


def _block_progress(worker) -> list[Progress]:
    """The worker's per-block progress events, collected as they are yielded."""
    events: list[Progress] = []
    worker.yielded.connect(
        lambda e: events.append(e) if isinstance(e, Progress) and e.message == "blocks" else None
    )
    return events


def test_dask_layer_is_segmented_block_wise_without_loading_it(
    make_napari_viewer, qtbot, notifications, monkeypatch, tmp_path, large_blobs, tiny_model_file
):
    # Normalisation stats read a strided subsample; small images fit in it whole, so
    # shrink it to make every whole read a failure (the reference below uses it too).
    monkeypatch.setattr(normalise, "MAX_STAT_PIXELS", 10_000)
    viewer = make_napari_viewer()
    lazy = no_whole_read(large_blobs)
    guarded = ThreadPoolExecutor(1).submit(np.asarray, lazy)
    with pytest.raises(WholeReadForbidden):
        guarded.result()  # the guard works
    viewer.add_image(lazy, name="lazy", contrast_limits=(0, 255), scale=(2, 3), translate=(5, 7))
    threshold = _threshold(tiny_model_file, large_blobs)
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "out.zarr", threshold)

    worker = widget.segment_stack()
    blocks = _block_progress(worker)
    _wait_done(qtbot, widget)

    assert notifications["error"] == []
    assert len(blocks) == 12 and blocks[-1].done == blocks[-1].total == 12
    layer = viewer.layers["lazy labels"]
    assert isinstance(layer.data, zarr.Array)  # disk-backed, not a copy in memory
    expected = _expected(tiny_model_file, large_blobs, threshold)
    assert expected.max() > 5  # many objects: the comparison is not trivial
    np.testing.assert_array_equal(np.asarray(layer.data), expected)
    np.testing.assert_allclose(layer.scale, (2, 3))
    np.testing.assert_allclose(layer.translate, (5, 7))
    assert "done" in widget.status and "out.zarr" in widget.status
    # (3) the store on disk reopens with zarr and holds the layer's labels
    reopened = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert reopened.attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    np.testing.assert_array_equal(reopened["0"][...], np.asarray(layer.data))


def test_multiscale_layer_segments_its_full_resolution(
    make_napari_viewer, qtbot, tmp_path, large_blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    pyramid = [large_blobs, large_blobs[::2, ::2], large_blobs[::4, ::4]]
    viewer.add_image(pyramid, name="pyramid", multiscale=True, contrast_limits=(0, 255))
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "pyramid.zarr")
    widget.set_options(output="mask")

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    layer = viewer.layers["pyramid mask"]
    assert isinstance(layer.data, zarr.Array)  # block-wise into the store, not in memory
    assert layer.data.shape == large_blobs.shape
    assert BlockStore(tmp_path / "pyramid.zarr").run_record()["complete"]
    expected = _expected(tiny_model_file, large_blobs, 0.5, output="mask")
    np.testing.assert_array_equal(np.asarray(layer.data), expected)


def test_cancel_keeps_finished_blocks_and_resume_completes(
    make_napari_viewer, qtbot, notifications, tmp_path, large_blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(large_blobs, chunks=100), name="lazy", contrast_limits=(0, 255))
    threshold = _threshold(tiny_model_file, large_blobs)
    store = tmp_path / "cancelled.zarr"
    widget = _make_widget(viewer, tiny_model_file, store, threshold)
    worker = widget.segment_stack()
    blocks = _block_progress(worker)
    qtbot.waitUntil(lambda: len(blocks) >= 2, timeout=TIMEOUT_MS)

    widget.cancel()
    _wait_done(qtbot, widget)

    assert notifications["error"] == []
    finished = BlockStore(store).done()
    assert 2 <= len(finished) < 12  # stopped early, finished blocks kept
    assert "cancelled" in widget.status and "resume" in widget.status
    layer = viewer.layers["lazy labels"]
    partial = zarr.open_array(str(store / "0"), mode="r")[...]
    np.testing.assert_array_equal(np.asarray(layer.data), partial)
    assert partial.any() and not partial.all()

    widget.set_options(resume=True)
    worker = widget.segment_stack()
    resumed = _block_progress(worker)
    _wait_done(qtbot, widget)

    assert notifications["error"] == []
    assert len(resumed) == 12 - len(finished)  # finished blocks are not redone
    assert [lay.name for lay in viewer.layers] == ["lazy", "lazy labels"]  # our layer reused
    expected = _expected(tiny_model_file, large_blobs, threshold)
    np.testing.assert_array_equal(np.asarray(viewer.layers["lazy labels"].data), expected)


def _stored_reference(model: Path, image, path: Path, options: SegmentOptions) -> np.ndarray:
    """The core's own block-wise result of ``image`` with ``options`` (the dock's blocks)."""
    options = replace(options, tile_size=TILE, device="cpu")
    stored = segment_to_zarr(load_model(model), image, path, options=options, block_size=BLOCK)
    return stored[...]


@pytest.mark.parametrize(
    ("option", "stack"),
    [("split_touching", False), ("link", True)],  # link: on a stack without a z label
)
def test_a_whole_plane_option_the_user_set_is_refused_block_wise_or_applied(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file, option, stack
):
    viewer = make_napari_viewer()
    image = np.stack([blobs, np.roll(blobs, 9, axis=1)]) if stack else blobs
    viewer.add_image(da.from_array(image), name="lazy", contrast_limits=(0, 255))
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "asked.zarr")
    assert widget.options().link is False  # no z label: linking is the user's choice
    widget.set_options(**{option: True})
    asked = SegmentOptions(**{option: True})

    worker = widget.segment_stack()

    refused = blockwise_refused(asked)  # the policy, whatever it holds today (link)
    assert bool(refused) == (option == "link")
    if refused:
        assert worker is None and not widget.is_running
        assert len(notifications["error"]) == 1
        message = notifications["error"][0]
        assert refused[0].what in message and "block-wise" in message
        assert "--" not in message  # named as the dock's fields, not the CLI's flags
        assert widget.status == f"not started: {message}"
        assert "lazy labels" not in viewer.layers and not (tmp_path / "asked.zarr").exists()
        return
    _wait_done(qtbot, widget)
    assert notifications["error"] == [] and notifications["warning"] == []
    assert applied_postprocessing(asked) in widget.status.split("\n")
    expected = _stored_reference(tiny_model_file, image, tmp_path / "ref.zarr", asked)
    np.testing.assert_array_equal(np.asarray(viewer.layers["lazy labels"].data), expected)


def test_a_recommended_split_is_applied_block_wise_and_said_so(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file
):
    """A lazy image goes block-wise into a store: the model's recommended watershed split
    is applied there too (the planes are labelled after the blocks), with no note."""
    bundle = load_model(tiny_model_file)
    bundle.provenance["postprocess"] = {"threshold": 0.5, "min_size": 3, "split_touching": True}
    recommending = save_model(bundle, tmp_path / "recommending.safetensors")
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(blobs), name="lazy", contrast_limits=(0, 255))
    widget = _make_widget(viewer, recommending, tmp_path / "split.zarr")
    assert widget.options().split_touching is True  # the model's, not the user's

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    recommended = SegmentOptions(threshold=0.5, min_size=3, split_touching=True)
    assert blockwise_refused(recommended) == ()
    assert notifications["error"] == [] and notifications["warning"] == []
    assert "done" in widget.status
    assert applied_postprocessing(recommended) in widget.status.split("\n")
    assert "split" in applied_postprocessing(recommended)
    expected = _stored_reference(recommending, blobs, tmp_path / "ref.zarr", recommended)
    np.testing.assert_array_equal(np.asarray(viewer.layers["lazy labels"].data), expected)


def test_current_slice_of_a_lazy_stack_segments_that_plane_only(
    make_napari_viewer, qtbot, monkeypatch, tmp_path, blobs, tiny_model_file
):
    monkeypatch.setattr(normalise, "MAX_STAT_PIXELS", 1_000)  # see the first test
    viewer = make_napari_viewer()
    stack = np.stack([blobs, np.roll(blobs, 20, axis=1), np.roll(blobs, 30, axis=0)])
    viewer.add_image(no_whole_read(stack, 48), name="stack", contrast_limits=(0, 255))
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "stack.zarr")
    viewer.dims.set_current_step(0, 1)

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    layer = viewer.layers["stack labels"]
    assert layer.data.shape == stack.shape
    shown = np.asarray(layer.data)
    assert not shown[0].any() and not shown[2].any()
    expected = _expected(tiny_model_file, stack[1], 0.5)
    assert expected.any()
    np.testing.assert_array_equal(shown[1], expected)
    stored = zarr.open_array(str(tmp_path / "stack-plane1.zarr" / "0"), mode="r")
    np.testing.assert_array_equal(stored[...], expected)


def test_in_memory_image_can_be_written_to_a_store(
    make_napari_viewer, qtbot, tmp_path, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "forced.zarr")
    widget.set_options(to_zarr=True)
    widget.set_options(output="probabilities")

    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    layer = viewer.layers["blobs probabilities"]
    probabilities = segment(
        load_model(tiny_model_file), blobs, output="probabilities", tile_size=TILE, device="cpu"
    )
    np.testing.assert_allclose(np.asarray(layer.data), 1.0 - probabilities[0], atol=1e-6)
    stored = zarr.open_array(str(tmp_path / "forced.zarr" / "0"), mode="r")
    np.testing.assert_allclose(stored[...], probabilities, atol=1e-6)


def test_in_memory_run_never_writes_into_a_store_layer(
    make_napari_viewer, qtbot, notifications, tmp_path, blobs, tiny_model_file
):
    viewer = make_napari_viewer()
    viewer.add_image(blobs, name="blobs")
    widget = _make_widget(viewer, tiny_model_file, tmp_path / "kept.zarr")
    widget.set_options(to_zarr=True)
    widget.segment_current_slice()
    _wait_done(qtbot, widget)
    stored = np.asarray(viewer.layers["blobs labels"].data).copy()

    widget.set_options(to_zarr=False)
    widget.set_options(threshold=0.0)  # everything foreground: differs from the stored labels
    widget.segment_current_slice()
    _wait_done(qtbot, widget)

    assert notifications["error"] == []
    assert (viewer.layers["blobs labels [2]"].data > 0).all()
    np.testing.assert_array_equal(np.asarray(viewer.layers["blobs labels"].data), stored)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "kept.zarr" / "0"))[...], stored)

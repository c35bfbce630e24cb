"""Fill block by block with bounded memory: sparse objects are filled from their edges,
gathered chunk by chunk, never from a window as large as the plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage.metrics import adapted_rand_error

from napari_unet.core import seam_fill
from napari_unet.core.events import drain
from napari_unet.core.postprocess import PlaneLabeller, semantic_mask
from napari_unet.core.seam_fill import fill_core, object_edges
from napari_unet.core.seams import block_cores, label_plane_in_blocks
from recorded_reads import RecordedReads

SHAPE = (160, 224)


@pytest.fixture
def small_windows(monkeypatch):
    """Dense fill only up to 48 x 48 windows, edges gathered 16 px square: the plane
    (160 x 224) is then far larger than anything read at once."""
    monkeypatch.setattr(seam_fill, "DENSE_FILL_MAX_PIXELS", 48 * 48)
    monkeypatch.setattr(seam_fill, "EDGE_CHUNK", 16)


def _sparse_objects(rng) -> np.ndarray:
    """Seven small objects (3-6 px blobs) scattered over a (160, 224) plane: uint8 mask."""
    mask = np.zeros(SHAPE, np.uint8)
    for r, c in zip(rng.integers(5, 150, 7), rng.integers(5, 215, 7), strict=True):
        size = rng.integers(3, 7)
        mask[r : r + size, c : c + size - 1] = 1
    return mask


def _nearest_object_distance(objects: np.ndarray) -> np.ndarray:
    """Per object id k (1..N): the (H, W) distance of each pixel to object k."""
    return np.stack(
        [ndimage.distance_transform_edt(objects != k) for k in range(1, objects.max() + 1)]
    )


def test_edges_are_a_superset_of_the_object_pixels_next_to_background():
    labels = np.zeros((20, 20), np.int32)
    labels[4:12, 3:9] = 5
    points, ids = object_edges(labels, (0, 20, 0, 20))
    found = np.zeros_like(labels, bool)
    found[tuple(points.T)] = True
    true_edges = (labels > 0) & ~ndimage.binary_erosion(labels > 0)
    assert np.array_equal(found, true_edges) and set(ids) == {5}
    # chunked, pixels on a chunk's border count too (their outer neighbours are unseen)
    points, _ = object_edges(labels, (2, 14, 0, 10))
    assert {tuple(p) for p in points} >= {tuple(p) for p in np.argwhere(true_edges)}


@pytest.mark.parametrize("block", [(32, 32), (40, 96)])
def test_sparse_objects_are_filled_from_their_edges_without_reading_the_plane(
    rng, small_windows, block
):
    mask = _sparse_objects(rng)
    objects = PlaneLabeller()(mask)
    whole = PlaneLabeller(fill_boundaries=True)(mask)
    assert (whole > 0).all() and whole.max() >= 5

    unfilled = RecordedReads(np.zeros(SHAPE, np.int32))
    out = np.zeros(SHAPE, np.int32)
    labeller = PlaneLabeller(fill_boundaries=True)
    drain(
        label_plane_in_blocks(
            mask, block_cores(SHAPE, block), out, labeller=labeller, margin=4, unfilled=unfilled
        )
    )
    np.testing.assert_array_equal(unfilled.data, objects)
    # Every pixel took an object at the smallest distance ...
    distance = _nearest_object_distance(objects)
    taken = np.take_along_axis(distance, (out - 1)[None], axis=0)[0]
    np.testing.assert_allclose(taken, distance.min(axis=0))
    # ... the in-memory one wherever a single object is nearest (ties may go either way)
    tied = (distance == distance.min(axis=0)).sum(axis=0) > 1
    assert np.array_equal(out[~tied], whole[~tied]) and tied.mean() < 0.05
    # and nothing read was larger than a dense window or a block
    assert max(unfilled.areas) <= max(48 * 48, block[0] * block[1]) < mask.size


def test_a_core_far_from_everything_grows_its_window_to_the_plane_edges(small_windows):
    labels = np.zeros(SHAPE, np.int32)
    labels[0, 0], labels[159, 223] = 1, 2  # two single-pixel objects in opposite corners
    filled = fill_core(labels, (64, 96, 96, 128), SHAPE, 4)
    rows, cols = np.mgrid[64:96, 96:128]
    nearer_first = np.hypot(rows, cols) < np.hypot(159 - rows, 223 - cols)
    assert np.array_equal(filled, np.where(nearer_first, 1, 2))


def test_a_plane_without_objects_stays_empty(small_windows):
    labels = np.zeros(SHAPE, np.int32)
    assert not fill_core(labels, (0, 32, 0, 32), SHAPE, 4).any()


@pytest.mark.data
@pytest.mark.slow
def test_dsb_nuclei_filled_from_edges_equal_in_memory(shared_data: Path, monkeypatch):
    """Real sparse nuclei (603 x 1272), every block past the dense limit: the in-memory
    fill but for pixels exactly between two nuclei."""
    from napari_unet.core.modelfile import load_model, resolve_model
    from napari_unet.core.segment import SegmentOptions, segment

    monkeypatch.setattr(seam_fill, "DENSE_FILL_MAX_PIXELS", 64 * 64)
    image = tifffile.imread(shared_data / "nuclei-dsb2018" / "images" / "a102535b0e88374b.tif")
    model = load_model(resolve_model("nuclei"))
    options = SegmentOptions(output="probabilities", device="cpu", diameter=model.object_diameter)
    mask = semantic_mask(segment(model, image, options=options), threshold=0.5)
    labeller = PlaneLabeller(min_size=10, fill_boundaries=True)
    whole = labeller(mask)
    out = np.zeros(mask.shape, np.int32)
    drain(
        label_plane_in_blocks(
            mask, block_cores(mask.shape, (128, 128)), out, labeller=labeller, margin=8
        )
    )
    assert whole.max() > 100
    assert adapted_rand_error(whole, out)[0] <= 0.005

"""The segment pipeline: tiled results equal a whole-image forward, Cancel keeps finished tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core import normalise
from napari_unet.core import segment as segment_module
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, TileDone
from napari_unet.core.model import UNet, UNetConfig, margin, nearest_valid_input_size
from napari_unet.core.modelfile import ModelBundle, random_model
from napari_unet.core.postprocess import grow_and_merge, instance_labels, semantic_mask
from napari_unet.core.segment import SegmentOptions, get_predictor, segment, segment_iter

#: margin 20, valid tile sizes 44, 48, 52, ...; tile size 60 gives a 20 px stride.
TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")
MARGIN = margin(TINY)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return random_model(TINY, seed=1)


def _identity_predictor(batch: np.ndarray) -> np.ndarray:
    """Foreground probability = the normalised pixel (clipped), cropped like the valid net."""
    foreground = np.clip(batch[:, 0, MARGIN:-MARGIN, MARGIN:-MARGIN], 0, 1)
    return np.stack([1 - foreground, foreground], axis=1).astype(np.float32)


def _all_foreground_predictor(batch: np.ndarray) -> np.ndarray:
    cropped = batch[:, :, MARGIN:-MARGIN, MARGIN:-MARGIN]
    return np.concatenate([np.zeros_like(cropped), np.ones_like(cropped)], axis=1)


def _whole_image_probabilities(bundle: ModelBundle, plane: np.ndarray) -> np.ndarray:
    """One forward pass of ``UNet.forward`` over the mirror-padded, normalised plane."""
    stats = normalise.compute_stats(plane, bundle.normalisation)
    normalised = normalise.apply(plane, stats)
    pads = []
    for size in plane.shape:
        padded = nearest_valid_input_size(TINY, size + 2 * MARGIN, mode="up")
        pads.append((MARGIN, padded - size - MARGIN))
    x = torch.from_numpy(np.pad(normalised, pads, mode="symmetric"))[None, None]
    with torch.no_grad():
        probabilities = torch.softmax(bundle.build()(x), dim=1)[0].numpy()
    return probabilities[:, : plane.shape[0], : plane.shape[1]]


def test_tiled_result_equals_a_whole_image_forward(bundle):
    image = np.random.default_rng(0).integers(0, 4000, (100, 90)).astype(np.uint16)
    expected = _whole_image_probabilities(bundle, image)
    probabilities = segment(bundle, image, output="probabilities", tile_size=60, device="cpu")
    assert probabilities.shape == (2, 100, 90) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)

    # a threshold at the median makes the labels non-trivial for an untrained network
    threshold = float(np.median(expected[1]))
    labels = segment(bundle, image, tile_size=60, threshold=threshold, device="cpu")
    expected_labels = instance_labels(semantic_mask(expected, threshold=threshold))
    assert labels.dtype == np.int32 and labels.max() > 3
    np.testing.assert_array_equal(labels, expected_labels)


def test_closing_the_generator_keeps_exactly_the_finished_tiles(bundle):
    image = np.random.default_rng(0).random((100, 90)).astype(np.float32)
    out = np.zeros((2, 100, 90), np.float32)
    options = SegmentOptions(output="probabilities", tile_size=60)
    generator = segment_iter(bundle, image, options=options, out=out)
    regions = [next(generator).region for _ in range(2)]
    generator.close()  # what Cancel does

    written = np.zeros((100, 90), bool)
    for region in regions:
        written[region] = True
    assert regions == [(slice(0, 20), slice(0, 20)), (slice(0, 20), slice(20, 40))]
    np.testing.assert_allclose(out.sum(axis=0)[written], 1.0, rtol=1e-5)  # probabilities
    assert not out[:, ~written].any()


def test_cancelled_labels_keep_the_finished_tiles_mask(bundle):
    image = np.ones((100, 90), np.uint8)
    out = np.zeros((100, 90), np.int32)
    generator = segment_iter(
        bundle,
        image,
        options=SegmentOptions(tile_size=60),
        out=out,
        predictor=_all_foreground_predictor,
    )
    events = [next(generator) for _ in range(3)]
    generator.close()
    assert all(isinstance(e, TileDone) and e.data.dtype == np.uint8 for e in events)
    assert out.sum() == 3 * 20 * 20
    assert out[:20, :60].all()


def test_stacks_are_processed_plane_by_plane(bundle):
    stack = np.random.default_rng(0).random((2, 50, 30))
    events = list(segment_iter(bundle, stack, options=SegmentOptions(tile_size=60)))
    kinds = [(type(e).__name__, e.plane) for e in events]
    per_plane = 3 * 2  # 50 rows -> 3 tiles of stride 20, 30 columns -> 2
    assert kinds == (
        [("TileDone", 0)] * per_plane
        + [("PlaneDone", 0)]
        + [("TileDone", 1)] * per_plane
        + [("PlaneDone", 1)]
    )
    assert [e.index for e in events if isinstance(e, TileDone)] == [*range(6), *range(6)]
    assert all(e.total == per_plane for e in events if isinstance(e, TileDone))
    result = segment(bundle, stack, tile_size=60)
    assert result.shape == (2, 50, 30)


def test_each_plane_is_normalised_on_its_own(bundle):
    # plane 1 is plane 0 ten times brighter: with per-plane minmax both give the same
    ramp = np.tile(np.arange(40, dtype=np.float32), (40, 1))
    stack = np.stack([ramp, 10 * ramp + 1000])
    bundle = ModelBundle("ramp", TINY, bundle.state_dict, normalisation={"method": "minmax"})
    probabilities = segment(
        bundle, stack, output="probabilities", tile_size=60, predictor=_identity_predictor
    )
    np.testing.assert_allclose(probabilities[0, 1], ramp / 39, atol=1e-6)
    np.testing.assert_allclose(probabilities[1, 1], ramp / 39, atol=1e-6)


def test_label_ids_are_consistent_across_tile_seams(bundle):
    rows, cols = np.mgrid[:100, :90]
    disk = (rows - 50) ** 2 + (cols - 40) ** 2 < 30**2  # crosses many 20 px tile seams
    small = (rows - 5) ** 2 + (cols - 85) ** 2 < 3**2
    image = (disk | small).astype(np.uint8) * 200
    spec_bundle = ModelBundle("x", TINY, bundle.state_dict, normalisation={"method": "minmax"})
    labels = segment(spec_bundle, image, tile_size=60, predictor=_identity_predictor)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert len(np.unique(labels[disk])) == 1
    np.testing.assert_array_equal(labels > 0, disk | small)
    dropped = segment(spec_bundle, image, tile_size=60, min_size=50, predictor=_identity_predictor)
    np.testing.assert_array_equal(dropped > 0, disk)


def test_image_smaller_than_one_tile(bundle):
    image = np.random.default_rng(0).random((10, 7))
    assert segment(bundle, image).shape == (10, 7)
    assert segment(bundle, image, output="probabilities").shape == (2, 10, 7)
    assert segment(bundle, image, output="mask").dtype == np.uint8


def test_out_in_the_image_layout_is_filled_and_returned(bundle):
    image = np.ones((30, 30), np.uint8)
    out = np.zeros((30, 30), np.uint8)
    result = segment(bundle, image, output="mask", out=out, predictor=_all_foreground_predictor)
    assert result is out and out.all()


def test_out_of_the_wrong_shape_is_refused(bundle):
    with pytest.raises(InputError, match=r"out has shape \(2, 30, 30\); expected \(30, 30\)"):
        segment(bundle, np.ones((30, 30)), out=np.zeros((2, 30, 30)))


def test_only_selected_planes_are_segmented(bundle):
    stack = np.ones((3, 30, 30), np.uint8)
    out = np.zeros((3, 30, 30), np.uint8)
    events = list(
        segment_iter(
            bundle,
            stack,
            options=SegmentOptions(output="mask"),
            planes=[1],
            out=out,
            predictor=_all_foreground_predictor,
        )
    )
    assert {e.plane for e in events} == {1}
    assert out[1].all() and not out[0].any() and not out[2].any()
    with pytest.raises(InputError, match=r"plane indices \[3\] are out of range for 3"):
        segment(bundle, stack, planes=[3])


def test_plane_done_carries_the_final_plane_result(bundle):
    image = np.ones((30, 30), np.uint8)
    generator = segment_iter(bundle, image, predictor=_all_foreground_predictor)
    done = [e for e in generator if isinstance(e, PlaneDone)]
    assert len(done) == 1 and done[0].data.dtype == np.int32
    np.testing.assert_array_equal(done[0].data, np.ones((30, 30)))


def test_a_bare_network_works_and_keeps_its_training_mode():
    network = UNet(TINY).train()
    labels = segment(network, np.random.default_rng(0).random((30, 30)))
    assert labels.shape == (30, 30)
    assert network.training


def test_predictors_are_cached_per_bundle_and_device(bundle):
    first = get_predictor(bundle, "cpu")
    assert get_predictor(bundle, "cpu") is first
    assert get_predictor(random_model(TINY), "cpu") is not first


def test_one_small_tile_computes_whole_maps_and_several_tiles_stream(bundle, monkeypatch):
    """Whole feature maps are faster for one small tile; strips bound the memory otherwise."""
    built = []
    real = segment_module.make_predictor

    def recording(*args, **kwargs):
        built.append(kwargs["strip_rows"])
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_module, "make_predictor", recording)
    model = random_model(TINY, seed=1)  # a fresh bundle: nothing cached yet
    image = np.random.default_rng(0).integers(0, 4000, (100, 90)).astype(np.uint16)
    expected = _whole_image_probabilities(model, image)
    whole = segment(model, image, output="probabilities", device="cpu")
    tiled = segment(model, image, output="probabilities", tile_size=60, device="cpu")
    assert built == [None, "auto"]
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    # one tile larger than WHOLE_MAP_MAX_PIXELS streams too
    monkeypatch.setattr(segment_module, "WHOLE_MAP_MAX_PIXELS", 50 * 50)
    segment(random_model(TINY, seed=1), image, output="probabilities", device="cpu")
    assert built[-1] == "auto"
    assert get_predictor(model, "cpu", whole_maps=True) is not get_predictor(model, "cpu")


def test_bad_input_is_refused_before_any_work(bundle):
    with pytest.raises(InputError, match="RGB image"):
        segment(bundle, np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        segment(bundle, np.zeros((20, 20)), device="tpu")
    with pytest.raises(TypeError, match="unknown segment options"):
        segment(bundle, np.zeros((20, 20)), colour="red")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"output": "outline"}, "output must be one of labels, mask, probabilities"),
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"min_size": -1}, "min_size must be >= 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"tile_size": 0}, "tile_size must be a positive number"),
    ],
)
def test_options_are_checked(changes, message):
    with pytest.raises(InputError, match=message):
        SegmentOptions(**changes)


def test_batches_give_the_same_result(bundle):
    image = np.random.default_rng(0).random((60, 50))
    one = segment(bundle, image, output="probabilities", tile_size=60)
    three = segment(bundle, image, output="probabilities", tile_size=60, batch_size=3)
    np.testing.assert_allclose(one, three, atol=1e-6)


def test_recommendations_can_differ_per_output_kind():
    from types import SimpleNamespace

    from napari_unet.core.segment import recommended_options

    model = SimpleNamespace(
        provenance={
            "postprocess": {
                "threshold": 0.3,
                "per_output": {"labels": {"threshold": 0.7, "fill_boundaries": True}},
            }
        }
    )
    assert recommended_options(model, "mask") == {"threshold": 0.3}
    assert recommended_options(model, "labels") == {"threshold": 0.7, "fill_boundaries": True}
    assert recommended_options(SimpleNamespace(provenance={}), "labels") == {}


def test_merge_boundaries_grows_and_merges_the_stitched_foreground(bundle):
    image = np.random.default_rng(3).integers(0, 4000, (100, 90)).astype(np.uint16)
    probabilities = segment(bundle, image, output="probabilities", tile_size=60, device="cpu")
    seed = float(np.quantile(probabilities[1], 0.8))  # seeds: the top fifth, several blobs
    merge = float(np.quantile(1 - probabilities[1], 0.5))
    options = {"threshold": seed, "merge_boundaries": merge, "min_size": 3}
    labels = segment(bundle, image, tile_size=60, device="cpu", **options)

    expected = grow_and_merge(probabilities[1], seed_threshold=seed, merge_below=merge, min_size=3)
    assert expected.max() > 1 and expected.min() == 1  # several cells filling the plane
    np.testing.assert_array_equal(labels, expected)
    # without merging there are more cells: the merge step is part of what was compared
    unmerged = grow_and_merge(probabilities[1], seed_threshold=seed, merge_below=0.0, min_size=3)
    assert unmerged.max() > expected.max()


def test_merge_boundaries_is_recommendable_and_checked():
    from types import SimpleNamespace

    from napari_unet.core.segment import recommended_options

    record = {"per_output": {"labels": {"threshold": 0.9, "merge_boundaries": 0.75}}}
    model = SimpleNamespace(provenance={"postprocess": record})
    assert recommended_options(model, "labels") == {"threshold": 0.9, "merge_boundaries": 0.75}
    with pytest.raises(InputError, match="merge_boundaries must be between 0 and 1"):
        SegmentOptions(merge_boundaries=1.5)

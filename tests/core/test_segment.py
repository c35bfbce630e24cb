"""The segment pipeline: tiled results equal a whole-image forward, Cancel keeps finished tiles."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_unet.core import memory as memory_module
from napari_unet.core import normalise
from napari_unet.core import predictor as predictor_module
from napari_unet.core.calibration import PixelSize
from napari_unet.core.errors import InputError
from napari_unet.core.events import PlaneDone, ScaleChosen, TileDone
from napari_unet.core.metrics import f1_score
from napari_unet.core.model import UNet, UNetConfig, margin, nearest_valid_input_size
from napari_unet.core.modelfile import ModelBundle, random_model
from napari_unet.core.postprocess import grow_and_merge, instance_labels, semantic_mask
from napari_unet.core.resample import Resampled
from napari_unet.core.resample_back import to_input_grid
from napari_unet.core.segment import (
    SegmentOptions,
    get_predictor,
    link_through,
    segment,
    segment_iter,
)
from recorded_reads import RecordedReads

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
    real = predictor_module.make_predictor

    def recording(*args, **kwargs):
        built.append(kwargs["strip_rows"])
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "make_predictor", recording)
    model = random_model(TINY, seed=1)  # a fresh bundle: nothing cached yet
    image = np.random.default_rng(0).integers(0, 4000, (100, 90)).astype(np.uint16)
    expected = _whole_image_probabilities(model, image)
    whole = segment(model, image, output="probabilities", device="cpu")
    tiled = segment(model, image, output="probabilities", tile_size=60, device="cpu")
    assert built == [None, "auto"]
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    # one tile larger than WHOLE_MAP_MAX_PIXELS streams too
    monkeypatch.setattr(predictor_module, "WHOLE_MAP_MAX_PIXELS", 50 * 50)
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


# ------------------------------------------------------- at the model's scale


def _blobs(shape, diameter, count, seed=0):
    """Gaussian blobs whose half-maximum discs (``diameter`` across) are the true objects."""
    rng = np.random.default_rng(seed)
    image, truth = np.zeros(shape, np.float32), np.zeros(shape, np.int32)
    rows, cols = np.indices(shape)
    sigma, placed = diameter / 2.3548, 0
    for _ in range(100 * count):
        centre = rng.uniform(diameter, np.array(shape) - diameter)
        distance2 = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2
        if truth[distance2 <= diameter**2].any():
            continue  # keep a diameter of space between objects
        placed += 1
        image += np.exp(-distance2 / (2 * sigma**2)).astype(np.float32)
        truth[distance2 <= (diameter / 2) ** 2] = placed
        if placed == count:
            return image, truth
    raise ValueError(f"{count} objects of {diameter} px do not fit in {shape}")


def _faithful_predictor(batch: np.ndarray) -> np.ndarray:
    """Foreground where the (minmax-normalised) tile is above one half: objects keep the
    size they have, whatever the model's."""
    foreground = (batch[:, 0, MARGIN:-MARGIN, MARGIN:-MARGIN] > 0.5).astype(np.float32)
    return np.stack([1 - foreground, foreground], axis=1)


def _disc_predictor(diameter: float):
    """A model that knows one object size: it paints a disc of ``diameter`` px on each blob
    peak, so it is right only on images at its own scale."""

    def predict(batch: np.ndarray) -> np.ndarray:
        tiles = batch[:, 0]
        peaks = (tiles == ndimage.maximum_filter(tiles, size=(1, 5, 5))) & (tiles > 0.5)
        inside = np.stack([ndimage.distance_transform_edt(~p) for p in peaks]) <= diameter / 2
        foreground = inside[:, MARGIN:-MARGIN, MARGIN:-MARGIN].astype(np.float32)
        return np.stack([1 - foreground, foreground], axis=1)

    return predict


@pytest.fixture(scope="module")
def scaled(bundle) -> ModelBundle:
    """The tiny model recording objects of 8 px at 1 µm per pixel, minmax-normalised."""
    return replace(
        bundle,
        normalisation={"method": "minmax"},
        object_diameter=8.0,
        pixel_size=PixelSize(1.0, 1.0, "µm"),
    )


def test_the_scale_is_the_first_event_whenever_a_scale_is_involved(bundle, scaled):
    image, _ = _blobs((60, 70), 8, 6)
    events = list(segment_iter(scaled, image, predictor=_faithful_predictor))
    assert isinstance(events[0], ScaleChosen) and events[0].choice.source == "auto"
    assert not any(isinstance(e, ScaleChosen) for e in events[1:])
    plain = list(segment_iter(bundle, image, predictor=_faithful_predictor))
    assert not any(isinstance(e, ScaleChosen) for e in plain)  # no scale: as before
    told = next(segment_iter(bundle, image, options=SegmentOptions(pixel_size="0.5um")))
    assert isinstance(told, ScaleChosen) and "records no scale" in told.choice.reason


def test_a_given_diameter_or_pixel_size_segments_at_the_model_scale(scaled):
    image, truth = _blobs((160, 150), 16, 12)  # objects twice the model's 8 px: 0.5 µm pixels
    predictor = _disc_predictor(8)
    as_is = segment(scaled, image, diameter=8, tile_size=60, predictor=predictor)
    by_diameter = segment(scaled, image, diameter=16, tile_size=60, predictor=predictor)
    by_pixel = segment(scaled, image, pixel_size="0.5um", tile_size=60, predictor=predictor)
    assert f1_score(truth, as_is, 0.5) < 0.2  # discs of a quarter the area
    assert f1_score(truth, by_diameter, 0.5) > 0.9
    assert f1_score(truth, by_pixel, 0.5) > 0.9
    assert by_diameter.shape == image.shape and by_diameter.dtype == np.int32


def _auto_choice(model, image, **options):
    events = segment_iter(
        model, image, options=SegmentOptions(tile_size=60, **options), predictor=_faithful_predictor
    )
    return next(events).choice


def test_auto_measures_the_objects_and_rescales_only_when_they_differ(scaled):
    native, _ = _blobs((120, 130), 8, 15, seed=1)
    choice = _auto_choice(scaled, native)
    assert choice.factor_yx == (1.0, 1.0) and "within -50%/+20%" in choice.reason
    # large objects are measured at half the scale, where a model does not split them
    large, truth = _blobs((240, 260), 16, 15, seed=1)
    choice = _auto_choice(scaled, large)
    assert choice.factor_yx[0] == pytest.approx(0.5, rel=0.2) and choice.source == "auto"
    assert choice.measured_diameter == pytest.approx(16, rel=0.1)
    assert "15 objects on the whole image, seen at x0.5" in choice.reason
    labels = segment(scaled, large, tile_size=60, predictor=_faithful_predictor)
    assert f1_score(truth, labels, 0.5) > 0.9
    # small ones at the image's own scale, where they are not lost; objects down to half
    # the model's size are kept (AUTO_TOLERANCE_BELOW), smaller ones enlarged
    kept, _ = _blobs((150, 160), 5, 20, seed=2)
    choice = _auto_choice(scaled, kept)
    assert choice.factor_yx == (1.0, 1.0) and choice.measured_diameter == pytest.approx(5, rel=0.2)
    small, _ = _blobs((150, 160), 3, 30, seed=2)
    choice = _auto_choice(scaled, small)
    assert choice.factor_yx[0] == pytest.approx(8 / 3, rel=0.25)
    assert "seen at" not in choice.reason and choice.measured_diameter == pytest.approx(3, rel=0.25)


def test_auto_reads_a_central_crop_and_falls_back_to_the_whole_plane(scaled):
    image, _ = _blobs((900, 800), 16, 120, seed=2)
    source = RecordedReads(image)
    choice = _auto_choice(scaled, source)
    assert [(k.start, k.stop) for k in source.keys[0]] == [(90, 810), (40, 760)]
    assert "a central 720 x 720 px crop, seen at x0.5" in choice.reason
    assert choice.factor_yx[0] == pytest.approx(0.5, rel=0.2)
    # objects only near the corners: too few in the crop, the whole plane decides
    sparse = np.zeros((1000, 1000), np.float32)
    sparse[:130, :130], sparse[-130:, -130:] = image[:130, :130], image[-130:, -130:]
    corners = _auto_choice(scaled, sparse)
    assert "on the whole image, seen at x0.5" in corners.reason
    assert corners.factor_yx[0] == pytest.approx(0.5, rel=0.2)


@pytest.mark.parametrize("diameter", [13.0, 5.0])  # factors 8/13 (shrink) and 1.6 (enlarge)
def test_results_are_the_model_grid_results_mapped_back_exactly(bundle, diameter):
    image = ndimage.gaussian_filter(np.random.default_rng(4).random((90, 75)), 2)
    model = replace(bundle, object_diameter=8.0)
    predictor = get_predictor(bundle, "cpu")
    model_size = (round(90 * 8 / diameter), round(75 * 8 / diameter))
    on_model_grid = np.asarray(Resampled(image, size=model_size))
    probabilities = segment(bundle, on_model_grid, output="probabilities", tile_size=60,
                            predictor=predictor)  # fmt: skip
    threshold = float(np.median(probabilities[1]))
    options = {"tile_size": 60, "threshold": threshold, "predictor": predictor}
    labels = segment(bundle, on_model_grid, **options)
    assert labels.max() > 3
    np.testing.assert_array_equal(
        segment(model, image, diameter=diameter, **options),
        to_input_grid(labels, image.shape, kind="labels"),  # ids of the model grid kept
    )
    np.testing.assert_array_equal(
        segment(model, image, diameter=diameter, output="probabilities", **options),
        to_input_grid(probabilities, image.shape, kind="probabilities"),
    )
    np.testing.assert_array_equal(
        segment(model, image, diameter=diameter, output="mask", **options),
        to_input_grid(semantic_mask(probabilities, threshold=threshold), image.shape, kind="mask"),
    )


def test_tiles_are_reported_on_the_input_grid_and_cancel_keeps_them(scaled):
    image, _ = _blobs((130, 110), 16, 8, seed=3)
    options = SegmentOptions(diameter=16, tile_size=60, output="mask")
    covered = np.zeros(image.shape, int)
    out = np.zeros(image.shape, np.uint8)
    for event in segment_iter(scaled, image, options=options, out=out,
                              predictor=_faithful_predictor):  # fmt: skip
        if isinstance(event, TileDone):
            covered[event.region] += 1
            np.testing.assert_array_equal(out[event.region], event.data)
    assert (covered == 1).all()  # model tiles become input regions tiling the image
    out = np.zeros(image.shape, np.int32)
    labels_run = segment_iter(scaled, image, options=replace(options, output="labels"), out=out,
                              predictor=_all_foreground_predictor)  # fmt: skip
    first = [next(labels_run) for _ in range(3)][1:]  # the scale, then two tiles
    labels_run.close()
    assert all(isinstance(e, TileDone) for e in first)
    written = np.zeros(image.shape, bool)
    for event in first:
        written[event.region] = True
    assert (out[written] == 1).all() and not out[~written].any()


def test_stacks_are_resampled_plane_by_plane_and_linked_on_the_input_grid(scaled):
    planes = [_blobs((100, 120), 16, 5, seed=s)[0] for s in (5, 5, 6)]
    stack = np.stack(planes)
    options = SegmentOptions(diameter=16, tile_size=60, link=True)
    linked = segment(scaled, stack, options=options, predictor=_faithful_predictor)
    unlinked = segment(scaled, stack, options=replace(options, link=False),
                       predictor=_faithful_predictor)  # fmt: skip
    assert linked.shape == stack.shape
    expected = unlinked.copy()
    link_through(expected, (3,), [0, 1, 2], layout="flat")
    np.testing.assert_array_equal(linked, expected)
    np.testing.assert_array_equal(linked[0], linked[1])  # the same plane: the same ids


def test_a_scale_that_cannot_be_segmented_is_refused_in_one_line(scaled, monkeypatch):
    image = np.random.default_rng(5).random((100, 100)).astype(np.float32)
    with pytest.raises(InputError, match=r"would be 4 x 4 px, smaller than 16 px") as error:
        segment(scaled, image, diameter=200, predictor=_faithful_predictor)
    assert "\n" not in str(error.value)
    # the result fits, the plane enlarged 4x (float32 plane, mask and labels) does not
    monkeypatch.setattr(memory_module, "available_memory", lambda: 100 * 100 * 20)
    with pytest.raises(InputError, match=r"resampled to the model's scale .* \.zarr output"):
        segment(scaled, image, diameter=2, predictor=_faithful_predictor)

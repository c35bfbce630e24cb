"""Channels and dimensions (issue 16): as_planes layouts, plane positions, nD segmentation
(in memory and block-wise), labels linked through z, and training on nD / multichannel
images, including the measured test that a 2-channel model learns what one channel hides."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_unet.core import normalise
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.errors import AnnotationError, InputError
from napari_unet.core.events import PlaneDone
from napari_unet.core.io import (
    as_planes,
    leading_axes,
    plane_index,
    plane_position,
    rgb_to_grey,
)
from napari_unet.core.largeimage import segment_to_zarr
from napari_unet.core.metrics import f1_score
from napari_unet.core.model import UNetConfig, margin
from napari_unet.core.modelfile import random_model
from napari_unet.core.segment import SegmentOptions, segment, segment_iter
from napari_unet.core.train import TrainConfig, Trainer

TINY = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch")
TINY2 = UNetConfig(depth=2, base_width=2, padding="valid", norm="batch", in_channels=2)


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.uint16)


class Counting:
    """An array-like (over numpy, zarr or dask) that records every key it is read with."""

    def __init__(self, data) -> None:
        self.data = data
        self.shape, self.dtype, self.ndim = tuple(data.shape), data.dtype, len(data.shape)
        self.keys: list[tuple] = []

    def __getitem__(self, key):
        self.keys.append(key if isinstance(key, tuple) else (key,))
        result = self.data[key]
        return np.asarray(result.compute() if hasattr(result, "compute") else result)

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole image was read")


# ------------------------------------------------------------------ as_planes layouts


def _expected_plane(image, leading_axes_, channel_axis, channels, position, in_channels):
    """Independent reference: index every leading axis, then order the channels."""
    index = [slice(None)] * image.ndim
    for axis, value in zip(leading_axes_, position, strict=True):
        index[axis] = value
    plane = image[tuple(index)]
    if channel_axis is None:
        return plane
    # the channel axis keeps its rank among the axes left (channel, y, x)
    left = [a for a in range(image.ndim) if a not in leading_axes_]
    plane = np.moveaxis(plane, left.index(channel_axis % image.ndim), 0)
    plane = plane if channels is None else plane[list(channels)]
    return plane[0] if in_channels == 1 else plane


LAYOUTS = [
    # name, shape, in_channels, channel_axis, channels, planes shape
    ("YX", (9, 11), 1, None, None, (1, 9, 11)),
    ("ZYX", (3, 9, 11), 1, None, None, (3, 9, 11)),
    ("TZYX", (2, 3, 9, 11), 1, None, None, (6, 9, 11)),
    ("CYX", (2, 9, 11), 2, None, None, (1, 2, 9, 11)),
    ("ZCYX", (3, 2, 9, 11), 2, None, None, (3, 2, 9, 11)),
    ("TZCYX", (2, 3, 2, 9, 11), 2, None, None, (6, 2, 9, 11)),
    ("YXC", (9, 11, 3), 3, -1, None, (1, 3, 9, 11)),
    ("CZYX", (2, 3, 9, 11), 2, 0, None, (3, 2, 9, 11)),
    ("TCZYX", (2, 4, 3, 9, 11), 2, 1, (3, 1), (6, 2, 9, 11)),
    ("TZYXC one", (2, 3, 9, 11, 4), 1, -1, (2,), (6, 9, 11)),
    ("ZCYX reordered", (3, 3, 9, 11), 3, 1, (2, 0, 1), (3, 3, 9, 11)),
    ("ZCYX reversed", (3, 2, 9, 11), 2, 1, (1, 0), (3, 2, 9, 11)),
    ("CYX first two", (4, 9, 11), 2, None, (0, 1), (1, 2, 9, 11)),
]


@pytest.mark.parametrize("kind", ["numpy", "zarr", "dask"])
@pytest.mark.parametrize(
    ("shape", "in_channels", "channel_axis", "channels", "expected"),
    [layout[1:] for layout in LAYOUTS],
    ids=[layout[0] for layout in LAYOUTS],
)
def test_layouts_give_the_right_planes(kind, shape, in_channels, channel_axis, channels, expected):
    image = _image(shape)
    source = image
    if kind == "zarr":
        source = zarr.create_array(store={}, shape=shape, dtype=image.dtype, chunks=shape)
        source[:] = image
    elif kind == "dask":
        source = da.from_array(image, chunks=1)
    planes, restore = as_planes(
        source, in_channels=in_channels, channel_axis=channel_axis, channels=channels
    )
    assert tuple(planes.shape) == expected
    leading = leading_axes(len(shape), in_channels=in_channels, channel_axis=channel_axis)
    assert restore.leading == tuple(shape[a] for a in leading)
    for p in range(expected[0]):
        position = plane_position(restore.leading, p)
        axis = len(shape) - 3 if channel_axis is None and in_channels > 1 else channel_axis
        want = _expected_plane(image, leading, axis, channels, position, in_channels)
        np.testing.assert_array_equal(np.asarray(planes[p]), want)
        # a region of a plane reads the same pixels as the whole plane cut afterwards
        np.testing.assert_array_equal(
            np.asarray(planes[(p, ..., slice(2, 7), slice(1, 4))]), want[..., 2:7, 1:4]
        )
    if kind == "numpy" and channels is None:
        assert np.shares_memory(planes, image)  # a view, never a copy


def test_a_numpy_layout_that_cannot_be_viewed_is_read_plane_by_plane():
    image = _image((2, 3, 4, 9, 11))  # (T, C, Z, Y, X): T and Z are not adjacent in memory
    planes, _ = as_planes(image, in_channels=3, channel_axis=1)
    assert planes.shape == (8, 3, 9, 11) and not isinstance(planes, np.ndarray)
    np.testing.assert_array_equal(np.asarray(planes[6]), image[1, :, 2])
    np.testing.assert_array_equal(np.asarray(planes), np.moveaxis(image, 1, 2).reshape(8, 3, 9, 11))


def test_channels_are_taken_in_the_order_chosen():
    image = _image((3, 9, 11))
    planes, _ = as_planes(image, in_channels=2, channel_axis=0, channels=(2, 0))
    np.testing.assert_array_equal(np.asarray(planes[0, 0]), image[2])
    np.testing.assert_array_equal(np.asarray(planes[0, 1]), image[0])
    planes, _ = as_planes(image, in_channels=1, channel_axis=0, channels=[1])
    np.testing.assert_array_equal(np.asarray(planes[0]), image[1])


@pytest.mark.parametrize("kind", ["numpy", "zarr", "dask"])
def test_lazy_inputs_read_only_the_requested_plane(kind):
    image = _image((2, 3, 2, 20, 24))  # (T, Z, C, Y, X)
    data = image
    if kind == "zarr":
        data = zarr.create_array(
            store={}, shape=image.shape, dtype=image.dtype, chunks=(1, 1, 1, 8, 8)
        )
        data[:] = image
    elif kind == "dask":
        data = da.from_array(image, chunks=(1, 1, 1, 8, 8))
    counting = Counting(data)
    planes, restore = as_planes(counting, in_channels=1, channel_axis=2, channels=[1])
    assert counting.keys == [] and planes.shape == (6, 20, 24)  # nothing read yet
    p = plane_index(restore.leading, (1, 2))
    region = planes[p][3:9, 4:10]
    np.testing.assert_array_equal(region, image[1, 2, 1, 3:9, 4:10])
    (key,) = counting.keys
    assert key[:2] == (1, 2)  # that plane only
    assert key[3:] == (slice(3, 9), slice(4, 10))  # that region only


def test_segmenting_one_plane_of_a_lazy_stack_reads_only_that_plane():
    model = random_model(TINY, seed=1)
    counting = Counting(_image((2, 3, 40, 36)))
    p = plane_index((2, 3), (1, 0))
    result = segment(model, counting, planes=[p], output="mask", device="cpu")
    assert result.shape == (2, 3, 40, 36)
    assert counting.keys and all(key[:2] == (1, 0) for key in counting.keys)


def test_restore_round_trips_to_the_image_layout():
    image = _image((2, 3, 9, 11))
    planes, restore = as_planes(image)
    np.testing.assert_array_equal(restore(np.asarray(planes)), image)
    assert restore(np.zeros((6, 2, 9, 11))).shape == (2, 3, 2, 9, 11)  # probabilities keep K
    planes, restore = as_planes(
        np.moveaxis(_image((2, 3, 2, 9, 11)), 2, -1), in_channels=2, channel_axis=-1
    )
    assert restore(np.zeros((6, 9, 11))).shape == (2, 3, 9, 11)  # no channel axis in results
    _, restore = as_planes(image[0, 0])
    assert restore(np.zeros((1, 9, 11))).shape == (9, 11)


def test_plane_index_and_position_are_inverse():
    leading = (2, 3, 4)
    indices = [plane_index(leading, position) for position in np.ndindex(leading)]
    assert indices == list(range(24))  # row-major
    assert all(plane_index(leading, plane_position(leading, i)) == i for i in range(24))
    assert plane_position((2, 3), 5) == (1, 2)
    assert plane_index((), ()) == 0 and plane_position((), 0) == ()
    with pytest.raises(InputError, match=r"position \(2, 0\) is outside the leading axes"):
        plane_index((2, 3), (2, 0))
    with pytest.raises(InputError, match="outside"):
        plane_index((2, 3), (1,))
    with pytest.raises(InputError, match=r"plane 6 is out of range for 6 plane\(s\)"):
        plane_position((2, 3), 6)


# ------------------------------------------------------------------ bad inputs, one line


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        (
            (4, 2, 16, 16),
            {"channel_axis": 1, "channels": [2]},
            r"^channel 2 is out of range: the channel axis \(axis 1\) has 2 channels \(0 to 1\);"
            r" choose channels from 0 to 1 \(--channels / the Channels field\)$",
        ),
        (
            (3, 16, 16),
            {"in_channels": 2, "channel_axis": 0},
            r"^the model expects 2 channels but the image of shape \(3, 16, 16\) has 3 on its "
            r"channel axis \(axis 0\); choose channels with --channels / the Channels field$",
        ),
        (
            (3, 16, 16),
            {"in_channels": 2, "channel_axis": 0, "channels": [0, 1, 2]},
            r"^the model expects 2 channels but 3 are chosen \(channels 0,1,2 of axis 0\)",
        ),
        (
            (2, 16, 16),
            {"in_channels": 1, "channel_axis": 0},
            r"^the model expects 1 channel but the image of shape \(2, 16, 16\) has 2",
        ),
        (
            (2, 2, 2, 2, 16, 16),
            {},
            r"^cannot segment an image of shape \(2, 2, 2, 2, 16, 16\): 6-D images are not "
            r"supported \(at most 5 axes: t, z, c, y, x\)",
        ),
        (
            (9, 16, 16),
            {"channel_axis": 0, "channels": [0]},
            r"^the channel axis \(axis 0\) of the image of shape \(9, 16, 16\) has 9 entries, "
            r"more than the 8 channels supported",
        ),
        ((3, 16, 16), {"channel_axis": 3}, r"^channel axis 3 does not exist in an image"),
        ((3, 16, 16), {"channels": [0]}, r"^channels 0 were chosen but the image .* no channel"),
        ((2, 2, 2, 16, 16), {}, r"without a channel axis: at most t, z, y, x"),
        ((16, 16, 3), {}, r"^RGB image \(shape \(16, 16, 3\)\).*--rgb grey"),
    ],
)
def test_bad_layouts_are_refused_in_one_line(shape, kwargs, message):
    with pytest.raises(InputError, match=message) as caught:
        as_planes(np.zeros(shape, np.uint8), **kwargs)
    assert "\n" not in str(caught.value)


def test_rgb_is_three_channels_when_the_user_says_so_or_grey():
    colour = _image((16, 20, 3))
    with pytest.raises(InputError, match="RGB image"):
        as_planes(colour, in_channels=3, rgb=True)
    planes, _ = as_planes(colour, in_channels=3, channel_axis=-1, rgb=True)
    assert planes.shape == (1, 3, 16, 20)
    grey = rgb_to_grey(colour)
    expected = 0.299 * colour[..., 0] + 0.587 * colour[..., 1] + 0.114 * colour[..., 2]
    assert grey.dtype == np.float32 and grey.shape == (16, 20)
    np.testing.assert_allclose(grey, expected, rtol=1e-5)
    lazy = zarr.create_array(store={}, shape=colour.shape, dtype=colour.dtype)
    lazy[:] = colour
    np.testing.assert_allclose(rgb_to_grey(lazy)[2:5, 3], expected[2:5, 3], rtol=1e-5)
    planes, _ = as_planes(rgb_to_grey(lazy))
    np.testing.assert_allclose(np.asarray(planes[0]), expected, rtol=1e-5)
    with pytest.raises(InputError, match=r"shape \(16, 20\) as RGB"):
        rgb_to_grey(colour[..., 0])


# ------------------------------------------------------------------ nD segmentation


def test_segment_options_take_channels_as_text_and_check_link_iou():
    assert SegmentOptions(channels="0,2").channels == (0, 2)
    assert SegmentOptions(channels=[1]).channels == (1,)
    assert SegmentOptions(channels=np.int64(3)).channels == (3,)
    with pytest.raises(InputError, match=r"channels are numbers separated by commas.*'a'"):
        SegmentOptions(channels="a")
    with pytest.raises(InputError, match="link_iou must be above 0 and at most 1, got 0"):
        SegmentOptions(link_iou=0)


@pytest.fixture(scope="module")
def model():
    return random_model(TINY, seed=1, name="tiny")


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    from scipy import ndimage

    noise = np.random.default_rng(3).normal(size=(2, 3, 50, 44))
    return ndimage.gaussian_filter(noise, (0, 0, 3, 3)).astype(np.float32)


def test_a_tzyx_stack_is_segmented_plane_by_plane(model, stack):
    options = SegmentOptions(threshold=0.5, device="cpu")
    probabilities = segment(model, stack, output="probabilities", device="cpu")
    assert probabilities.shape == (2, 3, 2, 50, 44)
    threshold = float(np.median(probabilities[:, :, 1]))  # objects in every plane
    options = SegmentOptions(threshold=threshold, device="cpu")
    labels = segment(model, stack, options=options)
    assert labels.shape == (2, 3, 50, 44) and labels.dtype == np.int32
    for t, z in np.ndindex(2, 3):
        np.testing.assert_array_equal(labels[t, z], segment(model, stack[t, z], options=options))
        np.testing.assert_allclose(
            probabilities[t, z],
            segment(model, stack[t, z], output="probabilities", device="cpu"),
            atol=1e-6,
        )
    assert labels.max() > 3


def test_progress_counts_flat_planes_and_out_may_have_the_image_layout(model, stack):
    out = np.zeros((2, 3, 50, 44), np.uint8)
    events = list(
        _events(
            segment_iter(model, stack, options=SegmentOptions(output="mask", device="cpu"), out=out)
        )
    )
    assert [e.plane for e in events if isinstance(e, PlaneDone)] == list(range(6))
    np.testing.assert_array_equal(out, segment(model, stack, output="mask", device="cpu"))
    only = plane_index((2, 3), (1, 1))
    partial = segment(model, stack, output="mask", planes=[only], device="cpu")
    assert not partial[0].any() and not partial[1, 0].any() and not partial[1, 2].any()
    np.testing.assert_array_equal(partial[1, 1], out[1, 1])


def _events(generator):
    while True:
        try:
            yield next(generator)
        except StopIteration:
            return


def test_a_multichannel_stack_with_the_channel_axis_first(stack):
    two = random_model(TINY2, seed=2)
    image = np.stack([stack[0], stack[1] * 3])  # (C, Z, Y, X)
    result = segment(two, image, channel_axis=0, output="probabilities", device="cpu")
    assert result.shape == (3, 2, 50, 44)
    for z in range(3):
        expected = segment(two, image[:, z], output="probabilities", device="cpu")
        np.testing.assert_allclose(result[z], expected, atol=1e-6)
    swapped = segment(
        two, image, channel_axis=0, channels=(1, 0), output="probabilities", device="cpu"
    )
    np.testing.assert_allclose(
        swapped[1], segment(two, image[::-1, 1], output="probabilities", device="cpu"), atol=1e-6
    )


def test_channels_are_normalised_each_on_its_own_range(stack):
    # A faint and a bright channel give the network the same inputs as two bright ones.
    two = random_model(TINY2, seed=2)
    plane = np.stack([stack[0, 0], stack[0, 1]])
    scaled = plane * np.array([1.0, 1000.0], np.float32)[:, None, None] + np.float32(50)
    np.testing.assert_allclose(
        segment(two, scaled, output="probabilities", device="cpu"),
        segment(two, plane, output="probabilities", device="cpu"),
        atol=1e-4,
    )
    stats = normalise.compute_stats(scaled, per_channel=True)
    assert len(stats["offset"]) == 2 and stats["scale"][1] > 500 * stats["scale"][0]


def test_block_wise_equals_in_memory_for_a_tzyx_zarr(tmp_path, model, stack):
    source = zarr.create_array(
        str(tmp_path / "in.zarr"), shape=(2, 2, 50, 44), dtype="f4", chunks=(1, 1, 25, 22)
    )
    source[:] = stack[:, :2]
    threshold = float(
        np.median(segment(model, stack[0, 0], output="probabilities", device="cpu")[1])
    )
    for output in ("labels", "probabilities"):
        options = SegmentOptions(output=output, threshold=threshold, device="cpu", tile_size=64)
        expected = segment(model, stack[:, :2], options=options)
        result = segment_to_zarr(
            model, source, tmp_path / f"{output}.zarr", options=options, block_size=24
        )
        assert result.shape == expected.shape
        np.testing.assert_array_equal(result[:], expected)


def test_block_wise_link_is_refused_in_one_line(tmp_path, model, stack):
    with pytest.raises(InputError, match=r"^linking labels through z .* write a \.tif OUTPUT"):
        segment_to_zarr(model, stack, tmp_path / "l.zarr", options=SegmentOptions(link=True))
    assert not (tmp_path / "l.zarr").exists()


# ------------------------------------------------------------------ linking


def _threshold_predictor(config):
    """A predictor that thresholds its (normalised) input: segmentation we can foresee."""
    m = margin(config)

    def predict(batch):
        inside = batch[:, 0, m:-m, m:-m] > 0.5
        return np.stack([~inside, inside], axis=1).astype(np.float32)

    return predict


def _discs(shape, discs):
    rows, cols = np.indices(shape)
    image = np.zeros(shape, np.float32)
    for r, c, radius in discs:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 1.0
    return image


def test_labels_are_linked_through_z_in_segment_iter(model):
    # plane 0: A (top left) and B (bottom right); plane 1: B moved a little; plane 2: C only
    stack = np.stack(
        [
            _discs((48, 48), [(10, 10, 6), (34, 34, 7)]),
            _discs((48, 48), [(35, 33, 7)]),
            _discs((48, 48), [(10, 36, 5)]),
        ]
    )
    predictor = _threshold_predictor(TINY)
    options = SegmentOptions(device="cpu", threshold=0.5)
    unlinked = segment(model, stack, options=options, predictor=predictor)
    assert unlinked[1, 35, 33] != unlinked[0, 34, 34]  # per-plane ids: B is 2, then 1
    linked = segment(
        model, stack, options=SegmentOptions(device="cpu", link=True), predictor=predictor
    )
    assert linked[0, 34, 34] == linked[1, 35, 33] > 0  # one object, one id
    assert len({linked[0, 10, 10], linked[0, 34, 34], linked[2, 10, 36]}) == 3
    np.testing.assert_array_equal(linked > 0, unlinked > 0)  # same objects, new ids
    # (T, Z, Y, X): linked along z within each t; ids unique over the whole result
    both = segment(
        model,
        np.stack([stack, stack]),
        options=SegmentOptions(device="cpu", link=True),
        predictor=predictor,
    )
    assert both.shape == (2, 3, 48, 48)
    np.testing.assert_array_equal(both[0], linked)
    np.testing.assert_array_equal(both[1], np.where(linked > 0, linked + linked.max(), 0))
    assert both[1, 0, 34, 34] == both[1, 1, 35, 33] != both[0, 0, 34, 34]


# ------------------------------------------------------------------ training


def _quick(**changes) -> TrainConfig:
    values = dict(
        steps=2,
        batch_size=2,
        validation_every=2,
        device="cpu",
        augment=AugmentConfig(enabled=False),
    )
    values.update(changes)
    return TrainConfig(**values)


def test_training_on_one_annotated_plane_of_a_tzyx_stack_reads_only_that_plane():
    image = _image((2, 3, 64, 60))
    counting = Counting(image)
    annotation = np.zeros((2, 3, 64, 60), np.uint8)
    annotation[1, 2, 10:20, 10:20] = 2  # a cell
    annotation[1, 2, 40:, :] = 1  # background
    trainer = Trainer(TINY, counting, annotation, convention="sparse", config=_quick())
    assert len(trainer.planes) == 1
    assert counting.keys and all(key[:2] == (1, 2) for key in counting.keys)
    stats = normalise.compute_stats(image[1, 2])
    pad = (trainer.planes[0].image.shape[-1] - 60) // 2
    np.testing.assert_allclose(
        trainer.planes[0].image[pad:-pad, pad:-pad], normalise.apply(image[1, 2], stats)
    )
    list(trainer.run())
    assert trainer.has_progress


def test_multichannel_training_takes_the_channel_axis_and_refuses_a_wrong_count():
    image = _image((3, 2, 64, 60))  # (Z, C, Y, X)
    annotation = np.zeros((3, 64, 60), np.uint8)
    annotation[0, 10:20, 10:20] = 2
    annotation[0, 40:] = 1
    trainer = Trainer(
        TINY2, image, annotation, convention="sparse", config=_quick(), channel_axis=1
    )
    assert trainer.planes[0].image.shape[0] == 2  # (C, H + 2p, W + 2p)
    list(trainer.run())
    assert trainer.last_bundle().config.in_channels == 2
    with pytest.raises(
        InputError, match=r"model expects 1 channel but the image of shape \(3, 2, 64, 60\) has 2"
    ):
        Trainer(TINY, image, annotation, convention="sparse", config=_quick(), channel_axis=1)
    with pytest.raises(InputError, match="channel 2 is out of range"):
        Trainer(TINY2, image, annotation, config=_quick(), channel_axis=1, channels=(0, 2))
    with pytest.raises(AnnotationError, match=r"image has shape \(3, 64, 60\) without its channel"):
        Trainer(TINY2, image, annotation[:, :, 1:], config=_quick(), channel_axis=1)


def _two_channel_scene(seed: int, size: int = 112, targets: int = 5, distractors: int = 10):
    """Channel 0: identical bright discs; channel 1: bright only on the targets.

    Every disc has the same radius, the same intensity and integer centre, so targets and
    distractors are exactly alike in channel 0: only channel 1 tells them apart.
    """
    rng = np.random.default_rng(seed)
    radius, gap = 6, 5
    centres: list[tuple[int, int]] = []
    while len(centres) < targets + distractors:
        r, c = (int(v) for v in rng.integers(radius + 2, size - radius - 2, 2))
        if all((r - a) ** 2 + (c - b) ** 2 > (2 * radius + gap) ** 2 for a, b in centres):
            centres.append((r, c))
    rows, cols = np.indices((size, size))
    image = np.zeros((2, size, size), np.float32)
    truth = np.zeros((size, size), np.int32)
    for i, (r, c) in enumerate(centres):
        disc = (rows - r) ** 2 + (cols - c) ** 2 <= radius**2
        image[0][disc] = 1.0
        if i < targets:
            image[1][disc] = 1.0
            truth[disc] = i + 1
    return image, truth


def test_a_two_channel_model_learns_what_channel_0_alone_cannot_tell():
    """Issue 16, measured: objects to find in channel 1, look-alike distractors in channel 0."""
    config = _quick(steps=120, batch_size=4, learning_rate=1e-2, validation_every=40, patch_size=84)
    train_images = [_two_channel_scene(seed) for seed in (1, 2)]
    images = [image for image, _ in train_images]
    labels = [truth for _, truth in train_images]
    held_out, truth = _two_channel_scene(7)
    net = UNetConfig(depth=2, base_width=8, padding="valid", norm="batch")

    both = Trainer(net.with_(in_channels=2), images, labels, convention="dense", config=config)
    list(both.run())
    both_labels = segment(both.best_bundle(), held_out, device="cpu", min_size=20)

    first = Trainer(net, [image[0] for image in images], labels, convention="dense", config=config)
    list(first.run())
    first_labels = segment(first.best_bundle(), held_out[0], device="cpu", min_size=20)

    # Channel 0 alone shows 15 identical discs, 5 of them targets: the best any model can do
    # is all of them (F1 = 2 * (1/3) / (1/3 + 1) = 0.5) or none (0).
    assert f1_score(truth, both_labels, 0.5) >= 0.8
    assert f1_score(truth, first_labels, 0.5) <= 0.6


def test_dask_workers_read_the_channel_chosen_of_a_tcyx_store(tmp_path, model, stack):
    pytest.importorskip("distributed")
    from napari_unet.core.distributed import local_client, segment_distributed_iter
    from napari_unet.core.events import drain

    image = np.stack([stack[:, 0], stack[:, 1] * 2], axis=1)  # (T, C, Y, X)
    path = tmp_path / "tc.zarr"
    zarr.create_array(str(path), shape=image.shape, dtype="f4", chunks=(1, 1, 25, 22))[:] = image
    options = SegmentOptions(output="probabilities", channel_axis=1, channels=(1,), tile_size=64)
    expected = segment(model, image[:, 1], options=SegmentOptions(output="probabilities"))
    with local_client(1, processes=False) as client:
        generator = segment_distributed_iter(
            model, path, tmp_path / "o.zarr", client=client, options=options, block_size=24
        )
        result = drain(generator)
    assert result.shape == (2, 2, 50, 44)
    np.testing.assert_allclose(result[:], expected, atol=1e-6)

"""Image reading/writing, the checks that decide what can be segmented, and bad files."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from skimage import io as skio

from napari_unet.core import memory as memory_module
from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.io import (
    as_planes,
    available_memory,
    check_fits_in_memory,
    format_bytes,
    read_image,
    write_image,
)

# ------------------------------------------------------------------ read/write


@pytest.mark.parametrize("shape", [(5, 7), (3, 5, 7)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32])
def test_tiff_round_trip(tmp_path, shape, dtype):
    image = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    path = write_image(tmp_path / "sub" / "x.tif", image)
    result = read_image(path)
    assert result.dtype == image.dtype
    np.testing.assert_array_equal(result, image)


def test_written_tiff_is_zlib_compressed(tmp_path):
    path = write_image(tmp_path / "x.tif", np.zeros((64, 64), np.int32))
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_write_requires_tiff(tmp_path):
    with pytest.raises(InputError, match=r"written as TIFF: use a \.tif path"):
        write_image(tmp_path / "x.png", np.zeros((4, 4)))


def test_png_gray(tmp_path):
    image = np.arange(48, dtype=np.uint8).reshape(6, 8)
    skio.imsave(tmp_path / "g.png", image, check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), image)


def test_png_gray_saved_as_rgb_reads_as_gray(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    skio.imsave(tmp_path / "g.png", np.stack([gray] * 3, axis=-1), check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)


def test_png_colour_is_refused_when_segmenting(tmp_path):
    colour = np.random.default_rng(0).integers(0, 255, (6, 8, 3)).astype(np.uint8)
    skio.imsave(tmp_path / "c.png", colour, check_contrast=False)
    image = read_image(tmp_path / "c.png")
    assert image.shape == (6, 8, 3)
    with pytest.raises(InputError, match=r"RGB image.*Split RGB"):
        as_planes(image)


def test_tiff_tagged_rgb_is_refused_even_in_uint16(tmp_path):
    colour = np.random.default_rng(0).integers(0, 4000, (2, 6, 8, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "c.tif", colour, photometric="rgb")
    with pytest.raises(InputError, match=r"RGB image \(c.tif.*convert it to grayscale"):
        read_image(tmp_path / "c.tif")


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "x.jpg").write_bytes(b"not really")
    with pytest.raises(InputError, match=r"cannot read x.jpg: supported formats are .tif"):
        read_image(tmp_path / "x.jpg")


def test_lazy_reading_opens_a_tiff_without_decoding_it(tmp_path):
    image = np.arange(300 * 400, dtype=np.uint16).reshape(300, 400)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(128, 128))
    lazy = read_image(tmp_path / "big.tif", lazy=True)
    assert not isinstance(lazy, np.ndarray) and lazy.shape == (300, 400)
    np.testing.assert_array_equal(lazy[130:140, 5:9], image[130:140, 5:9])
    with pytest.raises(InputError, match="input file not found"):
        read_image(tmp_path / "x.tif", lazy=True)


def test_a_2d_zarr_image_gets_its_plane_axis_without_being_read():
    image = zarr.create_array(store={}, shape=(6, 7), dtype="u1", chunks=(2, 2))
    image[:] = np.arange(42, dtype=np.uint8).reshape(6, 7)
    planes, restore = as_planes(image)
    assert planes.shape == (1, 6, 7)
    assert restore(planes) is image
    assert planes[0] is image  # still the lazy zarr array
    np.testing.assert_array_equal(planes[0, 1:3, 2], [9, 16])
    np.testing.assert_array_equal(np.asarray(planes)[0], image[:])


# ------------------------------------------------------------------ as_planes


def test_2d_image_becomes_one_plane_view():
    image = np.zeros((5, 7), np.uint16)
    planes, restore = as_planes(image)
    assert planes.shape == (1, 5, 7)
    assert np.shares_memory(planes, image)
    assert restore(np.ones((1, 5, 7))).shape == (5, 7)
    assert restore(np.ones((1, 2, 5, 7))).shape == (2, 5, 7)  # probabilities keep K


def test_stack_is_kept_as_is():
    image = np.zeros((3, 5, 7), np.float32)
    planes, restore = as_planes(image)
    assert planes is image
    result = np.ones((3, 5, 7))
    assert restore(result) is result


def test_bool_becomes_uint8_zero_one_without_copy():
    image = np.array([[True, False], [False, True]])
    planes, _ = as_planes(image)
    assert planes.dtype == np.uint8
    np.testing.assert_array_equal(planes[0], [[1, 0], [0, 1]])
    assert np.shares_memory(planes, image)


def test_dask_stack_stays_lazy():
    planes, _ = as_planes(da.zeros((2, 5, 7), chunks=(1, 5, 7)))
    assert isinstance(planes, da.Array)
    planes, _ = as_planes(da.zeros((5, 7)))
    assert isinstance(planes, da.Array) and planes.shape == (1, 5, 7)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((7,), r"shape \(7,\) \(1D\): expected \(H, W\) or a stack \(N, H, W\)"),
        # 4-D (t, z, y, x) is segmentable now; 5 axes need one of them to be channels
        ((2, 2, 3, 5, 7), r"shape \(2, 2, 3, 5, 7\) \(5D\) without a channel axis"),
        ((2, 1, 2, 3, 5, 7), r"shape \(2, 1, 2, 3, 5, 7\): 6-D images are not supported"),
        ((0, 7), r"the image is empty: shape \(0, 7\)"),
        ((3, 0, 7), "the image is empty"),
        ((16, 16, 3), r"RGB image \(shape \(16, 16, 3\)\).*Split RGB"),
        ((16, 16, 4), "RGB image"),
    ],
)
def test_unsegmentable_shapes_are_named(shape, message):
    with pytest.raises(InputError, match=message):
        as_planes(np.zeros(shape, np.uint8))


def test_small_planes_with_3_columns_are_a_stack_not_rgb():
    planes, _ = as_planes(np.zeros((2, 3, 3), np.uint8))
    assert planes.shape == (2, 3, 3)


def test_known_rgb_is_refused_whatever_its_shape():
    with pytest.raises(InputError, match="RGB image"):
        as_planes(np.zeros((4, 4, 3)), rgb=True)
    planes, _ = as_planes(np.zeros((10, 10, 3)), rgb=False)  # a 10-plane stack, said so
    assert planes.shape == (10, 10, 3)


@pytest.mark.parametrize("dtype", [np.complex64, object, "U3"])
def test_unsupported_dtypes_are_refused(dtype):
    with pytest.raises(InputError, match="cannot segment an image of dtype"):
        as_planes(np.zeros((4, 4), dtype=dtype))


def test_multichannel_models_take_channel_first_planes():
    planes, _ = as_planes(np.zeros((2, 5, 7)), in_channels=2)
    assert planes.shape == (1, 2, 5, 7)
    planes, _ = as_planes(np.zeros((3, 2, 5, 7)), in_channels=2)
    assert planes.shape == (3, 2, 5, 7)
    with pytest.raises(InputError, match="expects 2 channels but the image of shape"):
        as_planes(np.zeros((3, 5, 7)), in_channels=2)


def test_real_em_stack_and_nuclei_image_read_as_planes(shared_data):
    stack = read_image(shared_data / "em-isbi2012" / "images.tif")
    assert stack.shape == (20, 512, 512) and stack.dtype == np.uint8
    planes, restore = as_planes(stack)
    assert planes.shape == (20, 512, 512) and restore(planes) is planes
    nucleus = next(iter(sorted((shared_data / "nuclei-dsb2018" / "images").glob("*.tif"))))
    image = read_image(nucleus)
    assert image.ndim == 2 and image.dtype == np.uint8


# ------------------------------------------------------------------ valid files pass the checks


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zlib", "predictor": True},
        {"tile": (16, 16)},
        {"tile": (16, 16), "compression": "zlib"},
        {"rowsperstrip": 7},
        {"bigtiff": True},
        {"imagej": True},
        {"ome": True},
        {"contiguous": True},
    ],
)
def test_the_checks_accept_every_layout_tifffile_writes(tmp_path, options):
    stack = np.random.default_rng(0).integers(0, 4000, (3, 37, 45)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", stack, photometric="minisblack", **options)
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif"), stack)


@pytest.mark.parametrize("compression", [None, "packbits", "tiff_adobe_deflate"])
def test_the_checks_accept_tiffs_written_by_pillow(tmp_path, compression):
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 255, (37, 45), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.tif", compression=compression)
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif"), image)
    Image.fromarray(image > 100).save(tmp_path / "bits.tif")  # 1 bit per pixel
    np.testing.assert_array_equal(read_image(tmp_path / "bits.tif"), image > 100)


# ------------------------------------------------------------------ memory


def test_available_memory_is_a_positive_number_of_bytes():
    memory = available_memory()
    assert isinstance(memory, int) and memory > 0


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KB"), (2 * 10**10, "18.6 GB")],
)
def test_format_bytes(nbytes, text):
    assert format_bytes(nbytes) == text


def test_check_fits_in_memory_names_what_and_what_to_do(monkeypatch):
    monkeypatch.setattr(memory_module, "available_memory", lambda: 3 * 2**30)
    check_fits_in_memory(3 * 2**30, "the result")  # exactly what is available: fine
    with pytest.raises(InputError) as caught:
        check_fits_in_memory(2 * 10**10, "the result")
    assert str(caught.value) == (
        "the result needs 18.6 GB, more than the memory available (3.0 GB); segment into a "
        ".zarr output (-o result.zarr), which works tile by tile"
    )
    with pytest.raises(InputError, match=r"\(3\.0 GB\); use fewer planes$"):
        check_fits_in_memory(2**40, "training", hint="use fewer planes")


# ------------------------------------------------------------------ writing safely


def test_an_existing_file_is_not_replaced_without_overwrite(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"the user's precious file")
    with pytest.raises(OutputError) as caught:
        write_image(target, np.zeros((4, 4), np.uint8))
    assert str(caught.value) == (
        f"{target} already exists; pass --overwrite to replace it, or choose another output"
    )
    assert target.read_bytes() == b"the user's precious file"
    write_image(target, np.ones((4, 4), np.uint8), overwrite=True)
    np.testing.assert_array_equal(read_image(target), np.ones((4, 4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.tif"]


def test_a_folder_is_never_replaced_by_a_result(tmp_path):
    (tmp_path / "x.tif").mkdir()
    with pytest.raises(OutputError, match=r"x.tif is a folder, not a TIFF file; choose another"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4)), overwrite=True)


def _interrupted_imwrite(written: list):
    def imwrite(path, *args, **kwargs):
        written.append(Path(path))
        Path(path).write_bytes(b"II*\x00 half a TIFF")
        raise KeyboardInterrupt

    return imwrite


def test_an_interrupted_write_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch):
    target = write_image(tmp_path / "result.tif", np.arange(16, dtype=np.uint8).reshape(4, 4))
    before = target.read_bytes()
    written: list = []
    monkeypatch.setattr(tifffile, "imwrite", _interrupted_imwrite(written))
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.zeros((4, 4), np.uint8), overwrite=True)
    # the partial data went to a temporary file beside the target, never the target
    assert written and written[0].parent == tmp_path and written[0] != target
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]


def test_an_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(tifffile, "imwrite", _interrupted_imwrite([]))
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "new" / "result.tif", np.zeros((4, 4), np.uint8))
    assert list((tmp_path / "new").iterdir()) == []


def test_an_interrupted_calibrated_write_leaves_the_old_file(tmp_path, monkeypatch):
    from napari_unet.core.calibration import Calibration, read_calibration

    calibration = Calibration("yx", (0.325, 0.325), (0, 0), ("µm", "µm"), "ImageJ")
    target = write_image(
        tmp_path / "result.tif", np.ones((4, 4), np.uint8), calibration=calibration
    )
    before = target.read_bytes()
    monkeypatch.setattr(tifffile, "imwrite", _interrupted_imwrite([]))
    with pytest.raises(KeyboardInterrupt):  # not swallowed by the metadata fallback
        write_image(target, np.zeros((4, 4), np.uint8), overwrite=True, calibration=calibration)
    assert target.read_bytes() == before
    assert read_calibration(target).scale == (0.325, 0.325)
    assert [p.name for p in tmp_path.iterdir()] == ["result.tif"]


# ------------------------------------------------------------------ result records


def test_result_info_round_trips_through_imagej_and_ome(tmp_path):
    from napari_unet.core.io import read_result_info

    record = {"napari_unet": {"scale_factor": 0.5, "scale_reason": "measured diameter 30 px"}}
    for name, dtype in (("imagej.tif", np.uint16), ("ome.tif", np.int32)):
        write_image(tmp_path / name, np.zeros((2, 4, 4), dtype), description_extra=record)
        with tifffile.TiffFile(tmp_path / name) as tiff:
            assert (tiff.is_imagej, tiff.is_ome) == (dtype == np.uint16, dtype == np.int32)
        assert read_result_info(tmp_path / name) == record


def test_result_info_is_none_for_what_we_did_not_write(tmp_path):
    from napari_unet.core.io import read_result_info

    write_image(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    # Fiji's Info property is free text
    tifffile.imwrite(
        tmp_path / "fiji.tif", np.zeros((4, 4), np.uint8), imagej=True, metadata={"Info": "x=1"}
    )
    tifffile.imwrite(
        tmp_path / "list.tif", np.zeros((4, 4), np.uint8), imagej=True, metadata={"Info": "[1]"}
    )
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 broken")
    for name in ("plain.tif", "fiji.tif", "list.tif", "broken.tif", "missing.tif"):
        assert read_result_info(tmp_path / name) is None


def test_result_info_of_a_zarr_store_is_its_record(tmp_path):
    from napari_unet.core.io import read_result_info

    root = zarr.open_group(str(tmp_path / "labels.zarr"), mode="w", zarr_format=2)
    assert read_result_info(tmp_path / "labels.zarr") is None
    root.attrs["napari_unet"] = {"complete": True, "scale_factor": 2.0}
    assert read_result_info(tmp_path / "labels.zarr") == {
        "napari_unet": {"complete": True, "scale_factor": 2.0}
    }

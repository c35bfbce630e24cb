"""Pixel sizes and units, reading calibration from TIFF and OME-Zarr, and keeping it on write."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.core.calibration import (
    UNITS,
    Calibration,
    PixelSize,
    canonical_unit,
    ngff_transformations,
    parse_pixel_size,
    read_calibration,
    tiff_calibration_kwargs,
)
from napari_unet.core.errors import InputError
from napari_unet.core.io import read_image, write_image


def one_line_error(call, *args, **kwargs) -> str:
    """The message of the InputError ``call`` raises, checked to be one line."""
    with pytest.raises(InputError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("µm", "µm"),
        ("μm", "µm"),  # Greek mu
        ("um", "µm"),
        ("UM", "µm"),
        ("micron", "µm"),
        ("microns", "µm"),
        ("micrometer", "µm"),
        ("Micrometres", "µm"),
        ("\\u00B5m", "µm"),  # as ImageJ escapes it in a TIFF description
        (" nm ", "nm"),
        ("nanometers", "nm"),
        ("NM", "nm"),
        ("Å", "Å"),
        ("\u212b", "Å"),  # the ANGSTROM SIGN
        ("angstrom", "Å"),
        ("pm", "pm"),
        ("mm", "mm"),
        ("millimetre", "mm"),
        ("cm", "cm"),
        ("m", "m"),
        ("meter", "m"),
    ],
)
def test_unit_spellings_are_canonical(spelling, canonical):
    assert canonical_unit(spelling) == canonical
    assert canonical in UNITS


def test_units_are_their_size_in_metres():
    assert UNITS["µm"] == 1e-6
    assert UNITS["nm"] == 1e-9
    assert UNITS["Å"] == 1e-10
    assert sorted(UNITS, key=UNITS.get) == ["pm", "Å", "nm", "µm", "mm", "cm", "m"]


@pytest.mark.parametrize("unit", ["furlong", "px", "pixel", "inch", "µ", "mum"])
def test_an_unknown_unit_is_one_line_listing_the_accepted_ones(unit):
    message = one_line_error(canonical_unit, unit)
    assert repr(unit) in message
    for accepted in ("nm", "µm", "um", "mm"):
        assert accepted in message


def test_an_empty_unit_is_one_line():
    assert "empty" in one_line_error(canonical_unit, "  ")


# ------------------------------------------------------------------ pixel sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.325", (0.325, 0.325, "µm")),
        ("0.325um", (0.325, 0.325, "µm")),
        (" 0.325 µm ", (0.325, 0.325, "µm")),
        ("4 nm", (4.0, 4.0, "nm")),
        ("4nanometer", (4.0, 4.0, "nm")),  # "nan" in "nanometer" is not a number
        (".5 microns", (0.5, 0.5, "µm")),
        ("3.25e-1", (0.325, 0.325, "µm")),
        ("0.5,0.325 µm", (0.5, 0.325, "µm")),
        ("0.5, 0.325", (0.5, 0.325, "µm")),
        ("0.5 x 0.325 µm", (0.5, 0.325, "µm")),
        ("0.5x0.325mm", (0.5, 0.325, "mm")),
        ("2 Å", (2.0, 2.0, "Å")),
        (0.325, (0.325, 0.325, "µm")),
        (4, (4.0, 4.0, "µm")),
        ((0.5, 0.25), (0.5, 0.25, "µm")),
    ],
)
def test_pixel_sizes_as_users_write_them(text, expected):
    size = parse_pixel_size(text)
    assert (size.y, size.x, size.unit) == expected


def test_the_unit_argument_is_the_default_and_a_unit_in_the_text_wins():
    assert parse_pixel_size("4", unit="nm") == PixelSize(4, 4, "nm")
    assert parse_pixel_size(4.0, unit="nanometer") == PixelSize(4, 4, "nm")
    assert parse_pixel_size("0.5 um", unit="nm") == PixelSize(0.5, 0.5, "µm")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0", "got 0"),
        ("-1", "got -1"),
        ("-0.3um", "got -0.3"),
        ("nan", "got nan"),
        ("NaN um", "got NaN"),
        ("inf", "got inf"),
        ("-inf nm", "got -inf"),
        ("0.5 x 0", "got 0"),
        (0.0, "got 0.0"),
        (-2.0, "got -2.0"),
        (float("nan"), "got nan"),
        (float("inf"), "got inf"),
        ((0.5, -1.0), "got -1.0"),
    ],
)
def test_a_pixel_size_that_is_not_positive_and_finite_is_one_line(text, shown):
    message = one_line_error(parse_pixel_size, text)
    assert "positive number" in message
    assert shown in message
    assert "--pixel-size 0.325um" in message  # says what to give instead


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1 furlong", "unknown unit 'furlong'"),
        ("0.3 pixel", "unknown unit 'pixel'"),
        ("abc", "cannot read the pixel size 'abc'"),
        ("um", "cannot read the pixel size 'um'"),
        ("1,5", "ambiguous"),  # a decimal comma, or y=1 and x=5? never guessed
        ((1.0, 2.0, 3.0), "one or two"),
    ],
)
def test_other_bad_pixel_sizes_are_one_line(text, says):
    assert says in one_line_error(parse_pixel_size, text)


def test_pixel_size_checks_its_values_and_unit():
    assert "positive" in one_line_error(PixelSize, 0.0, 1.0)
    assert "positive" in one_line_error(PixelSize, 1.0, math.nan)
    assert "positive" in one_line_error(PixelSize, True, True)
    assert "unknown unit" in one_line_error(PixelSize, 1.0, 1.0, "parsec")
    assert PixelSize(0.5, 0.5, "um").unit == "µm"


def test_pixel_size_prints_and_parses_back():
    assert str(PixelSize(0.325, 0.325)) == "0.325 µm"
    assert str(PixelSize(0.5, 0.325, "nm")) == "0.5 x 0.325 nm"
    for size in (PixelSize(0.325, 0.325), PixelSize(0.5, 0.325, "nm"), PixelSize(4, 4, "Å")):
        assert parse_pixel_size(str(size)) == size


def test_pixel_size_converts_units_exactly():
    assert PixelSize(0.325, 0.325, "µm").to("nm") == PixelSize(325, 325, "nm")
    assert PixelSize(4, 4, "nm").to("um") == PixelSize(0.004, 0.004, "µm")
    assert PixelSize(20, 10, "Å").to("nm") == PixelSize(2, 1, "nm")


def test_ratio_to_is_the_resampling_factor_in_a_common_unit():
    image, model = PixelSize(0.325, 0.325, "µm"), PixelSize(650, 650, "nm")
    assert image.ratio_to(model) == pytest.approx((0.5, 0.5))  # downsample 2x
    assert model.ratio_to(image) == pytest.approx((2.0, 2.0))
    assert PixelSize(1.0, 0.5).ratio_to(PixelSize(0.5, 0.5)) == pytest.approx((2.0, 1.0))


# ------------------------------------------------------------------ Calibration


def test_calibration_pixel_size_needs_the_units_of_y_and_x():
    calibration = Calibration("zyx", (2.0, 325.0, 0.325), (0, 0, 0), ("µm", "nm", "µm"))
    assert calibration.pixel_size == PixelSize(325, 325, "nm")
    assert Calibration("yx", (0.3, 0.3), (0, 0), (None, "µm")).pixel_size is None
    assert Calibration("zy", (1.0, 0.3), (0, 0), ("µm", "µm")).pixel_size is None


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (("yx", (1.0,), (0, 0), (None, None)), "one scale, translation and unit per axis"),
        (("yx", (0.0, 1.0), (0, 0), (None, None)), "the scale of axis y must be a positive"),
        (("yx", (1.0, -1.0), (0, 0), (None, None)), "the scale of axis x must be a positive"),
        (("yx", (1.0, 1.0), (0, math.nan), (None, None)), "finite"),
        (("yx", (1.0, 1.0), (0, 0), ("µm", "lightyear")), "unknown unit"),
        (("yxy", (1.0, 1.0, 1.0), (0, 0, 0), (None,) * 3), "twice"),
    ],
)
def test_calibration_refuses_inconsistent_values_in_one_line(arguments, says):
    assert says in one_line_error(Calibration, *arguments)


def test_for_result_drops_the_channel_axis():
    image = Calibration(
        "czyx", (1.0, 2.0, 0.5, 0.5), (0, 10.0, 1.0, 2.0), (None, "µm", "µm", "µm"), "OME"
    )
    for channel_axis in (0, -4):
        result = image.for_result(channel_axis)
        assert result == Calibration(
            "zyx", (2.0, 0.5, 0.5), (10.0, 1.0, 2.0), ("µm", "µm", "µm"), "OME"
        )


def test_for_result_adds_a_class_axis_before_y_for_probabilities():
    image = Calibration("tzyx", (1.0, 2.0, 0.5, 0.5), (0, 0, 3.0, 0), (None, "µm", "µm", "µm"))
    result = image.for_result(None, classes=3)
    assert result.axes == "tzcyx"
    assert result.scale == (1.0, 2.0, 1.0, 0.5, 0.5)
    assert result.translate == (0.0, 0.0, 0.0, 3.0, 0.0)
    assert result.units == (None, "µm", None, "µm", "µm")
    assert result.pixel_size == PixelSize(0.5, 0.5)


def test_for_result_of_rgb_drops_the_samples():
    image = Calibration("yxs", (0.2, 0.2, 1.0), (0, 0, 0), ("µm", "µm", None), "ImageJ")
    assert image.for_result(None).axes == "yx"
    assert image.for_result(-1, classes=2).axes == "cyx"


def test_for_result_refuses_what_cannot_be_a_result():
    image = Calibration("cyx", (1.0, 0.2, 0.2), (0, 0, 0), (None, "µm", "µm"))
    assert "out of range" in one_line_error(image.for_result, 3)
    assert "channel_axis" in one_line_error(image.for_result, None, classes=2)
    assert "at least one class" in one_line_error(image.for_result, 0, classes=0)


def test_for_ndim_keeps_pixel_size_and_z_spacing():
    image = Calibration("zyx", (2.0, 0.5, 0.25), (1.0, 0, 0), ("µm", "µm", "µm"))
    assert image.for_ndim(3) is image
    flat = image.for_ndim(2)
    assert (flat.axes, flat.scale, flat.units) == ("yx", (0.5, 0.25), ("µm", "µm"))
    timelapse = image.for_ndim(4)
    assert timelapse.axes == "tzyx"
    assert timelapse.scale == (1.0, 2.0, 0.5, 0.25)
    assert timelapse.translate == (0.0, 1.0, 0.0, 0.0)


def test_from_scale_reads_napari_style_scale_and_units():
    calibration = Calibration.from_scale(
        (2.0, 0.5, 0.5), (1.0, 0.0, 0.0), ("micrometer", "micrometer", "pixel")
    )
    assert calibration.axes == "zyx"
    assert calibration.units == ("µm", "µm", None)  # napari's default unit is "pixel"
    assert calibration.source == "napari layer"
    assert calibration.pixel_size is None
    assert Calibration.from_scale((0.5, 0.5), units=("nm", "nm")).pixel_size == PixelSize(
        0.5, 0.5, "nm"
    )


def test_a_typed_pixel_size_replaces_y_and_x_only():
    calibration = Calibration.identity(3).with_pixel_size(PixelSize(4, 4, "nm"), source="user")
    assert calibration.scale == (1.0, 4.0, 4.0)
    assert calibration.units == (None, "nm", "nm")
    assert Calibration.from_pixel_size(PixelSize(0.3, 0.2)).scale == (0.3, 0.2)


# ------------------------------------------------------------------ reading TIFF


def imagej_tiff(path, pixel_size, unit, *, shape=(16, 24), **metadata):
    """An ImageJ hyperstack of ``shape`` whose pixels are ``pixel_size`` (y, x) ``unit``."""
    y, x = (pixel_size, pixel_size) if np.isscalar(pixel_size) else pixel_size
    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}[len(shape)]
    tifffile.imwrite(
        path,
        np.zeros(shape, np.uint8),
        imagej=True,
        resolution=(1 / x, 1 / y),
        metadata={"axes": axes, "unit": unit, **metadata},
    )
    return path


@pytest.mark.parametrize(
    ("unit", "size", "expected"),
    [
        ("micron", 0.325, PixelSize(0.325, 0.325, "µm")),
        ("um", 0.325, PixelSize(0.325, 0.325, "µm")),
        ("\\u00B5m", 0.325, PixelSize(0.325, 0.325, "µm")),
        ("nm", 4.0, PixelSize(4, 4, "nm")),
        ("mm", 0.002, PixelSize(0.002, 0.002, "mm")),
        ("inch", 0.0001, PixelSize(2.54, 2.54, "µm")),
    ],
)
def test_imagej_resolution_is_pixels_per_unit(tmp_path, unit, size, expected):
    path = imagej_tiff(tmp_path / "ij.tif", size, unit)
    calibration = read_calibration(path)
    assert calibration.source == "ImageJ"
    assert calibration.axes == "yx"
    assert calibration.pixel_size == expected


def test_imagej_anisotropic_z_and_origin(tmp_path):
    path = imagej_tiff(
        tmp_path / "stack.tif",
        (0.4, 0.3),
        "micron",
        shape=(5, 16, 24),
        spacing=2.5,
        xorigin=10,
        zorigin=2,
    )
    calibration = read_calibration(path)
    assert calibration.axes == "zyx"
    assert calibration.scale == pytest.approx((2.5, 0.4, 0.3))
    assert calibration.units == ("µm", "µm", "µm")
    # ImageJ's origin is in pixels: pixel i is at (i - origin) * size
    assert calibration.translate == pytest.approx((-5.0, 0.0, -3.0))
    assert calibration.pixel_size == PixelSize(0.4, 0.3)


@pytest.mark.parametrize("metadata", [{}, {"unit": "pixel"}, {"unit": ""}])
def test_an_uncalibrated_imagej_file_records_nothing(tmp_path, metadata):
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8), imagej=True, metadata=metadata)
    assert read_calibration(path) is None


def ome_tiff(path, shape=(16, 24), **metadata):
    axes = {2: "YX", 3: "ZYX", 4: "CZYX"}[len(shape)]
    tifffile.imwrite(path, np.zeros(shape, np.uint8), ome=True, metadata={"axes": axes, **metadata})
    return path


def test_ome_physical_sizes_default_to_micrometres(tmp_path):
    # The OME schema's default unit of PhysicalSizeX/Y/Z is µm.
    path = ome_tiff(tmp_path / "x.ome.tif", PhysicalSizeX=0.325, PhysicalSizeY=0.325)
    calibration = read_calibration(path)
    assert calibration.source == "OME"
    assert calibration.pixel_size == PixelSize(0.325, 0.325, "µm")


def test_ome_units_anisotropic_z_and_position(tmp_path):
    path = ome_tiff(
        tmp_path / "x.ome.tif",
        shape=(2, 4, 16, 24),
        PhysicalSizeX=325.0,
        PhysicalSizeXUnit="nm",
        PhysicalSizeY=0.325,
        PhysicalSizeYUnit="µm",
        PhysicalSizeZ=1.5,
        PhysicalSizeZUnit="µm",
        Plane={"PositionX": [2.0] * 8, "PositionXUnit": ["mm"] * 8},
    )
    calibration = read_calibration(path)
    assert calibration.axes == "czyx"
    assert calibration.scale == pytest.approx((1.0, 1.5, 0.325, 325.0))
    assert calibration.units == (None, "µm", "µm", "nm")
    assert calibration.translate == pytest.approx((0, 0, 0, 2e6))  # 2 mm in nm
    assert calibration.pixel_size == PixelSize(0.325, 0.325, "µm")


def test_ome_tiff_without_physical_sizes_records_nothing(tmp_path):
    assert read_calibration(ome_tiff(tmp_path / "x.ome.tif")) is None


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        (20000.0, "CENTIMETER", PixelSize(0.5, 0.5)),
        (101600.0, "INCH", PixelSize(0.25, 0.25)),
        (4.0, "MICROMETER", PixelSize(0.25, 0.25)),
    ],
)
def test_plain_tiff_resolution_with_a_length_unit(tmp_path, resolution, unit, expected):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(
        path, np.zeros((8, 8), np.uint8), resolution=(resolution, resolution), resolutionunit=unit
    )
    calibration = read_calibration(path)
    assert calibration.source == "TIFF"
    assert calibration.pixel_size == expected


@pytest.mark.parametrize(
    "options",
    [
        {},  # tifffile's default: 1 pixel per no unit
        {"resolution": (3.0, 3.0), "resolutionunit": "NONE"},  # an aspect ratio, no size
        {"resolution": (72.0, 72.0), "resolutionunit": "INCH"},  # editors' print defaults
        {"resolution": (300.0, 300.0), "resolutionunit": "INCH"},
    ],
)
def test_meaningless_tiff_resolutions_are_ignored(tmp_path, options):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), **options)
    assert read_calibration(path) is None


def test_unreadable_files_record_nothing(tmp_path):
    (tmp_path / "text.tif").write_text("not an image")
    (tmp_path / "empty.tif").write_bytes(b"")
    for name in ("text.tif", "empty.tif", "missing.tif", "image.png"):
        assert read_calibration(tmp_path / name) is None


@pytest.mark.data
def test_the_real_data_records_no_calibration(shared_data):
    # tifffile's default resolution (1 pixel per no unit) must not read as a pixel size.
    assert read_calibration(shared_data / "em-isbi2012" / "images.tif") is None


# ------------------------------------------------------------------ reading OME-Zarr


def ngff_group(path, axes, datasets, *, version="0.4", transformations=None, zarr_format=2):
    """An OME-Zarr image written by hand: a group with multiscales and one array per level."""
    multiscale = {"version": version, "axes": axes, "datasets": []}
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for name, (shape, level_transformations) in datasets.items():
        root.create_array(name, shape=shape, dtype="uint8")
        multiscale["datasets"].append(
            {"path": name, "coordinateTransformations": level_transformations}
        )
    if transformations is not None:
        multiscale["coordinateTransformations"] = transformations
    if version == "0.4":
        root.attrs["multiscales"] = [multiscale]
    else:  # NGFF 0.5 nests its metadata under "ome"
        del multiscale["version"]
        root.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    return path


SPACE = [
    {"name": "z", "type": "space", "unit": "micrometer"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def scale_and_translation(scale, translation=None):
    transformations = [{"type": "scale", "scale": scale}]
    if translation is not None:
        transformations.append({"type": "translation", "translation": translation})
    return transformations


@pytest.mark.parametrize(("version", "zarr_format"), [("0.4", 2), ("0.5", 3)])
def test_ome_zarr_level_zero_scale_translation_and_units(tmp_path, version, zarr_format):
    path = ngff_group(
        tmp_path / "image.zarr",
        SPACE,
        {
            "0": ((4, 32, 32), scale_and_translation([2.0, 0.325, 0.325], [0.0, 10.0, 5.0])),
            "1": ((4, 16, 16), scale_and_translation([2.0, 0.65, 0.65], [0.0, 10.1625, 5.1625])),
        },
        version=version,
        zarr_format=zarr_format,
    )
    calibration = read_calibration(path)
    assert calibration.source == "OME-Zarr"
    assert calibration.axes == "zyx"
    assert calibration.scale == pytest.approx((2.0, 0.325, 0.325))
    assert calibration.translate == pytest.approx((0.0, 10.0, 5.0))
    assert calibration.units == ("µm", "µm", "µm")
    # the path of one level gives that level's calibration
    assert read_calibration(path / "1").scale == pytest.approx((2.0, 0.65, 0.65))


def test_ome_zarr_multiscale_transformations_apply_after_the_level(tmp_path):
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "nanometer"},
        {"name": "x", "type": "space", "unit": "nanometer"},
    ]
    path = ngff_group(
        tmp_path / "image.zarr",
        axes,
        {"0": ((2, 8, 8), scale_and_translation([1.0, 2.0, 2.0], [0.0, 1.0, 1.0]))},
        transformations=scale_and_translation([1.0, 2.0, 2.0]),
    )
    calibration = read_calibration(path)
    assert calibration.axes == "cyx"
    assert calibration.scale == pytest.approx((1.0, 4.0, 4.0))
    assert calibration.translate == pytest.approx((0.0, 2.0, 2.0))
    assert calibration.units == (None, "nm", "nm")
    assert calibration.pixel_size == PixelSize(4, 4, "nm")


def test_ome_zarr_without_units_keeps_its_scale_but_no_pixel_size(tmp_path):
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    path = ngff_group(
        tmp_path / "image.zarr", axes, {"0": ((8, 8), scale_and_translation([2.0, 2.0]))}
    )
    calibration = read_calibration(path)
    assert calibration.scale == (2.0, 2.0)
    assert calibration.units == (None, None)
    assert calibration.pixel_size is None


def test_zarr_that_records_nothing(tmp_path):
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=(8, 8), dtype="uint8")
    assert read_calibration(tmp_path / "plain.zarr") is None
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    unit_scale = ngff_group(
        tmp_path / "image.zarr", axes, {"0": ((8, 8), scale_and_translation([1.0, 1.0]))}
    )
    assert read_calibration(unit_scale) is None
    bad_scale = ngff_group(
        tmp_path / "bad.zarr", SPACE[1:], {"0": ((8, 8), scale_and_translation([0.0, -1.0]))}
    )
    assert read_calibration(bad_scale) is None  # a malformed scale is no calibration


def test_ngff_transformations_name_axes_and_units():
    calibration = Calibration(
        "tzcyx",
        (1.0, 2.0, 1.0, 0.5, 0.5),
        (0, 0, 0, 3.0, 0),
        (None, "µm", None, "µm", "µm"),
    )
    axes, transformations = ngff_transformations(calibration, 5)
    assert axes == [
        {"name": "t", "type": "time"},
        {"name": "z", "unit": "micrometer"},  # NGFF wants channels before space axes
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    assert transformations == [
        {"type": "scale", "scale": [1.0, 2.0, 1.0, 0.5, 0.5]},
        {"type": "translation", "translation": [0.0, 0.0, 0.0, 3.0, 0.0]},
    ]
    axes, transformations = ngff_transformations(None, 3)
    assert [axis["name"] for axis in axes] == ["z", "y", "x"]
    assert transformations == [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]


def test_an_ome_zarr_written_with_ngff_transformations_reads_back(tmp_path):
    calibration = Calibration("zyx", (2.0, 4.0, 4.0), (50.0, 8.0, 0), ("nm", "nm", "nm"), "user")
    axes, transformations = ngff_transformations(calibration, 3)
    path = ngff_group(tmp_path / "result.zarr", axes, {"0": ((2, 8, 8), transformations)})
    read = read_calibration(path)
    assert (read.axes, read.scale, read.translate, read.units) == (
        calibration.axes,
        calibration.scale,
        calibration.translate,
        calibration.units,
    )


# ------------------------------------------------------------------ writing


@pytest.mark.parametrize("kind", ["ImageJ", "OME"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_a_0325_um_tiff_gives_a_0325_um_result(tmp_path, kind, dtype):
    source = tmp_path / "input.tif"
    if kind == "ImageJ":
        imagej_tiff(source, 0.325, "micron")
    else:
        ome_tiff(source, PhysicalSizeX=0.325, PhysicalSizeY=0.325)
    calibration = read_calibration(source).for_result(None)
    labels = np.arange(16 * 24, dtype=dtype).reshape(16, 24)
    result = write_image(tmp_path / "labels.tif", labels, calibration=calibration)
    read = read_calibration(result)
    assert read.pixel_size == PixelSize(0.325, 0.325, "µm")
    assert str(read.pixel_size) == "0.325 µm"
    np.testing.assert_array_equal(read_image(result), labels)
    # the format of the input, unless ImageJ cannot hold the data type (int32)
    expected = "OME" if kind == "OME" or dtype == np.int32 else "ImageJ"
    assert read.source == expected


@pytest.mark.parametrize("kind", ["ImageJ", "OME", "user"])
def test_a_zyx_result_keeps_anisotropic_z_and_translation(tmp_path, kind):
    calibration = Calibration("zyx", (2.0, 0.5, 0.25), (4.0, 1.0, -2.0), ("µm", "µm", "µm"), kind)
    labels = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    result = write_image(tmp_path / "labels.tif", labels, calibration=calibration)
    read = read_calibration(result)
    assert read.axes == "zyx"
    assert read.scale == pytest.approx(calibration.scale)
    assert read.units == calibration.units
    if kind == "OME":  # OME-TIFF records plane positions in x and y only
        assert read.translate == pytest.approx((0.0, 1.0, -2.0))
    else:
        assert read.translate == pytest.approx(calibration.translate)
    np.testing.assert_array_equal(read_image(result), labels)


def test_a_probability_result_gets_a_class_axis(tmp_path):
    image = Calibration("zyx", (3.0, 4.0, 4.0), (0, 0, 0), ("nm", "nm", "nm"), "ImageJ")
    calibration = image.for_result(None, classes=2)
    probabilities = np.random.default_rng(0).random((3, 2, 8, 8)).astype(np.float32)
    result = write_image(tmp_path / "probabilities.tif", probabilities, calibration=calibration)
    read = read_calibration(result)
    assert read.axes == "zcyx"
    assert read.scale == pytest.approx((3.0, 1.0, 4.0, 4.0))
    assert read.pixel_size == PixelSize(4, 4, "nm")
    np.testing.assert_array_equal(read_image(result), probabilities)


def test_a_calibration_for_other_axes_is_fitted_to_the_array(tmp_path):
    # e.g. a zyx image's calibration given with one plane's result
    calibration = Calibration("zyx", (2.0, 0.5, 0.5), (0, 0, 0), ("µm", "µm", "µm"), "ImageJ")
    result = write_image(
        tmp_path / "plane.tif", np.zeros((8, 8), np.uint8), calibration=calibration
    )
    read = read_calibration(result)
    assert read.axes == "yx"
    assert read.pixel_size == PixelSize(0.5, 0.5)


def test_the_ome_result_also_carries_resolution_tags_for_other_readers(tmp_path):
    calibration = Calibration("yx", (0.5, 0.25), (0, 0), ("µm", "µm"), "OME")
    result = write_image(tmp_path / "x.tif", np.zeros((8, 8), np.int32), calibration=calibration)
    with tifffile.TiffFile(result) as tiff:
        page = tiff.pages[0]
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        assert page.resolution == pytest.approx((40000.0, 20000.0))  # (x, y) pixels per cm


def test_without_calibration_nothing_is_added(tmp_path):
    assert tiff_calibration_kwargs(None) == {}
    result = write_image(tmp_path / "x.tif", np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(result) as tiff:
        assert not tiff.is_imagej and not tiff.is_ome
    assert read_calibration(result) is None


def test_imagej_metadata_is_what_imagej_reads():
    calibration = Calibration("zyx", (1.5, 0.325, 0.325), (0, 0, 0), ("µm", "µm", "µm"), "ImageJ")
    kwargs = tiff_calibration_kwargs(calibration, shape=(3, 8, 8), dtype=np.uint8, info="{}")
    assert kwargs["imagej"] is True
    assert kwargs["resolution"] == pytest.approx((1 / 0.325, 1 / 0.325))
    # ImageJ's description is ASCII: µm is written the way ImageJ itself writes it
    assert kwargs["metadata"] == {"axes": "ZYX", "unit": "micron", "spacing": 1.5, "Info": "{}"}


def test_metadata_tifffile_refuses_does_not_lose_the_result(tmp_path, monkeypatch):
    written = []
    imwrite = tifffile.imwrite

    def refuse_ome(path, data, **kwargs):
        written.append(sorted(kwargs))
        if kwargs.get("ome"):
            raise ValueError("unsupported OME axes")
        return imwrite(path, data, **kwargs)

    monkeypatch.setattr(tifffile, "imwrite", refuse_ome)
    calibration = Calibration("yx", (0.5, 0.5), (0, 0), ("µm", "µm"), "OME")
    image = np.arange(64, dtype=np.uint8).reshape(8, 8)
    with pytest.warns(UserWarning, match="written without its calibration: unsupported OME"):
        result = write_image(tmp_path / "x.tif", image, calibration=calibration)
    assert len(written) == 2
    np.testing.assert_array_equal(read_image(result), image)
    assert [path.name for path in tmp_path.iterdir()] == ["x.tif"]


def test_description_extra_is_stored_in_both_formats(tmp_path):
    from napari_unet.core.io import read_result_info

    record = {"napari_unet": {"scale_factor": 0.5, "scale_reason": "pixel size 0.325 µm"}}
    for kind, dtype in (("ImageJ", np.uint16), ("OME", np.uint16), ("ImageJ", np.int32)):
        calibration = Calibration("yx", (0.325, 0.325), (0, 0), ("µm", "µm"), kind)
        path = tmp_path / f"{kind}-{np.dtype(dtype)}.tif"
        write_image(
            path, np.zeros((8, 8), dtype), calibration=calibration, description_extra=record
        )
        assert read_result_info(path) == record
        assert read_calibration(path).pixel_size == PixelSize(0.325, 0.325)
    # without a calibration too
    write_image(tmp_path / "plain.tif", np.zeros((8, 8), np.uint8), description_extra=record)
    assert read_result_info(tmp_path / "plain.tif") == json.loads(json.dumps(record))
    assert read_calibration(tmp_path / "plain.tif") is None


def test_an_image_sequence_axis_is_written_as_an_other_axis(tmp_path):
    # tifffile names the planes of some TIFF sequences "I", which OME-XML has no letter for
    calibration = Calibration("iyx", (1.0, 0.5, 0.5), (0, 0, 0), (None, "µm", "µm"), "TIFF")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # written with its calibration, not without
        result = write_image(
            tmp_path / "x.tif", np.zeros((3, 8, 8), np.uint8), calibration=calibration
        )
    read = read_calibration(result)
    assert read.axes == "qyx"
    assert read.pixel_size == PixelSize(0.5, 0.5)

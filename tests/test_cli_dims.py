"""`napari-unet segment` / `train` on (t, z, y, x) stacks, channels and RGB (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import io as skio

from napari_unet.cli import main
from napari_unet.core import inmemory, modelfile, registry
from napari_unet.core.io import rgb_to_grey
from napari_unet.core.model import UNetConfig, margin
from napari_unet.core.modelfile import load_model, random_model, save_model
from napari_unet.core.segment import segment

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


@pytest.fixture(autouse=True)
def model_dirs(tmp_path, monkeypatch) -> None:
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", builtin)
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path / "user"))


def _model(tmp_path: Path, channels: int = 1) -> Path:
    config = TINY.with_(in_channels=channels)
    model = random_model(config, seed=2, name=f"tiny{channels}")
    return save_model(model, tmp_path / f"tiny{channels}.safetensors")


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape).astype(np.uint8)


def _segment(tmp_path, source: Path, model: Path, *extra: str, name: str = "out.tif") -> int:
    output = tmp_path / name
    argv = ["segment", str(source), "-o", str(output), "-m", str(model), "--device", "cpu"]
    return main([*argv, "--output", "probabilities", *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("napari-unet: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_an_imagej_tzyx_stack_gives_a_tzyx_result(tmp_path):
    model = _model(tmp_path)
    image = _image((2, 3, 40, 36))
    tifffile.imwrite(tmp_path / "tz.tif", image, imagej=True, metadata={"axes": "TZYX"})
    assert _segment(tmp_path, tmp_path / "tz.tif", model) == 0
    result = tifffile.imread(tmp_path / "out.tif")
    assert result.shape == (2, 3, 2, 40, 36)  # (T, Z, K, Y, X) probabilities
    expected = segment(load_model(model), image, output="probabilities", device="cpu")
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_an_ome_tiff_with_channels_uses_its_channel_axis(tmp_path, capsys):
    image = _image((3, 2, 40, 36))  # (Z, C, Y, X)
    source = tmp_path / "zc.ome.tif"
    tifffile.imwrite(source, image, ome=True, metadata={"axes": "ZCYX"})
    two = _model(tmp_path, channels=2)
    assert _segment(tmp_path, source, two) == 0
    result = tifffile.imread(tmp_path / "out.tif")
    assert result.shape == (3, 2, 40, 36)
    expected = segment(load_model(two), image, channel_axis=1, output="probabilities")
    np.testing.assert_allclose(result, expected, atol=1e-6)
    # a one-channel model reads the channel chosen
    one = _model(tmp_path)
    assert _segment(tmp_path, source, one, "--channels", "1", name="one.tif") == 0
    result = tifffile.imread(tmp_path / "one.tif")
    assert result.shape == (3, 2, 40, 36)
    expected = segment(load_model(one), image[:, 1], output="probabilities")
    np.testing.assert_allclose(result, expected, atol=1e-6)
    # and the 2-channel model reads them in the order chosen
    assert _segment(tmp_path, source, two, "--channels", "1,0", name="swap.tif") == 0
    expected = segment(load_model(two), image[:, ::-1], channel_axis=1, output="probabilities")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "swap.tif"), expected, atol=1e-6)


def test_an_imagej_tzcyx_hyperstack_gives_labels_of_shape_tzyx(tmp_path):
    image = _image((2, 3, 2, 40, 36))
    tifffile.imwrite(tmp_path / "h.tif", image, imagej=True, metadata={"axes": "TZCYX"})
    two = _model(tmp_path, channels=2)
    argv = ["segment", str(tmp_path / "h.tif"), "-o", str(tmp_path / "l.tif"), "-m", str(two)]
    assert main([*argv, "--device", "cpu", "--threshold", "0.5"]) == 0
    labels = tifffile.imread(tmp_path / "l.tif")
    assert labels.shape == (2, 3, 40, 36) and labels.dtype == np.int32


def test_channel_axis_names_the_last_axis(tmp_path):
    image = _image((40, 36, 2))
    tifffile.imwrite(tmp_path / "yxc.tif", image, photometric="minisblack")
    two = _model(tmp_path, channels=2)
    assert _segment(tmp_path, tmp_path / "yxc.tif", two, "--channel-axis", "-1") == 0
    expected = segment(load_model(two), np.moveaxis(image, -1, 0), output="probabilities")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out.tif"), expected, atol=1e-6)


def test_rgb_is_read_as_channels_or_grey_only_when_asked(tmp_path, capsys):
    colour = _image((40, 36, 3))
    skio.imsave(tmp_path / "rgb.png", colour, check_contrast=False)
    source = tmp_path / "rgb.png"
    one, three = _model(tmp_path), _model(tmp_path, channels=3)
    assert _segment(tmp_path, source, one) == 2
    assert re.search(r"RGB image .*--rgb grey", _error_line(capsys))
    assert not (tmp_path / "out.tif").exists()
    assert _segment(tmp_path, source, three, "--rgb", "channels", name="c.tif") == 0
    expected = segment(load_model(three), colour, channel_axis=-1, output="probabilities")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "c.tif"), expected, atol=1e-6)
    assert _segment(tmp_path, source, one, "--rgb", "grey", name="g.tif") == 0
    expected = segment(load_model(one), rgb_to_grey(colour), output="probabilities")
    np.testing.assert_allclose(tifffile.imread(tmp_path / "g.tif"), expected, atol=1e-6)
    # an RGB TIFF too (tagged RGB, channels differ)
    tifffile.imwrite(tmp_path / "rgb.tif", colour, photometric="rgb")
    assert _segment(tmp_path, tmp_path / "rgb.tif", one, "--rgb", "grey", name="t.tif") == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "t.tif"), expected, atol=1e-6)


def _discs(shape, discs) -> np.ndarray:
    rows, cols = np.indices(shape)
    image = np.zeros(shape, np.uint8)
    for r, c, radius in discs:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 200
    return image


@pytest.fixture
def thresholding(monkeypatch):
    """Every model predicts foreground where its normalised input is above 0.5."""
    m = margin(TINY)

    def predictor(batch):
        inside = batch[:, 0, m:-m, m:-m] > 0.5
        return np.stack([~inside, inside], axis=1).astype(np.float32)

    monkeypatch.setattr(inmemory, "get_predictor", lambda *args, **kwargs: predictor)


def test_labels_of_a_z_stack_are_linked_by_default(tmp_path, thresholding):
    # B spans planes 0 and 1; A is only in plane 0, so per-plane ids of B differ (2, then 1)
    stack = np.stack(
        [_discs((48, 48), [(10, 10, 6), (34, 34, 7)]), _discs((48, 48), [(35, 33, 7)])]
    )
    tifffile.imwrite(tmp_path / "z.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    model = _model(tmp_path)
    argv = ["segment", str(tmp_path / "z.tif"), "-m", str(model), "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "linked.tif")]) == 0
    linked = tifffile.imread(tmp_path / "linked.tif")
    assert linked[0, 34, 34] == linked[1, 35, 33] > 0
    assert linked[0, 10, 10] not in (0, linked[0, 34, 34])
    assert main([*argv, "-o", str(tmp_path / "unlinked.tif"), "--no-link"]) == 0
    unlinked = tifffile.imread(tmp_path / "unlinked.tif")
    assert unlinked[0, 34, 34] != unlinked[1, 35, 33]
    np.testing.assert_array_equal(unlinked > 0, linked > 0)
    # a stack whose axes the file does not name is not linked unless asked
    tifffile.imwrite(tmp_path / "q.tif", stack, photometric="minisblack")
    argv = ["segment", str(tmp_path / "q.tif"), "-m", str(model), "--device", "cpu"]
    assert main([*argv, "-o", str(tmp_path / "q_default.tif")]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q_default.tif"), unlinked)
    assert main([*argv, "-o", str(tmp_path / "q_linked.tif"), "--link"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "q_linked.tif"), linked)


def test_link_into_a_zarr_output_is_refused_in_one_line(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "z.tif", _image((2, 40, 36)), imagej=True, metadata={"axes": "ZYX"})
    argv = ["segment", str(tmp_path / "z.tif"), "-o", str(tmp_path / "o.zarr"), "--link"]
    assert main([*argv, "-m", str(_model(tmp_path)), "--device", "cpu"]) == 2
    assert "linking labels through z" in _error_line(capsys)
    assert not (tmp_path / "o.zarr").exists()


def test_the_z_stack_link_default_is_left_out_of_a_zarr_output_with_a_note(tmp_path, capsys):
    """Linking is the default for a z-stack, not the user's choice: a .zarr run leaves it
    out and says so in one note; the summary line does not claim it."""
    from napari_unet.core.frontend import left_out_note
    from napari_unet.core.options import WHOLE_PLANE_OPTIONS

    tifffile.imwrite(tmp_path / "z.tif", _image((2, 40, 36)), imagej=True, metadata={"axes": "ZYX"})
    argv = ["segment", str(tmp_path / "z.tif"), "-o", str(tmp_path / "o.zarr")]
    assert main([*argv, "-m", str(_model(tmp_path)), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    link = next(option for option in WHOLE_PLANE_OPTIONS if option.name == "link")
    assert f"napari-unet: note: z.tif: {left_out_note(link)}" in err.splitlines()
    assert err.count("napari-unet: note:") == 1
    summary = [line for line in err.splitlines() if " -> " in line]
    assert len(summary) == 1 and "linked through z" not in summary[0]
    assert (tmp_path / "o.zarr").is_dir()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("make", "extra", "channels", "message"),
    [
        (
            lambda f: tifffile.imwrite(
                f / "in.tif", _image((3, 2, 40, 36)), ome=True, metadata={"axes": "ZCYX"}
            ),
            ["--channels", "5"],
            1,
            r"channel 5 is out of range: the channel axis \(axis 1\) has 2 channels \(0 to 1\)",
        ),
        (
            lambda f: tifffile.imwrite(
                f / "in.tif", _image((3, 40, 36)), imagej=True, metadata={"axes": "CYX"}
            ),
            [],
            2,
            r"the model expects 2 channels but the image of shape \(3, 40, 36\) has 3 on its "
            r"channel axis \(axis 0\); choose channels with --channels",
        ),
        (
            lambda f: tifffile.imwrite(f / "in.tif", _image((2, 2, 2, 2, 16, 16))),
            [],
            1,
            r"6-D images are not supported \(at most 5 axes: t, z, c, y, x\)",
        ),
        (
            lambda f: tifffile.imwrite(f / "in.tif", _image((9, 40, 36)), photometric="minisblack"),
            ["--channel-axis", "0", "--channels", "0"],
            1,
            r"has 9 entries, more than the 8 channels supported",
        ),
        (
            lambda f: tifffile.imwrite(f / "in.tif", _image((2, 40, 36))),
            ["--channels", "0,x"],
            1,
            r"--channels takes channel numbers separated by commas, e.g. 0,2; got '0,x'",
        ),
    ],
    ids=["channel out of range", "model channels", "6-D", "channel axis over 8", "bad list"],
)
def test_bad_channels_and_dimensions_are_one_line(tmp_path, capsys, make, extra, channels, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    make(inputs)
    model = _model(inputs, channels=channels)
    before = _snapshot(tmp_path)
    argv = ["segment", str(inputs / "in.tif"), "-o", str(tmp_path / "out.tif"), "-m", str(model)]
    assert main([*argv, "--device", "cpu", *extra]) == 2
    line = _error_line(capsys)
    assert re.search(message, line), line
    assert _snapshot(tmp_path) == before  # nothing written, nothing changed


def test_train_a_two_channel_model_from_scratch_on_an_ome_zcyx_stack(tmp_path, capsys):
    image = _image((3, 2, 64, 60))
    tifffile.imwrite(tmp_path / "i.ome.tif", image, ome=True, metadata={"axes": "ZCYX"})
    labels = np.zeros((3, 64, 60), np.uint8)
    labels[1, 10:20, 10:20] = 2
    labels[1, 40:] = 1
    tifffile.imwrite(tmp_path / "l.tif", labels, photometric="minisblack")
    argv = ["train", "--images", str(tmp_path / "i.ome.tif"), "--labels", str(tmp_path / "l.tif")]
    argv += ["--steps", "1", "--batch-size", "1", "--device", "cpu", "--annotation", "sparse"]
    assert main([*argv, "--base", "scratch", "-o", str(tmp_path / "m.safetensors")]) == 0
    assert load_model(tmp_path / "m.safetensors").config.in_channels == 2
    assert (
        main([*argv, "--base", "scratch", "--channels", "1", "-o", str(tmp_path / "c.safetensors")])
        == 0
    )
    assert load_model(tmp_path / "c.safetensors").config.in_channels == 1
    # a one-channel base does not read two channels
    one = _model(tmp_path)
    assert main([*argv, "--base", str(one), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert re.search(r"model expects 1 channel but the image .* has 2", _error_line(capsys))
    assert not (tmp_path / "x.safetensors").exists()

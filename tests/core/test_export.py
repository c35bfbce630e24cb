"""bioimage.io export: the packages pass bioimageio.core's own model test, offline.

Every package here is validated with the network switched off (any DNS lookup or
connection fails and is counted), so the export and its test need nothing remote.
"""

from __future__ import annotations

import math
import socket
import sys
import traceback
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")

import bioimageio.core as bioimageio_core
import torch
import yaml
from bioimageio.spec import settings

from napari_unet._sample_data import nuclei_image
from napari_unet.core import export, export_rdf
from napari_unet.core.calibration import PixelSize
from napari_unet.core.errors import InputError, OutputError
from napari_unet.core.export import (
    EXTRA_HINT,
    UNET_PAPER_URL,
    export_bioimageio,
    package_geometry,
    sample_crop_size,
)
from napari_unet.core.model import UNetConfig, is_valid_input_size, margin
from napari_unet.core.modelfile import load_model, random_model, resolve_model
from napari_unet.core.segment import segment

#: Depth 3: its 44 px margin is not a multiple of its 8 px pooling grid, so the declared
#: halo (48) and the mirrored borders (44 before, 48 after) differ, as for the presets.
TINY = UNetConfig(depth=3, base_width=4)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No network and a private bioimageio cache; yields the list of refused attempts."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(f"{args[:2]!r} from\n{''.join(traceback.format_stack(limit=12))}")
        raise OSError("network disabled in this test")

    previous_cache = settings.cache_path
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        settings.cache_path = tmp_path_factory.mktemp("bioimageio-cache")
        try:
            yield attempts
        finally:
            settings.cache_path = previous_cache


@pytest.fixture(scope="module")
def nuclei():
    return load_model(resolve_model("nuclei"))


@pytest.fixture(scope="module")
def nuclei_package(offline, nuclei, tmp_path_factory) -> Path:
    return export_bioimageio(nuclei, tmp_path_factory.mktemp("nuclei") / "nuclei.zip")


@pytest.fixture(scope="module")
def tiny():
    bundle = random_model(TINY, seed=3, name="tiny.v1")
    # Doubled convolution weights: random weights as initialised give nearly flat
    # probabilities, which hide a tiling that shifts the pooling grid (a 4 px shift
    # changes them by 3e-8; with doubled weights by 1e-2, as for the built-in models).
    bundle.state_dict = {
        key: value * 2 if value.ndim == 4 else value for key, value in bundle.state_dict.items()
    }
    return bundle


@pytest.fixture(scope="module")
def tiny_package(offline, tiny, tmp_path_factory) -> Path:
    return export_bioimageio(tiny, tmp_path_factory.mktemp("tiny") / "tiny.zip")


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _member(package: Path, name: str, folder: Path) -> Path:
    with zipfile.ZipFile(package) as archive:
        return Path(archive.extract(name, folder))


def _preprocess(raw: np.ndarray, rdf: dict) -> np.ndarray:
    """The declared preprocessing, written from the spec (not napari-unet's code)."""
    (step,) = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range"]
    kwargs = step["kwargs"]
    low, high = np.percentile(raw, [kwargs["min_percentile"], kwargs["max_percentile"]])
    return ((raw - low) / (high - low + 1e-6)).astype(np.float32)


@pytest.mark.slow  # bioimageio.core's full model test (~10-30 s)
@pytest.mark.parametrize("which", ["nuclei_package", "tiny_package"])
def test_package_passes_bioimageio_model_test_offline(which, offline, request):
    package = request.getfixturevalue(which)
    description = bioimageio_core.load_description(
        package, perform_io_checks=True, known_files={UNET_PAPER_URL: None}
    )
    assert description.validation_summary.status == "valid-format", (
        description.validation_summary.format()
    )

    summary = bioimageio_core.test_model(description)

    assert summary.status == "passed", summary.format()
    passed = {d.name for d in summary.details if d.status == "passed"}
    for weights in ("pytorch_state_dict", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({weights})" in passed
    assert offline == []


def test_declared_axes_and_halo_come_from_our_margin(nuclei_package, tiny_package, nuclei, tiny):
    for package, bundle in ((nuclei_package, nuclei), (tiny_package, tiny)):
        rdf = _rdf(package)
        config = bundle.config
        step, context = 2**config.depth, margin(config)
        (tensor_in,) = rdf["inputs"]
        (tensor_out,) = rdf["outputs"]
        assert [axis.get("id", axis["type"]) for axis in tensor_in["axes"]] == [
            "batch",
            "channel",
            "y",
            "x",
        ]
        kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
        assert kwargs == {"context": context, "extra": kwargs["extra"], **config.to_dict()}
        halo = tensor_out["axes"][2]["halo"]
        # The margin rounded up to the pooling grid: tiles start where napari-unet's do.
        assert halo == math.ceil(context / step) * step
        for axis in tensor_in["axes"][2:]:
            size = axis["size"]
            assert size["step"] == step
            assert size["min"] == 2 * halo + step  # the smallest tile with an output
            for n in range(3):  # the wrapped network's input is a valid size
                wrapped = size["min"] + n * step + 2 * context + kwargs["extra"]
                assert is_valid_input_size(config, wrapped)
        for axis in tensor_out["axes"][2:]:
            assert axis["halo"] == halo
            assert axis["size"] == {"tensor_id": "raw", "axis_id": axis["id"]}
        assert tensor_out["axes"][1]["channel_names"] == list(bundle.class_names)
    assert (package_geometry(nuclei.config).halo, margin(nuclei.config)) == (96, 92)


def test_the_model_pixel_size_scales_the_spatial_axes(offline, tiny, tmp_path):
    scaled = replace(tiny, pixel_size=PixelSize(0.5, 0.25, "nm"))
    package = export_bioimageio(scaled, tmp_path / "scaled.zip")

    rdf = _rdf(package)
    for tensor in (*rdf["inputs"], *rdf["outputs"]):
        y, x = tensor["axes"][2:]
        assert (y["id"], y["scale"], y["unit"]) == ("y", 0.5, "nanometer")
        assert (x["id"], x["scale"], x["unit"]) == ("x", 0.25, "nanometer")
    # bioimageio.core reads the package with its scale back
    description = bioimageio_core.load_description(
        package, perform_io_checks=True, known_files={UNET_PAPER_URL: None}
    )
    axis = description.inputs[0].axes[2]
    assert (axis.scale, axis.unit) == (0.5, "nanometer")


def test_a_model_without_pixel_size_declares_no_scale(tiny_package):
    rdf = _rdf(tiny_package)
    for tensor in (*rdf["inputs"], *rdf["outputs"]):
        for axis in tensor["axes"][2:]:
            assert "scale" not in axis and "unit" not in axis


def test_bioimageio_tiling_reproduces_our_probabilities(tiny_package, tiny, offline):
    """bioimageio.core's own blockwise prediction (tiles padded and cropped by the halo)."""
    image = nuclei_image()[:200, 100:300].astype(np.float32)  # 200 = 104 + 12 * 8
    inputs = {"raw": bioimageio_core.Tensor(image[None, None], dims=("batch", "channel", "y", "x"))}
    # blocksize 6: tiles of 152 px, 56 px inner, 16 tiles; 200 = 3 * 56 + 32
    sample = bioimageio_core.predict(model=str(tiny_package), inputs=inputs, blocksize_parameter=6)
    tiled = sample.members["probabilities"].data.to_numpy()[0]
    ours = segment(tiny, image, output="probabilities", device="cpu")
    assert tiled.shape == ours.shape
    assert np.abs(tiled - ours).max() < 1e-5  # 5e-4 with a halo off the pooling grid


def test_torchscript_reproduces_our_probabilities_at_another_size(nuclei_package, nuclei, tmp_path):
    rdf = _rdf(nuclei_package)
    network = torch.jit.load(str(_member(nuclei_package, "weights_torchscript.pt", tmp_path)))
    test_input = np.load(_member(nuclei_package, "test_input.npy", tmp_path))
    # The test input is the centre crop of the bundled nuclei sample.
    image = nuclei_image()
    size = test_input.shape[-1]
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    np.testing.assert_array_equal(test_input[0, 0], image[top : top + size, left : left + size])

    size = package_geometry(nuclei.config).min_size + 16  # not the size it was traced at
    crop = image[:size, -size:].astype(np.float32)
    with torch.inference_mode():
        packaged = network(torch.from_numpy(_preprocess(crop, rdf)[None, None]))[0].numpy()
    ours = segment(
        nuclei, crop, output="probabilities", device="cpu", diameter=nuclei.object_diameter
    )

    assert packaged.shape == ours.shape == (2, size, size)
    assert np.abs(packaged - ours).max() < 1e-4


def test_package_contents_for_a_builtin_model(nuclei_package, tmp_path):
    rdf = _rdf(nuclei_package)
    readme = _member(nuclei_package, "README.md", tmp_path).read_text()
    assert readme.startswith("# Model card: nuclei")
    assert "## Validation scores" in readme
    assert "Halo: 96 pixels per side: the network's context of 92 pixels" in readme
    assert export.HOW_TO_OPEN in readme
    assert rdf["license"] == "CC-BY-4.0"
    assert rdf["authors"] == [{"name": "napari-unet developers"}]
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["cite"][0]["url"] == "https://arxiv.org/abs/1505.04597"
    assert any(entry.get("doi") == "10.1038/s41592-019-0612-7" for entry in rdf["cite"])
    assert rdf["inputs"][0]["preprocessing"][1] == {
        "id": "scale_range",
        "kwargs": {"axes": ["channel", "y", "x"], "min_percentile": 1.0, "max_percentile": 99.8},
    }
    assert rdf["config"]["napari_unet"]["normalisation"]["method"] == "percentile"
    cover = _member(nuclei_package, rdf["covers"][0]["source"], tmp_path)
    from PIL import Image

    with Image.open(cover) as picture:
        assert picture.size[0] == 2 * picture.size[1]  # input beside probabilities


def test_package_contents_for_a_user_model(tiny_package, tmp_path):
    rdf = _rdf(tiny_package)
    readme = _member(tiny_package, "README.md", tmp_path).read_text()
    assert readme.startswith("# Model card: tiny.v1")
    assert "## Validation" in readme and "No validation scores" in readme
    assert rdf["name"] == "napari-unet tiny-v1"
    assert rdf["authors"] == [{"name": "napari-unet user"}]
    assert rdf["license"] == "CC-BY-4.0"


def test_architecture_file_needs_no_napari_unet(monkeypatch):
    source = export.architecture_source()
    for name in [name for name in sys.modules if name.split(".")[0] == "napari_unet"]:
        monkeypatch.setitem(sys.modules, name, None)
    namespace: dict = {"__name__": "standalone_architecture"}
    monkeypatch.setitem(sys.modules, "standalone_architecture", type(sys)("standalone"))
    exec(compile(source, "unet_bioimageio.py", "exec"), namespace)

    geometry = package_geometry(TINY)
    wrapper = namespace["UNetProbabilities"](
        context=geometry.context, extra=geometry.extra, **TINY.to_dict()
    ).eval()
    with torch.inference_mode():
        out = wrapper(torch.rand(2, 1, 104, 112))
    assert out.shape == (2, 2, 104, 112)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 104, 112))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"method": "fixed", "offset": 10.0, "scale": 4.0}, ("scale_linear", 0.25, -2.5)),
        ({"method": "minmax"}, ("scale_range", 0.0, 100.0)),
        ({"method": "percentile", "low": 2.0, "high": 98.0}, ("scale_range", 2.0, 98.0)),
    ],
)
def test_preprocessing_matches_our_normalisation(spec, expected):
    (step,) = export_rdf.preprocessing(spec)
    kwargs = step["kwargs"]
    if expected[0] == "scale_linear":
        assert (step["id"], kwargs["gain"], kwargs["offset"]) == expected
    else:
        values = (kwargs["min_percentile"], kwargs["max_percentile"])
        assert (step["id"], *values) == expected
        assert kwargs["axes"] == ["channel", "y", "x"]


def test_percentile_range_the_spec_cannot_describe_is_refused():
    with pytest.raises(InputError, match="upper percentile must be above 1"):
        export_rdf.preprocessing({"method": "percentile", "low": 0.0, "high": 0.5})


def test_same_padding_networks_declare_their_tiling_context():
    geometry = package_geometry(UNetConfig(depth=2, padding="same"))
    # napari-unet keeps 4 * 2**depth pixels of context around tiles of "same" networks.
    assert (geometry.halo, geometry.context, geometry.extra) == (16, 16, 0)
    assert (geometry.step, geometry.min_size) == (4, 36)


def test_existing_file_is_refused_before_any_work(tmp_path, tiny):
    target = tmp_path / "model.zip"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        export_bioimageio(tiny, target)
    assert target.read_bytes() == b"precious"


def test_wrong_suffix_is_refused(tmp_path, tiny):
    with pytest.raises(InputError, match=r"bioimage.io packages are \.zip files"):
        export_bioimageio(tiny, tmp_path / "model.yaml")
    assert list(tmp_path.iterdir()) == []


def test_missing_bioimageio_is_one_line(monkeypatch, tmp_path, tiny):
    monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    with pytest.raises(InputError) as error:
        export_bioimageio(tiny, tmp_path / "model.zip")
    assert str(error.value) == EXTRA_HINT
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((40, 300), np.uint8), "needs at least 104 x 104"),
        (np.zeros((2, 60, 60), np.uint8), r"has shape \(2, 60, 60\); this model needs \(H, W\)"),
        (np.full((120, 120), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_unusable_test_images_are_refused(image, message, tmp_path, tiny):
    with pytest.raises(InputError, match=message):
        export_bioimageio(tiny, tmp_path / "model.zip", test_image=image)
    assert list(tmp_path.iterdir()) == []


def test_crop_size_prefers_about_256_pixels():
    assert sample_crop_size(TINY, 520, 696) == 256  # 104 + 19 * 8
    assert sample_crop_size(TINY, 150, 696) == 144
    assert sample_crop_size(UNetConfig(), 520, 696) == 256  # 208 + 3 * 16
    assert sample_crop_size(UNetConfig(), 230, 696) == 224


@pytest.mark.slow  # exports and validates a package (~5 s)
def test_a_two_channel_model_is_normalised_per_channel_in_its_package(offline, tmp_path):
    """napari-unet normalises each channel on its own; the package must say so, and its
    own model test (declared preprocessing, then the network) must reproduce our output."""
    attempts_before = len(offline)
    bundle = random_model(UNetConfig(in_channels=2, depth=3, base_width=4), seed=3, name="two")
    bundle.state_dict = {k: v * 2 if v.ndim == 4 else v for k, v in bundle.state_dict.items()}
    rng = np.random.default_rng(0)
    # channels of very different ranges: normalising them jointly would change the output
    image = np.stack([rng.integers(0, 50, (256, 256)), rng.integers(100, 5000, (256, 256))])
    package = export_bioimageio(bundle, tmp_path / "two.zip", test_image=image.astype(np.float32))
    description = bioimageio_core.load_description(
        package, perform_io_checks=True, known_files={UNET_PAPER_URL: None}
    )
    (step,) = [p for p in description.inputs[0].preprocessing if p.id == "scale_range"]
    assert [str(axis) for axis in step.kwargs.axes] == ["y", "x"]
    summary = bioimageio_core.test_model(description)
    assert summary.status == "passed", summary.format()
    assert offline[attempts_before:] == []  # (bioimageio's predict() in another test tries)

"""Models know their scale: pixel size and object diameter, saved, loaded, trained, shipped."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
from safetensors.torch import save_file

from napari_unet.core import modelfile, registry
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.calibration import PixelSize
from napari_unet.core.errors import InputError, ModelFileError
from napari_unet.core.metrics import median_object_diameter
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import (
    ModelBundle,
    list_models,
    load_model,
    random_model,
    read_description,
    resolve_model,
    save_model,
)
from napari_unet.core.train import TrainConfig, Trainer
from napari_unet.core.train_scale import annotated_object_diameter

TINY = UNetConfig(depth=1, base_width=2, padding="valid", norm="batch")
TRAIN_NET = UNetConfig(depth=2, base_width=4)


@pytest.fixture(scope="module")
def tiny() -> ModelBundle:
    return random_model(TINY, seed=3, name="tiny")


def _description(path: Path) -> dict:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    return json.loads(header["__metadata__"][modelfile.METADATA_KEY])


def _rewrite(path: Path, bundle: ModelBundle, description: dict) -> Path:
    """A model file with ``bundle``'s weights and the given (possibly hostile) description."""
    metadata = {modelfile.METADATA_KEY: json.dumps(description), "format_version": "1"}
    save_file({k: v.contiguous() for k, v in bundle.state_dict.items()}, str(path), metadata)
    return path


# ------------------------------------------------------------- save and load


def test_pixel_size_and_diameter_survive_a_save_and_load(tmp_path, tiny):
    bundle = replace(tiny, pixel_size=PixelSize(0.5, 0.325, "um"), object_diameter=17.25)
    path = save_model(bundle, tmp_path / "scaled.safetensors")
    assert _description(path)["scale"] == {
        "pixel_size": [0.5, 0.325],
        "unit": "µm",
        "object_diameter": 17.25,
    }
    loaded = load_model(path)
    assert loaded.pixel_size == PixelSize(0.5, 0.325, "µm")
    assert loaded.object_diameter == 17.25
    assert loaded.scale_summary == "0.5 x 0.325 µm/px, objects ~17 px"


@pytest.mark.parametrize(
    ("pixel_size", "diameter"), [(None, 30.0), (PixelSize(4, 4, "nm"), None), (None, None)]
)
def test_either_value_may_be_unknown(tmp_path, tiny, pixel_size, diameter):
    path = save_model(
        replace(tiny, pixel_size=pixel_size, object_diameter=diameter), tmp_path / "m.safetensors"
    )
    loaded = load_model(path)
    assert (loaded.pixel_size, loaded.object_diameter) == (pixel_size, diameter)
    # nothing known: no "scale" field at all, as in files written before it existed
    assert ("scale" in _description(path)) == (pixel_size is not None or diameter is not None)


def test_files_without_a_scale_load_with_an_unknown_scale(tmp_path, tiny):
    description = _description(save_model(tiny, tmp_path / "old.safetensors"))
    assert "scale" not in description
    for value in ({}, None):  # an empty or null scale is unknown too
        path = _rewrite(tmp_path / "v.safetensors", tiny, {**description, "scale": value})
        loaded = load_model(path)
        assert loaded.pixel_size is None and loaded.object_diameter is None


def test_a_bundle_refuses_values_of_the_wrong_type(tiny):
    with pytest.raises(InputError, match="pixel size must be a PixelSize"):
        replace(tiny, pixel_size=(4.0, 4.0))
    with pytest.raises(InputError, match="object diameter must be a number"):
        replace(tiny, object_diameter="22")
    with pytest.raises(InputError, match="object diameter must be a number"):
        replace(tiny, object_diameter=True)


@pytest.mark.parametrize("diameter", [0.0, -3.0, math.nan, math.inf, 20_000.0])
def test_a_bad_diameter_is_not_saved(tmp_path, tiny, diameter):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(InputError, match=r'field "scale\.object_diameter"'):
        save_model(replace(tiny, object_diameter=diameter), path)
    assert not path.exists()


# ------------------------------------------------------------- hostile files

#: (scale written, field named, what the message says)
HOSTILE_SCALES = [
    ("4 nm", "scale", 'must be a mapping, got "4 nm"'),
    ({"pixel_size": [4, 4], "unit": "parsec"}, "scale.unit", "must be a length unit (pm, Å, nm"),
    ({"pixel_size": [4, 4], "unit": 4}, "scale.unit", "must be a length unit"),
    ({"pixel_size": [4, 4]}, "scale.unit", "must name the pixel size's unit, got null"),
    ({"pixel_size": [4, 4], "unit": None}, "scale.unit", "must name the pixel size's unit"),
    ({"pixel_size": 4, "unit": "nm"}, "scale.pixel_size", "must be [y, x], two positive"),
    ({"pixel_size": [4], "unit": "nm"}, "scale.pixel_size", "got [4]"),
    ({"pixel_size": [0, 4], "unit": "nm"}, "scale.pixel_size", "got [0, 4]"),
    ({"pixel_size": [-1, 4], "unit": "nm"}, "scale.pixel_size", "got [-1, 4]"),
    ({"pixel_size": [math.nan, 4], "unit": "nm"}, "scale.pixel_size", "got [NaN, 4]"),
    ({"pixel_size": [math.inf, 4], "unit": "nm"}, "scale.pixel_size", "got [Infinity, 4]"),
    ({"pixel_size": ["4", 4], "unit": "nm"}, "scale.pixel_size", 'got ["4", 4]'),
    ({"pixel_size": [True, 4], "unit": "nm"}, "scale.pixel_size", "got [true, 4]"),
    ({"pixel_size": [1e-30, 4], "unit": "nm"}, "scale.pixel_size", "between 1 pm and 1 km"),
    ({"pixel_size": [4, 1e300], "unit": "m"}, "scale.pixel_size", "between 1 pm and 1 km"),
    ({"object_diameter": 0}, "scale.object_diameter", "above 0 and at most 10000, or null"),
    ({"object_diameter": -5.5}, "scale.object_diameter", "got -5.5"),
    ({"object_diameter": 1e6}, "scale.object_diameter", "got 1000000.0"),
    ({"object_diameter": math.nan}, "scale.object_diameter", "got NaN"),
    ({"object_diameter": "22"}, "scale.object_diameter", 'got "22"'),
    ({"object_diameter": False}, "scale.object_diameter", "got false"),
    ({"diameter": 22}, "scale.diameter", "is not a scale setting (known: pixel_size, unit"),
]


@pytest.mark.parametrize(("scale", "named", "expected"), HOSTILE_SCALES)
def test_a_bad_scale_is_one_line_naming_the_field(tmp_path, tiny, scale, named, expected):
    description = _description(save_model(tiny, tmp_path / "ok.safetensors"))
    path = _rewrite(tmp_path / "bad.safetensors", tiny, {**description, "scale": scale})
    for reader in (load_model, read_description):
        with pytest.raises(ModelFileError) as raised:
            reader(path)
        message = str(raised.value)
        assert message.startswith(f'model file {path}: field "{named}" '), message
        assert expected in message, message
        assert "\n" not in message


def test_a_huge_unit_text_is_clipped_in_the_message(tmp_path, tiny):
    description = _description(save_model(tiny, tmp_path / "ok.safetensors"))
    scale = {"pixel_size": [4, 4], "unit": "x" * 100_000}
    path = _rewrite(tmp_path / "bad.safetensors", tiny, {**description, "scale": scale})
    with pytest.raises(ModelFileError, match=r'field "scale\.unit"') as raised:
        load_model(path)
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize(
    ("scale", "pixel_size", "diameter"),
    [
        ({"pixel_size": [4, 4], "unit": "nanometer"}, PixelSize(4, 4, "nm"), None),
        ({"pixel_size": [0.3, 0.3], "unit": "um", "object_diameter": 12}, PixelSize(0.3, 0.3), 12),
        ({"pixel_size": None, "unit": "µm", "object_diameter": 10000}, None, 10000.0),
    ],
)
def test_valid_scales_load(tmp_path, tiny, scale, pixel_size, diameter):
    description = _description(save_model(tiny, tmp_path / "ok.safetensors"))
    loaded = load_model(_rewrite(tmp_path / "s.safetensors", tiny, {**description, "scale": scale}))
    assert loaded.pixel_size == pixel_size and loaded.object_diameter == diameter


def test_listings_show_the_scale(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "none")
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path))
    tiny.provenance["description"] = "tiny test model"
    bundle = replace(tiny, pixel_size=PixelSize(4, 4, "nm"), object_diameter=21.6)
    save_model(bundle, tmp_path / "a.safetensors")
    save_model(replace(tiny, name="b"), tmp_path / "b.safetensors")
    scaled, unscaled = list_models()
    assert scaled.scale == "4 nm/px, objects ~22 px"
    assert scaled.description == "tiny test model; 4 nm/px, objects ~22 px"
    assert unscaled.scale == "" and unscaled.description == "tiny test model"


# ------------------------------------------------------------------ training


def discs(shape=(96, 96), radius=8, seed=0):
    """Bright discs of one radius on noise, with their dense instance labels.

    The discs sit well inside the image, so none is cut by the border.
    """
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, np.uint16)
    centres = [(24, 24), (24, 70), (70, 30), (66, 68)]
    for index, (row, col) in enumerate(centres, start=1):
        labels[(rows - row) ** 2 + (cols - col) ** 2 <= radius**2] = index
    noise = np.random.default_rng(seed).normal(0, 10, shape)
    image = np.clip(40 + 150 * (labels > 0) + noise, 0, 255).astype(np.uint8)
    return image, labels


def quick(**changes) -> TrainConfig:
    values = dict(steps=2, batch_size=1, validation_every=2, device="cpu", augment=AugmentConfig())
    return TrainConfig(**{**values, **changes})


def test_training_records_the_pixel_size_and_the_cells_diameter(tmp_path):
    image, labels = discs(radius=8)
    trainer = Trainer(
        TRAIN_NET, image, labels, convention="dense", config=quick(pixel_size="0.325um")
    )
    list(trainer.run())
    bundle = trainer.best_bundle()
    assert bundle.pixel_size == PixelSize(0.325, 0.325, "µm")
    # 8-px discs are ~16 px across; the instance labels as given measure the same
    assert bundle.object_diameter == pytest.approx(16.0, abs=0.6)
    assert bundle.object_diameter == pytest.approx(median_object_diameter(labels), abs=0.3)
    assert bundle.provenance["training_config"]["pixel_size"] == "0.325 µm"
    loaded = load_model(save_model(bundle, tmp_path / "trained.safetensors"))
    assert (loaded.pixel_size, loaded.object_diameter) == (
        bundle.pixel_size,
        bundle.object_diameter,
    )


def test_sparse_paintings_measure_the_painted_cells_only():
    image, labels = discs(radius=10)
    sparse = np.zeros_like(labels)
    sparse[labels == 1] = 2  # one painted cell...
    sparse[:6, :] = 1  # ...and a background stroke; the other discs are unannotated
    single = (labels == 1).astype(np.uint8)
    trainer = Trainer(TRAIN_NET, image, sparse, convention="sparse", config=quick())
    assert trainer.measured_diameter == pytest.approx(median_object_diameter(single))
    assert trainer.last_bundle().pixel_size is None  # none given, no base


def test_binary_masks_measure_connected_cells_and_scale_with_the_image():
    small = discs(radius=6)[1] > 0
    large = discs(shape=(192, 192), radius=12)[1] > 0  # hand-drawn at twice the size
    assert annotated_object_diameter(small.astype(np.uint8)) == pytest.approx(12.0, abs=0.6)
    assert annotated_object_diameter(large.astype(np.uint8), "binary") == pytest.approx(
        2 * annotated_object_diameter(small.astype(np.uint8)), rel=0.05
    )
    # the same measurement the trainer records, through its public API
    image = discs(radius=6)[0]
    trainer = Trainer(TRAIN_NET, image, small.astype(np.uint8), config=quick())
    assert trainer.measured_diameter == annotated_object_diameter(small.astype(np.uint8))


def test_the_annotations_measured_are_the_ones_given_after_an_update():
    image, labels = discs(radius=6)
    trainer = Trainer(TRAIN_NET, image, labels, convention="dense", config=quick())
    first = trainer.measured_diameter
    image, labels = discs(radius=10)
    trainer.update_annotations(image, labels)
    assert trainer.measured_diameter == pytest.approx(first * 10 / 6, rel=0.05)


def test_fine_tuning_inherits_the_base_pixel_size_and_measures_the_diameter():
    base = replace(
        random_model(TRAIN_NET, seed=1, name="base"),
        pixel_size=PixelSize(4, 4, "nm"),
        object_diameter=40.0,
    )
    image, labels = discs(radius=8)
    inherited = Trainer(base, image, labels, convention="dense", config=quick())
    list(inherited.run())
    bundle = inherited.best_bundle()
    assert bundle.pixel_size == PixelSize(4, 4, "nm")
    assert bundle.object_diameter == pytest.approx(16.0, abs=0.6)  # measured, not the base's
    given = Trainer(base, image, labels, convention="dense", config=quick(pixel_size="2 nm"))
    assert given.last_bundle().pixel_size == PixelSize(2, 2, "nm")


def test_fine_tuning_keeps_the_base_diameter_when_nothing_can_be_measured(monkeypatch):
    # Annotations always hold a cell (the trainer refuses them otherwise), so the fallback
    # is reached by a measurement that finds nothing.
    import napari_unet.core.train_scale as train_scale

    monkeypatch.setattr(train_scale, "median_object_diameter", lambda *a, **k: None)
    base = replace(random_model(TRAIN_NET, seed=1, name="base"), object_diameter=40.0)
    image, labels = discs()
    trainer = Trainer(base, image, labels, convention="dense", config=quick())
    assert trainer.last_bundle().object_diameter == 40.0
    scratch = Trainer(TRAIN_NET, image, labels, convention="dense", config=quick())
    assert scratch.last_bundle().object_diameter is None


@pytest.mark.parametrize("bad", ["0 um", "-1", "nan", "4 parsec", (1.0, 0.0)])
def test_a_bad_training_pixel_size_is_one_line(bad):
    with pytest.raises(InputError) as raised:
        TrainConfig(pixel_size=bad)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------ built-ins


def _card_numbers(name: str) -> tuple[str, float]:
    card = (modelfile.builtin_models_dir() / f"{name}.md").read_text()
    line = next(line for line in card.splitlines() if line.startswith("- Scale"))
    match = re.search(r"pixel size (.+?) \(.*object diameter ([\d.]+) px", line)
    assert match, line
    return match[1], float(match[2])


def test_builtins_carry_the_scale_their_cards_document():
    em = load_model(resolve_model("em-membranes"))
    assert em.pixel_size == PixelSize(4, 4, "nm")
    nuclei = load_model(resolve_model("nuclei"))
    assert nuclei.pixel_size is None
    for bundle, name in ((em, "em-membranes"), (nuclei, "nuclei")):
        size, diameter = _card_numbers(name)
        assert size == ("unknown" if bundle.pixel_size is None else str(bundle.pixel_size))
        assert bundle.object_diameter == pytest.approx(diameter, abs=0.005)


@pytest.mark.data
def test_builtin_diameters_are_those_of_their_training_labels(shared_data: Path):
    labels = tifffile.imread(shared_data / "em-isbi2012" / "labels.tif")[:16]  # slices 0-15
    em = load_model(resolve_model("em-membranes"))
    assert em.object_diameter == pytest.approx(annotated_object_diameter(list(labels), "binary"))
    folder = shared_data / "nuclei-dsb2018" / "labels"
    names = sorted(path.name for path in folder.glob("*.tif"))
    train = names[: len(names) - len(names) // 10]  # the first 90 % train (the card's split)
    nuclei = load_model(resolve_model("nuclei"))
    expected = annotated_object_diameter([tifffile.imread(folder / n) for n in train], "dense")
    assert nuclei.object_diameter == pytest.approx(expected)

"""Model files: round trip, refusal of pickles and damaged files, and the model registry."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_unet.core import modelfile, registry
from napari_unet.core.errors import InputError, ModelFileError, ModelNotFoundError, OutputError
from napari_unet.core.model import SMALL, UNet, UNetConfig
from napari_unet.core.modelfile import (
    ModelBundle,
    list_models,
    load_model,
    random_model,
    resolve_model,
    save_model,
    save_user_model,
)

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


@pytest.fixture
def bundle() -> ModelBundle:
    return random_model(TINY, seed=3, name="tiny")


@pytest.fixture
def model_dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Empty built-in and user model folders, in place of the real ones."""
    builtin, user = tmp_path / "builtin", tmp_path / "user"
    builtin.mkdir()
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", builtin)
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(user))
    return builtin, user


def _described(name: str, description: str) -> ModelBundle:
    return ModelBundle.from_network(UNet(TINY), name=name, provenance={"description": description})


# ---------------------------------------------------------------- round trip


def test_round_trip_keeps_everything(tmp_path, bundle):
    bundle.normalisation = {"method": "minmax"}
    bundle.class_names = ["background", "nucleus"]
    bundle.provenance = {"training_data": "dsb2018", "steps": 12, "notes": "test"}
    path = save_model(bundle, tmp_path / "tiny.safetensors")
    loaded = load_model(path)
    assert loaded.name == "tiny"
    assert loaded.config == TINY
    assert loaded.normalisation == {"method": "minmax"}
    assert loaded.class_names == ["background", "nucleus"]
    assert loaded.provenance["training_data"] == "dsb2018"
    assert loaded.provenance["steps"] == 12
    assert loaded.provenance["version"] and loaded.provenance["date"]
    assert loaded.state_dict.keys() == bundle.state_dict.keys()
    for key, value in bundle.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    bundle = ModelBundle.from_network(UNet(SMALL), name="small")
    full = save_model(bundle, tmp_path / "full.safetensors")
    half = save_model(bundle, tmp_path / "half.safetensors", weights_dtype="float16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_model(half)
    for key, value in bundle.state_dict.items():
        stored = loaded.state_dict[key]
        assert stored.dtype == (torch.float32 if value.is_floating_point() else value.dtype), key
        # float16 keeps 11 significant bits: relative rounding error <= 2**-11.
        assert torch.allclose(stored, value, rtol=2**-11, atol=1e-7), key
    network = loaded.build()
    assert all(p.dtype == torch.float32 for p in network.parameters())
    image = torch.rand(1, 1, 188, 188)
    with torch.no_grad():
        expected = bundle.build()(image).softmax(1)
        got = network(image).softmax(1)
    assert (got - expected).abs().max() < 1e-2
    assert not torch.equal(got, expected)  # the weights really were rounded


def test_unknown_storage_dtype_is_refused(tmp_path, bundle):
    with pytest.raises(InputError, match="weights_dtype"):
        save_model(bundle, tmp_path / "x.safetensors", weights_dtype="int8")


def test_built_network_computes_like_the_original(tmp_path):
    network = UNet(TINY)
    with torch.no_grad():  # non-default BatchNorm statistics must survive too
        network.inc[1].running_mean.uniform_(-1, 1)
    network.eval()
    bundle = ModelBundle.from_network(network, name="n")
    rebuilt = load_model(save_model(bundle, tmp_path / "n.safetensors")).build()
    assert not rebuilt.training
    x = torch.randn(1, 1, 44, 48)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), network(x))


def test_from_network_snapshots_the_weights():
    network = UNet(TINY)
    bundle = ModelBundle.from_network(network, name="n")
    before = bundle.state_dict["head.weight"].clone()
    with torch.no_grad():
        network.head.weight.add_(1.0)
    assert torch.equal(bundle.state_dict["head.weight"], before)


def test_build_copies_the_weights_and_leaves_the_global_rng_alone(bundle):
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    network = bundle.build()
    assert torch.equal(torch.rand(1), expected)  # no random initialisation was drawn
    before = bundle.state_dict["head.weight"].clone()
    with torch.no_grad():
        network.head.weight.add_(1.0)  # as training would
    assert torch.equal(bundle.state_dict["head.weight"], before)
    assert all(parameter.requires_grad for parameter in network.parameters())
    assert all(not tensor.is_meta for tensor in network.state_dict().values())


def test_default_class_names():
    assert random_model(TINY).class_names == ["background", "foreground"]
    three = random_model(TINY.with_(num_classes=3))
    assert three.class_names == ["background", "class_1", "class_2"]


def test_random_model_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    first = random_model(TINY, seed=1)
    assert torch.equal(torch.rand(1), expected)
    second = random_model(TINY, seed=1)
    other = random_model(TINY, seed=2)
    assert torch.equal(first.state_dict["head.weight"], second.state_dict["head.weight"])
    assert not torch.equal(first.state_dict["head.weight"], other.state_dict["head.weight"])


def test_save_requires_the_safetensors_extension(tmp_path, bundle):
    with pytest.raises(InputError, match=r"end in \.safetensors"):
        save_model(bundle, tmp_path / "tiny.pt")


# ------------------------------------------------------------ refused files


class _WritesMarker:
    """Unpickling this object writes a file: the attack a pickle loader allows."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_the_malicious_pickle_really_runs_code_when_unpickled(tmp_path):
    # guards the next test: if this stops writing the marker, that test proves nothing
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(_WritesMarker(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.safetensors"
    payload = {"weights": _WritesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ModelFileError, match="pickle") as raised:
        load_model(path)
    assert "never loads pickles" in str(raised.value)
    assert not marker.exists()


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError, match="not a safetensors model file"):
        load_model(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="too short"):
        load_model(path)


def test_truncated_file_is_refused(tmp_path, bundle):
    path = save_model(bundle, tmp_path / "tiny.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"corrupt or truncated"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "absent.safetensors")


def _write_raw(path: Path, tensors: dict, description: dict | None, version: str = "1") -> Path:
    metadata = {"format_version": version}
    if description is not None:
        metadata[modelfile.METADATA_KEY] = json.dumps(description)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _description(**changes) -> dict:
    return {
        "format_version": modelfile.FORMAT_VERSION,
        "name": "x",
        "config": TINY.to_dict(),
        "normalisation": {"method": "minmax"},
        "class_names": ["background", "foreground"],
        "provenance": {},
        **changes,
    }


def test_foreign_safetensors_file_is_refused(tmp_path, bundle):
    path = _write_raw(tmp_path / "other.safetensors", dict(bundle.state_dict), None)
    with pytest.raises(ModelFileError, match="not a napari-unet model"):
        load_model(path)


def test_wrong_format_version_is_refused(tmp_path, bundle):
    path = _write_raw(
        tmp_path / "future.safetensors", dict(bundle.state_dict), _description(format_version=99)
    )
    with pytest.raises(ModelFileError, match=r"format version 99.*update napari-unet"):
        load_model(path)


def test_missing_tensors_are_refused(tmp_path, bundle):
    tensors = {k: v for k, v in bundle.state_dict.items() if k != "head.weight"}
    path = _write_raw(tmp_path / "x.safetensors", tensors, _description())
    with pytest.raises(ModelFileError, match=r"1 missing \(head.weight\)"):
        load_model(path)


def test_mismatched_architecture_is_refused(tmp_path, bundle):
    # weights of a base-width-4 network described as base width 8
    wider = TINY.with_(base_width=8).to_dict()
    path = _write_raw(
        tmp_path / "x.safetensors", dict(bundle.state_dict), _description(config=wider)
    )
    with pytest.raises(ModelFileError, match="wrong shape"):
        load_model(path)


def test_invalid_config_is_refused(tmp_path, bundle):
    config = {**TINY.to_dict(), "colour": "blue"}
    path = _write_raw(
        tmp_path / "x.safetensors", dict(bundle.state_dict), _description(config=config)
    )
    with pytest.raises(ModelFileError, match=r'field "config.colour" is not a U-Net setting'):
        load_model(path)


# ------------------------------------------------------------------ registry


def test_user_dir_defaults_to_platformdirs(monkeypatch):
    monkeypatch.delenv(modelfile.MODELS_DIR_ENV, raising=False)
    path = modelfile.user_models_dir()
    assert path.name == "models" and "napari-unet" in str(path)


def test_list_models_lists_builtin_then_user(model_dirs):
    builtin, user = model_dirs
    save_model(_described("zeta", "EM membranes"), builtin / "zeta.safetensors")
    save_model(_described("alpha", "nuclei\nsecond line"), builtin / "alpha.safetensors")
    save_user_model(_described("mine", "fine-tuned"), "mine")
    entries = list_models()
    assert [(e.name, e.source) for e in entries] == [
        ("alpha", "built-in"),
        ("zeta", "built-in"),
        ("mine", "user"),
    ]
    assert entries[0].description == "nuclei"
    assert entries[2].path == user / "mine.safetensors"


def test_unreadable_model_is_listed_with_the_reason(model_dirs):
    _, user = model_dirs
    user.mkdir()
    (user / "broken.safetensors").write_bytes(b"garbage!!garbage")
    (entry,) = list_models()
    assert entry.name == "broken" and entry.description.startswith("(unreadable:")


def test_list_models_sees_a_rewritten_file(model_dirs):
    save_user_model(_described("mine", "first"), "mine")
    assert list_models()[0].description == "first"
    path = save_user_model(_described("mine", "second version"), "mine", overwrite=True)
    assert list_models()[0].description == "second version"
    path.write_bytes(b"garbage!!garbage")
    assert list_models()[0].description.startswith("(unreadable:")


def test_resolve_by_name_and_by_path(model_dirs, tmp_path):
    builtin, _ = model_dirs
    save_model(_described("nuclei", ""), builtin / "nuclei.safetensors")
    loose = save_model(_described("loose", ""), tmp_path / "loose.safetensors")
    assert resolve_model("nuclei") == builtin / "nuclei.safetensors"
    assert resolve_model(loose) == loose
    assert resolve_model(str(loose)) == loose


def test_existing_file_wins_over_a_name(model_dirs, tmp_path, monkeypatch):
    builtin, _ = model_dirs
    save_model(_described("nuclei", ""), builtin / "nuclei.safetensors")
    monkeypatch.chdir(tmp_path)
    Path("nuclei").write_bytes(b"a file named like the model")
    assert resolve_model("nuclei") == Path("nuclei")


def test_unknown_name_lists_available_models(model_dirs):
    builtin, _ = model_dirs
    save_model(_described("nuclei", ""), builtin / "nuclei.safetensors")
    save_user_model(_described("mine", ""), "mine")
    with pytest.raises(
        ModelNotFoundError, match="unknown model 'cells'; available models: nuclei, mine"
    ):
        resolve_model("cells")


def test_missing_path_says_file_not_found(model_dirs, tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model file not found.*none installed"):
        resolve_model(tmp_path / "gone.safetensors")


def test_user_model_cannot_take_a_builtin_name(model_dirs):
    builtin, user = model_dirs
    save_model(_described("nuclei", ""), builtin / "nuclei.safetensors")
    with pytest.raises(InputError, match="'nuclei' is the name of a built-in model"):
        save_user_model(_described("x", ""), "nuclei")
    assert not (user / "nuclei.safetensors").exists()


def test_user_file_with_a_builtin_name_is_shadowed_by_the_builtin(model_dirs):
    builtin, user = model_dirs
    save_model(_described("nuclei", "official"), builtin / "nuclei.safetensors")
    save_model(_described("nuclei", "copy"), user / "nuclei.safetensors")
    assert [(e.name, e.source) for e in list_models()] == [("nuclei", "built-in")]
    assert resolve_model("nuclei") == builtin / "nuclei.safetensors"


def test_user_model_is_not_overwritten_unless_asked(model_dirs):
    first = save_user_model(_described("a", "first"), "mine")
    before = first.read_bytes()
    with pytest.raises(OutputError, match="a user model named 'mine' already exists"):
        save_user_model(_described("b", "second"), "mine")
    assert first.read_bytes() == before
    save_user_model(_described("b", "second"), "mine", overwrite=True)
    assert load_model(first).provenance["description"] == "second"
    assert load_model(first).name == "mine"


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "mine.safetensors", ".hidden"])
def test_user_model_names_must_be_plain(model_dirs, name):
    with pytest.raises(InputError, match="invalid model name"):
        save_user_model(_described("x", ""), name)


def test_default_model_prefers_nuclei(model_dirs):
    builtin, _ = model_dirs
    assert modelfile.default_model_name() is None
    save_user_model(_described("mine", ""), "mine")
    assert modelfile.default_model_name() is None  # user models are never the default
    save_model(_described("em", ""), builtin / "em.safetensors")
    assert modelfile.default_model_name() == "em"
    save_model(_described("nuclei", ""), builtin / "nuclei.safetensors")
    assert modelfile.default_model_name() == "nuclei"


def test_shipped_builtin_models_load(monkeypatch):
    shipped = {entry.name: entry for entry in list_models() if entry.source == "built-in"}
    assert {"nuclei", "em-membranes"} <= set(shipped)
    for entry in shipped.values():
        bundle = load_model(entry.path)
        assert bundle.provenance["validation_scores"], f"{entry.name} has no validation scores"
        assert (entry.path.with_suffix(".md")).is_file(), f"{entry.name} needs a model card"
    assert modelfile.default_model_name() == "nuclei"

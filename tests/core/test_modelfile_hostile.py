"""Hostile and damaged model files, and saves that must never lose a model.

Every way a model file can be wrong must end in one line naming the file (and the
field or tensor), raised as a :class:`UNetError`, quickly and without allocating more
than the file holds. Saving writes atomically and never replaces a file unless asked.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from napari_unet.core import description, modelfile, options, registry
from napari_unet.core.errors import InputError, ModelFileError, OutputError, UNetError
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import (
    ModelBundle,
    list_models,
    load_model,
    random_model,
    read_description,
    save_model,
)
from napari_unet.core.safety import TEMP_PREFIX
from napari_unet.core.segment import SegmentOptions, recommended_options

#: The smallest sensible network: a ~6 KB file, so fuzzing is quick.
TINY = UNetConfig(depth=1, base_width=2, padding="valid", norm="batch")
#: Generous bounds for one load of a hostile file.
MAX_SECONDS = 5.0
MAX_BYTES = 100 * 2**20

FUZZ = settings(
    max_examples=150,
    deadline=None,  # timing is asserted in the tests, with a generous bound
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def tiny() -> ModelBundle:
    bundle = random_model(TINY, seed=4, name="tiny")
    bundle.provenance["postprocess"] = {
        "threshold": 0.6,
        "min_size": 3,
        "per_output": {"labels": {"threshold": 0.7, "merge_boundaries": 0.5}},
    }
    return bundle


@pytest.fixture(scope="module")
def tiny_bytes(tiny, tmp_path_factory) -> bytes:
    return save_model(tiny, tmp_path_factory.mktemp("base") / "tiny.safetensors").read_bytes()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _description(bundle: ModelBundle) -> dict[str, Any]:
    return {
        "format_version": modelfile.FORMAT_VERSION,
        "name": bundle.name,
        "config": bundle.config.to_dict(),
        "normalisation": dict(bundle.normalisation),
        "class_names": list(bundle.class_names),
        "provenance": json.loads(json.dumps(bundle.provenance)),
    }


def _write(path: Path, tensors: dict[str, torch.Tensor], description: Any) -> Path:
    """A safetensors file with ``description`` (JSON-encoded unless already text)."""
    text = description if isinstance(description, str) else json.dumps(description)
    metadata = {modelfile.METADATA_KEY: text, "format_version": "1"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _craft(
    path: Path,
    tensors: dict[str, tuple[str, list[int]]],
    description: dict[str, Any],
    *,
    data_bytes: int | None = None,
) -> Path:
    """A safetensors file written byte by byte: the header may claim anything.

    Parameters
    ----------
    tensors : dict of name to (dtype code, shape)
        What the header lists; offsets are laid out one after the other.
    data_bytes : int, optional
        How many data bytes really follow the header (default: what the header claims).
    """
    sizes = {"F32": 4, "F16": 2, "I64": 8}
    header: dict[str, Any] = {
        "__metadata__": {modelfile.METADATA_KEY: json.dumps(description), "format_version": "1"}
    }
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    data = bytes(offset if data_bytes is None else data_bytes)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def _header_of(bundle: ModelBundle) -> dict[str, tuple[str, list[int]]]:
    return {
        key: ("F32" if value.is_floating_point() else "I64", list(value.shape))
        for key, value in bundle.state_dict.items()
    }


def _set(description: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    """``description`` with the dotted ``field`` set to ``value`` (created if needed)."""
    *parents, last = field.split(".")
    node = description
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return description


def _load_bounded(path: Path) -> ModelBundle | UNetError:
    """Load ``path``: a bundle or the UNetError raised, in bounded time and memory."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result: ModelBundle | UNetError = load_model(path)
    except UNetError as error:
        result = error
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"loading took {elapsed:.1f} s"
    assert peak < MAX_BYTES, f"loading allocated {peak / 2**20:.0f} MB"
    if isinstance(result, UNetError):
        message = str(result)
        assert message and "\n" not in message, message
    return result


def _assert_usable(bundle: ModelBundle) -> None:
    """A model that loads can be built and its recommendations used as options."""
    network = bundle.build()
    assert network.config == bundle.config
    assert len(bundle.class_names) == bundle.config.num_classes
    for output in ("labels", "mask", "probabilities"):
        SegmentOptions(output=output, **recommended_options(bundle, output))


# ------------------------------------------------------- one line per bad field

#: (field set, value, [field named in the message if another,] what the message says)
_FIELD_CASES: list[tuple] = [
    ("config.depth", 4.0, "must be an integer from 1 to 8, got 4.0"),
    ("config.depth", 10**6, "must be an integer from 1 to 8, got 1000000"),
    ("config.depth", True, "must be an integer from 1 to 8, got true"),
    ("config.depth", "4", 'must be an integer from 1 to 8, got "4"'),
    ("config.depth", 0, "must be an integer from 1 to 8, got 0"),
    ("config.base_width", 2048, "must be an integer from 1 to 1024, got 2048"),
    ("config.base_width", 1.5, "must be an integer from 1 to 1024, got 1.5"),
    ("config.in_channels", 9, "must be an integer from 1 to 8, got 9"),
    ("config.in_channels", None, "must be an integer from 1 to 8, got null"),
    ("config.num_classes", 50_000, "must be an integer from 2 to 255, got 50000"),
    ("config.num_classes", 1, "must be an integer from 2 to 255, got 1"),
    ("config.padding", "reflect", 'must be one of "valid", "same", got "reflect"'),
    ("config.norm", 3, 'must be one of "none", "batch", "group", got 3'),
    ("config.dropout", 1.0, "must be a number from 0 to less than 1, got 1.0"),
    ("config.dropout", "0.5", 'must be a number from 0 to less than 1, got "0.5"'),
    ("config.dropout", float("nan"), "must be a number from 0 to less than 1, got NaN"),
    ("config.colour", "blue", "is not a U-Net setting (known: in_channels, num_classes"),
    ("config", "small", 'must be a mapping of U-Net settings, got "small"'),
    ("name", 5, "must be a text, got 5"),
    ("name", "\udaa4", 'must be a text, got "\\udaa4"'),  # cannot be printed
    ("normalisation", "percentile", 'must be a mapping, got "percentile"'),
    ("normalisation.method", "zscore", 'must be one of "percentile", "minmax", "fixed"'),
    ("normalisation.low", "1", 'must be a finite number, got "1"'),
    ("normalisation.high", float("inf"), "must be a finite number, got Infinity"),
    (
        "normalisation.high",
        0.5,
        "normalisation",
        "is invalid: percentile normalisation needs 0 <= low < high <= 100, got low=1.0, high=0.5",
    ),
    ("class_names", "cells", "must be a list of 2 names, one per class"),
    ("class_names", ["background"], "must be a list of 2 names, one per class"),
    ("class_names", ["background", 3], "class_names[1]", "must be a text, got 3"),
    ("provenance", [], "must be a mapping, got []"),
    ("provenance.postprocess", "yes", 'must be a mapping, got "yes"'),
    ("provenance.postprocess.threshold", "abc", 'must be a number between 0 and 1, got "abc"'),
    ("provenance.postprocess.threshold", 1.5, "must be a number between 0 and 1, got 1.5"),
    ("provenance.postprocess.threshold", 0, "must be a number between 0 and 1, got 0"),
    ("provenance.postprocess.threshold", True, "must be a number between 0 and 1, got true"),
    ("provenance.postprocess.threshold", float("nan"), "between 0 and 1, got NaN"),
    ("provenance.postprocess.min_size", -1, "must be a whole number of pixels >= 0, got -1"),
    ("provenance.postprocess.min_size", 2.5, "must be a whole number of pixels >= 0, got 2.5"),
    ("provenance.postprocess.split_touching", "yes", 'must be true or false, got "yes"'),
    ("provenance.postprocess.fill_boundaries", 1, "must be true or false, got 1"),
    ("provenance.postprocess.merge_boundaries", 2, "must be a number from 0 to 1, got 2"),
    ("provenance.postprocess.per_output", [], 'must map output kinds ("labels", "mask"'),
    ("provenance.postprocess.per_output.labels", 0.5, "must be a mapping, got 0.5"),
    (
        "provenance.postprocess.per_output.labels.threshold",
        "abc",
        'must be a number between 0 and 1, got "abc"',
    ),
    ("scale", [4, 4], "must be a mapping, got [4, 4]"),
    ("scale.object_diameter", -1, "must be a number of pixels above 0 and at most 10000"),
    ("scale.pixel_size", [0.0, 4.0], "must be [y, x], two positive finite numbers, or null"),
    ("scale.unit", "furlong", "must be a length unit"),
    ("scale.size", 4, "is not a scale setting (known: pixel_size, unit, object_diameter)"),
]


FIELD_CASES = [case if len(case) == 4 else (*case[:2], case[0], case[2]) for case in _FIELD_CASES]


@pytest.mark.parametrize(("field", "value", "named", "expected"), FIELD_CASES)
def test_each_bad_field_is_one_line_naming_the_file_and_the_field(
    tmp_path, tiny, field, value, named, expected
):
    path = _write(
        tmp_path / "bad.safetensors", tiny.state_dict, _set(_description(tiny), field, value)
    )
    with pytest.raises(ModelFileError) as raised:
        load_model(path)
    message = str(raised.value)
    assert message.startswith(f'model file {path}: field "{named}" '), message
    assert expected in message, message
    assert message.endswith("re-save the model with napari-unet, or get an intact copy of the file")
    assert "\n" not in message
    # the listings and the Segment widget read the description alone: the same refusal
    with pytest.raises(ModelFileError, match=re.escape(f'field "{named}"')):
        read_description(path)


def test_a_bad_recommended_threshold_is_blamed_on_the_file_not_the_user(tmp_path, tiny):
    # it used to load, then SegmentOptions said "threshold must be between 0 and 1",
    # which reads as a complaint about the user's --threshold
    description = _set(_description(tiny), "provenance.postprocess.threshold", 7)
    path = _write(tmp_path / "x.safetensors", tiny.state_dict, description)
    with pytest.raises(ModelFileError, match=r'x\.safetensors: field "provenance\.postprocess'):
        load_model(path)


def test_an_unreadable_description_is_listed_with_the_field(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "none")
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path))
    _write(
        tmp_path / "odd.safetensors",
        tiny.state_dict,
        _set(_description(tiny), "config.depth", 4.0),
    )
    (entry,) = list_models()
    assert entry.description.startswith("(unreadable: model file")
    assert 'field "config.depth"' in entry.description


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("config.dropout", 0),  # an integer is a number
        ("provenance.postprocess.merge_boundaries", 0),
        ("provenance.postprocess.min_size", 0),
        ("provenance.postprocess.future_setting", "ignored"),  # newer versions may add some
        ("provenance.postprocess.per_output.mask", {"threshold": 0.4}),
        ("provenance.notes", {"any": ["JSON", 1, None]}),
        ("normalisation", {"method": "fixed", "offset": 0, "scale": 255}),
    ],
)
def test_valid_values_still_load(tmp_path, tiny, field, value):
    path = _write(
        tmp_path / "ok.safetensors", tiny.state_dict, _set(_description(tiny), field, value)
    )
    _assert_usable(load_model(path))


@pytest.mark.parametrize("field", ["name", "normalisation", "class_names", "provenance"])
def test_optional_fields_may_be_missing(tmp_path, tiny, field):
    description = _description(tiny)
    del description[field]
    bundle = load_model(_write(tmp_path / "ok.safetensors", tiny.state_dict, description))
    _assert_usable(bundle)
    assert bundle.name in ("tiny", "ok")


def test_format_version_must_be_the_integer_one(tmp_path, tiny):
    for version in (True, 1.0, "1"):
        description = {**_description(tiny), "format_version": version}
        path = _write(tmp_path / "v.safetensors", tiny.state_dict, description)
        with pytest.raises(ModelFileError, match="model format version"):
            load_model(path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "unreadable model metadata"),
        ("[1, 2]", "not a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "unreadable model metadata"),  # too deeply nested
    ],
)
def test_unreadable_metadata_is_one_line(tmp_path, tiny, text, reason):
    path = _write(tmp_path / "m.safetensors", tiny.state_dict, text)
    with pytest.raises(ModelFileError, match=reason):
        load_model(path)


def test_the_recommendation_checks_cover_what_segment_reads():
    assert set(description._RECOMMENDATION_CHECKS) == set(options.RECOMMENDABLE)


def test_shipped_builtin_descriptions_pass_the_checks():
    builtin = [entry for entry in list_models() if entry.source == "built-in"]
    assert builtin
    for entry in builtin:
        read_description(entry.path)  # raises if a field is refused


# -------------------------------------------------- weights and crafted headers


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused_on_load_naming_the_tensor(tmp_path, tiny, bad):
    weights = {key: value.clone() for key, value in tiny.state_dict.items()}
    weights["head.weight"].view(-1)[1] = bad
    path = _write(tmp_path / "diverged.safetensors", weights, _description(tiny))
    with pytest.raises(ModelFileError) as raised:
        load_model(path)
    assert str(raised.value) == (
        f'model file {path}: tensor "head.weight" contains NaN or infinite values (the '
        "training that made it diverged?); use another model or re-train it"
    )


def test_tensors_of_the_wrong_type_are_refused(tmp_path, tiny):
    weights = dict(tiny.state_dict)
    weights["head.weight"] = weights["head.weight"].to(torch.int8)
    path = _write(tmp_path / "typed.safetensors", weights, _description(tiny))
    with pytest.raises(ModelFileError, match=r"1 wrong type \(head\.weight\)"):
        load_model(path)


def test_a_header_claiming_more_data_than_the_file_holds_is_refused(tmp_path, tiny):
    header = _header_of(tiny)
    header["head.weight"] = ("F32", [50_000, 2, 1, 1])
    description = _set(_description(tiny), "config.num_classes", 255)
    path = _craft(tmp_path / "liar.safetensors", header, description, data_bytes=4096)
    assert path.stat().st_size < 16_000
    error = _load_bounded(path)
    assert isinstance(error, ModelFileError), error
    assert "corrupt" in str(error)


def test_a_large_architecture_with_small_tensors_is_refused_before_reading(tmp_path, tiny):
    # within every bound (a ~2e12-parameter network), but the header lists TINY's tensors
    description = _description(tiny)
    description["config"].update(depth=8, base_width=1024, num_classes=255, in_channels=8)
    description["class_names"] = []
    path = _craft(tmp_path / "huge.safetensors", _header_of(tiny), description)
    error = _load_bounded(path)
    assert isinstance(error, ModelFileError), error
    assert "weights do not match the stored architecture" in str(error)


_MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    from napari_unet.core.errors import ModelFileError
    from napari_unet.core.modelfile import load_model

    load_model(sys.argv[1])  # warm up: imports, first allocations
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results = []
    for path in sys.argv[2:]:
        started = time.perf_counter()
        try:
            load_model(path)
            outcome = "loaded"
        except ModelFileError as error:
            outcome = str(error)
        results.append([outcome, time.perf_counter() - started])
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline
    print(json.dumps({"grown_kb": grown_kb, "results": results}))
    """
)


@pytest.mark.slow  # one subprocess per crafted file (~10-20 s)
def test_small_crafted_files_claiming_huge_networks_fail_fast_in_little_memory(
    tmp_path, tiny, tiny_bytes
):
    """depth 10**6 used to hang and 50,000 classes to allocate gigabytes."""
    header = _header_of(tiny)
    crafted = []
    for name, field, value in [
        ("deep", "config.depth", 10**6),
        ("classes", "config.num_classes", 50_000),
        ("wide", "config.base_width", 10**9),
    ]:
        description = _set(_description(tiny), field, value)
        crafted.append(_craft(tmp_path / f"{name}.safetensors", header, description))
    # 50,000 classes with a matching head: a float16 head of a width-1 network is 200 kB
    description = _set(_description(tiny), "config.num_classes", 50_000)
    description["config"]["base_width"] = 1
    description["class_names"] = []
    crafted.append(
        _craft(
            tmp_path / "head.safetensors",
            {"head.weight": ("F16", [50_000, 1, 1, 1]), "head.bias": ("F16", [50_000])},
            description,
        )
    )
    assert all(path.stat().st_size < 250_000 for path in crafted)
    good = tmp_path / "good.safetensors"
    good.write_bytes(tiny_bytes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(good), *map(str, crafted)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    for path, (outcome, seconds) in zip(crafted, report["results"], strict=True):
        assert outcome.startswith(f"model file {path}: field "), outcome
        assert seconds < MAX_SECONDS, (path.name, seconds)
    assert report["grown_kb"] < MAX_BYTES / 1024, report


# ----------------------------------------------------------------- fuzzing

_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_JSON = st.recursive(
    _JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
#: Every field load_model reads, and a few it should not care about.
_FIELDS = [
    "name",
    "config",
    "normalisation",
    "class_names",
    "provenance",
    "format_version",
    *(f"config.{key}" for key in UNetConfig.__dataclass_fields__),
    "config.extra",
    "normalisation.method",
    "normalisation.low",
    "normalisation.high",
    "normalisation.offset",
    "normalisation.scale",
    "provenance.postprocess",
    "provenance.description",
    *(f"provenance.postprocess.{key}" for key in options.RECOMMENDABLE),
    "provenance.postprocess.per_output",
    "provenance.postprocess.per_output.labels",
    *(f"provenance.postprocess.per_output.labels.{key}" for key in options.RECOMMENDABLE),
    "scale",
    "scale.pixel_size",
    "scale.unit",
    "scale.object_diameter",
]
#: Plausible values too, so that mutations often get past the first check.
_VALUES = (
    _JSON
    | st.integers(min_value=-2, max_value=300)
    | st.floats(min_value=-0.5, max_value=1.5)
    | st.sampled_from(["valid", "same", "none", "batch", "group", "percentile", "fixed"])
    | st.sampled_from(["nm", "um", "µm", [4.0, 4.0], [0.5, 0.325]])
)


def _check_outcome(result: ModelBundle | UNetError) -> None:
    if isinstance(result, ModelBundle):
        _assert_usable(result)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_give_a_clear_error(fuzz_dir, data):
    path = fuzz_dir / "random.safetensors"
    path.write_bytes(data)
    assert isinstance(_load_bounded(path), UNetError)


@pytest.mark.slow  # hypothesis fuzzing: many generated files (~8-20 s)
@FUZZ
@given(
    header=st.one_of(
        st.binary(max_size=300),
        _JSON.map(lambda value: json.dumps(value).encode()),
        st.dictionaries(st.text(max_size=8), _JSON, max_size=5).map(
            lambda value: json.dumps(value).encode()
        ),
    ),
    tail=st.binary(max_size=200),
    claimed=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
)
def test_random_safetensors_headers_give_a_clear_error(fuzz_dir, header, tail, claimed):
    # past the first sniff: a plausible length and a "{", then anything
    length = len(header) if claimed is None else claimed
    path = fuzz_dir / "header.safetensors"
    path.write_bytes(struct.pack("<Q", length) + header + tail)
    assert isinstance(_load_bounded(path), UNetError)


_MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), st.integers(min_value=0)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(min_value=1, max_value=64)),
)


def _mutate(data: bytes, mutations: list[tuple]) -> bytes:
    buffer = bytearray(data)
    for kind, position, *rest in mutations:
        position %= max(len(buffer), 1)
        if kind == "flip" and buffer:
            buffer[position] ^= rest[0]
        elif kind == "truncate":
            del buffer[position:]
        elif kind == "insert":
            buffer[position:position] = rest[0]
        elif kind == "delete":
            del buffer[position : position + rest[0]]
    return bytes(buffer)


@pytest.mark.slow  # hypothesis fuzzing: many generated files (~8-20 s)
@FUZZ
@given(
    mutations=st.lists(_MUTATION, min_size=1, max_size=4),
    in_header=st.booleans(),
)
def test_mutated_model_files_load_or_give_a_clear_error(fuzz_dir, tiny_bytes, mutations, in_header):
    header_end = 8 + struct.unpack("<Q", tiny_bytes[:8])[0]
    if in_header:  # most interesting damage is in the first bytes: aim there half the time
        mutations = [(kind, position % header_end, *rest) for kind, position, *rest in mutations]
    path = fuzz_dir / "mutated.safetensors"
    path.write_bytes(_mutate(tiny_bytes, mutations))
    _check_outcome(_load_bounded(path))


@pytest.mark.slow  # hypothesis fuzzing: many generated files (~8-20 s)
@FUZZ
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(_FIELDS), st.booleans(), _VALUES), min_size=1, max_size=3
    )
)
def test_mutated_descriptions_load_or_name_the_field(fuzz_dir, tiny, changes):
    description = _description(tiny)
    for field, delete, value in changes:
        *parents, last = field.split(".")
        node: Any = description
        for key in parents:
            if not isinstance(node, dict):
                break
            node = node.setdefault(key, {})
        else:
            if isinstance(node, dict):
                if delete:
                    node.pop(last, None)
                else:
                    node[last] = value
    path = _write(fuzz_dir / "described.safetensors", tiny.state_dict, description)
    result = _load_bounded(path)
    _check_outcome(result)
    if isinstance(result, UNetError):
        assert str(result).startswith((f"model file {path}", f"{path}")), result


# ------------------------------------------------------------------ saving


def test_an_existing_model_is_not_replaced_unless_asked(tmp_path, tiny):
    path = save_model(tiny, tmp_path / "m.safetensors")
    before = path.read_bytes()
    other = random_model(TINY, seed=9, name="other")
    with pytest.raises(OutputError) as raised:
        save_model(other, path)
    assert str(raised.value) == (
        f"{path} already exists; pass --overwrite to replace it, or choose another output"
    )
    assert path.read_bytes() == before
    save_model(other, path, overwrite=True)
    assert load_model(path).name == "other"
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_foreign_file_is_not_replaced_either(tmp_path, tiny):
    path = tmp_path / "notes.safetensors"
    path.write_text("my notes")
    with pytest.raises(OutputError, match="already exists"):
        save_model(tiny, path)
    assert path.read_text() == "my notes"


def _interrupting_writer(exception: BaseException):
    """A save_file that writes part of the file, then fails as Ctrl-C or a full disk."""

    def write(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise exception

    return write


@pytest.mark.parametrize("exception", [KeyboardInterrupt(), OSError(28, "No space left")])
def test_an_interrupted_save_leaves_the_old_file_and_no_partial_file(
    tmp_path, tiny, monkeypatch, exception
):
    path = save_model(tiny, tmp_path / "m.safetensors")
    before = path.read_bytes()
    monkeypatch.setattr(modelfile, "save_file", _interrupting_writer(exception))
    with pytest.raises(type(exception)):
        save_model(random_model(TINY, seed=9), path, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]
    with pytest.raises(KeyboardInterrupt):  # a new file: nothing at all is left
        monkeypatch.setattr(modelfile, "save_file", _interrupting_writer(KeyboardInterrupt()))
        save_model(tiny, tmp_path / "new.safetensors")
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_leftover_partial_file_is_not_listed(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(registry, "BUILTIN_MODELS_DIR", tmp_path / "none")
    monkeypatch.setenv(modelfile.MODELS_DIR_ENV, str(tmp_path))
    save_model(tiny, tmp_path / "m.safetensors")
    (tmp_path / f"{TEMP_PREFIX}m-abc.safetensors").write_bytes(b"half a model")  # kill -9
    assert [entry.name for entry in list_models()] == ["m"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_saved(tmp_path, tiny, bad):
    path = save_model(tiny, tmp_path / "m.safetensors")
    before = path.read_bytes()
    weights = {key: value.clone() for key, value in tiny.state_dict.items()}
    weights["inc.0.weight"].view(-1)[0] = bad
    diverged = ModelBundle(name="d", config=TINY, state_dict=weights)
    for target, overwrite in ((path, True), (tmp_path / "new.safetensors", False)):
        with pytest.raises(ModelFileError) as raised:
            save_model(diverged, target, overwrite=overwrite)
        assert str(raised.value) == (
            f"cannot save {target}: the weights contain NaN or infinite values (tensor "
            '"inc.0.weight"; training diverged?); nothing was saved'
        )
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]


def test_weights_too_large_for_float16_are_not_saved_as_float16(tmp_path, tiny):
    weights = {key: value.clone() for key, value in tiny.state_dict.items()}
    weights["head.bias"][0] = 1e6
    bundle = ModelBundle(name="big", config=TINY, state_dict=weights)
    with pytest.raises(
        ModelFileError, match=r'tensor "head\.bias" has values too large for float16'
    ):
        save_model(bundle, tmp_path / "h.safetensors", weights_dtype="float16")
    assert not list(tmp_path.iterdir())
    load_model(save_model(bundle, tmp_path / "f.safetensors"))  # float32 holds them


def test_a_description_load_would_refuse_is_not_saved(tmp_path, tiny):
    bundle = ModelBundle(
        name="x",
        config=TINY,
        state_dict=tiny.state_dict,
        provenance={"postprocess": {"threshold": "abc"}},
    )
    path = tmp_path / "x.safetensors"
    with pytest.raises(InputError) as raised:
        save_model(bundle, path)
    assert str(raised.value) == (
        f'cannot save {path}: field "provenance.postprocess.threshold" must be a number '
        'between 0 and 1, got "abc"; nothing was saved'
    )
    bundle.provenance = {"data": Path("/somewhere")}
    with pytest.raises(InputError, match="provenance must hold only JSON values"):
        save_model(bundle, path)
    assert not path.exists()


def test_weights_that_do_not_match_the_architecture_are_not_saved(tmp_path, tiny):
    weights = {key: value for key, value in tiny.state_dict.items() if key != "head.bias"}
    bundle = ModelBundle(name="x", config=TINY, state_dict=weights)
    path = tmp_path / "x.safetensors"
    with pytest.raises(InputError) as raised:
        save_model(bundle, path)
    assert str(raised.value) == (
        f"cannot save {path}: the weights do not match the architecture (1 missing "
        "(head.bias)); nothing was saved"
    )
    assert not path.exists()

"""Model files (one ``.safetensors`` file per model) and the registry of named models.

A model file holds everything needed to segment: the weights, the architecture
(:meth:`UNetConfig.to_dict`), the intensity normalisation spec, the class names and
provenance (training data, steps, date, version, notes). It is a safetensors file
whose header metadata stores that description as JSON under :data:`METADATA_KEY`,
next to a ``"format_version"`` entry. Loading never unpickles anything: safetensors
is a flat tensor format, so a model file cannot run code.

Hostile or damaged files
------------------------
:func:`load_model` trusts nothing in a file. It checks every field of the description
(types, bounds on depth, width, classes and channels, the normalisation, the
recommended post-processing) before anything is built, then the tensor names, shapes
and types listed in the header against the architecture before any weight is read,
and refuses NaN or infinite weights. Every refusal is one :class:`ModelFileError` line
naming the file and the field or tensor. :func:`save_model` refuses what loading would
refuse (so it never writes a file it cannot read back), never replaces an existing file
unless asked, and writes atomically.

Registry
--------
Models are found by name in two folders:

* built-in models shipped in the package (``napari_unet/models/NAME.safetensors``, each
  with a ``NAME.md`` model card);
* user models in ``platformdirs.user_data_dir("napari-unet")/models``, or in the folder
  named by the environment variable ``NAPARI_UNET_MODELS_DIR``.

A built-in name always means the built-in model: :func:`save_user_model` refuses a
built-in name (and an existing user model unless ``overwrite=True``) instead of
silently shadowing or replacing it.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_unet import __version__
from napari_unet.core import normalise
from napari_unet.core.errors import (
    InputError,
    ModelFileError,
    ModelNotFoundError,
    OutputError,
    UNetError,
)
from napari_unet.core.model import SMALL, UNet, UNetConfig, config_field_problem
from napari_unet.core.safety import TEMP_PREFIX, atomic_write, check_output

#: Key of the JSON description in the safetensors header metadata.
METADATA_KEY = "napari_unet"
#: Version of the JSON description; bumped on incompatible changes.
FORMAT_VERSION = 1
#: Storage types :func:`save_model` can write floating-point weights in.
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
#: File extension of model files.
SUFFIX = ".safetensors"
#: Environment variable that overrides the per-user model folder.
MODELS_DIR_ENV = "NAPARI_UNET_MODELS_DIR"
#: Preferred default built-in model (the first built-in alphabetically otherwise).
DEFAULT_MODEL_NAME = "nuclei"
#: Folder of the built-in models; a module attribute so tests can point it elsewhere.
BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A safetensors file starts with the 8-byte little-endian length of its JSON header.
_MAX_HEADER_BYTES = 100_000_000


@dataclass(eq=False)
class ModelBundle:
    """A network's weights with everything needed to use them.

    Instances compare and hash by identity, so they can key caches of built networks.

    Attributes
    ----------
    name : str
        Short name (the file stem in the registry).
    config : UNetConfig
        Architecture.
    state_dict : dict of str to Tensor
        Weights, as ``UNet(config).state_dict()`` (CPU tensors).
    normalisation : dict
        Intensity normalisation spec (see :mod:`napari_unet.core.normalise`).
    class_names : list of str
        One name per output class; class 0 is background.
    provenance : dict
        Free-form JSON-able facts: ``training_data``, ``steps``, ``date``, ``version``,
        ``description``, ``notes``...
    """

    name: str
    config: UNetConfig
    state_dict: dict[str, torch.Tensor]
    normalisation: dict[str, Any] = field(default_factory=lambda: dict(normalise.DEFAULT_SPEC))
    class_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = default_class_names(self.config.num_classes)

    @classmethod
    def from_network(
        cls,
        network: UNet,
        *,
        name: str,
        normalisation: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> ModelBundle:
        """Snapshot ``network``'s weights (copied to CPU) into a bundle."""
        state = {key: value.detach().cpu().clone() for key, value in network.state_dict().items()}
        return cls(
            name=name,
            config=network.config,
            state_dict=state,
            normalisation=normalise.validate_spec(normalisation),
            class_names=list(class_names or []),
            provenance=dict(provenance or {}),
        )

    @property
    def description(self) -> str:
        """One line for listings: the provenance's description or notes."""
        return _short_description(self.provenance)

    def build(self, device: str | torch.device = "cpu") -> UNet:
        """A :class:`UNet` with (a copy of) these weights on ``device``, in eval mode.

        The network is laid out on the meta device first, so building one neither spends
        time on a random initialisation that the weights replace nor draws from torch's
        global random generator (which a seeded training run elsewhere may rely on).
        """
        with torch.device("meta"):
            network = UNet(self.config)
        # Copies: training the network must never change the bundle's weights.
        weights = {name: tensor.detach().clone() for name, tensor in self.state_dict.items()}
        network.load_state_dict(weights, assign=True)
        return network.to(device).eval()


def default_class_names(num_classes: int) -> list[str]:
    """``["background", "foreground"]`` for 2 classes, ``background, class_1, ...`` otherwise."""
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, num_classes)]


def random_model(config: UNetConfig = SMALL, seed: int = 0, name: str = "random") -> ModelBundle:
    """An untrained model with reproducible random weights, for tests and demos."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = UNet(config)
    return ModelBundle.from_network(
        network, name=name, provenance={"description": f"random weights (seed {seed})"}
    )


# --------------------------------------------------------------------------- files


def save_model(
    bundle: ModelBundle,
    path: str | os.PathLike,
    *,
    weights_dtype: Literal["float32", "float16"] = "float32",
    overwrite: bool = False,
) -> Path:
    """Write ``bundle`` to ``path`` (a ``.safetensors`` file) and return the path.

    ``provenance`` gets ``date`` and ``version`` filled in when absent. Everything is
    checked before anything is written, and the file is written beside ``path`` and
    renamed over it when complete (:func:`~napari_unet.core.safety.atomic_write`): an
    interrupted save leaves an existing file as it was and no partial file.

    Parameters
    ----------
    bundle : ModelBundle
        The model; its description must be one :func:`load_model` accepts.
    path : path-like
        Target file; it must end in ``.safetensors``. Its folder is created if needed.
    weights_dtype : {"float32", "float16"}
        Storage type of the floating-point weights. ``"float16"`` halves the file (for
        sharing, or a wider built-in model); :func:`load_model` always returns float32
        weights, so the network still computes in float32.
    overwrite : bool
        Whether an existing file at ``path`` may be replaced.

    Raises
    ------
    InputError
        For a wrong suffix or ``weights_dtype``, a description :func:`load_model` would
        refuse (naming the field), or weights that do not match the architecture.
    ModelFileError
        If the weights hold NaN or infinite values (training diverged), or values
        ``weights_dtype`` cannot represent; nothing is written.
    OutputError
        If ``path`` exists and ``overwrite`` is false, or cannot be written.
    """
    if weights_dtype not in STORAGE_DTYPES:
        raise InputError(
            f"weights_dtype must be one of {sorted(STORAGE_DTYPES)}, got {weights_dtype!r}"
        )
    path = Path(path)
    if path.suffix != SUFFIX:
        raise InputError(f"model files end in {SUFFIX}, got {path.name!r}")
    metadata = {
        METADATA_KEY: _description_json(bundle, path),
        "format_version": str(FORMAT_VERSION),
    }
    tensors = _tensors_to_store(bundle.state_dict, path, STORAGE_DTYPES[weights_dtype])
    mismatch = _architecture_mismatch(
        bundle.config,
        {
            key: (tuple(value.shape), _CODE_OF_DTYPE.get(value.dtype, str(value.dtype)))
            for key, value in tensors.items()
        },
    )
    if mismatch:
        raise InputError(
            f"cannot save {path}: the weights do not match the architecture ({mismatch}); "
            "nothing was saved"
        )
    check_output(path, overwrite=overwrite, what="model")
    with atomic_write(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return path


def _description_json(bundle: ModelBundle, path: Path) -> str:
    """The checked JSON description of ``bundle``, as :func:`load_model` will read it."""
    provenance = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        **bundle.provenance,
    }
    description = {
        "format_version": FORMAT_VERSION,
        "name": bundle.name,
        "config": bundle.config.to_dict(),
        "normalisation": bundle.normalisation,
        "class_names": list(bundle.class_names),
        "provenance": provenance,
    }
    try:
        parsed = _parse_description(description)
        description["normalisation"] = parsed.normalisation
        return json.dumps(description)
    except _FieldProblem as problem:
        raise InputError(f"cannot save {path}: {problem}; nothing was saved") from None
    except (TypeError, ValueError, RecursionError) as error:
        raise InputError(
            f"cannot save {path}: the provenance must hold only JSON values (text, numbers, "
            f"true/false, null, lists and mappings with text keys) ({_one_line(error)}); "
            "nothing was saved"
        ) from None


def _tensors_to_store(
    state_dict: dict[str, torch.Tensor], path: Path, storage: torch.dtype
) -> dict[str, torch.Tensor]:
    """CPU copies of the weights in the storage type, refusing non-finite values."""
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelFileError(
                f"cannot save {path}: the weights contain NaN or infinite values (tensor "
                f'"{key}"; training diverged?); nothing was saved'
            )
        stored = _stored(value, storage).contiguous()
        if stored.is_floating_point() and not bool(torch.isfinite(stored).all()):
            name = next(label for label, dtype in STORAGE_DTYPES.items() if dtype == storage)
            raise ModelFileError(
                f'cannot save {path}: tensor "{key}" has values too large for {name} '
                f"(largest {torch.finfo(storage).max:g}); save it as float32; nothing was saved"
            )
        tensors[key] = stored
    return tensors


def load_model(path: str | os.PathLike) -> ModelBundle:
    """Read a model file written by :func:`save_model`.

    The description is checked first, then the tensor names, shapes and types listed in
    the file's header against the architecture; only then are the weights read. So a
    small crafted file cannot make this allocate more than the file holds, or hang.

    Raises
    ------
    ModelFileError
        If the file is missing, not a safetensors file (e.g. a pickled PyTorch
        checkpoint, which is refused without being unpickled), corrupt, of another
        format version, has an invalid description (naming the field), tensors that do
        not match its architecture, or NaN or infinite weights (naming the tensor).
    """
    path = Path(path)
    parsed = _parse_file_description(path, _read_json_description(path))
    _check_header(path, parsed.config)
    state_dict = _read_tensors(path)
    return ModelBundle(
        name=parsed.name or path.stem,
        config=parsed.config,
        state_dict=state_dict,
        normalisation=parsed.normalisation,
        class_names=parsed.class_names,
        provenance=parsed.provenance,
    )


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a model file, checked, without reading its weights.

    Raises
    ------
    ModelFileError
        As :func:`load_model`, except for problems with the weights themselves.
    """
    path = Path(path)
    description = _read_json_description(path)
    _parse_file_description(path, description)
    return description


def _read_json_description(path: Path) -> dict[str, Any]:
    """The description as stored, with a known format version (fields not yet checked)."""
    _check_looks_like_safetensors(path)
    with _opened(path, "is corrupt or truncated") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model (no {METADATA_KEY!r} "
            "metadata); save models with napari-unet"
        )
    try:
        description = json.loads(metadata[METADATA_KEY])
    except (ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise ModelFileError(
            f"{path} has unreadable model metadata ({_one_line(error)}); re-download or "
            "re-save the model"
        ) from None
    if not isinstance(description, dict):
        raise ModelFileError(
            f"{path} has unreadable model metadata (not a JSON object); re-download or "
            "re-save the model"
        )
    version = description.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {_shown(version)}, this napari-unet reads "
            f"version {FORMAT_VERSION}; update napari-unet or re-save the model with this "
            "version"
        )
    return description


def _check_looks_like_safetensors(path: Path) -> None:
    """Refuse missing files and pickles before any parser sees them."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
        size = path.stat().st_size
    except OSError as error:
        raise ModelFileError(
            f"cannot read model file {path} ({error.strerror or type(error).__name__}); "
            "check that you may read it"
        ) from None
    if len(head) < 9:
        raise ModelFileError(f"{path} is too short to be a model file (truncated or empty)")
    (header_length,) = struct.unpack("<Q", head[:8])
    if header_length <= min(_MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
        return
    # torch.save writes a zip archive ("PK..."); plain pickles start with protocol 0x80.
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise ModelFileError(
            f"{path} looks like a pickled PyTorch checkpoint (torch.save); napari-unet never "
            "loads pickles because they can run arbitrary code. Load it yourself in a trusted "
            "session and save it with napari_unet.core.modelfile.save_model"
        )
    raise ModelFileError(
        f"{path} is not a safetensors model file (corrupt, truncated or another format); "
        f"napari-unet models are {SUFFIX} files saved by napari-unet"
    )


@contextlib.contextmanager
def _opened(path: Path, damage: str) -> Iterator[Any]:
    """``safe_open(path)``, with its errors turned into a :class:`ModelFileError`."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield handle
    except (UNetError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    # safetensors raises its own, version-dependent types, and a panic in its Rust code
    # surfaces as a PanicException, which derives from BaseException.
    except BaseException as error:
        raise ModelFileError(
            f"{path} {damage} ({_one_line(error)}); re-download or re-save the model"
        ) from None


def _stored(tensor: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    # Only weights are narrowed; integer buffers (batch-norm counters) keep their type.
    return tensor.to(storage) if tensor.is_floating_point() else tensor


#: safetensors type codes of the tensors load_model accepts (what save_model writes).
_FLOAT_CODES = frozenset({"F32", "F16"})
_INT_CODES = frozenset({"I64"})
_CODE_OF_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def _check_header(path: Path, config: UNetConfig) -> None:
    """Compare the tensors listed in the header with ``config``, reading no weights.

    safetensors checks that the header's shapes and offsets add up to the file size, so
    once they match the architecture, reading the weights costs what the file holds.
    """
    with _opened(path, "has a corrupt header") as handle:
        stored = {}
        for key in handle.keys():
            tensor = handle.get_slice(key)
            stored[key] = (tuple(tensor.get_shape()), str(tensor.get_dtype()))
    mismatch = _architecture_mismatch(config, stored)
    if mismatch:
        raise ModelFileError(
            f"{path}: weights do not match the stored architecture: {mismatch}; "
            "the file is damaged or was edited, re-save it from the trained network"
        )


def _architecture_mismatch(config: UNetConfig, stored: dict[str, tuple[tuple, str]]) -> str:
    """How tensors ``{name: (shape, type code)}`` differ from ``config``'s ("" if not)."""
    # The meta device builds the architecture without allocating its weights; the
    # bounds on the description keep it small and quick.
    with torch.device("meta"):
        expected = UNet(config).state_dict()
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    common = sorted(set(expected) & set(stored))
    wrong_shape = [key for key in common if tuple(stored[key][0]) != tuple(expected[key].shape)]
    wrong_type = [
        key
        for key in common
        if stored[key][1] not in (_FLOAT_CODES if expected[key].is_floating_point() else _INT_CODES)
    ]
    details = []
    for label, keys in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape", wrong_shape),
        ("wrong type", wrong_type),
    ):
        if keys:
            shown = ", ".join(_clipped(key, 60) for key in keys[:3])
            details.append(f"{len(keys)} {label} ({shown}{', ...' if len(keys) > 3 else ''})")
    return "; ".join(details)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors as CPU tensors (float32 weights); non-finite weights are refused."""
    state_dict = {}
    with _opened(path, "has corrupt or truncated weights") as handle:
        for key in handle.keys():
            # Weights stored narrower (float16) come back as float32: ModelBundle.build
            # assigns these tensors to the network, which must compute in float32.
            tensor = _stored(handle.get_tensor(key), torch.float32)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelFileError(
                    f'model file {path}: tensor "{_clipped(key, 60)}" contains NaN or '
                    "infinite values (the training that made it diverged?); use another model "
                    "or re-train it"
                )
            state_dict[key] = tensor
    return state_dict


# ------------------------------------------------------------ the description


class _FieldProblem(Exception):
    """One field of a model description is invalid; becomes a one-line user error."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(f'field "{field}" {text}')


@dataclass(frozen=True)
class _Parsed:
    """A checked description: what :class:`ModelBundle` needs besides the weights."""

    name: str | None
    config: UNetConfig
    normalisation: dict[str, Any]
    class_names: list[str]
    provenance: dict[str, Any]


def _parse_file_description(path: Path, description: dict[str, Any]) -> _Parsed:
    try:
        return _parse_description(description)
    except _FieldProblem as problem:
        raise ModelFileError(
            f"model file {path}: {problem}; re-save the model with napari-unet, or get an "
            "intact copy of the file"
        ) from None


def _parse_description(description: dict[str, Any]) -> _Parsed:
    """Check every field :func:`load_model` and its users read, before anything is built.

    Raises
    ------
    _FieldProblem
        Naming the first invalid field and what it must be.
    """
    name = description.get("name")
    _require(name is None or _is_text(name), "name", "must be a text", name)
    config = _parse_config(description.get("config"))
    normalisation = _parse_normalisation(description.get("normalisation"))
    class_names = _parse_class_names(description.get("class_names"), config.num_classes)
    provenance = description.get("provenance")
    if provenance is None:
        provenance = {}
    _require(isinstance(provenance, dict), "provenance", "must be a mapping", provenance)
    _parse_postprocess(provenance.get("postprocess"))
    return _Parsed(name or None, config, normalisation, class_names, dict(provenance))


def _parse_config(config: Any) -> UNetConfig:
    _require(isinstance(config, dict), "config", "must be a mapping of U-Net settings", config)
    known = UNetConfig.__dataclass_fields__
    for key, value in config.items():
        if key not in known:
            raise _FieldProblem(
                f"config.{_clipped(key, 40)}",
                f"is not a U-Net setting (known: {', '.join(known)})",
            )
        problem = config_field_problem(key, value)
        if problem is not None:
            raise _FieldProblem(f"config.{key}", f"{problem}, got {_shown(value)}")
    try:
        return UNetConfig.from_dict(config)
    except InputError as error:  # cannot happen after the checks above; kept as a guard
        raise _FieldProblem("config", f"is invalid ({error})") from None


def _parse_normalisation(spec: Any) -> dict[str, Any]:
    if spec is None:
        return normalise.validate_spec(None)
    _require(isinstance(spec, dict), "normalisation", "must be a mapping", spec)
    method = spec.get("method")
    methods = ("percentile", "minmax", "fixed")
    _require(
        method in methods,
        "normalisation.method",
        "must be one of " + ", ".join(f'"{m}"' for m in methods),
        method,
    )
    for key in ("low", "high", "offset", "scale"):
        if key in spec:
            _require(
                _is_finite_number(spec[key]),
                f"normalisation.{key}",
                "must be a finite number",
                spec[key],
            )
    try:
        return normalise.validate_spec(spec)
    except InputError as error:
        raise _FieldProblem("normalisation", f"is invalid: {error}") from None


def _parse_class_names(names: Any, num_classes: int) -> list[str]:
    if names is None or names == []:
        return default_class_names(num_classes)
    requirement = f"must be a list of {num_classes} names, one per class (config.num_classes)"
    _require(
        isinstance(names, list) and len(names) == num_classes, "class_names", requirement, names
    )
    for index, item in enumerate(names):
        _require(_is_text(item), f"class_names[{index}]", "must be a text", item)
    return list(names)


def _is_text(value: Any) -> bool:
    # JSON escapes can encode lone surrogates, which cannot be printed or written as UTF-8.
    return isinstance(value, str) and _printable(value) == value


def _printable(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_probability(value: Any) -> bool:
    return _is_finite_number(value) and 0.0 < value < 1.0


def _is_unit_interval(value: Any) -> bool:
    return _is_finite_number(value) and 0.0 <= value <= 1.0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: Post-processing a model may recommend (``provenance["postprocess"]``, the keys of
#: ``segment._RECOMMENDABLE``): a test keeps the two in step.
_RECOMMENDATION_CHECKS: dict[str, tuple[Any, str]] = {
    "threshold": (_is_probability, "must be a number between 0 and 1"),
    "min_size": (_is_count, "must be a whole number of pixels >= 0"),
    "split_touching": (lambda value: isinstance(value, bool), "must be true or false"),
    "fill_boundaries": (lambda value: isinstance(value, bool), "must be true or false"),
    "merge_boundaries": (_is_unit_interval, "must be a number from 0 to 1"),
}


def _parse_postprocess(postprocess: Any) -> None:
    """Check the recommended post-processing, so a bad value is blamed on the file."""
    if postprocess is None:
        return
    field_name = "provenance.postprocess"
    _require(isinstance(postprocess, dict), field_name, "must be a mapping", postprocess)
    _check_recommendations(postprocess, field_name)
    per_output = postprocess.get("per_output")
    if per_output is None:
        return
    field_name += ".per_output"
    _require(
        isinstance(per_output, dict),
        field_name,
        'must map output kinds ("labels", "mask", "probabilities") to settings',
        per_output,
    )
    for output, settings in per_output.items():
        inner = f"{field_name}.{_clipped(output, 40)}"
        _require(isinstance(settings, dict), inner, "must be a mapping", settings)
        _check_recommendations(settings, inner)


def _check_recommendations(settings: dict[str, Any], field_name: str) -> None:
    for key, (is_valid, requirement) in _RECOMMENDATION_CHECKS.items():
        if key in settings:
            _require(is_valid(settings[key]), f"{field_name}.{key}", requirement, settings[key])


def _require(condition: bool, field_name: str, requirement: str, value: Any) -> None:
    if not condition:
        raise _FieldProblem(field_name, f"{requirement}, got {_shown(value)}")


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` as it reads in the JSON file (shortened): ``"abc"``, ``4.0``, ``true``."""
    if isinstance(value, str):
        value = value[: limit + 1]  # no need to encode all of a huge text
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return _clipped(text, limit)


def _clipped(text: str, limit: int) -> str:
    text = _printable(str(text))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _clipped(lines[0] if lines else type(error).__name__, 200)


# ------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class ModelEntry:
    """One model in :func:`list_models`."""

    name: str
    path: Path
    source: Literal["built-in", "user"]
    description: str = ""


def builtin_models_dir() -> Path:
    """Folder of the models shipped with the package."""
    return Path(BUILTIN_MODELS_DIR)


def user_models_dir() -> Path:
    """Per-user model folder (``$NAPARI_UNET_MODELS_DIR`` when set); may not exist yet."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir("napari-unet")) / "models"


def list_models() -> list[ModelEntry]:
    """Built-in models, then user models, each sorted by name.

    A user file with a built-in name is left out: the name means the built-in model.
    An unreadable file is listed with the reason as its description.
    """
    entries = [_entry(path, "built-in") for path in _model_files(builtin_models_dir())]
    builtin_names = {entry.name for entry in entries}
    entries += [
        _entry(path, "user")
        for path in _model_files(user_models_dir())
        if path.stem not in builtin_names
    ]
    return entries


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """The file of a model given by path or by name.

    An existing file wins; otherwise the name is looked up among built-in models,
    then user models.

    Raises
    ------
    ModelNotFoundError
        Naming the available models, when neither a file nor a known name matches.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    text = str(name_or_path)
    for entry in list_models():
        if entry.name == text:
            return entry.path
    available = ", ".join(entry.name for entry in list_models()) or "none installed"
    if candidate.suffix == SUFFIX or os.sep in text or "/" in text:
        raise ModelNotFoundError(f"model file not found: {text} (known models: {available})")
    raise ModelNotFoundError(
        f"unknown model {text!r}; available models: {available}. "
        f"Give a model name or a path to a {SUFFIX} file"
    )


def default_model_name() -> str | None:
    """The built-in model used when none is named: ``nuclei`` if shipped, else the first."""
    names = [entry.name for entry in list_models() if entry.source == "built-in"]
    if DEFAULT_MODEL_NAME in names:
        return DEFAULT_MODEL_NAME
    return names[0] if names else None


def save_user_model(bundle: ModelBundle, name: str, *, overwrite: bool = False) -> Path:
    """Save ``bundle`` as user model ``name`` and return its path.

    Raises
    ------
    InputError
        If ``name`` is not a plain file name or is a built-in model's name (or as
        :func:`save_model`).
    OutputError
        If ``name`` is an existing user model and ``overwrite`` is false.
    ModelFileError
        As :func:`save_model`.
    """
    if not _NAME_PATTERN.match(name) or name.endswith(SUFFIX):
        raise InputError(
            f"invalid model name {name!r}: use letters, digits, '-', '_' and '.', "
            f"starting with a letter or digit, without the {SUFFIX} extension"
        )
    if (builtin_models_dir() / f"{name}{SUFFIX}").is_file():
        raise InputError(f"{name!r} is the name of a built-in model; choose another name")
    path = user_models_dir() / f"{name}{SUFFIX}"
    if path.exists() and not overwrite:
        raise OutputError(
            f"a user model named {name!r} already exists ({path}); choose another name "
            "or overwrite it"
        )
    return save_model(replace(bundle, name=name), path, overwrite=overwrite)


def _model_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    # A leftover temporary file of an interrupted save is not a model.
    return sorted(
        path for path in folder.glob(f"*{SUFFIX}") if not path.name.startswith(TEMP_PREFIX)
    )


def _entry(path: Path, source: Literal["built-in", "user"]) -> ModelEntry:
    try:
        stat = path.stat()
    except OSError as error:
        description = f"(unreadable: {error})"
    else:
        description = _cached_description(path, stat.st_mtime_ns, stat.st_size)
    return ModelEntry(name=path.stem, path=path, source=source, description=description)


# Model choosers list the models whenever napari's layer list changes; reading every
# file's header each time would stall the GUI. A changed file has a new mtime or size.
@functools.lru_cache(maxsize=512)
def _cached_description(path: Path, _mtime_ns: int, _size: int) -> str:
    try:
        return _short_description(read_description(path).get("provenance") or {})
    except ModelFileError as error:
        return f"(unreadable: {error})"


def _short_description(provenance: dict[str, Any]) -> str:
    text = _printable(str(provenance.get("description") or provenance.get("notes") or ""))
    return text.splitlines()[0] if text else ""


__all__ = [
    "FORMAT_VERSION",
    "METADATA_KEY",
    "MODELS_DIR_ENV",
    "SUFFIX",
    "ModelBundle",
    "ModelEntry",
    "builtin_models_dir",
    "default_class_names",
    "default_model_name",
    "list_models",
    "load_model",
    "random_model",
    "read_description",
    "resolve_model",
    "save_model",
    "save_user_model",
    "user_models_dir",
]

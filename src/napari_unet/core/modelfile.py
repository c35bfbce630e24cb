"""Model files (one ``.safetensors`` file per model) and the registry of named models.

A model file holds everything needed to segment: the weights, the architecture
(:meth:`UNetConfig.to_dict`), the intensity normalisation spec, the class names and
provenance (training data, steps, date, version, notes). It is a safetensors file
whose header metadata stores that description as JSON under :data:`METADATA_KEY`,
next to a ``"format_version"`` entry. Loading never unpickles anything: safetensors
is a flat tensor format, so a model file cannot run code.

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

import datetime
import functools
import json
import os
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import platformdirs
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from napari_unet import __version__
from napari_unet.core import normalise
from napari_unet.core.errors import InputError, ModelFileError, ModelNotFoundError
from napari_unet.core.model import SMALL, UNet, UNetConfig

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
) -> Path:
    """Write ``bundle`` to ``path`` (a ``.safetensors`` file) and return the path.

    ``provenance`` gets ``date`` and ``version`` filled in when absent.

    Parameters
    ----------
    weights_dtype : {"float32", "float16"}
        Storage type of the floating-point weights. ``"float16"`` halves the file (for
        sharing, or a wider built-in model); :func:`load_model` always returns float32
        weights, so the network still computes in float32.
    """
    if weights_dtype not in STORAGE_DTYPES:
        raise InputError(
            f"weights_dtype must be one of {sorted(STORAGE_DTYPES)}, got {weights_dtype!r}"
        )
    path = Path(path)
    if path.suffix != SUFFIX:
        raise InputError(f"model files end in {SUFFIX}, got {path.name!r}")
    provenance = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "version": __version__,
        **bundle.provenance,
    }
    description = {
        "format_version": FORMAT_VERSION,
        "name": bundle.name,
        "config": bundle.config.to_dict(),
        "normalisation": normalise.validate_spec(bundle.normalisation),
        "class_names": list(bundle.class_names),
        "provenance": provenance,
    }
    storage = STORAGE_DTYPES[weights_dtype]
    tensors = {
        key: _stored(value.detach().cpu(), storage).contiguous()
        for key, value in bundle.state_dict.items()
    }
    metadata = {METADATA_KEY: json.dumps(description), "format_version": str(FORMAT_VERSION)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_model(path: str | os.PathLike) -> ModelBundle:
    """Read a model file written by :func:`save_model`.

    Raises
    ------
    ModelFileError
        If the file is missing, not a safetensors file (e.g. a pickled PyTorch
        checkpoint, which is refused without being unpickled), corrupt, of another
        format version, or its tensors do not match its architecture.
    """
    path = Path(path)
    description = read_description(path)
    try:
        config = UNetConfig.from_dict(description["config"])
        normalisation = normalise.validate_spec(description.get("normalisation"))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFileError(
            f"model file {path} has an invalid architecture or normalisation ({error}); "
            "re-save it with this version of napari-unet"
        ) from error
    state_dict = _read_tensors(path)
    _check_tensors_match(path, config, state_dict)
    return ModelBundle(
        name=str(description.get("name") or path.stem),
        config=config,
        state_dict=state_dict,
        normalisation=normalisation,
        class_names=list(description.get("class_names") or []),
        provenance=dict(description.get("provenance") or {}),
    )


def read_description(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON description of a model file, without reading its weights.

    Raises
    ------
    ModelFileError
        As :func:`load_model`.
    """
    path = Path(path)
    _check_looks_like_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own, version-dependent types
        raise ModelFileError(
            f"{path} is corrupt or truncated ({error}); re-download or re-save the model"
        ) from error
    if METADATA_KEY not in metadata:
        raise ModelFileError(
            f"{path} is a safetensors file but not a napari-unet model (no {METADATA_KEY!r} "
            "metadata); save models with napari-unet"
        )
    try:
        description = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path} has unreadable model metadata ({error})") from error
    version = description.get("format_version") if isinstance(description, dict) else None
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version!r}, this napari-unet reads version "
            f"{FORMAT_VERSION}; update napari-unet or re-save the model with this version"
        )
    return description


def _check_looks_like_safetensors(path: Path) -> None:
    """Refuse missing files and pickles before any parser sees them."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        raise ModelFileError(f"{path} is too short to be a model file (truncated or empty)")
    (header_length,) = struct.unpack("<Q", head[:8])
    if header_length <= min(_MAX_HEADER_BYTES, path.stat().st_size - 8) and head[8:9] == b"{":
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


def _stored(tensor: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    # Only weights are narrowed; integer buffers (batch-norm counters) keep their type.
    return tensor.to(storage) if tensor.is_floating_point() else tensor


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            # Weights stored narrower (float16) come back as float32: ModelBundle.build
            # assigns these tensors to the network, which must compute in float32.
            return {key: _stored(handle.get_tensor(key), torch.float32) for key in handle.keys()}
    except Exception as error:
        raise ModelFileError(
            f"{path} has corrupt or truncated weights ({error}); re-download or re-save the model"
        ) from error


def _check_tensors_match(path: Path, config: UNetConfig, state_dict: dict) -> None:
    # The meta device builds the architecture without allocating its weights.
    with torch.device("meta"):
        expected = UNet(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        key
        for key in set(expected) & set(state_dict)
        if tuple(expected[key].shape) != tuple(state_dict[key].shape)
    )
    if missing or unexpected or wrong:
        details = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", wrong),
        ):
            if keys:
                shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
                details.append(f"{len(keys)} {label} ({shown})")
        raise ModelFileError(
            f"{path}: weights do not match the stored architecture: {'; '.join(details)}; "
            "the file is damaged or was edited, re-save it from the trained network"
        )


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
        If ``name`` is not a plain file name, is a built-in model's name, or is an
        existing user model and ``overwrite`` is false.
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
        raise InputError(
            f"a user model named {name!r} already exists ({path}); choose another name "
            "or overwrite it"
        )
    return save_model(replace(bundle, name=name), path)


def _model_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"*{SUFFIX}"))


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
    text = str(provenance.get("description") or provenance.get("notes") or "")
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

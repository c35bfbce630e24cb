"""Model files (one ``.safetensors`` file per model) and the registry of named models.

A model file holds everything needed to segment: the weights, the architecture
(:meth:`UNetConfig.to_dict`), the intensity normalisation spec, the class names,
the scale it was trained at (pixel size and object diameter, when known) and
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

import datetime
import json
import numbers
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

from napari_unet import __version__
from napari_unet.core import normalise
from napari_unet.core.calibration import PixelSize
from napari_unet.core.description import (
    FORMAT_VERSION,
    METADATA_KEY,
    SUFFIX,
    checked_description,
    default_class_names,
    parse_description,
    read_description,
    scale_json,
    scale_summary,
    short_description,
)
from napari_unet.core.description_fields import FieldProblem, one_line
from napari_unet.core.errors import (
    InputError,
    ModelFileError,
    OutputError,
)
from napari_unet.core.model import SMALL, UNet, UNetConfig
from napari_unet.core.modelfile_tensors import (
    as_stored,
    check_header,
    check_matches_architecture,
    read_tensors,
)
from napari_unet.core.registry import (
    MODELS_DIR_ENV,
    ModelEntry,
    builtin_models_dir,
    default_model_name,
    list_models,
    resolve_model,
    user_models_dir,
)
from napari_unet.core.safety import atomic_write, check_output

#: Storage types :func:`save_model` can write floating-point weights in.
STORAGE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    pixel_size : PixelSize or None
        Pixel size of the training images, when they recorded one.
    object_diameter : float or None
        Median equivalent diameter of the training annotations' objects, in pixels of the
        training images (:func:`~napari_unet.core.metrics.median_object_diameter`); None
        when unknown.
    """

    name: str
    config: UNetConfig
    state_dict: dict[str, torch.Tensor]
    normalisation: dict[str, Any] = field(default_factory=lambda: dict(normalise.DEFAULT_SPEC))
    class_names: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    pixel_size: PixelSize | None = None
    object_diameter: float | None = None

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = default_class_names(self.config.num_classes)
        if self.pixel_size is not None and not isinstance(self.pixel_size, PixelSize):
            raise InputError(
                f"a model's pixel size must be a PixelSize or None, got {self.pixel_size!r}"
            )
        if self.object_diameter is not None:
            if isinstance(self.object_diameter, bool) or not isinstance(
                self.object_diameter, numbers.Real
            ):
                raise InputError(
                    "a model's object diameter must be a number of pixels or None, got "
                    f"{self.object_diameter!r}"
                )
            # Its range is checked with the rest of the description when saving.
            self.object_diameter = float(self.object_diameter)

    @classmethod
    def from_network(
        cls,
        network: UNet,
        *,
        name: str,
        normalisation: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        provenance: dict[str, Any] | None = None,
        pixel_size: PixelSize | None = None,
        object_diameter: float | None = None,
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
            pixel_size=pixel_size,
            object_diameter=object_diameter,
        )

    @property
    def description(self) -> str:
        """One line for listings: the provenance's description or notes."""
        return short_description(self.provenance)

    @property
    def scale_summary(self) -> str:
        """The scale in a few words, ``"4 nm/px, objects ~22 px"`` ("" when unknown)."""
        return scale_summary(self.pixel_size, self.object_diameter)

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
    check_matches_architecture(bundle.config, tensors, path)
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
    scale = scale_json(bundle.pixel_size, bundle.object_diameter)
    if scale is not None:  # left out when unknown, as in files written before it existed
        description["scale"] = scale
    try:
        parsed = parse_description(description)
        description["normalisation"] = parsed.normalisation
        return json.dumps(description)
    except FieldProblem as problem:
        raise InputError(f"cannot save {path}: {problem}; nothing was saved") from None
    except (TypeError, ValueError, RecursionError) as error:
        raise InputError(
            f"cannot save {path}: the provenance must hold only JSON values (text, numbers, "
            f"true/false, null, lists and mappings with text keys) ({one_line(error)}); "
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
        stored = as_stored(value, storage).contiguous()
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
    parsed = checked_description(path)
    check_header(path, parsed.config)
    state_dict = read_tensors(path)
    return ModelBundle(
        name=parsed.name or path.stem,
        config=parsed.config,
        state_dict=state_dict,
        normalisation=parsed.normalisation,
        class_names=parsed.class_names,
        provenance=parsed.provenance,
        pixel_size=parsed.pixel_size,
        object_diameter=parsed.object_diameter,
    )


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

"""A model file's tensors: checked against the architecture, read without trusting them.

:func:`~napari_unet.core.modelfile.load_model` compares the tensor names, shapes and
type codes a safetensors header lists with the network the description builds
(:func:`check_header`) before any weight is read, then reads the weights as float32
CPU tensors and refuses NaN or infinite values (:func:`read_tensors`).
:func:`~napari_unet.core.modelfile.save_model` makes the same comparison before it
writes (:func:`check_matches_architecture`), so it never writes a file it cannot read
back. Every refusal is one :class:`~napari_unet.core.errors.ModelFileError` (or, when
saving, :class:`~napari_unet.core.errors.InputError`) line naming the file and tensor.

Separate from :mod:`~napari_unet.core.modelfile` (the bundle, saving, loading, user
models) because it is the part that reads a file's tensors through safetensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from napari_unet.core.description_fields import clipped, one_line
from napari_unet.core.errors import InputError, ModelFileError, UNetError
from napari_unet.core.model import UNet, UNetConfig


def check_matches_architecture(
    config: UNetConfig, tensors: dict[str, torch.Tensor], path: Path
) -> None:
    """Refuse (before anything is written) weights that ``config``'s network cannot load."""
    stored = {
        key: (tuple(value.shape), _CODE_OF_DTYPE.get(value.dtype, str(value.dtype)))
        for key, value in tensors.items()
    }
    mismatch = _architecture_mismatch(config, stored)
    if mismatch:
        raise InputError(
            f"cannot save {path}: the weights do not match the architecture ({mismatch}); "
            "nothing was saved"
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
            f"{path} {damage} ({one_line(error)}); re-download or re-save the model"
        ) from None


def as_stored(tensor: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    # Only weights are narrowed; integer buffers (batch-norm counters) keep their type.
    return tensor.to(storage) if tensor.is_floating_point() else tensor


#: safetensors type codes of the tensors load_model accepts (what save_model writes).
_FLOAT_CODES = frozenset({"F32", "F16"})


_INT_CODES = frozenset({"I64"})


_CODE_OF_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def check_header(path: Path, config: UNetConfig) -> None:
    """Compare the tensors listed in the header with ``config``, reading no weights.

    safetensors checks that the header's shapes and offsets add up to the file size, so
    once they match the architecture, reading the weights costs what the file holds.
    """
    with _opened(path, "is corrupt or truncated") as handle:
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
            shown = ", ".join(clipped(key, 60) for key in keys[:3])
            details.append(f"{len(keys)} {label} ({shown}{', ...' if len(keys) > 3 else ''})")
    return "; ".join(details)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors as CPU tensors (float32 weights); non-finite weights are refused."""
    state_dict = {}
    with _opened(path, "has corrupt or truncated weights") as handle:
        for key in handle.keys():
            # Weights stored narrower (float16) come back as float32: ModelBundle.build
            # assigns these tensors to the network, which must compute in float32.
            tensor = as_stored(handle.get_tensor(key), torch.float32)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ModelFileError(
                    f'model file {path}: tensor "{clipped(key, 60)}" contains NaN or '
                    "infinite values (the training that made it diverged?); use another model "
                    "or re-train it"
                )
            state_dict[key] = tensor
    return state_dict

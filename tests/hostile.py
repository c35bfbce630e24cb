"""Hostile and damaged model files, shared by the command-line and widget bad-input tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from napari_unet.core import modelfile
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model, save_model

TINY = UNetConfig(depth=2, base_width=4, padding="valid", norm="batch")


def model(folder: Path, name: str = "tiny.safetensors", **provenance) -> str:
    """A valid tiny model file (reused when a case needs it twice)."""
    if (folder / name).is_file():
        return str(folder / name)
    bundle = random_model(TINY, seed=2, name="tiny")
    bundle.provenance.update(provenance)
    return str(save_model(bundle, folder / name))


def raw_model(folder: Path, name: str, description: dict, tensors=None) -> str:
    """A safetensors file with our metadata key holding ``description`` as given."""
    tensors = tensors if tensors is not None else {"w": torch.zeros(1)}
    metadata = {modelfile.METADATA_KEY: json.dumps(description), "format_version": "1"}
    save_file(tensors, str(folder / name), metadata=metadata)
    return str(folder / name)


def description(**changes) -> dict:
    """A valid description of :data:`TINY`, with config fields or top-level keys changed."""
    described = {
        "format_version": modelfile.FORMAT_VERSION,
        "name": "bad",
        "config": TINY.to_dict(),
        "normalisation": {"method": "percentile", "low": 1.0, "high": 99.8},
        "class_names": ["background", "foreground"],
        "provenance": {},
    }
    for key, value in changes.items():
        if key in TINY.to_dict():
            described["config"][key] = value
        else:
            described[key] = value
    return described


def tiny_weights() -> dict[str, torch.Tensor]:
    return dict(random_model(TINY, seed=2).state_dict)


def nan_weights_model(folder: Path, name: str = "nan.safetensors") -> str:
    """A model whose first tensor is all NaN (a diverged training, saved by another tool)."""
    weights = tiny_weights()
    first = next(iter(weights))
    weights[first] = torch.full_like(weights[first], float("nan"))
    return raw_model(folder, name, description(), weights)


def recommending(folder: Path, name: str = "rec.safetensors", **postprocess) -> str:
    """A model whose recommended post-processing is ``postprocess``, as given."""
    return raw_model(
        folder, name, description(provenance={"postprocess": postprocess}), tiny_weights()
    )

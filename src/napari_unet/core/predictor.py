"""Turn a :class:`~napari_unet.core.model.UNet` into a lean, numpy-in numpy-out predictor.

Public API
----------
- :func:`make_predictor` ``(network, device="cpu", *, channels_last=True, amp=None) -> Predictor``
- :func:`get_predictor` ``(model, device="auto", *, whole_maps=False) -> Predictor``: the
  predictor of a model bundle, cached per bundle and device (what every run uses).
- :func:`normalisation_of` ``(model) -> dict``: the model's input normalisation.

The forward itself, lean on time and memory (BatchNorm folded, no concatenation,
row strips), is :class:`~napari_unet.core.leanforward.LeanForward`; see that module.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch

from napari_unet.core import normalise
from napari_unet.core.device import amp_context
from napari_unet.core.errors import InputError
from napari_unet.core.leanforward import LeanForward
from napari_unet.core.model import UNet, pick_device
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.tiling import TileGrid

#: ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 class probabilities.
Predictor = Callable[[np.ndarray], np.ndarray]

#: Largest tile input (pixels) worth computing one whole feature map at a time when a
#: plane is a single tile: a 700 px tile (a 512 px image) took 184-190 ms that way and
#: 262-265 ms in strips (SMALL preset, 2 threads); segmenting that image peaked 142 MB
#: above the process's resident memory, 42 MB in strips. Strips pay off where they bound
#: the memory of large or many tiles (410 MB with whole maps for 1212 px tiles, see
#: :data:`~napari_unet.core.leanforward.DEFAULT_STRIP_PIXELS`).
WHOLE_MAP_MAX_PIXELS = 720 * 720


def make_predictor(
    network: UNet,
    device: torch.device | str = "cpu",
    *,
    channels_last: bool = True,
    amp: bool | None = None,
    strip_rows: int | Literal["auto"] | None = "auto",
) -> Predictor:
    """A numpy predictor running ``network`` in eval mode with :class:`LeanForward`.

    Parameters
    ----------
    network : UNet
        Put in eval mode (on ``device``); snapshot of its weights taken now.
    device : torch.device or str
        Where to compute; inputs and outputs stay numpy on the CPU.
    channels_last : bool
        Use the NHWC memory format (faster with oneDNN on CPU and with tensor cores).
    amp : bool, optional
        Mixed precision (float16 autocast); default on for CUDA only, never on CPU.
    strip_rows : int, "auto" or None
        How :class:`LeanForward` computes: in row strips (bounded memory) or, with
        ``None``, one whole feature map at a time (faster for one small tile).

    Returns
    -------
    Predictor
        ``(B, C, h, w)`` float32 -> ``(B, K, h', w')`` float32 softmax probabilities.
    """
    device = torch.device(device)
    network.eval().to(device)
    use_amp = device.type == "cuda" if amp is None else bool(amp) and device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    forward = LeanForward(network, strip_rows=strip_rows).to(device, memory_format)

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
        x = x.contiguous(memory_format=memory_format)
        with torch.inference_mode(), amp_context(device, use_amp):
            probabilities = forward(x, softmax=True)
        return probabilities.contiguous().cpu().numpy()

    return predict


# Built networks cost a weight copy; keep one predictor per (bundle, device) while
# the bundle is alive. Bundles hash by identity, so a new bundle (e.g. after
# fine-tuning) gets a fresh network.
_PREDICTORS: weakref.WeakKeyDictionary[ModelBundle, dict[str, Predictor]] = (
    weakref.WeakKeyDictionary()
)


def get_predictor(
    model: ModelBundle | UNet, device: str = "auto", *, whole_maps: bool = False
) -> Predictor:
    """A predictor for ``model`` on ``device``, cached per model bundle and device.

    ``whole_maps`` computes one whole feature map at a time instead of row strips: faster
    for a single small tile (see :data:`~napari_unet.core.predictor.WHOLE_MAP_MAX_PIXELS`),
    unbounded memory for large ones.

    Raises
    ------
    InputError
        If ``device`` is unknown or not available.
    """
    try:
        torch_device = pick_device(device)
    except ValueError as error:
        raise InputError(str(error)) from error
    strip_rows = None if whole_maps else "auto"
    if isinstance(model, UNet):
        # make_predictor puts the network in eval mode; a caller's network may be
        # training, so give it its mode back (the predictor has its own weight snapshot).
        was_training = model.training
        predictor = make_predictor(model, torch_device, strip_rows=strip_rows)
        model.train(was_training)
        return predictor
    per_device = _PREDICTORS.setdefault(model, {})
    key = f"{torch_device}, whole maps" if whole_maps else str(torch_device)
    if key not in per_device:
        per_device[key] = make_predictor(
            model.build(torch_device), torch_device, strip_rows=strip_rows
        )
    return per_device[key]


def one_small_tile(grid: TileGrid) -> bool:
    """Whether the plane is one tile small enough to compute whole feature maps."""
    height, width = grid.input_shape
    return grid.total == 1 and height * width <= WHOLE_MAP_MAX_PIXELS


def normalisation_of(model: ModelBundle | UNet) -> dict[str, Any]:
    """The model's input normalisation (a bare UNet's ``normalisation`` attribute, or
    :data:`~napari_unet.core.normalise.DEFAULT_SPEC`)."""
    if isinstance(model, ModelBundle):
        return model.normalisation
    return normalise.validate_spec(getattr(model, "normalisation", None))


__all__ = [
    "Predictor",
    "get_predictor",
    "make_predictor",
    "normalisation_of",
    "one_small_tile",
]

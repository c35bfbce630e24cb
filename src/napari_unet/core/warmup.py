"""Pay the one-off costs of the first training step and prediction ahead of time.

The first training step of a process imports parts of torch lazily (the optimiser's
foreach kernels, ``torch.distributed`` helpers, autograd engines) and the first
prediction allocates oneDNN primitives. In a GUI those imports run on a worker thread
but hold the GIL for long stretches, so the viewer freezes for a few hundred
milliseconds at the start of the first run. :func:`exercise_core` runs one tiny
training step, one validation, one preview and one segmentation on a synthetic image,
so a front end can call it in the background when it opens, before the user clicks.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import torch

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.model import UNet, UNetConfig
from napari_unet.core.modelfile import ModelBundle
from napari_unet.core.segment import SegmentOptions, segment
from napari_unet.core.train import TrainConfig, Trainer

#: A network small enough that the warm-up costs well under a second of CPU.
TINY = UNetConfig(depth=1, base_width=2)

_DONE = threading.Event()
_LOCK = threading.Lock()


def synthetic_cells(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Two touching discs on a dark background.

    Returns
    -------
    image : (size, size) float32
    labels : (size, size) int32
        Dense instance labels: 0 background, 1 and 2 the discs.
    """
    rows, cols = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    centre = size / 2
    radius = size / 5
    for label, offset in ((1, -0.9 * radius), (2, 0.9 * radius)):  # overlapping: touching
        labels[(rows - centre) ** 2 + (cols - centre - offset) ** 2 < radius**2] = label
    image = (labels > 0).astype(np.float32) + np.float32(0.1)
    return image, labels


def tiny_model(seed: int = 0) -> ModelBundle:
    """A :data:`TINY` model with random weights drawn from its own generator.

    torch's global generator is left alone: the warm-up runs in a background thread
    while the user may start a seeded training run.
    """
    with torch.device("meta"):
        network = UNet(TINY)
    network.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_parameters()  # unit scale, zero shift, fresh statistics
        for name, parameter in network.named_parameters():
            if name.endswith("weight") and parameter.ndim > 1:
                parameter.normal_(0.0, 0.1, generator=generator)
            elif parameter.ndim == 1 and not _is_norm(network, name):
                parameter.zero_()
    return ModelBundle.from_network(network, name="warm-up")


def _is_norm(network: torch.nn.Module, parameter_name: str) -> bool:
    module = network.get_submodule(parameter_name.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.modules.batchnorm._BatchNorm)


def exercise_core(device: str = "cpu") -> None:
    """Run one tiny training step (with validation and preview) and one segmentation.

    Ends with a full garbage collection. Safe to call from any thread and any number of
    times: only the first call works, later calls return at once (or wait for a first
    call in progress). torch's and numpy's global random generators are not used.
    """
    with _LOCK:
        if _DONE.is_set():
            return
        image, labels = synthetic_cells()
        config = TrainConfig(
            steps=1,
            batch_size=1,
            patch_size=44,
            augment=AugmentConfig(),
            validation_every=1,
            validation_patches=1,
            preview_every=1,
            device=device,
        )
        trainer = Trainer(
            tiny_model(), [image], [labels], convention="dense", config=config,
            preview_image=image,
        )  # fmt: skip
        for _event in trainer.run():
            pass
        with torch.inference_mode():
            segment(trainer.last_bundle(), image, options=SegmentOptions(device=device))
        del trainer
        # A full garbage collection now, while nothing runs. Python starts one whenever the
        # objects that survived since the last one reach a quarter of those that exist; in
        # a napari session the first run often tipped that balance, and the collection
        # (150-260 ms with napari loaded) froze the viewer in the middle of it
        # (benchmarks/bench_responsiveness.py). Collecting here resets that count.
        gc.collect()
        _DONE.set()


def is_warm() -> bool:
    """Whether :func:`exercise_core` has completed in this process."""
    return _DONE.is_set()


__all__ = ["TINY", "exercise_core", "is_warm", "synthetic_cells", "tiny_model"]

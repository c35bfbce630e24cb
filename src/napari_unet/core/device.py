"""Which device runs a job, why, and mixed precision only where it is supported.

:func:`describe_device` gives the user one line ("CPU: no CUDA GPU found", "CUDA: <GPU
name>") that the widgets show for each job and the command line prints once.
:func:`amp_context` enters ``torch.autocast`` only on CUDA: within our ``torch>=2.1``
range, older releases reject ``torch.autocast("mps")`` and ``"cpu"`` with float16 even
when disabled, so elsewhere it is a plain ``nullcontext``.
"""

from __future__ import annotations

import contextlib
import platform
from contextlib import AbstractContextManager

import torch


def describe_device(device: torch.device | str, requested: str = "auto") -> str:
    """One line naming ``device`` and why it was chosen for a ``requested`` device.

    Parameters
    ----------
    device : torch.device or str
        The device a job runs on (as returned by ``pick_device(requested)``).
    requested : str
        What the user asked for: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``...

    Returns
    -------
    str
        E.g. ``"CUDA: NVIDIA A100 (cuda:0)"``, ``"MPS: Apple GPU"``, ``"CPU: no CUDA GPU
        found"`` or ``"CPU: requested"``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"CUDA: {torch.cuda.get_device_name(index)} (cuda:{index})"
    if device.type == "mps":
        return "MPS: Apple GPU"
    if requested == "cpu":
        return "CPU: requested"
    missing = "no CUDA GPU or Apple MPS found" if _is_apple_silicon() else "no CUDA GPU found"
    return f"CPU: {missing}"


def amp_context(device: torch.device | str, enabled: bool) -> AbstractContextManager:
    """``torch.autocast`` (float16) on CUDA when ``enabled``, else a no-op context."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _is_apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


__all__ = ["amp_context", "describe_device"]

"""Device descriptions and mixed precision only where the device supports it."""

from __future__ import annotations

import contextlib

import pytest
import torch

from napari_unet.core import device as device_module
from napari_unet.core.device import amp_context, describe_device


def test_cpu_says_why():
    assert describe_device("cpu", "cpu") == "CPU: requested"
    assert describe_device(torch.device("cpu"), "auto") in (
        "CPU: no CUDA GPU found",
        "CPU: no CUDA GPU or Apple MPS found",
    )


def test_apple_silicon_mentions_mps(monkeypatch):
    monkeypatch.setattr(device_module, "_is_apple_silicon", lambda: True)
    assert describe_device("cpu") == "CPU: no CUDA GPU or Apple MPS found"
    assert describe_device("mps") == "MPS: Apple GPU"


def test_cuda_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"Test GPU {index}")
    assert describe_device("cuda:1") == "CUDA: Test GPU 1 (cuda:1)"


@pytest.mark.parametrize("name", ["cpu", "mps"])
@pytest.mark.parametrize("enabled", [True, False])
def test_autocast_is_never_entered_off_cuda(name, enabled, monkeypatch):
    entered = []
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: entered.append(a) or None)
    assert isinstance(amp_context(name, enabled), contextlib.nullcontext)
    assert not entered


def test_autocast_on_cuda_only_when_enabled(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: calls.append((a, k)) or "ctx")
    assert amp_context("cuda", True) == "ctx"
    assert calls == [(("cuda",), {"dtype": torch.float16})]
    assert isinstance(amp_context("cuda", False), contextlib.nullcontext)

"""The napari manifest: every command importable and callable, and npe2 accepts it."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import napari_unet
from napari_unet import _sample_data

MANIFEST = Path(napari_unet.__file__).parent / "napari.yaml"


def _python_names() -> list[str]:
    manifest = yaml.safe_load(MANIFEST.read_text())
    return [command["python_name"] for command in manifest["contributions"]["commands"]]


@pytest.mark.parametrize("python_name", _python_names())
def test_every_python_name_imports_and_is_callable(python_name):
    module_name, _, attribute = python_name.partition(":")
    target = getattr(importlib.import_module(module_name), attribute)
    assert callable(target)


def test_npe2_validates_the_manifest():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    assert npe2 is not None, "npe2 is not installed in this environment"
    result = subprocess.run([npe2, "validate", "napari-unet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_widgets_are_in_the_segment_menu():
    manifest = yaml.safe_load(MANIFEST.read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    menu = manifest["contributions"]["menus"]["napari/layers/segment"]
    assert {commands[item["command"]] for item in menu} == {
        "napari_unet._widgets.segment:SegmentWidget",
        "napari_unet._widgets.finetune:FinetuneWidget",
    }


def test_sample_functions_return_plain_arrays_and_layer_data():
    stack, nuclei = _sample_data.em_stack(), _sample_data.nuclei_image()
    assert stack.shape == (4, 512, 512) and stack.dtype == np.uint8
    assert nuclei.shape == (520, 696) and nuclei.dtype == np.uint8
    [(data, kwargs, kind)] = _sample_data.em_stack_sample()
    assert kind == "image" and kwargs["name"] == "EM stack"
    np.testing.assert_array_equal(data, stack)
    dic = _sample_data.dic_image()
    assert dic.shape == (512, 640) and dic.dtype == np.uint8
    [(data, kwargs, kind)] = _sample_data.dic_sample()
    assert kind == "image" and kwargs["name"] == "DIC cells"
    np.testing.assert_array_equal(data, dic)


def test_every_sample_in_the_manifest_loads():
    manifest = yaml.safe_load(MANIFEST.read_text())
    commands = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    keys = {sample["key"] for sample in manifest["contributions"]["sample_data"]}
    assert keys == {"em_stack", "nuclei", "dic_cells"}
    for sample in manifest["contributions"]["sample_data"]:
        module, function = commands[sample["command"]].split(":")
        [(data, kwargs, kind)] = getattr(importlib.import_module(module), function)()
        assert kind == "image" and data.ndim >= 2 and kwargs["name"]


def test_sample_module_does_not_import_qt():
    code = (
        "import sys, napari_unet._sample_data as s; s.em_stack_sample(); "
        "bad = [m for m in ('qtpy', 'PyQt5', 'napari', 'magicgui') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

"""`napari-unet export`: a bioimage.io package from the command line."""

from __future__ import annotations

import zipfile

import pytest

from napari_unet.cli import main
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import random_model, save_model

pytest.importorskip("bioimageio.core")


def test_export_writes_a_package_and_never_replaces_one(tmp_path, capsys):
    model = save_model(random_model(UNetConfig(depth=2, base_width=4), name="tiny"),
                       tmp_path / "tiny.safetensors")  # fmt: skip
    target = tmp_path / "tiny.zip"
    assert main(["export", str(model), "-o", str(target)]) == 0
    err = capsys.readouterr().err
    assert f"wrote the bioimage.io package of tiny to {target}" in err
    with zipfile.ZipFile(target) as package:
        assert "rdf.yaml" in package.namelist()
    before = target.read_bytes()
    assert main(["export", str(model), "-o", str(target)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert target.read_bytes() == before


def test_export_refuses_a_bad_name_in_one_line(tmp_path, capsys):
    model = save_model(random_model(UNetConfig(depth=2, base_width=4)), tmp_path / "m.safetensors")
    assert main(["export", str(model), "-o", str(tmp_path / "m.yaml")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "bioimage.io packages are .zip files" in lines[0]

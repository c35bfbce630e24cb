"""`napari-unet train --annotation result --planes`: train on a corrected result (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core import train
from napari_unet.core.annotations import RESULT_BOUNDARY_BAND, annotations_from_labels
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model


@pytest.fixture
def result_stack(tmp_path):
    """A (3, 80, 90) image of two bright discs per plane and its segmentation result
    (ids 10 and 20, 0 background), as TIFFs; and a tiny base model file."""
    rows, cols = np.indices((80, 90))
    plane = np.zeros((80, 90), np.uint16)
    plane[(rows - 30) ** 2 + (cols - 30) ** 2 < 100] = 10
    plane[(rows - 50) ** 2 + (cols - 60) ** 2 < 100] = 20
    labels = np.stack([plane, plane[::-1], plane[:, ::-1]])
    image = (40 + 150 * (labels > 0)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", image, photometric="minisblack")
    tifffile.imwrite(tmp_path / "result.tif", labels, photometric="minisblack")
    base = save_model(
        random_model(UNetConfig(depth=2, base_width=4), name="tiny-base"),
        tmp_path / "tiny.safetensors",
    )
    return tmp_path / "stack.tif", tmp_path / "result.tif", base, labels


def _train(image, labels, base, output, *extra):
    return main(
        ["train", "--images", str(image), "--labels", str(labels), "--base", str(base),
         "--steps", "2", "--batch-size", "1", "--no-augment", "--device", "cpu",
         "-o", str(output), *extra]
    )  # fmt: skip


def test_train_on_one_plane_of_a_corrected_result(tmp_path, result_stack, monkeypatch, capsys):
    image, labels, base, result = result_stack
    received = []

    class Recording(train.Trainer):
        def __init__(self, base, images, annotations, **options):
            received.append((annotations, options["convention"]))
            super().__init__(base, images, annotations, **options)

    monkeypatch.setattr(train, "Trainer", Recording)
    output = tmp_path / "fixed.safetensors"

    status = _train(
        image, labels, base, output, "--annotation", "result", "--planes", "1",
        "--boundary-band", "0",
    )  # fmt: skip

    assert status == 0 and load_model(output).provenance["base"] == "tiny-base"
    [(annotations, convention)] = received
    assert convention == "sparse"
    [stack] = annotations
    assert (stack[[0, 2]] == 0).all()  # the other planes are not annotated
    np.testing.assert_array_equal(stack[1] == 1, result[1] == 0)
    assert set(np.unique(stack[1][result[1] > 0]).tolist()) == {2, 3}  # ids 10, 20
    np.testing.assert_array_equal(tifffile.imread(labels), result)  # the file is untouched
    assert "result.tif: 2 object(s) of 1 plane(s) as cells" in capsys.readouterr().err


def test_every_plane_of_a_result_by_default(tmp_path, result_stack, monkeypatch):
    image, labels, base, result = result_stack
    received, trainer = [], train.Trainer
    monkeypatch.setattr(
        train, "Trainer", lambda *args, **kw: received.append(args[2]) or trainer(*args, **kw)
    )
    output = tmp_path / "all.safetensors"
    assert _train(image, labels, base, output, "--annotation", "result") == 0
    # every plane annotated, except the default band around the result's boundaries
    default_band = annotations_from_labels(result, boundary_band=RESULT_BOUNDARY_BAND)
    np.testing.assert_array_equal(received[0][0], default_band)
    assert RESULT_BOUNDARY_BAND == 2  # the CLI's --boundary-band default, written out there
    assert (received[0][0][0] > 0).mean() > 0.8
    assert _train(image, labels, base, output, "--annotation", "result", "--boundary-band",
                  "0", "--overwrite") == 0  # fmt: skip
    assert (received[1][0] > 0).all()


def test_a_negative_boundary_band_is_refused(tmp_path, result_stack, capsys):
    image, labels, base, _ = result_stack
    output = tmp_path / "never.safetensors"
    extra = ("--annotation", "result", "--boundary-band", "-1")
    assert _train(image, labels, base, output, *extra) == 2
    assert "--boundary-band must be 0 px or more" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--annotation", "dense", "--planes", "1"], "use it with --annotation result"),
        (["--annotation", "result", "--planes", "1;2"], "--planes: '1;2' in '1;2' is not a plane"),
        (["--annotation", "result", "--planes", "0:5"], "--planes for result.tif: Planes '0:5'"),
        (["--annotation", "result", "--planes", "0/1"], "each item needs 1 part"),
    ],
)
def test_bad_planes_are_refused_in_one_line(tmp_path, result_stack, capsys, extra, words):
    image, labels, base, _ = result_stack
    output = tmp_path / "never.safetensors"

    assert _train(image, labels, base, output, *extra) == 2

    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def test_train_help_documents_the_plane_syntax(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--annotation result" in help_text and "'0:3' (planes 0 to 2)" in help_text

"""`napari-unet train` and `napari-unet sample`."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.model import UNetConfig
from napari_unet.core.modelfile import load_model, random_model, save_model


@pytest.fixture
def annotated_pair(tmp_path):
    rows, cols = np.indices((80, 90))
    labels = np.zeros((80, 90), np.uint16)
    labels[(rows - 30) ** 2 + (cols - 30) ** 2 < 100] = 1
    labels[(rows - 50) ** 2 + (cols - 60) ** 2 < 100] = 2
    image = (40 + 150 * (labels > 0)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return tmp_path / "image.tif", tmp_path / "labels.tif"


def test_train_fine_tunes_a_model_file(tmp_path, annotated_pair, capsys):
    image, labels = annotated_pair
    base = random_model(UNetConfig(depth=2, base_width=4), name="tiny-base")
    base_path = save_model(base, tmp_path / "tiny.safetensors")
    output = tmp_path / "tuned.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--annotation", "dense",
         "--base", str(base_path), "--steps", "3", "--device", "cpu", "-o", str(output)]
    )  # fmt: skip
    assert status == 0
    tuned = load_model(output)
    assert tuned.name == "tuned"
    assert tuned.provenance["base"] == "tiny-base"
    assert tuned.config == base.config
    assert "saved" in capsys.readouterr().err
    # it trained: some weight changed
    changed = [not np.array_equal(tuned.state_dict[k], base.state_dict[k]) for k in base.state_dict]
    assert any(changed)


def test_train_explains_bad_arguments(tmp_path, annotated_pair, capsys):
    image, labels = annotated_pair
    status = main(
        ["train", "--images", str(image), "--images", str(image), "--labels", str(labels),
         "--base", "scratch", "-o", str(tmp_path / "m.safetensors")]
    )  # fmt: skip
    assert status == 2
    assert "2 --images but 1 --labels" in capsys.readouterr().err
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--base", "scratch",
         "-o", str(tmp_path / "m.pt")]
    )  # fmt: skip
    assert status == 2
    assert "end in .safetensors" in capsys.readouterr().err
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((80, 90), np.uint16))
    status = main(
        ["train", "--images", str(image), "--labels", str(empty), "--base", "scratch",
         "--annotation", "sparse", "-o", str(tmp_path / "m.safetensors")]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert "nothing is annotated" in err and "Traceback" not in err


def test_sample_writes_the_bundled_images(tmp_path):
    assert main(["sample", "nuclei", "-o", str(tmp_path / "n.tif")]) == 0
    nuclei = tifffile.imread(tmp_path / "n.tif")
    assert nuclei.ndim == 2 and nuclei.dtype == np.uint8 and nuclei.std() > 0
    assert main(["sample", "em", "-o", str(tmp_path / "em.tif")]) == 0
    assert main(["sample", "dic", "-o", str(tmp_path / "dic.tif")]) == 0
    assert tifffile.imread(tmp_path / "dic.tif").shape == (512, 640)
    assert tifffile.imread(tmp_path / "em.tif").shape[1:] == (512, 512)


def test_a_three_plane_stack_is_written_and_read_back_as_a_stack(tmp_path):
    from napari_unet.core.io import read_image, write_image

    stack = np.arange(3 * 20 * 30, dtype=np.uint8).reshape(3, 20, 30)
    write_image(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif"), stack)


def test_a_diverging_training_keeps_the_last_good_weights_and_fails(
    tmp_path, annotated_pair, capsys
):
    image, labels = annotated_pair
    output = tmp_path / "diverged.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--annotation", "dense",
         "--base", "scratch", "--steps", "20", "--batch-size", "1", "--learning-rate", "1e30",
         "--device", "cpu", "-o", str(output)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1, err
    reason = re.search(r"training stopped: the (loss|weights|update) became .* at step (\d+)", err)
    assert reason, err
    saved = load_model(output)  # refuses non-finite weights, so loading proves they are finite
    assert saved.provenance["steps"] == int(reason.group(2)) - 1
    assert "Traceback" not in err


def test_train_records_the_transmitted_light_augmentation(tmp_path, annotated_pair):
    image, labels = annotated_pair
    base_path = save_model(
        random_model(UNetConfig(depth=2, base_width=4)), tmp_path / "b.safetensors"
    )
    output = tmp_path / "dic.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--annotation", "dense",
         "--base", str(base_path), "--steps", "2", "--device", "cpu", "--blur", "1.5",
         "--invert-contrast", "0.5", "-o", str(output)]
    )  # fmt: skip
    assert status == 0
    augment = load_model(output).provenance["training_config"]["augment"]
    assert (augment["blur"], augment["invert"]) == (1.5, 0.5)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--blur", "-1", "--blur must be in [0, 20] pixels, got -1.0"),
        ("--invert-contrast", "2", "--invert-contrast must be in [0, 1], got 2.0"),
    ],
)
def test_train_rejects_bad_augmentation_in_one_line(
    tmp_path, annotated_pair, capsys, option, value, message
):
    image, labels = annotated_pair
    output = tmp_path / "m.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--base", "scratch",
         option, value, "-o", str(output)]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not output.exists()


def _six_discs(tmp_path):
    """An image of six bright discs and its dense labels (enough cells to hold some out)."""
    rows, cols = np.indices((96, 140))
    labels = np.zeros((96, 140), np.uint16)
    for index, (r, c) in enumerate([(25, 25), (25, 70), (25, 115), (70, 25), (70, 70), (70, 115)]):
        labels[(rows - r) ** 2 + (cols - c) ** 2 < 120] = index + 1
    image = (40 + 150 * (labels > 0)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "six.tif", image)
    tifffile.imwrite(tmp_path / "six_labels.tif", labels)
    return tmp_path / "six.tif", tmp_path / "six_labels.tif"


def test_train_holds_out_cells_scores_them_and_says_so(tmp_path, capsys):
    image, labels = _six_discs(tmp_path)
    base_path = save_model(
        random_model(UNetConfig(depth=2, base_width=4)), tmp_path / "b.safetensors"
    )
    output = tmp_path / "scored.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--annotation", "dense",
         "--base", str(base_path), "--steps", "2", "--device", "cpu", "--holdout", "20%",
         "-o", str(output)]
    )  # fmt: skip
    assert status == 0
    held_out = load_model(output).provenance["holdout"]
    assert held_out["score_name"] == "F1@0.5" and 0.0 <= held_out["score"] <= 1.0
    err = capsys.readouterr().err
    assert "held-out F1@0.5" in err and "held out" in err


def test_train_rejects_a_bad_holdout_in_one_line(tmp_path, annotated_pair, capsys):
    image, labels = annotated_pair
    output = tmp_path / "m.safetensors"
    status = main(
        ["train", "--images", str(image), "--labels", str(labels), "--base", "scratch",
         "--holdout", "half", "-o", str(output)]
    )  # fmt: skip
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-unet: error: --holdout:") and len(err.strip().splitlines()) == 1
    assert not output.exists()

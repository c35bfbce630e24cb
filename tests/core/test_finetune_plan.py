"""What the Fine-tune dock computes, without a viewer: planes, resume reasons, status text."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.errors import AnnotationError
from napari_unet.core.finetune_plan import (
    annotated_planes,
    corrections_status,
    file_stem,
    new_run_reason,
    plane_words,
    step_status,
    suggested_model_name,
    validation_interval,
    with_note,
)


def test_only_annotated_planes_are_read_and_copied():
    image = np.arange(3 * 2 * 4 * 5, dtype=np.float32).reshape(3, 2, 4, 5)  # (z, c, y, x)
    annotations = np.zeros((3, 4, 5), np.uint16)
    annotations[0, 1, 1] = 2
    annotations[2, 0, 0] = 1
    read: list[int] = []

    def read_plane(k: int) -> np.ndarray:
        read.append(k)
        return image[k]

    images, labels, axis = annotated_planes(read_plane, annotations, (4, 5), 0)

    assert read == [0, 2]  # plane 1 is never read
    np.testing.assert_array_equal(images, image[[0, 2]])
    np.testing.assert_array_equal(labels, annotations[[0, 2]])
    assert axis == 1  # the planes' channel axis, after the new plane axis
    labels[0, 1, 1] = 9
    assert annotations[0, 1, 1] == 2  # copies: painting goes on during training


def test_nothing_annotated_is_refused_in_one_line():
    with pytest.raises(AnnotationError, match=r"^nothing is annotated: paint") as error:
        annotated_planes(lambda k: None, np.zeros((2, 4, 5), np.uint16), (4, 5), None)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("same", "reason"),
    [
        ((True, True, True), None),
        ((False, True, True), "new run: the base model changed, and a run keeps its network"),
        ((True, False, True), "new run: the image or its channels changed"),
        ((True, True, False), "new run: another annotations layer was chosen"),
    ],
)
def test_a_run_resumes_only_with_its_base_input_and_annotations(same, reason):
    base, inputs, annotations = same
    found = new_run_reason(
        same_base=base, same_input=inputs, same_annotations=annotations, had_progress=False
    )
    assert found == reason if reason is None else found.startswith(reason)
    if reason is not None:
        kept = new_run_reason(
            same_base=base, same_input=inputs, same_annotations=annotations, had_progress=True
        )
        assert kept.endswith("(the last run's model stays in the Segment widget)")


def test_status_lines():
    assert step_status(3, 200, 0.41234, 12.4) == "step 3/200  loss 0.4123  eta 12 s"
    last = step_status(200, 200, 0.1, 0.0, "held-out F1@0.5 0.840", "resumed at step 40")
    assert last.startswith("step 200/200  loss 0.1000  held-out F1@0.5 0.840  re-tuning")
    assert last.endswith("\nresumed at step 40")
    assert with_note("done", "") == "done"
    assert plane_words(("t", "z", "y", "x"), (2, 5)) == "t=2, z=5"
    assert plane_words(("0", "1", "2"), (1,)) == "1"  # napari's default axis labels


def test_corrections_status_says_what_was_made_and_what_does_not_fit():
    status = corrections_status(
        5, plane="1", plane_count=3, image_name="crop", image_shape=(50, 128),
        result_shape=(3, 96, 128),
    )  # fmt: skip
    assert status.startswith("corrections for plane 1: 5 cells")
    assert status.endswith(
        "note: image 'crop' has shape (50, 128), the result (3, 96, 128): choose the image "
        "it segments"
    )
    whole = corrections_status(
        0, plane=None, plane_count=1, image_name=None, image_shape=None, result_shape=(8, 8)
    )
    assert whole.startswith("corrections for the image: 0 cells")
    assert whole.endswith("note: choose the image it segments in 'image'")


def test_names_and_intervals():
    assert suggested_model_name("cells (2).tif") == "cells--2-.tif-finetuned"
    assert suggested_model_name("***") == "model-finetuned"
    assert file_stem("a/b: c.") == "a-b--c" and file_stem("..") == "model"
    assert [validation_interval(n) for n in (1, 8, 40, 1000)] == [1, 2, 10, 25]

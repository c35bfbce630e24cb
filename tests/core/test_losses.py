"""Weighted pixel-wise cross-entropy: hand-computed values, ignore handling, torch parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from napari_unet.core.errors import InputError
from napari_unet.core.losses import weighted_cross_entropy


def two_by_two():
    """One 2x2 image, 2 classes; logits chosen so each pixel's softmax is easy by hand."""
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])
    # p(class 1) = 1/2, 3/4 / 3/4, 1/2
    labels = torch.tensor([[[0, 1], [0, -1]]])
    weights = torch.tensor([[[1.0, 2.0], [3.0, 5.0]]])
    return logits, labels, weights


def test_hand_computed_two_by_two():
    logits, labels, weights = two_by_two()
    # pixel (0,0): label 0, p=1/2, w=1; (0,1): label 1, p=3/4, w=2;
    # (1,0): label 0, p=1/4, w=3; (1,1): ignored (its weight 5 must not count).
    expected = (1 * math.log(2) + 2 * math.log(4 / 3) + 3 * math.log(4)) / (1 + 2 + 3)
    loss = weighted_cross_entropy(logits, labels, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_normalize_by_pixels_divides_by_annotated_count():
    logits, labels, weights = two_by_two()
    expected = (1 * math.log(2) + 2 * math.log(4 / 3) + 3 * math.log(4)) / 3
    loss = weighted_cross_entropy(logits, labels, weights, normalize="pixels")
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ignored_and_zero_weight_pixels_get_zero_gradient():
    logits = torch.randn(2, 3, 5, 6, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 6))
    labels[0, :2] = -1
    weights = torch.rand(2, 5, 6) + 0.5
    weights[1, :, :3] = 0.0
    weighted_cross_entropy(logits, labels, weights).backward()
    grad = logits.grad.abs().sum(dim=1)  # (B, H, W)
    assert torch.all(grad[0, :2] == 0)
    assert torch.all(grad[1, :, :3] == 0)
    assert torch.all(grad[0, 2:] > 0)
    assert torch.all(grad[1, :, 3:] > 0)


def test_ignored_pixels_do_not_change_the_loss():
    logits = torch.randn(1, 2, 4, 4)
    labels = torch.randint(0, 2, (1, 4, 4))
    labels[0, 0] = -1
    weights = torch.rand(1, 4, 4) + 0.1
    reference = weighted_cross_entropy(logits, labels, weights)
    logits[0, :, 0] = torch.tensor([[50.0], [-50.0]])  # wildly wrong, but ignored
    weights[0, 0] = 100.0
    assert weighted_cross_entropy(logits, labels, weights).item() == pytest.approx(
        reference.item(), rel=1e-6
    )


def test_weights_scale_each_pixels_contribution():
    logits = torch.randn(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    per_pixel = F.cross_entropy(logits, labels, reduction="none")[0, 0]
    loss = weighted_cross_entropy(logits, labels, torch.tensor([[[3.0, 1.0]]]))
    expected = (3 * per_pixel[0] + per_pixel[1]) / 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # A global scale of the weights is normalised away (only with normalize="weights").
    doubled = weighted_cross_entropy(logits, labels, torch.tensor([[[6.0, 2.0]]]))
    assert doubled.item() == pytest.approx(loss.item(), rel=1e-6)
    summed = weighted_cross_entropy(
        logits, labels, torch.tensor([[[6.0, 2.0]]]), normalize="pixels"
    )
    assert summed.item() == pytest.approx(
        (6 * per_pixel[0] + 2 * per_pixel[1]).item() / 2, rel=1e-6
    )


def test_equals_torch_cross_entropy_with_uniform_weights():
    logits = torch.randn(3, 4, 7, 5)
    labels = torch.randint(0, 4, (3, 7, 5))
    labels[labels == 3] = -1
    ours = weighted_cross_entropy(logits, labels, torch.ones(3, 7, 5))
    theirs = F.cross_entropy(logits, labels, ignore_index=-1)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_nothing_annotated_is_zero_with_a_gradient():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    all_ignored = torch.full((1, 3, 3), -1)
    loss = weighted_cross_entropy(logits, all_ignored, torch.ones(1, 3, 3))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)
    zero_weights = weighted_cross_entropy(
        logits, torch.zeros(1, 3, 3, dtype=torch.long), torch.zeros(1, 3, 3), normalize="pixels"
    )
    assert zero_weights.item() == 0.0


@pytest.mark.parametrize(
    ("labels", "weights", "message"),
    [
        (torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 4, 3), "weights must have shape"),
        (torch.zeros(1, 3, 4, dtype=torch.long), torch.ones(1, 3, 3), "labels must have shape"),
        (torch.zeros(1, 3, 3), torch.ones(1, 3, 3), "labels must be an integer tensor"),
        (torch.full((1, 3, 3), 2), torch.ones(1, 3, 3), r"class indices in \[0, 2\)"),
        (torch.full((1, 3, 3), -2), torch.ones(1, 3, 3), "or -1 for unannotated"),
        (torch.zeros(1, 3, 3, dtype=torch.long), -torch.ones(1, 3, 3), "weights must be >= 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(labels, weights, message):
    with pytest.raises(InputError, match=message):
        weighted_cross_entropy(torch.zeros(1, 2, 3, 3), labels, weights)


def test_bad_logits_and_normalize_raise_clear_errors():
    labels, weights = torch.zeros(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3)
    with pytest.raises(InputError, match=r"logits must be a float tensor of shape \(B, K, H, W\)"):
        weighted_cross_entropy(torch.zeros(2, 3, 3), labels, weights)
    with pytest.raises(InputError, match="normalize must be 'weights' or 'pixels'"):
        weighted_cross_entropy(torch.zeros(1, 2, 3, 3), labels, weights, normalize="mean")

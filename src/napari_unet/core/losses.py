"""The U-Net paper's training energy: pixel-wise softmax cross-entropy weighted by w(x).

The paper (eq. 1) sums ``w(x) * log p_l(x)(x)`` over pixels. We divide that sum by
the sum of the weights, i.e. report the *weighted mean* of the per-pixel
cross-entropy. Why:

- a scribble of 50 painted pixels and a fully annotated image give losses (and
  gradient steps) of the same scale, so one learning rate suits both; a plain sum
  would grow with the amount painted;
- scaling all weights by a constant (a larger border weight ``w0``) does not change the
  effective learning rate, only the balance between pixels;
- it is torch's own convention for weighted cross-entropy (``F.cross_entropy`` with
  class weights divides by the sum of the weights), and with uniform weights it is
  exactly ``F.cross_entropy(..., ignore_index=-1)``.

``normalize="pixels"`` divides by the number of annotated pixels instead, for when the
absolute size of the weights should act as a step size.

Unannotated pixels (label ``ignore_index`` or weight 0) contribute nothing and get a
zero gradient. When nothing is annotated the loss is 0 -- never NaN -- and still has a
(zero) gradient, so a training step on an empty batch is harmless.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InputError

Normalize = Literal["weights", "pixels"]


def weighted_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    *,
    ignore_index: int = -1,
    normalize: Normalize = "weights",
) -> torch.Tensor:
    """Weighted mean of the pixel-wise softmax cross-entropy, ignoring unannotated pixels.

    Parameters
    ----------
    logits : (B, K, H, W) float tensor
        Class scores (before softmax).
    labels : (B, H, W) integer tensor
        True class in ``[0, K)``, or ``ignore_index`` for unannotated pixels.
    weights : (B, H, W) float tensor
        Non-negative weight ``w(x)`` of each pixel (paper eq. 2).
    ignore_index : int
        Label of unannotated pixels.
    normalize : {"weights", "pixels"}
        Divide the weighted sum by the sum of the weights of annotated pixels (default)
        or by their number; see the module docstring for why.

    Returns
    -------
    () tensor
        The loss; 0 (with a gradient) when no pixel is annotated.

    Raises
    ------
    InputError
        On mismatched shapes, non-integer labels, labels outside ``[0, K)`` other than
        ``ignore_index``, or negative weights.
    """
    _check_inputs(logits, labels, weights, ignore_index, normalize)
    annotated = labels != ignore_index
    # Any valid class index will do for ignored pixels: their term is masked out below.
    safe_labels = torch.where(annotated, labels, 0).long()
    pixel_loss = F.cross_entropy(logits, safe_labels, reduction="none")  # (B, H, W)
    pixel_weights = torch.where(annotated, weights.to(pixel_loss.dtype), 0.0)
    # where(), not a product, so an infinite loss on an ignored pixel cannot make NaN.
    total = torch.where(pixel_weights > 0, pixel_weights * pixel_loss, 0.0).sum()
    if normalize == "weights":
        denominator = pixel_weights.sum()
    else:
        denominator = (annotated & (pixel_weights > 0)).sum().to(total.dtype)
    # Nothing annotated: total is an exact 0 that still depends on the logits.
    return total / denominator.clamp_min(torch.finfo(total.dtype).tiny)


def _check_inputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    ignore_index: int,
    normalize: str,
) -> None:
    """Raise :class:`InputError` naming the first problem with the loss inputs."""
    if normalize not in ("weights", "pixels"):
        raise InputError(f"normalize must be 'weights' or 'pixels', got {normalize!r}")
    if logits.ndim != 4 or not logits.is_floating_point():
        raise InputError(
            f"logits must be a float tensor of shape (B, K, H, W), got {logits.dtype} "
            f"of shape {tuple(logits.shape)}"
        )
    expected = (logits.shape[0], *logits.shape[-2:])
    for name, tensor in (("labels", labels), ("weights", weights)):
        if tuple(tensor.shape) != expected:
            raise InputError(
                f"{name} must have shape (B, H, W) = {expected} to match logits "
                f"{tuple(logits.shape)}, got {tuple(tensor.shape)}; crop the targets to "
                "the network output"
            )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"labels must be an integer tensor, got {labels.dtype}")
    num_classes = logits.shape[1]
    annotated = labels[labels != ignore_index]
    if annotated.numel() and (annotated.min() < 0 or annotated.max() >= num_classes):
        raise InputError(
            f"labels must be class indices in [0, {num_classes}) or {ignore_index} for "
            f"unannotated pixels, found values from {int(annotated.min())} to "
            f"{int(annotated.max())}"
        )
    if weights.numel() and weights.min() < 0:
        raise InputError(f"weights must be >= 0, found {float(weights.min())}")


__all__ = ["weighted_cross_entropy"]

"""Supervised losses by name. Every loss is `fn(pred, target) -> scalar` with pred logits
(B, K, *spatial) or (B, K) and targets as described in `ndunet.training.metrics`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[[Tensor, Tensor], Tensor]


def _class_target(pred: Tensor, target: Tensor) -> Tensor:
    if target.dim() == pred.dim() and target.shape[1] == 1:
        target = target[:, 0]  # (B, *spatial)
    return target.long()


def cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    """Softmax cross-entropy with integer labels (B,) or (B, *spatial) (channel dim 1 allowed)."""
    return F.cross_entropy(pred, _class_target(pred, target))


def bce(pred: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy on logits; target 0/1 of pred's shape (or without the channel dim)."""
    if target.dim() == pred.dim() - 1:
        target = target.unsqueeze(1)  # (B, 1, *spatial)
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype))


def soft_dice(pred: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """1 - soft Dice over softmax (sigmoid for one channel) probabilities, mean over classes.
    Milletari et al. 2016, https://arxiv.org/abs/1606.04797 (V-Net)."""
    k = pred.shape[1]
    if k == 1:
        prob = torch.sigmoid(pred)
        onehot = (target.unsqueeze(1) if target.dim() == pred.dim() - 1 else target).to(pred.dtype)
    else:
        prob = pred.softmax(dim=1)
        labels = _class_target(pred, target)
        onehot = F.one_hot(labels, k).movedim(-1, 1).to(pred.dtype)  # (B, K, *spatial)
    dims = (0, *range(2, pred.dim()))
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + eps) / (denom + eps)).mean()


def dice_ce(pred: Tensor, target: Tensor) -> Tensor:
    """Soft Dice + cross-entropy (BCE for one channel), the usual segmentation pairing."""
    return soft_dice(pred, target) + (
        bce(pred, target) if pred.shape[1] == 1 else cross_entropy(pred, target)
    )


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error."""
    return F.mse_loss(pred, target.to(pred.dtype))


def l1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error."""
    return F.l1_loss(pred, target.to(pred.dtype))


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "bce": bce,
    "dice": soft_dice,
    "dice_ce": dice_ce,
    "mse": mse,
    "l1": l1,
}


def get_loss(spec: str | LossFn) -> tuple[LossFn, str]:
    """(loss function, name to record) from a name or a callable."""
    if callable(spec):
        return spec, getattr(spec, "__qualname__", type(spec).__name__)
    if not isinstance(spec, str) or spec not in LOSSES:
        raise ValueError(
            f"loss={spec!r}; valid names: {', '.join(LOSSES)} (or a callable(pred, target))"
        )
    return LOSSES[spec], spec

"""Per-sample regression losses and their timestep weighting."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossName = Literal["l2", "l1", "huber"]
LOSSES: tuple[str, ...] = ("l2", "l1", "huber")
Weighting = Literal["none", "min_snr"]
WEIGHTINGS: tuple[str, ...] = ("none", "min_snr")


def check_loss(loss: str, weighting: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss_weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")


def per_sample_loss(
    output: Tensor,
    target: Tensor,
    loss: str = "l2",
    huber_delta: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Mean elementwise loss over every non-batch axis: shape ``(B,)``; with ``mask`` (0/1,
    broadcast to ``output``) the mean over the masked-in elements (0 where there are none)."""
    check_loss(loss, "none")
    if loss == "l2":
        elem = F.mse_loss(output, target, reduction="none")
    elif loss == "l1":
        elem = F.l1_loss(output, target, reduction="none")
    else:
        elem = F.huber_loss(output, target, reduction="none", delta=huber_delta)
    if mask is not None:
        m = mask.to(elem.dtype).expand_as(elem).reshape(elem.shape[0], -1)  # (B, C * prod(spatial))
        total = (elem.reshape(elem.shape[0], -1) * m).sum(dim=1)
        return total / m.sum(dim=1).clamp(min=1.0)
    return elem.reshape(elem.shape[0], -1).mean(dim=1)  # (B,)


def min_snr_weight(snr: Tensor, prediction: str, gamma: float = 5.0) -> Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023, https://arxiv.org/abs/2303.09556).

    The x0-space weight ``min(snr, gamma)`` expressed for each parameterization: an eps error
    equals an x0 error times ``sqrt(snr)``, a v error times ``sqrt(snr + 1)``.
    """
    clipped = torch.clamp(snr, max=gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":
        return clipped / snr
    if prediction == "v":
        return clipped / (snr + 1.0)
    raise ValueError(f"prediction must be one of ['eps', 'x0', 'v'], got {prediction!r}")

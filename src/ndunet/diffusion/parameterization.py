"""What the network predicts (eps, x0 or v) and the exact conversions between them.

With ``alpha = sqrt(alpha_bar_t)``, ``sigma = sqrt(1 - alpha_bar_t)`` and
``x_t = alpha * x0 + sigma * eps`` (so ``alpha**2 + sigma**2 == 1``):
``v = alpha * eps - sigma * x0`` (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512),
``x0 = alpha * x_t - sigma * v`` and ``eps = sigma * x_t + alpha * v``.
``alpha``/``sigma`` are floats or tensors broadcastable against ``x_t``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v")

Coef = float | Tensor


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {list(PREDICTIONS)}, got {prediction!r}")


def eps_to_x0(x_t: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    return (x_t - sigma * eps) / alpha


def x0_to_eps(x_t: Tensor, x0: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    return (x_t - alpha * x0) / sigma


def v_to_x0(x_t: Tensor, v: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    return alpha * x_t - sigma * v


def v_to_eps(x_t: Tensor, v: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    return sigma * x_t + alpha * v


def to_v(x0: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    return alpha * eps - sigma * x0


def target(prediction: str, x0: Tensor, eps: Tensor, alpha: Coef, sigma: Coef) -> Tensor:
    """The regression target of a ``prediction``-type network for ``x_t = alpha x0 + sigma eps``."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    return to_v(x0, eps, alpha, sigma)


def to_x0_eps(
    prediction: str, output: Tensor, x_t: Tensor, alpha: Coef, sigma: Coef
) -> tuple[Tensor, Tensor]:
    """Turn a network ``output`` of type ``prediction`` into ``(x0_hat, eps_hat)``."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps_to_x0(x_t, output, alpha, sigma), output
    if prediction == "x0":
        return output, x0_to_eps(x_t, output, alpha, sigma)
    return v_to_x0(x_t, output, alpha, sigma), v_to_eps(x_t, output, alpha, sigma)


def dynamic_threshold(x0: Tensor, percentile: float, max_value: float = 1.0) -> Tensor:
    """Imagen dynamic thresholding (https://arxiv.org/abs/2205.11487, sec. 2.3).

    Per sample, ``s`` = the ``percentile`` quantile of ``|x0|`` (at least ``max_value``); x0 is
    clipped to ``[-s, s]`` and divided by ``s / max_value``.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile!r}")
    flat = x0.detach().abs().reshape(x0.shape[0], -1).float()  # (B, C * prod(spatial))
    s = torch.quantile(flat, percentile, dim=1).clamp(min=max_value).to(x0.dtype)
    s = s.view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1)
    return torch.maximum(torch.minimum(x0, s), -s) / s * max_value

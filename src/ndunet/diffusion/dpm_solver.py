"""DPM-Solver++(2M) and its SDE variant: multistep solvers in the data prediction, written in
``lambda = log(alpha / sigma)`` on the variance-preserving state (shared sampler signature)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .stepping import (
    Callback,
    Denoiser,
    PostStep,
    abar_at,
    finish_step,
    log_snr,
    noise_like,
    steps_of,
)


def dpmpp_2m(
    denoise: Denoiser,
    x: Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    post_step: PostStep | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, algorithm 2).

    Multistep second order in the data prediction, in ``lambda = log(alpha / sigma)``; the first
    step and the final jump to clean data are first order. Deterministic (``eta`` unused).
    """
    x0_prev: Tensor | None = None
    h_prev = 0.0
    for i, t, t_next in steps_of(timesteps, progress):
        x0, _ = denoise(x, t)
        if t_next < 0:  # sigma_next == 0: the first-order step lands exactly on x0_hat
            x = x0
        else:
            a_t, a_n = abar_at(alphas_cumprod, t), abar_at(alphas_cumprod, t_next)
            h = log_snr(a_n) - log_snr(a_t)
            d = x0
            if x0_prev is not None and math.isfinite(h_prev):  # from pure noise: first order
                r = h_prev / h
                d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
            ratio = math.sqrt((1.0 - a_n) / (1.0 - a_t))  # sigma_next / sigma_t
            x = ratio * x - math.sqrt(a_n) * math.expm1(-h) * d
            h_prev = h
        x0_prev = x0
        x = finish_step(x, i, t, t_next, x0, post_step, callback)
    return x


def dpmpp_2m_sde(
    denoise: Denoiser,
    x: Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    post_step: PostStep | None = None,
    callback: Callback | None = None,
    progress: bool = False,
) -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, appendix; the
    "midpoint" form of k-diffusion's ``sample_dpmpp_2m_sde`` and diffusers).

    With ``h = lambda_next - lambda`` and ``c = 1 - exp(-(1 + eta) h)``::

        x' = sigma'/sigma exp(-eta h) x + alpha' c D + alpha' c / (2 r) (D - D_prev)
             + sigma' sqrt(1 - exp(-2 eta h)) z,      r = h_prev / h

    ``eta = 1`` is the paper's SDE solver, ``eta = 0`` reduces to :func:`dpmpp_2m`'s first-order
    step with a midpoint correction. The first step and the jump to clean data are first order.
    """
    x0_prev: Tensor | None = None
    h_prev = 0.0
    for i, t, t_next in steps_of(timesteps, progress):
        x0, _ = denoise(x, t)
        if t_next < 0:
            x = x0
        else:
            a_t, a_n = abar_at(alphas_cumprod, t), abar_at(alphas_cumprod, t_next)
            h = log_snr(a_n) - log_snr(a_t)
            eta_h = eta * h if eta else 0.0  # 0 * inf from pure noise would be nan
            c = -math.expm1(-h - eta_h)
            ratio = math.sqrt((1.0 - a_n) / (1.0 - a_t)) * math.exp(-eta_h)
            x = ratio * x + math.sqrt(a_n) * c * x0
            if x0_prev is not None and math.isfinite(h_prev):
                x = x + (math.sqrt(a_n) * c * 0.5 * h / h_prev) * (x0 - x0_prev)
            if eta_h > 0:
                std = math.sqrt(1.0 - a_n) * math.sqrt(-math.expm1(-2.0 * eta_h))
                x = x + std * noise_like(x, generator)
            h_prev = h
        x0_prev = x0
        x = finish_step(x, i, t, t_next, x0, post_step, callback)
    return x

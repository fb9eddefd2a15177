"""Heun's second-order sampler (EDM, Karras et al. 2022, https://arxiv.org/abs/2206.00364,
algorithm 2), with the optional "churn" (off by default), in the shared sampler signature."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ndunet._checks import check_choice

from .stepping import (
    Callback,
    Denoiser,
    PostStep,
    Step,
    abar_at,
    flow_time,
    nearest_index,
    noise_like,
    ve_sigma,
    walk,
)

Space = Literal["sigma", "flow"]
MAX_CHURN = math.sqrt(2.0) - 1.0  # EDM caps gamma_i so the noise level at most doubles its variance


def heun(
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
    space: Space = "sigma",
) -> Tensor:
    """An Euler step, then the trapezoid correction with the derivative at the step's end; the
    last step (to clean data) is Euler's. Two network evaluations per step, one for the last.

    ``space`` is the ODE's coordinates: "sigma" integrates ``dx/dsigma = eps_hat`` on ``x /
    alpha`` (EDM's choice, s(t) = 1, sigma(t) = t), "flow" ``dx_t/dt = v_hat`` on rectified
    flow's ``x_t = (1 - t) x0 + t eps`` (bounded t, so a step from pure noise is well defined;
    in "sigma" such a step is Euler's). ``eta`` is EDM's churn per step, ``gamma_i = min(eta,
    sqrt(2) - 1)`` (= S_churn / steps, with S_tmin = 0, S_tmax = inf, S_noise = 1): noise first
    raises sigma to ``sigma (1 + gamma_i)``, snapped to the nearest level of the table.
    """
    check_choice("space", space, ("sigma", "flow"))
    gamma = min(float(eta), MAX_CHURN)

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        t_step, a_t = s.t, s.a_t
        if gamma > 0 and a_t > 0:
            s_hat = ve_sigma(a_t) * (1.0 + gamma)
            t_hat = nearest_index(alphas_cumprod, 1.0 / (1.0 + s_hat**2))
            a_hat = abar_at(alphas_cumprod, t_hat)
            if a_hat < a_t:  # forward-noise x from level t to level t_hat (more noise)
                x = math.sqrt(a_hat / a_t) * x + math.sqrt(1.0 - a_hat / a_t) * noise_like(
                    x, generator
                )
                t_step, a_t = t_hat, a_hat
        x0, eps = denoise(x, t_step)
        a_n = s.a_n
        x_next = math.sqrt(a_n) * x0 + math.sqrt(1.0 - a_n) * eps  # Euler, in any coordinates
        if s.t_next >= 0:
            x0_2, eps_2 = denoise(x_next, s.t_next)
            x_next = _corrected(a_t, a_n, x0, eps, x0_2, eps_2, space, x_next)
        return x_next, x0

    return walk(step, x, timesteps, alphas_cumprod, post_step, callback, progress)


def _corrected(
    a_t: float,
    a_n: float,
    x0: Tensor,
    eps: Tensor,
    x0_2: Tensor,
    eps_2: Tensor,
    space: str,
    euler: Tensor,
) -> Tensor:
    """The trapezoid step from level ``a_t`` to ``a_n``, as a variance-preserving state."""
    if space == "sigma":
        s, s_n = ve_sigma(a_t), ve_sigma(a_n)
        if math.isinf(s):
            return euler
        # x/alpha: x0 + s eps + (s_n - s)(eps + eps_2)/2, rearranged so no large terms cancel
        x_ve = x0 + s_n * eps + 0.5 * (s_n - s) * (eps_2 - eps)
        return math.sqrt(a_n) * x_ve
    tau, tau_n = flow_time(a_t), flow_time(a_n)
    # x_t/(alpha+sigma) = (1-tau) x0 + tau eps; velocity v = eps - x0 at each end
    z = (1.0 - tau_n) * x0 + tau_n * eps + 0.5 * (tau_n - tau) * ((eps_2 - x0_2) - (eps - x0))
    return z * (math.sqrt(a_n) + math.sqrt(1.0 - a_n))

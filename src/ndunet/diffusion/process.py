"""The forward (noising) process and its posterior, as pure functions of a Schedule."""

from __future__ import annotations

from torch import Tensor

from .schedules import Schedule


def q_sample(schedule: Schedule, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """Draw ``x_t ~ q(x_t | x0) = N(sqrt(abar_t) x0, (1 - abar_t) I)`` with the given ``noise``."""
    ac = schedule.alphas_cumprod
    alpha = schedule.gather(ac.sqrt(), t, x0)
    sigma = schedule.gather((1.0 - ac).sqrt(), t, x0)
    return alpha * x0 + sigma * noise


def q_posterior(schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q(x_{t-1} | x_t, x0)`` (DDPM eq. 6-7); variance shaped (B, 1, ...)."""
    ac = schedule.alphas_cumprod
    ac_prev = schedule.alphas_cumprod_prev
    denom = 1.0 - ac
    coef_x0 = schedule.betas * ac_prev.sqrt() / denom
    coef_xt = schedule.alphas.sqrt() * (1.0 - ac_prev) / denom
    mean = schedule.gather(coef_x0, t, x_t) * x0 + schedule.gather(coef_xt, t, x_t) * x_t
    return mean, schedule.gather(schedule.posterior_variance, t, x_t)

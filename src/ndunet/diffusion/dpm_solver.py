"""DPM-Solver++(2M) and its SDE variant: multistep solvers in the data prediction, written in
``lambda = log(alpha / sigma)`` on the variance-preserving state (shared sampler signature)."""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Generator, Tensor

from .stepping import Denoiser, Step, StepFn, log_snr, noise_like, sampler

# update(x, x0_hat, x0_prev, h, h_prev, s) -> x_next: one step of a 2M solver, x0_prev None
# when the step is first order
Update = Callable[[Tensor, Tensor, "Tensor | None", float, float, Step], Tensor]


def _multistep(denoise: Denoiser, update: Update) -> StepFn:
    """The bookkeeping both 2M solvers share: the previous data prediction and log-SNR step, a
    first-order step at the start and from pure noise, and the jump to clean data onto x0_hat."""
    x0_prev: Tensor | None = None
    h_prev = 0.0

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        nonlocal x0_prev, h_prev
        x0, _ = denoise(x, s.t)
        if s.t_next < 0:  # sigma_next == 0: the first-order step lands exactly on x0_hat
            x = x0
        else:
            h = log_snr(s.a_n) - log_snr(s.a_t)
            second = x0_prev is not None and math.isfinite(h_prev)  # from pure noise: first order
            x = update(x, x0, x0_prev if second else None, h, h_prev, s)
            h_prev = h
        x0_prev = x0
        return x, x0

    return step


@sampler()
def dpmpp_2m(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, algorithm 2).

    Multistep second order in the data prediction, in ``lambda = log(alpha / sigma)``; the first
    step and the final jump to clean data are first order. Deterministic (``eta`` unused).
    """

    def update(
        x: Tensor, x0: Tensor, x0_prev: Tensor | None, h: float, h_prev: float, s: Step
    ) -> Tensor:
        d = x0
        if x0_prev is not None:
            r = h_prev / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        ratio = math.sqrt((1.0 - s.a_n) / (1.0 - s.a_t))  # sigma_next / sigma_t
        return ratio * x - math.sqrt(s.a_n) * math.expm1(-h) * d

    return _multistep(denoise, update)


@sampler(default_eta=1.0)
def dpmpp_2m_sde(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, https://arxiv.org/abs/2211.01095, appendix; the
    "midpoint" form of k-diffusion's ``sample_dpmpp_2m_sde`` and diffusers).

    With ``h = lambda_next - lambda`` and ``c = 1 - exp(-(1 + eta) h)``::

        x' = sigma'/sigma exp(-eta h) x + alpha' c D + alpha' c / (2 r) (D - D_prev)
             + sigma' sqrt(1 - exp(-2 eta h)) z,      r = h_prev / h

    ``eta = 1`` is the paper's SDE solver, ``eta = 0`` reduces to :func:`dpmpp_2m`'s first-order
    step with a midpoint correction. The first step and the jump to clean data are first order.
    """

    def update(
        x: Tensor, x0: Tensor, x0_prev: Tensor | None, h: float, h_prev: float, s: Step
    ) -> Tensor:
        a_n = s.a_n
        eta_h = eta * h if eta else 0.0  # 0 * inf from pure noise would be nan
        c = -math.expm1(-h - eta_h)
        ratio = math.sqrt((1.0 - a_n) / (1.0 - s.a_t)) * math.exp(-eta_h)
        x = ratio * x + math.sqrt(a_n) * c * x0
        if x0_prev is not None:
            x = x + (math.sqrt(a_n) * c * 0.5 * h / h_prev) * (x0 - x0_prev)
        if eta_h > 0:
            std = math.sqrt(1.0 - a_n) * math.sqrt(-math.expm1(-2.0 * eta_h))
            x = x + std * noise_like(x, generator)
        return x

    return _multistep(denoise, update)

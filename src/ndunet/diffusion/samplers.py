"""Samplers: pure functions with one shared signature, and their registry.

``sampler(denoise, x, timesteps, alphas_cumprod, *, eta, generator, post_step, callback,
progress) -> x0``. ``denoise(x_t, t) -> (x0_hat, eps_hat)`` is the trained model seen through its
process and parameterization (the Diffusion wrapper builds it: guidance and clipping happen
there). ``timesteps`` is a strictly decreasing list of indices into ``alphas_cumprod``; each
iteration moves from ``timesteps[i]`` to ``timesteps[i + 1]``, the last one to clean data
(written ``t = -1``, ``alpha_bar = 1``). The state is variance-preserving whatever the process
(see :mod:`ndunet.diffusion.stepping`). ``post_step(x, t_next)`` may replace the state after each
step (inpainting uses it); ``callback(i, t, x_next, x0_hat)`` observes the trajectory. ``eta`` is
the stochasticity of the samplers that have one (:data:`ETA_DEFAULTS`); the others refuse it.

Each sampler is written as its step rule; :func:`ndunet.diffusion.stepping.sampler` gives it the
shared signature and loop (Heun, which adds ``space``, calls :func:`~.stepping.walk` itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch import Generator, Tensor

from ndunet._checks import lookup

from .dpm_solver import dpmpp_2m, dpmpp_2m_sde
from .heun import heun
from .stepping import Denoiser, Step, StepFn, noise_like, sample_timesteps, sampler, ve_sigma
from .unipc import unipc

SamplerName = Literal["ddpm", "ddim", "dpm++2m", "euler", "euler_a", "heun", "dpm++2m_sde", "unipc"]

__all__ = [
    "ETA_DEFAULTS",
    "SAMPLERS",
    "SamplerName",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "euler",
    "euler_ancestral",
    "evaluations",
    "get_sampler",
    "heun",
    "sample_timesteps",
    "unipc",
]


@sampler()
def ddpm(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """Ancestral sampling from the posterior q(x_prev | x_t, x0_hat) (DDPM, Ho et al. 2020).

    With fewer steps than the schedule, the skipped steps merge into one transition with
    ``beta = 1 - abar_t / abar_prev`` (respacing, Nichol & Dhariwal 2021). ``eta`` is unused.
    """

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        x0, _ = denoise(x, s.t)
        a_t, a_p = s.a_t, s.a_n
        beta = 1.0 - a_t / a_p
        mean = (math.sqrt(a_p) * beta / (1.0 - a_t)) * x0 + (
            math.sqrt(1.0 - beta) * (1.0 - a_p) / (1.0 - a_t)
        ) * x
        var = beta * (1.0 - a_p) / (1.0 - a_t)
        return (mean + math.sqrt(var) * noise_like(x, generator) if var > 0 else mean), x0

    return step


@sampler()
def ddim(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """DDIM (Song et al. 2021, https://arxiv.org/abs/2010.02502, eq. 12); eta=0 is deterministic,
    eta=1 matches ancestral DDPM in distribution."""

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        x0, eps = denoise(x, s.t)
        a_t, a_p = s.a_t, s.a_n
        sigma = eta * math.sqrt((1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p))
        x = math.sqrt(a_p) * x0 + math.sqrt(max(1.0 - a_p - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise_like(x, generator)
        return x, x0

    return step


@sampler()
def euler(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """Euler's method on the probability-flow ODE, first order (``eta`` unused).

    The step is the same in every coordinates the processes use: in rectified-flow coordinates
    ``x_t' = x_t + (t' - t) v_hat`` (Liu et al. 2022, https://arxiv.org/abs/2209.03003), in EDM's
    ``x' = x + (sigma' - sigma) (x - D) / sigma`` (Karras et al. 2022, eq. 1): both land on
    ``alpha' x0_hat + sigma' eps_hat``, which is also deterministic DDIM.
    """

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        x0, eps = denoise(x, s.t)
        return math.sqrt(s.a_n) * x0 + math.sqrt(1.0 - s.a_n) * eps, x0

    return step


@sampler(default_eta=1.0)
def euler_ancestral(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: Generator | None
) -> StepFn:
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``): an Euler step down to
    ``sigma_down``, then fresh noise ``sigma_up``, with ``sigma_up = min(sigma_next, eta *
    sqrt(sigma_next**2 (sigma**2 - sigma_next**2) / sigma**2))`` in EDM's sigma = sigma/alpha.

    For ``eta <= 1`` it equals DDIM with the same ``eta`` step for step (the ancestral step is
    DDPM's posterior variance); ``eta = 0`` is :func:`euler`.
    """

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        x0, eps = denoise(x, s.t)
        sig, sig_n = ve_sigma(s.a_t), ve_sigma(s.a_n)
        ratio = 1.0 if math.isinf(sig) else (sig**2 - sig_n**2) / sig**2
        s_up = min(sig_n, eta * sig_n * math.sqrt(max(ratio, 0.0)))
        s_down = math.sqrt(max(sig_n**2 - s_up**2, 0.0))
        x_ve = x0 + s_down * eps  # x / alpha after the deterministic part
        if s_up > 0:
            x_ve = x_ve + s_up * noise_like(x, generator)
        return math.sqrt(s.a_n) * x_ve, x0

    return step


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpm++2m": dpmpp_2m,
    "euler": euler,
    "euler_a": euler_ancestral,
    "heun": heun,
    "dpm++2m_sde": dpmpp_2m_sde,
    "unipc": unipc,
}

# Samplers with a stochasticity knob and its default (DDIM's eta, the ancestral/SDE noise
# fraction, Heun's per-step churn); every other sampler refuses eta != 0.
ETA_DEFAULTS: dict[str, float] = {"ddim": 0.0, "euler_a": 1.0, "dpm++2m_sde": 1.0, "heun": 0.0}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name``; the error lists the valid names."""
    return lookup(SAMPLERS, name, "sampler")


def evaluations(name: str, steps: int) -> int:
    """Network evaluations of ``steps`` steps of sampler ``name`` (Heun: two per step, one for
    the last step to clean data); classifier-free guidance doubles the batch, not the count."""
    get_sampler(name)
    return 2 * steps - 1 if name == "heun" else steps

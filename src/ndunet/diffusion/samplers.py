"""Samplers: pure functions with one shared signature.

``sampler(denoise, x, timesteps, alphas_cumprod, *, eta, generator, post_step, callback,
progress) -> x0``. ``denoise(x_t, t) -> (x0_hat, eps_hat)`` is the trained model seen through its
parameterization (the Diffusion wrapper builds it: guidance and clipping happen there).
``timesteps`` is a strictly decreasing list of steps; each iteration moves from ``timesteps[i]`` to
``timesteps[i + 1]``, the last one to clean data (written ``t = -1``, ``alpha_bar = 1``).
``post_step(x, t_next)`` may replace the state after each step (inpainting uses it);
``callback(i, t, x_next, x0_hat)`` observes the trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

Denoiser = Callable[[Tensor, int], tuple[Tensor, Tensor]]
PostStep = Callable[[Tensor, int], Tensor]
Callback = Callable[[int, int, Tensor, Tensor], None]
SamplerName = Literal["ddpm", "ddim", "dpm++2m"]
Spacing = Literal["trailing", "linspace", "leading"]
SPACINGS: tuple[str, ...] = ("trailing", "linspace", "leading")


def sample_timesteps(timesteps: int, steps: int, spacing: str = "trailing") -> list[int]:
    """``steps`` decreasing steps out of ``range(timesteps)``.

    "trailing" always starts at ``timesteps - 1`` (Lin et al. 2023,
    https://arxiv.org/abs/2305.08891, table 2); "linspace" spans both ends; "leading" is DDIM's.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be an int in [1, {timesteps}] (timesteps), got {steps!r}")
    if spacing == "trailing":
        ts = [round(timesteps - i * timesteps / steps) - 1 for i in range(steps)]
    elif spacing == "linspace":
        if steps == 1:
            return [timesteps - 1]
        ts = [round((timesteps - 1) * (1 - i / (steps - 1))) for i in range(steps)]
    elif spacing == "leading":
        ts = [(steps - 1 - i) * (timesteps // steps) for i in range(steps)]
    else:
        raise ValueError(f"timestep_spacing must be one of {list(SPACINGS)}, got {spacing!r}")
    return ts


def _abar(alphas_cumprod: Tensor, t: int) -> float:
    return 1.0 if t < 0 else float(alphas_cumprod[t])


def _steps(timesteps: Sequence[int], progress: bool):  # yields (i, t, t_next)
    pairs = [
        (i, t, timesteps[i + 1] if i + 1 < len(timesteps) else -1) for i, t in enumerate(timesteps)
    ]
    if progress:
        from tqdm.auto import tqdm

        return tqdm(pairs, desc="sampling", leave=False)
    return pairs


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ddpm(
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
    """Ancestral sampling from the posterior q(x_prev | x_t, x0_hat) (DDPM, Ho et al. 2020).

    With fewer steps than the schedule, the skipped steps merge into one transition with
    ``beta = 1 - abar_t / abar_prev`` (respacing, Nichol & Dhariwal 2021). ``eta`` is unused.
    """
    for i, t, t_next in _steps(timesteps, progress):
        x0, _ = denoise(x, t)
        a_t, a_p = _abar(alphas_cumprod, t), _abar(alphas_cumprod, t_next)
        beta = 1.0 - a_t / a_p
        mean = (math.sqrt(a_p) * beta / (1.0 - a_t)) * x0 + (
            math.sqrt(1.0 - beta) * (1.0 - a_p) / (1.0 - a_t)
        ) * x
        var = beta * (1.0 - a_p) / (1.0 - a_t)
        x = mean + math.sqrt(var) * _noise(x, generator) if var > 0 else mean
        if post_step is not None:
            x = post_step(x, t_next)
        if callback is not None:
            callback(i, t, x, x0)
    return x


def ddim(
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
    """DDIM (Song et al. 2021, https://arxiv.org/abs/2010.02502, eq. 12); eta=0 is deterministic,
    eta=1 matches ancestral DDPM in distribution."""
    for i, t, t_next in _steps(timesteps, progress):
        x0, eps = denoise(x, t)
        a_t, a_p = _abar(alphas_cumprod, t), _abar(alphas_cumprod, t_next)
        sigma = eta * math.sqrt((1.0 - a_p) / (1.0 - a_t) * (1.0 - a_t / a_p))
        x = math.sqrt(a_p) * x0 + math.sqrt(max(1.0 - a_p - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _noise(x, generator)
        if post_step is not None:
            x = post_step(x, t_next)
        if callback is not None:
            callback(i, t, x, x0)
    return x


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
    for i, t, t_next in _steps(timesteps, progress):
        x0, _ = denoise(x, t)
        if t_next < 0:  # sigma_next == 0: the first-order step lands exactly on x0_hat
            x = x0
        else:
            a_t, a_n = _abar(alphas_cumprod, t), _abar(alphas_cumprod, t_next)
            lam_t = 0.5 * math.log(a_t / (1.0 - a_t))
            lam_n = 0.5 * math.log(a_n / (1.0 - a_n))
            h = lam_n - lam_t
            if x0_prev is None:
                d = x0
            else:
                r = h_prev / h
                d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
            ratio = math.sqrt((1.0 - a_n) / (1.0 - a_t))  # sigma_next / sigma_t
            x = ratio * x - math.sqrt(a_n) * math.expm1(-h) * d
            h_prev = h
        x0_prev = x0
        if post_step is not None:
            x = post_step(x, t_next)
        if callback is not None:
            callback(i, t, x, x0)
    return x


SAMPLERS: dict[str, Callable[..., Tensor]] = {"ddpm": ddpm, "ddim": ddim, "dpm++2m": dpmpp_2m}


def get_sampler(name: str) -> Callable[..., Tensor]:
    """The sampler function called ``name``; the error lists the valid names."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]

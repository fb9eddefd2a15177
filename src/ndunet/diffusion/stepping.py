"""What every sampler shares: the denoiser contract, the step loop, noise levels of a table.

A sampler walks a strictly decreasing list of indices into an ``alphas_cumprod`` table (float64,
index 0 the least noise); the step after the last index is clean data (``t = -1``,
``alpha_bar = 1``). The state ``x`` is always variance-preserving, ``x = sqrt(abar) x0 +
sqrt(1 - abar) eps``, whatever the process (a flow or EDM run hands the samplers its own grid
rescaled this way), so one update rule serves every process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from ndunet.rng import randn

Denoiser = Callable[[Tensor, int], tuple[Tensor, Tensor]]
PostStep = Callable[[Tensor, int], Tensor]
Callback = Callable[[int, int, Tensor, Tensor], None]
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


def abar_at(alphas_cumprod: Tensor, t: int) -> float:
    """``alpha_bar`` at index ``t`` (1 for ``t < 0``: clean data)."""
    return 1.0 if t < 0 else float(alphas_cumprod[t])


def log_snr(abar: float) -> float:
    """``lambda = log(alpha / sigma)``; -inf at pure noise, +inf at clean data."""
    if abar <= 0.0:
        return -math.inf
    if abar >= 1.0:
        return math.inf
    return 0.5 * math.log(abar / (1.0 - abar))


def ve_sigma(abar: float) -> float:
    """EDM's noise level ``sigma / alpha`` of a VP level (inf at pure noise, 0 when clean)."""
    return math.inf if abar <= 0.0 else math.sqrt(max(1.0 - abar, 0.0) / abar)


def flow_time(abar: float) -> float:
    """The rectified-flow time ``sigma / (alpha + sigma)`` of a VP level (1: noise, 0: clean)."""
    a, s = math.sqrt(max(abar, 0.0)), math.sqrt(max(1.0 - abar, 0.0))
    return s / (a + s)


def steps_of(timesteps: Sequence[int], progress: bool) -> Iterable[tuple[int, int, int]]:
    """``(i, t, t_next)`` for each step, ``t_next = -1`` after the last (a tqdm bar if asked)."""
    pairs = [
        (i, t, timesteps[i + 1] if i + 1 < len(timesteps) else -1) for i, t in enumerate(timesteps)
    ]
    if progress:
        from tqdm.auto import tqdm

        return tqdm(pairs, desc="sampling", leave=False)
    return pairs


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` from ``generator``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def nearest_index(alphas_cumprod: Tensor, abar: float) -> int:
    """The table index whose level is nearest ``abar`` in log-SNR."""
    table = alphas_cumprod.double().clamp(1e-300, 1 - 1e-16)
    lam = 0.5 * torch.log(table / (1 - table))  # (len,)
    target = log_snr(min(max(abar, 1e-300), 1 - 1e-16))
    return int(torch.argmin((lam - target).abs()))


def finish_step(
    x: Tensor,
    i: int,
    t: int,
    t_next: int,
    x0: Tensor,
    post_step: PostStep | None,
    callback: Callback | None,
) -> Tensor:
    """The hooks every sampler runs after a step: ``post_step`` may replace the state,
    ``callback`` observes it."""
    if post_step is not None:
        x = post_step(x, t_next)
    if callback is not None:
        callback(i, t, x, x0)
    return x

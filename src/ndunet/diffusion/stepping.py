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
from typing import Literal, NamedTuple

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


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x`` from ``generator``."""
    return randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def nearest_index(alphas_cumprod: Tensor, abar: float) -> int:
    """The table index whose level is nearest ``abar`` in log-SNR."""
    table = alphas_cumprod.double().clamp(1e-300, 1 - 1e-16)
    lam = 0.5 * torch.log(table / (1 - table))  # (len,)
    target = log_snr(min(max(abar, 1e-300), 1 - 1e-16))
    return int(torch.argmin((lam - target).abs()))


class Step(NamedTuple):
    """One step of a sampler's walk: from table index ``t`` to ``t_next`` (-1: clean data)."""

    i: int
    t: int
    t_next: int
    a_t: float  # alpha_bar at t
    a_n: float  # alpha_bar at t_next (1 for clean data)


StepFn = Callable[[Tensor, Step], tuple[Tensor, Tensor]]
Start = Callable[[Denoiser, Tensor, float, torch.Generator | None], StepFn]
Sampler = Callable[..., Tensor]


def levels(timesteps: Sequence[int], alphas_cumprod: Tensor, progress: bool) -> Iterable[Step]:
    """The :class:`Step` of each index of ``timesteps``, the last one to clean data (a tqdm bar
    if asked)."""
    ends = [*timesteps[1:], -1]
    steps = [
        Step(i, t, t_next, abar_at(alphas_cumprod, t), abar_at(alphas_cumprod, t_next))
        for i, (t, t_next) in enumerate(zip(timesteps, ends))
    ]
    if progress:
        from tqdm.auto import tqdm

        return tqdm(steps, desc="sampling", leave=False)
    return steps


def walk(
    step: StepFn,
    x: Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: Tensor,
    post_step: PostStep | None,
    callback: Callback | None,
    progress: bool,
) -> Tensor:
    """``x`` after ``step(x, s) -> (x_next, x0_hat)`` at every level, with the hooks every sampler
    runs after a step: ``post_step`` may replace the state, ``callback`` observes it."""
    for s in levels(timesteps, alphas_cumprod, progress):
        x, x0 = step(x, s)
        if post_step is not None:
            x = post_step(x, s.t_next)
        if callback is not None:
            callback(s.i, s.t, x, x0)
    return x


def sampler(default_eta: float = 0.0) -> Callable[[Start], Sampler]:
    """Decorator: a sampler with the shared signature (see :mod:`ndunet.diffusion.samplers`)
    made from ``start(denoise, alphas_cumprod, eta, generator) -> step``, which begins one run;
    its ``step(x, s) -> (x_next, x0_hat)`` may keep state from step to step. The sampler takes
    ``start``'s name and docstring; ``default_eta`` is its ``eta`` default."""

    def make(start: Start) -> Sampler:
        def run(
            denoise: Denoiser,
            x: Tensor,
            timesteps: Sequence[int],
            alphas_cumprod: Tensor,
            *,
            eta: float = default_eta,
            generator: torch.Generator | None = None,
            post_step: PostStep | None = None,
            callback: Callback | None = None,
            progress: bool = False,
        ) -> Tensor:
            step = start(denoise, alphas_cumprod, eta, generator)
            return walk(step, x, timesteps, alphas_cumprod, post_step, callback, progress)

        # not functools.wraps: its __wrapped__ would make inspect.signature report start's
        run.__name__, run.__qualname__ = start.__name__, start.__qualname__
        run.__doc__, run.__module__ = start.__doc__, start.__module__
        return run

    return make

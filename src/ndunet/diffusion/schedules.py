"""Noise schedules: pure functions returning float64 betas, and the Schedule that derives the rest.

Index convention (DDPM): step ``t`` in ``[0, timesteps)`` has ``alphas_cumprod[t] = prod_{i<=t}
(1 - betas[i])``; ``x_t = sqrt(alphas_cumprod[t]) * x0 + sqrt(1 - alphas_cumprod[t]) * eps``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

ScheduleName = Literal["linear", "linear_unscaled", "scaled_linear", "cosine", "sigmoid"]

MAX_BETA = 0.999  # Nichol & Dhariwal 2021 clip, avoids a singular last step


def _check_timesteps(timesteps: int) -> None:
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be an int >= 1, got {timesteps!r}")


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM linear betas (https://arxiv.org/abs/2006.11239).

    ``beta_start``/``beta_end`` are given for 1000 steps and rescaled by ``1000 / timesteps`` so
    any step count spans the same noise range (https://arxiv.org/abs/2102.09672); clipped to 0.999.
    This is what ``schedule="linear"`` uses: with 300 steps the betas run 3.3e-4..0.067. For the
    values exactly as given at any step count (the seed project's schedule) use
    ``schedule="linear_unscaled"`` (:func:`linear_unscaled_betas`).
    """
    _check_timesteps(timesteps)
    scale = 1000.0 / timesteps
    betas = torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def linear_unscaled_betas(
    timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> Tensor:
    """``linspace(beta_start, beta_end, timesteps)`` exactly, at any step count: no rescaling.

    The seed project's schedule (and DDPM's at 1000 steps, where both linear options agree).
    With fewer steps the last step leaves more signal than ``"linear"`` does (at 300 steps
    alpha_bar_T is 0.048 instead of 3.4e-5), so samples start from a less pure noise.
    """
    _check_timesteps(timesteps)
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64).clamp(max=MAX_BETA)


def scaled_linear_betas(
    timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012
) -> Tensor:
    """Linear in sqrt(beta) (the latent-diffusion schedule); endpoints rescaled like linear."""
    _check_timesteps(timesteps)
    scale = 1000.0 / timesteps
    root = torch.linspace(
        math.sqrt(scale * beta_start), math.sqrt(scale * beta_end), timesteps, dtype=torch.float64
    )
    return (root**2).clamp(max=MAX_BETA)


def _betas_from_cumprod(alpha_bar: Tensor) -> Tensor:
    # alpha_bar has timesteps + 1 entries, alpha_bar[0] == 1 (clean data).
    return (1.0 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=0.0, max=MAX_BETA)


def cosine_betas(timesteps: int, s: float = 0.008) -> Tensor:
    """Cosine schedule, Nichol & Dhariwal 2021 (https://arxiv.org/abs/2102.09672), eq. 17."""
    _check_timesteps(timesteps)
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return _betas_from_cumprod(f / f[0])


def sigmoid_betas(
    timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0
) -> Tensor:
    """Sigmoid schedule (Jabri et al. 2022, https://arxiv.org/abs/2212.11972; Chen 2023)."""
    _check_timesteps(timesteps)
    u = torch.linspace(0.0, 1.0, timesteps + 1, dtype=torch.float64)
    v_start = 1.0 / (1.0 + math.exp(-start / tau))
    v_end = 1.0 / (1.0 + math.exp(-end / tau))
    alpha_bar = (v_end - torch.sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)
    return _betas_from_cumprod(alpha_bar)


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "linear": linear_betas,
    "linear_unscaled": linear_unscaled_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}


def get_betas(name: str, timesteps: int, **kwargs: float) -> Tensor:
    """Betas of the schedule called ``name`` (float64, shape ``(timesteps,)``)."""
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](timesteps, **kwargs)


@dataclass(frozen=True)
class Schedule:
    """All per-step quantities of a discrete schedule, float64 on the CPU (indexed by step t)."""

    betas: Tensor
    alphas_cumprod: Tensor = field(init=False, repr=False)

    @classmethod
    def from_name(cls, name: str, timesteps: int, **kwargs: float) -> Schedule:
        return cls(get_betas(name, timesteps, **kwargs))

    def __post_init__(self) -> None:
        b = self.betas
        if not isinstance(b, Tensor) or b.dim() != 1 or b.numel() < 1:
            raise ValueError("betas must be a non-empty 1-D tensor")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        b = b.detach().to("cpu", torch.float64)
        object.__setattr__(self, "betas", b)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - b, dim=0))

    @property
    def timesteps(self) -> int:
        return self.betas.numel()

    @property
    def alphas(self) -> Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod_prev(self) -> Tensor:
        """alpha_bar at t - 1, with alpha_bar(-1) = 1 (clean data)."""
        ac = self.alphas_cumprod
        return torch.cat([ac.new_ones(1), ac[:-1]])

    @property
    def snr(self) -> Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) per step."""
        ac = self.alphas_cumprod
        return ac / (1.0 - ac)

    @property
    def posterior_variance(self) -> Tensor:
        """Variance of q(x_{t-1} | x_t, x0) (DDPM eq. 7); zero at t = 0."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    def gather(self, values: Tensor, t: Tensor, like: Tensor) -> Tensor:
        """``values[t]`` shaped ``(B, 1, ..., 1)`` to broadcast against ``like``, in its dtype."""
        # the table travels to t's device, not t to the host: reading a CUDA t on the host
        # would stall the GPU every training step (a small pageable copy does not)
        table = values if values.device == t.device else values.to(t.device, non_blocking=True)
        out = table[t.detach().long()]  # (B,) in float64
        return out.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))

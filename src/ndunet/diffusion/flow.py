"""Flow matching / rectified flow (Lipman et al. 2023, https://arxiv.org/abs/2210.02747; Liu et
al. 2022, https://arxiv.org/abs/2209.03003) as pure functions, for data of any shape.

The linear interpolant ``x_t = (1 - t) x0 + t eps`` runs from data (t = 0) to noise (t = 1); the
network learns the velocity ``v = dx_t/dt = eps - x0``. Training times are logit-normal or
uniform; a shift moves them (and the sampling grid) towards noise for large inputs (Esser et al.
2024, SD3, https://arxiv.org/abs/2403.03206, sec. 5.3.2), by the number of voxels alone.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ndunet import rng
from ndunet._checks import check_choice, check_float, check_int

TimeSampling = Literal["logit_normal", "uniform"]
TIME_SAMPLINGS: tuple[str, ...] = ("logit_normal", "uniform")
TIME_SCALE = 1000.0  # the network sees 1000 t, the range a sinusoidal step embedding expects


def interpolate(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 - t) x0 + t eps``; ``t`` (B,) broadcast over the other axes."""
    tt = t.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1)
    return (1.0 - tt) * x0 + tt * noise


def velocity(x0: Tensor, noise: Tensor) -> Tensor:
    """The regression target ``v = eps - x0``."""
    return noise - x0


def velocity_to_x0_eps(v: Tensor, x_t: Tensor, t: float | Tensor) -> tuple[Tensor, Tensor]:
    """``(x0_hat, eps_hat) = (x_t - t v, x_t + (1 - t) v)``, exact inverses of the interpolant."""
    return x_t - t * v, x_t + (1.0 - t) * v


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3's shift ``s t / (1 + (s - 1) t)``: the same log-SNR moved by ``-2 log s``
    (s > 1: more time at high noise); t = 0 and t = 1 stay fixed."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(voxels: int, base_voxels: int | None, shift: float = 1.0) -> float:
    """``shift * sqrt(voxels / base_voxels)`` (SD3 eq. 23 with ``m/n`` voxel counts, so a 64^3
    volume and a 512^2 image shift alike); ``base_voxels=None``: ``shift`` as it is."""
    check_float("shift", shift, 0.0, low_open=True)
    if base_voxels is None:
        return float(shift)
    check_int("voxels", voxels, 1)
    check_int("base_voxels", base_voxels, 1)
    return float(shift) * math.sqrt(voxels / base_voxels)


def sample_time(
    batch: int,
    mode: str = "logit_normal",
    mean: float = 0.0,
    std: float = 1.0,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training times in (0, 1), shape (batch,): ``sigmoid(N(mean, std^2))`` (SD3's logit-normal,
    sec. 3.1) or uniform."""
    check_choice("time_sampling", mode, TIME_SAMPLINGS)
    if mode == "uniform":
        return rng.rand((batch,), generator=generator, device=device)
    z = rng.randn((batch,), generator=generator, device=device)
    return torch.sigmoid(mean + std * z)


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """``steps`` decreasing sampling times from 1, uniform before the shift (the step to clean
    data, t = 0, is the samplers' last)."""
    check_int("steps", steps, 1)
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    return shift_time(t, shift).tolist()


def abar_of_time(t: float | Tensor) -> float | Tensor:
    """The variance-preserving level of flow time t: ``(1-t)^2 / ((1-t)^2 + t^2)``."""
    return (1.0 - t) ** 2 / ((1.0 - t) ** 2 + t**2)

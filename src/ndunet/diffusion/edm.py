"""EDM (Karras et al. 2022, https://arxiv.org/abs/2206.00364) as pure functions: the
preconditioning of table 1, its loss weight, the training noise distribution and the rho grid.

EDM writes the noisy data ``x = x0 + sigma n`` (variance exploding) and wraps the network F as
``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ndunet import rng
from ndunet._checks import check_float, check_int


def precondition(
    sigma: Tensor | float, sigma_data: float = 0.5
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(c_skip, c_out, c_in, c_noise)`` of table 1: ``sigma_data^2 / (sigma^2 + sigma_data^2)``,
    ``sigma sigma_data / sqrt(sigma^2 + sigma_data^2)``, ``1 / sqrt(sigma^2 + sigma_data^2)``,
    ``ln(sigma) / 4``."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    sd2 = sigma_data**2
    total = s**2 + sd2
    return sd2 / total, s * sigma_data / total.sqrt(), 1.0 / total.sqrt(), s.log() / 4.0


def loss_weight(sigma: Tensor | float, sigma_data: float = 0.5) -> Tensor:
    """``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2``: the
    weight on ``|D - x0|^2`` that makes the loss on F unit-weighted (sec. 5)."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return (s**2 + sigma_data**2) / (s * sigma_data) ** 2


def sample_sigma(
    batch: int,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training noise levels: ``ln(sigma) ~ N(p_mean, p_std^2)`` (table 1), shape (batch,)."""
    z = rng.randn((batch,), generator=generator, device=device)  # a CPU generator may serve CUDA
    return torch.exp(p_mean + p_std * z)


def karras_sigmas(
    steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> list[float]:
    """EDM's time steps (eq. 5): ``(sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) -
    sigma_max^(1/rho)))^rho`` for i < N, decreasing from sigma_max to sigma_min (the samplers'
    last step goes to sigma = 0)."""
    check_int("steps", steps, 1)
    check_float("sigma_min", sigma_min, 0.0, low_open=True)
    check_float("sigma_max", sigma_max, sigma_min, low_open=True)
    check_float("rho", rho, 0.0, low_open=True)
    if steps == 1:
        return [float(sigma_max)]
    hi, lo = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return [(hi + i / (steps - 1) * (lo - hi)) ** rho for i in range(steps)]


def abar_of_sigma(sigma: float) -> float:
    """The variance-preserving level of EDM's sigma: ``1 / (1 + sigma^2)``."""
    return 1.0 / (1.0 + sigma * sigma) if math.isfinite(sigma) else 0.0

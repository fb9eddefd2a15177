"""The three processes a Diffusion can run: discrete Gaussian diffusion, flow matching and EDM.

Each says how to make a training example (noisy input, network time, target, weight) and how to
sample: a grid of noise levels as a variance-preserving ``alphas_cumprod`` table that the shared
samplers walk, how the network sees a state (the process's own scaling, EDM's c_in, the time
label) and how its output becomes ``(x0_hat, eps_hat)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from . import edm, flow, losses, parameterization
from .config import DiffusionConfig
from .schedules import Schedule
from .stepping import sample_timesteps

DENSE_LEVELS = 1024  # extra table levels of the continuous processes (Heun's churn snaps to them)


class TrainingPoint(NamedTuple):
    """One training example per sample: the network input and time, the target of its raw output
    and a per-sample loss weight (None: unit)."""

    x_in: Tensor
    time: Tensor
    target: Tensor
    weight: Tensor | None


class Grid(NamedTuple):
    """A sampling grid: the level table (float64, index 0 the least noise), the decreasing
    indices the sampler visits, and the process time (step, t or sigma) of each table entry."""

    alphas_cumprod: Tensor
    timesteps: list[int]
    times: list[float]


def _column(values: Tensor, like: Tensor) -> Tensor:
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))  # (B, 1, ...)


def _continuous_grid(levels: Sequence[float], dense: Tensor, abar_of) -> Grid:
    """A grid over continuous times: ``levels`` (decreasing, the visited ones) plus ``dense``."""
    times = sorted({*(float(v) for v in levels), *dense.tolist()})
    index = {v: i for i, v in enumerate(times)}
    table = torch.tensor([float(abar_of(v)) for v in times], dtype=torch.float64)
    return Grid(table, [index[float(v)] for v in levels], times)


class GaussianProcess:
    """Discrete-time Gaussian diffusion (DDPM): ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``
    at integer steps t, with an eps, x0 or v network and min-SNR weighting."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.schedule = Schedule.from_name(
            config.schedule, config.timesteps, **config.schedule_kwargs
        )

    def check_time(self, t: Tensor, batch: int) -> None:
        if t.shape != (batch,) or t.dtype != torch.long:
            raise ValueError(
                f"t must be an int64 tensor of shape ({batch},), got {t.shape} {t.dtype}"
            )

    def training_point(self, x0: Tensor, noise: Tensor, t: Tensor | None) -> TrainingPoint:
        cfg = self.config
        if t is None:
            t = torch.randint(0, cfg.timesteps, (x0.shape[0],), device=x0.device)
        ac = self.schedule.alphas_cumprod
        alpha = self.schedule.gather(ac.sqrt(), t, x0)  # (B, 1, ..., 1)
        sigma = self.schedule.gather((1.0 - ac).sqrt(), t, x0)
        target = parameterization.target(cfg.prediction, x0, noise, alpha, sigma)
        weight = None
        if cfg.loss_weighting == "min_snr":
            snr = self.schedule.gather(self.schedule.snr, t, x0).flatten()  # (B,)
            weight = losses.min_snr_weight(snr, cfg.prediction, cfg.min_snr_gamma)
        return TrainingPoint(alpha * x0 + sigma * noise, t, target, weight)

    def grid(self, steps: int, spatial: Sequence[int]) -> Grid:
        ts = sample_timesteps(self.config.timesteps, steps, self.config.timestep_spacing)
        return Grid(
            self.schedule.alphas_cumprod, ts, [float(i) for i in range(self.config.timesteps)]
        )

    def view(self, x: Tensor, time: float) -> tuple[Tensor, Tensor, Tensor]:
        """(x in the process's scaling, network input, network time (B,))."""
        label = torch.full((x.shape[0],), int(time), dtype=torch.long, device=x.device)
        return x, x, label

    def to_x0_eps(self, out: Tensor, x: Tensor, time: float) -> tuple[Tensor, Tensor]:
        abar = float(self.schedule.alphas_cumprod[int(time)])
        alpha, sigma = math.sqrt(abar), math.sqrt(1.0 - abar)
        return parameterization.to_x0_eps(self.config.prediction, out, x, alpha, sigma)


class FlowProcess:
    """Rectified flow: ``x_t = (1 - t) x0 + t eps`` for t in [0, 1], velocity target, the network
    seeing ``1000 t``; times logit-normal or uniform, shifted by :func:`flow.resolution_shift`."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config

    def shift(self, spatial: Sequence[int]) -> float:
        cfg = self.config
        return flow.resolution_shift(math.prod(spatial), cfg.shift_base_voxels, cfg.time_shift)

    def check_time(self, t: Tensor, batch: int) -> None:
        if t.shape != (batch,) or not t.is_floating_point() or bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"t must be a float tensor of shape ({batch},) with times in [0, 1]")

    def training_point(self, x0: Tensor, noise: Tensor, t: Tensor | None) -> TrainingPoint:
        cfg = self.config
        if t is None:
            t = flow.sample_time(
                x0.shape[0], cfg.time_sampling, cfg.logit_mean, cfg.logit_std, device=x0.device
            )
            t = flow.shift_time(t, self.shift(x0.shape[2:]))
        x_t = flow.interpolate(x0, noise, t)
        return TrainingPoint(x_t, t * flow.TIME_SCALE, flow.velocity(x0, noise), None)

    def grid(self, steps: int, spatial: Sequence[int]) -> Grid:
        levels = flow.time_grid(steps, self.shift(spatial))
        dense = torch.linspace(0.0, 1.0, DENSE_LEVELS + 1, dtype=torch.float64)[1:]
        return _continuous_grid(levels, dense, flow.abar_of_time)

    def view(self, x: Tensor, time: float) -> tuple[Tensor, Tensor, Tensor]:
        x = x * math.sqrt((1.0 - time) ** 2 + time**2)  # variance-preserving -> x_t
        label = torch.full((x.shape[0],), time * flow.TIME_SCALE, device=x.device)
        return x, x, label

    def to_x0_eps(self, out: Tensor, x: Tensor, time: float) -> tuple[Tensor, Tensor]:
        return flow.velocity_to_x0_eps(out, x, time)


class EDMProcess:
    """EDM: ``x = x0 + sigma n``, ``D = c_skip x + c_out F(c_in x, c_noise)``, the network trained
    on F's target with unit weight (``lambda(sigma) = 1 / c_out^2`` on D)."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config

    def check_time(self, t: Tensor, batch: int) -> None:
        if t.shape != (batch,) or not t.is_floating_point() or bool((t <= 0).any()):
            raise ValueError(f"t must be a float tensor of shape ({batch},) of sigmas > 0")

    def training_point(self, x0: Tensor, noise: Tensor, t: Tensor | None) -> TrainingPoint:
        cfg = self.config
        if t is None:
            t = edm.sample_sigma(x0.shape[0], cfg.p_mean, cfg.p_std, device=x0.device)
        c_skip, c_out, c_in, c_noise = edm.precondition(t.detach().double(), cfg.sigma_data)
        x = x0 + _column(t, x0) * noise
        target = (x0 - _column(c_skip, x0) * x) / _column(c_out, x0)
        return TrainingPoint(_column(c_in, x0) * x, c_noise.to(x0.device, x0.dtype), target, None)

    def grid(self, steps: int, spatial: Sequence[int]) -> Grid:
        cfg = self.config
        levels = edm.karras_sigmas(steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
        lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max * math.sqrt(2.0))
        dense = torch.linspace(lo, hi, DENSE_LEVELS, dtype=torch.float64).exp()
        return _continuous_grid(levels, dense, lambda s: edm.abar_of_sigma(float(s)))

    def view(self, x: Tensor, time: float) -> tuple[Tensor, Tensor, Tensor]:
        x = x * math.sqrt(1.0 + time**2)  # variance-preserving -> x0 + sigma n
        _, _, c_in, c_noise = edm.precondition(time, self.config.sigma_data)
        label = torch.full((x.shape[0],), float(c_noise), device=x.device)
        return x, float(c_in) * x, label

    def to_x0_eps(self, out: Tensor, x: Tensor, time: float) -> tuple[Tensor, Tensor]:
        c_skip, c_out, _, _ = edm.precondition(time, self.config.sigma_data)
        x0 = float(c_skip) * x + float(c_out) * out
        return x0, (x - x0) / time


Process = GaussianProcess | FlowProcess | EDMProcess
PROCESSES = {"gaussian": GaussianProcess, "flow": FlowProcess, "edm": EDMProcess}


def build_process(config: DiffusionConfig) -> Process:
    """The process ``config.process`` names."""
    return PROCESSES[config.process](config)

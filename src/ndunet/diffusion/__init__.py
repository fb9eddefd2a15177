"""Denoising diffusion for data of any number of spatial dimensions.

Pure functions (schedules, parameterization, losses, samplers) and one wrapper, :class:`Diffusion`.
"""

from __future__ import annotations

from .config import DiffusionConfig
from .losses import min_snr_weight, per_sample_loss
from .parameterization import (
    dynamic_threshold,
    eps_to_x0,
    target,
    to_v,
    to_x0_eps,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)
from .process import q_posterior, q_sample
from .samplers import SAMPLERS, ddim, ddpm, dpmpp_2m, get_sampler, sample_timesteps
from .schedules import (
    SCHEDULES,
    Schedule,
    cosine_betas,
    get_betas,
    linear_betas,
    scaled_linear_betas,
    sigmoid_betas,
)
from .wrapper import Diffusion

__all__ = [
    "SAMPLERS",
    "SCHEDULES",
    "Diffusion",
    "DiffusionConfig",
    "Schedule",
    "cosine_betas",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "dynamic_threshold",
    "eps_to_x0",
    "get_betas",
    "get_sampler",
    "linear_betas",
    "min_snr_weight",
    "per_sample_loss",
    "q_posterior",
    "q_sample",
    "sample_timesteps",
    "scaled_linear_betas",
    "sigmoid_betas",
    "target",
    "to_v",
    "to_x0_eps",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
]

"""Generative processes for data of any number of spatial dimensions: discrete Gaussian
diffusion, flow matching and EDM, conditioned on classes or tensors.

Pure functions (schedules, parameterization, flow and EDM formulas, losses, samplers) and one
wrapper, :class:`Diffusion`.
"""

from __future__ import annotations

from . import edm, flow
from .conditioning import random_mask
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
from .processes import Grid, build_process
from .samplers import (
    ETA_DEFAULTS,
    SAMPLERS,
    ddim,
    ddpm,
    dpmpp_2m,
    dpmpp_2m_sde,
    euler,
    euler_ancestral,
    evaluations,
    get_sampler,
    heun,
    sample_timesteps,
    unipc,
)
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
    "ETA_DEFAULTS",
    "SAMPLERS",
    "SCHEDULES",
    "Diffusion",
    "DiffusionConfig",
    "Grid",
    "Schedule",
    "build_process",
    "cosine_betas",
    "ddim",
    "ddpm",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dynamic_threshold",
    "edm",
    "eps_to_x0",
    "euler",
    "euler_ancestral",
    "evaluations",
    "flow",
    "get_betas",
    "get_sampler",
    "heun",
    "linear_betas",
    "min_snr_weight",
    "per_sample_loss",
    "q_posterior",
    "q_sample",
    "random_mask",
    "sample_timesteps",
    "scaled_linear_betas",
    "sigmoid_betas",
    "target",
    "to_v",
    "to_x0_eps",
    "unipc",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
]

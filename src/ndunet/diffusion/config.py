"""DiffusionConfig: every choice of a Diffusion (schedule, objective, sampling defaults)."""

from __future__ import annotations

from dataclasses import field

from ndunet._checks import check_float, check_int
from ndunet.config import Config, config

from .losses import LossName, Weighting
from .parameterization import Prediction
from .samplers import SamplerName, Spacing
from .schedules import ScheduleName


@config
class DiffusionConfig(Config):
    """Schedule, objective and sampling defaults of a :class:`Diffusion` (not the network).

    ``sampler``, ``sample_steps`` and ``guidance_scale`` are what :meth:`Diffusion.sample` uses
    when the call does not say (trainers and ``ndunet sample`` too).
    """

    timesteps: int = 1000
    schedule: ScheduleName = "cosine"
    prediction: Prediction = "v"
    loss: LossName = "l2"
    loss_weighting: Weighting = "min_snr"
    min_snr_gamma: float = 5.0
    huber_delta: float = 1.0
    cond_drop_prob: float = 0.0
    num_classes: int | None = None
    clip_denoised: bool = True  # clip x0_hat to [-clip_value, clip_value] while sampling
    clip_value: float = 1.0
    dynamic_threshold: float | None = None  # Imagen percentile (e.g. 0.995) instead of clipping
    timestep_spacing: Spacing = "trailing"
    schedule_kwargs: dict[str, float] = field(default_factory=dict)
    # sampling defaults
    sampler: SamplerName = "ddim"
    sample_steps: int = 50
    guidance_scale: float = 1.0  # classifier-free guidance (1: off)

    def check_values(self) -> None:
        check_int("timesteps", self.timesteps, 1, 10**7)
        check_float("min_snr_gamma", self.min_snr_gamma, 0.0, low_open=True)
        check_float("huber_delta", self.huber_delta, 0.0, low_open=True)
        check_float("cond_drop_prob", self.cond_drop_prob, 0.0, 1.0, high_open=True)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1, 2**24)
        if self.cond_drop_prob > 0 and self.num_classes is None:
            raise ValueError(
                f"cond_drop_prob={self.cond_drop_prob} is not valid without classes: it needs a "
                "class-conditioned model (num_classes is None)"
            )
        check_float("clip_value", self.clip_value, 0.0, low_open=True)
        if self.dynamic_threshold is not None:
            check_float("dynamic_threshold", self.dynamic_threshold, 0.0, 1.0, low_open=True)
        check_int("sample_steps", self.sample_steps, 1, 10**7)
        check_float("guidance_scale", self.guidance_scale)

"""DiffusionConfig: every choice of a Diffusion (process, objective, conditioning, sampling)."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from ndunet._checks import check_float, check_int
from ndunet.config import Config, config

from .flow import TimeSampling
from .losses import LossName, Weighting
from .parameterization import Prediction
from .samplers import SamplerName
from .schedules import ScheduleName
from .stepping import Spacing

Process = Literal["gaussian", "flow", "edm"]
Condition = Literal["none", "image", "mask"]

# The options only one process reads; set away from their default for another process, they
# are an error rather than silently unused.
PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "gaussian": (
        "timesteps", "schedule", "prediction", "loss_weighting", "min_snr_gamma",
        "timestep_spacing", "schedule_kwargs",
    ),
    "flow": ("time_sampling", "logit_mean", "logit_std", "time_shift", "shift_base_voxels"),
    "edm": ("sigma_data", "sigma_min", "sigma_max", "rho", "p_mean", "p_std"),
}  # fmt: skip


@config
class DiffusionConfig(Config):
    """Process, objective, conditioning and sampling defaults of a :class:`Diffusion` (not the
    network).

    ``process``: "gaussian" (discrete-time diffusion: ``timesteps``, ``schedule``,
    ``prediction``, min-SNR weighting), "flow" (rectified flow / flow matching, velocity target,
    logit-normal or uniform times, ``time_shift`` times ``sqrt(voxels / shift_base_voxels)``
    when that is set) or "edm" (Karras et al. 2022 preconditioning, ``ln sigma ~ N(p_mean,
    p_std^2)``, the rho grid from ``sigma_max`` to ``sigma_min``).

    ``condition``: "image" concatenates a tensor ``cond`` of ``cond_channels`` channels (same
    spatial shape) to the network input (super-resolution, restoration, reconstruction); "mask"
    trains an imputer (CSDI-style): a random share of the data is given as (mask, values) and
    the loss is taken on the rest. ``cond_drop_prob`` drops class labels and tensor conditions
    (zeros) for classifier-free guidance.

    ``sampler``, ``sample_steps`` and ``guidance_scale`` are what :meth:`Diffusion.sample` uses
    when the call does not say (trainers and ``ndunet sample`` too).
    """

    process: Process = "gaussian"
    timesteps: int = 1000
    schedule: ScheduleName = "cosine"
    prediction: Prediction = "v"
    loss: LossName = "l2"
    loss_weighting: Weighting = "min_snr"
    min_snr_gamma: float = 5.0
    huber_delta: float = 1.0
    # flow matching
    time_sampling: TimeSampling = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    time_shift: float = 1.0
    shift_base_voxels: int | None = None
    # EDM
    sigma_data: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    # conditioning
    condition: Condition = "none"
    cond_channels: int = 0
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
        if self.cond_drop_prob > 0 and self.num_classes is None and self.condition == "none":
            raise ValueError(
                f"cond_drop_prob={self.cond_drop_prob} is not valid without a condition: it needs "
                "a class-conditioned model (num_classes) or condition='image' / 'mask'"
            )
        if self.condition == "image":
            check_int("cond_channels", self.cond_channels, 1, 2**16)
        elif self.cond_channels != 0:
            raise ValueError(
                f"cond_channels={self.cond_channels} is not valid with condition="
                f"{self.condition!r}; expected 0 (cond_channels is for condition='image')"
            )
        check_float("clip_value", self.clip_value, 0.0, low_open=True)
        if self.dynamic_threshold is not None:
            check_float("dynamic_threshold", self.dynamic_threshold, 0.0, 1.0, low_open=True)
        check_int("sample_steps", self.sample_steps, 1, 10**7)
        check_float("guidance_scale", self.guidance_scale)
        check_float("logit_std", self.logit_std, 0.0, low_open=True)
        check_float("time_shift", self.time_shift, 0.0, low_open=True)
        if self.shift_base_voxels is not None:
            check_int("shift_base_voxels", self.shift_base_voxels, 1)
        check_float("sigma_data", self.sigma_data, 0.0, low_open=True)
        check_float("sigma_min", self.sigma_min, 0.0, low_open=True)
        check_float("sigma_max", self.sigma_max, self.sigma_min, low_open=True)
        check_float("rho", self.rho, 0.0, low_open=True)
        check_float("p_std", self.p_std, 0.0, low_open=True)
        self._check_process_fields()

    def _check_process_fields(self) -> None:
        defaults = {f.name: f for f in dataclasses.fields(self)}
        for process, names in PROCESS_FIELDS.items():
            if process == self.process:
                continue
            for name in names:
                f = defaults[name]
                default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
                value = getattr(self, name)
                if value != default:
                    raise ValueError(
                        f"{name}={value!r} is not valid with process={self.process!r}; it is an "
                        f"option of process={process!r} (leave it at {default!r})"
                    )

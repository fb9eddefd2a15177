"""DiffusionConfig: every choice of a Diffusion, as a JSON-safe dataclass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .losses import check_loss
from .parameterization import check_prediction
from .samplers import SPACINGS
from .schedules import SCHEDULES


@dataclass(frozen=True)
class DiffusionConfig:
    """Schedule, objective and sampling defaults of a :class:`Diffusion` (not the network)."""

    timesteps: int = 1000
    schedule: str = "cosine"  # linear | scaled_linear | cosine | sigmoid
    prediction: str = "v"  # eps | x0 | v
    loss: str = "l2"  # l2 | l1 | huber
    loss_weighting: str = "min_snr"  # none | min_snr
    min_snr_gamma: float = 5.0
    huber_delta: float = 1.0
    cond_drop_prob: float = 0.0
    num_classes: int | None = None
    clip_denoised: bool = True  # clip x0_hat to [-clip_value, clip_value] while sampling
    clip_value: float = 1.0
    dynamic_threshold: float | None = None  # Imagen percentile (e.g. 0.995) instead of clipping
    timestep_spacing: str = "trailing"  # trailing | linspace | leading
    schedule_kwargs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.timesteps
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"timesteps must be an int >= 1, got {t!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {self.schedule!r}")
        check_prediction(self.prediction)
        check_loss(self.loss, self.loss_weighting)
        if not self.min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma!r}")
        if not self.huber_delta > 0:
            raise ValueError(f"huber_delta must be > 0, got {self.huber_delta!r}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob!r}")
        nc = self.num_classes
        if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
            raise ValueError(f"num_classes must be None or an int >= 1, got {nc!r}")
        if self.cond_drop_prob > 0 and nc is None:
            raise ValueError(
                f"cond_drop_prob={self.cond_drop_prob} needs a class-conditioned model "
                "(num_classes is None)"
            )
        if not self.clip_value > 0:
            raise ValueError(f"clip_value must be > 0, got {self.clip_value!r}")
        p = self.dynamic_threshold
        if p is not None and not 0.0 < p <= 1.0:
            raise ValueError(f"dynamic_threshold must be None or in (0, 1], got {p!r}")
        if self.timestep_spacing not in SPACINGS:
            raise ValueError(
                f"timestep_spacing must be one of {list(SPACINGS)}, got {self.timestep_spacing!r}"
            )
        if not isinstance(self.schedule_kwargs, dict):
            raise TypeError(f"schedule_kwargs must be a dict, got {self.schedule_kwargs!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (round-trips through :meth:`from_dict`)."""
        out = dataclasses.asdict(self)
        out["schedule_kwargs"] = dict(self.schedule_kwargs)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown DiffusionConfig keys {unknown}; allowed: {sorted(names)}")
        return cls(**data)

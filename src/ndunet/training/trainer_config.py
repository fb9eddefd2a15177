"""TrainerConfig: every setting of the training engine, flat and JSON-friendly (the CLI builds it
from TOML)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

Amp = Literal["none", "bf16", "fp16"]
Optimizer = Literal["adamw", "adam", "sgd"]
Scheduler = Literal["constant", "cosine"]
NanPolicy = Literal["raise", "skip"]
BestMode = Literal["auto", "min", "max"]

# Which literal options each string field accepts (checked in __post_init__).
_CHOICES: dict[str, tuple[str, ...]] = {
    "amp": get_args(Amp),
    "optimizer": get_args(Optimizer),
    "scheduler": get_args(Scheduler),
    "nan_policy": get_args(NanPolicy),
    "best_mode": get_args(BestMode),
}


@dataclass
class TrainerConfig:
    """Settings of one training run. `batch_size` is per process (DDP: global = batch_size * world).

    Counting: a *step* is one optimizer update, made of `grad_accum` batches.
    """

    out_dir: str = "runs/ndunet"
    epochs: int = 10
    max_steps: int = 0  # stop after this many optimizer steps; also the cosine length (0: epochs)
    batch_size: int = 64
    seed: int = 0  # fit() seeds torch, numpy and random with seed + rank (data order: seed + epoch)
    # optimisation
    lr: float = 1e-3
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9  # sgd only
    scheduler: Scheduler = "constant"
    warmup_steps: int = 0  # linear warmup from 0, then constant or cosine
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of lr
    grad_accum: int = 1
    grad_clip: float = 0.0  # max global grad norm (0: off)
    amp: Amp = "none"
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), or any torch device string
    # data
    num_workers: int = 0  # > 0: each sample loads under RNGs seeded by (seed, epoch, index)
    shuffle: bool = True
    drop_last: bool = False
    # validation, best checkpoint
    val_every: int = 1  # validate every N epochs (0: never at epoch end)
    val_every_steps: int = 0  # also validate every N steps (0: off)
    best_metric: str = "val_loss"  # "val_<metric>", or "loss" (epoch-mean training loss)
    best_mode: BestMode = "auto"  # auto: max for accuracy/dice/iou/psnr, min otherwise
    # checkpoints
    resume: bool = False
    save_every_steps: int = 0  # also write checkpoints/last every N steps (0: only per epoch)
    keep_last: int = 2  # per-epoch checkpoints kept (0: none)
    nan_policy: NanPolicy = "raise"
    # logging
    log_every_steps: int = 10  # log.csv / TensorBoard rows of the training loss
    progress: bool = True  # tqdm bars; False is quiet mode
    tensorboard: bool = False
    plot: bool = True  # draw loss.png (at the end, and every >= 30 s at epoch ends)
    # EMA and diffusion sampling (DiffusionTrainer)
    ema_decay: float = 0.0  # 0: no EMA
    ema_warmup: bool = True
    sample_every: int = 0  # sample a grid every N epochs (0: off)
    sample_n: int = 16
    sample_steps: int = 50
    sampler: str = "ddim"
    guidance_scale: float = 1.0
    # supervised
    loss: str = "cross_entropy"  # name; a callable given to the trainer is recorded by name
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"TrainerConfig.{name}={value!r}; allowed: {', '.join(choices)}")
        positive = ("epochs", "batch_size", "grad_accum", "sample_n", "sample_steps")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainerConfig.{name}={value!r}; must be an integer >= 1")
        non_negative = ("max_steps", "warmup_steps", "num_workers", "val_every")
        non_negative += ("val_every_steps", "save_every_steps", "keep_last", "sample_every")
        for name in non_negative:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainerConfig.{name}={value!r}; must be an integer >= 0")
        if self.log_every_steps < 1:
            raise ValueError(
                f"TrainerConfig.log_every_steps={self.log_every_steps!r}; must be >= 1"
            )
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio", "ema_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"TrainerConfig.{name}={value!r}; must be a number >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainerConfig.ema_decay={self.ema_decay!r}; must be in [0, 1)")
        if isinstance(self.out_dir, os.PathLike):  # keep the config JSON-ready
            self.out_dir = os.fspath(self.out_dir)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise TypeError(f"TrainerConfig.out_dir={self.out_dir!r}; must be a path")
        self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        if len(self.betas) != 2:
            raise ValueError(f"TrainerConfig.betas={self.betas!r}; must be two numbers")
        if isinstance(self.metrics, str):
            raise TypeError(f"TrainerConfig.metrics={self.metrics!r}; must be a list of names")
        self.metrics = list(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainerConfig:
        """Inverse of to_dict; unknown keys raise a TypeError that lists the valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - valid)
        if unknown:
            raise TypeError(f"unknown TrainerConfig field(s) {unknown}; valid: {sorted(valid)}")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainerConfig:
        """A copy with some fields changed (unknown names raise TypeError)."""
        return TrainerConfig.from_dict({**self.to_dict(), **changes})

"""Optimizer and learning-rate schedule from a TrainerConfig."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ndunet.training.trainer_config import TrainerConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD with momentum."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(
    step: int,
    *,
    total_steps: int | None,
    warmup_steps: int,
    kind: str,
    min_lr_ratio: float,
    time_fraction: float = 0.0,
) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based).

    Linear warmup over `warmup_steps` (Goyal et al. 2017, https://arxiv.org/abs/1706.02677), then
    constant, or a half cosine down to `min_lr_ratio` (SGDR without restarts, Loshchilov & Hutter
    2017, https://arxiv.org/abs/1608.03983) whose progress is the further along of
    step / `total_steps` and `time_fraction` (elapsed / time limit), so a run bounded by the clock
    ends at the low rate on any machine.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = time_fraction
    if total_steps:
        progress = max(progress, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    progress = min(1.0, progress)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: TrainerConfig,
    total_steps: int | None,
    time_fraction: Callable[[], float] = lambda: 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step. Its state dict holds no function (the lambda
    is rebuilt from the config on resume), so it stays weights_only-loadable."""

    def factor(step: int) -> float:
        return lr_factor(
            step,
            total_steps=total_steps,
            warmup_steps=cfg.warmup_steps,
            kind=cfg.scheduler,
            min_lr_ratio=cfg.min_lr_ratio,
            time_fraction=time_fraction(),
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

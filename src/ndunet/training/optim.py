"""Optimizer and learning-rate schedule from a TrainerConfig."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ndunet.training.trainer_config import TrainerConfig


def build_optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW (default), Adam or SGD with momentum. On the CPU torch's fused implementation (one
    kernel over all parameters: AdamW steps 3-4x faster than the per-tensor loop, measured on the
    U-Nets of benchmarks/unet_step.py); elsewhere torch's default (foreach on CUDA, where fused
    kernels have refused gradients whose strides differ from the parameter's:
    pytorch/pytorch#106951, #126585). Both write the same state dict."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    kinds: dict[str, tuple[type[torch.optim.Optimizer], dict]] = {
        "adamw": (torch.optim.AdamW, {"betas": cfg.betas}),
        "adam": (torch.optim.Adam, {"betas": cfg.betas}),
        "sgd": (torch.optim.SGD, {"momentum": cfg.momentum}),
    }
    kind, options = kinds[cfg.optimizer]
    options = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, **options}
    return kind(params, fused=fused_supported(params), **options)


FUSED_DEVICES = ("cpu",)
FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_supported(params: list[nn.Parameter]) -> bool:
    """Whether the fused kernels are used for these parameters (checked here: torch would fail
    only at the first step): real floating point, on the CPU."""
    return all(p.device.type in FUSED_DEVICES and p.dtype in FUSED_DTYPES for p in params)


# param-group keys that choose an implementation, not a hyperparameter
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping ``optimizer``'s own implementation (fused or
    not): torch would take it from the state, so a checkpoint written by another implementation
    (an older ndunet, another device) would switch it. The hyperparameters and moments load as
    saved, each moment in its parameter's memory layout; a fused optimizer gets its step counts
    on its device, as it needs them."""
    saved = state.get("param_groups", [])
    if len(saved) == len(optimizer.param_groups):
        groups = [
            {**old, **{k: live[k] for k in IMPLEMENTATION_KEYS if k in live}}
            for old, live in zip(saved, optimizer.param_groups)
        ]
        state = {**state, "param_groups": groups}
    optimizer.load_state_dict(state)
    # torch's fused CPU kernels read every tensor as flat memory: a contiguous moment of a
    # channels-last parameter (a run resumed with channels_last switched) would update the
    # wrong elements, silently
    for param, values in optimizer.state.items():
        for key, value in values.items():
            moment = isinstance(value, torch.Tensor) and value.shape == param.shape
            if moment and value.stride() != param.stride():
                values[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


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

"""Exponential moving average of a model's weights, used for sampling and saved with the model."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network: torch.compile wraps it in ``_orig_mod``, DDP/DataParallel in
    ``.module``."""
    model = getattr(model, "_orig_mod", model)
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class UpdateCounter(nn.Module):
    """A ``num_updates`` buffer (saved in the state dict) with its value mirrored on the host as
    ``count``: reading a CUDA buffer every step would stall the GPU until it caught up."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.count = 0

    def count_update(self) -> None:
        self.num_updates += 1
        self.count += 1

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kw: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)
        self.count = int(self.num_updates)  # once per load, not per step


class EMA(UpdateCounter):
    """An averaged copy of ``model`` in ``.module`` (eval mode, no grad).

    After the n-th :meth:`update` the average moves by ``1 - d_n`` towards the live weights, with
    ``d_n = min(decay, (1 + n) / (10 + n))`` when ``warmup`` (TensorFlow's ``num_updates`` rule,
    so early, random weights are forgotten quickly) and ``d_n = decay`` otherwise. Buffers (e.g.
    normalization statistics) are copied, not averaged. The update count is saved in the state
    dict as ``num_updates``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise ValueError(f"decay must be a float in [0, 1], got {decay!r}")
        if not isinstance(warmup, bool):
            raise TypeError(f"warmup must be a bool, got {warmup!r}")
        self.decay = float(decay)
        self.warmup = warmup
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> EMA:
        """The averaged copy always stays in eval mode."""
        super().train(mode)
        self.module.eval()
        return self

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        n = self.count
        if self.warmup:
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        mine = dict(self.module.named_parameters())
        theirs = dict(unwrap_model(model).named_parameters())
        if mine.keys() != theirs.keys():
            missing = sorted(mine.keys() ^ theirs.keys())[:5]
            raise ValueError(f"model does not match the EMA copy; differing parameters: {missing}")
        return [mine[k] for k in mine], [theirs[k] for k in mine]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model`` (call after each optimizer step)."""
        ema_params, params = self._pairs(model)
        weight = 1.0 - self.current_decay()
        floats = [(e, p) for e, p in zip(ema_params, params) if e.is_floating_point()]
        if floats:
            torch._foreach_lerp_(
                [e for e, _ in floats], [p.detach().to(e.dtype) for e, p in floats], weight
            )
        for (_, e), (_, b) in zip(self.module.named_buffers(), unwrap_model(model).named_buffers()):
            e.copy_(b)
        self.count_update()

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights (and buffers) into ``model``."""
        ema_params, params = self._pairs(model)
        for e, p in zip(ema_params, params):
            p.copy_(e)
        for (_, e), (_, b) in zip(self.module.named_buffers(), unwrap_model(model).named_buffers()):
            b.copy_(e)

    def forward(self, *args, **kwargs):
        """Run the averaged model."""
        return self.module(*args, **kwargs)

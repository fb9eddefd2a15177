"""One optimizer step: micro-batches under autocast, DDP no_sync, gradient accumulation, loss
scaling, clipping, the NaN policy, the LR schedule and EMA."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from ndunet.data.loader import unpack_batch
from ndunet.training import distributed as D
from ndunet.training.logging import logger
from ndunet.training.setup import input_layout


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (nan_policy='raise')."""


RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _running_stats(module: nn.Module) -> list[Tensor]:
    """Buffers a forward pass updates in train mode (BatchNorm running statistics)."""
    return [b for name, b in module.named_buffers() if name.rsplit(".", 1)[-1] in RUNNING_STATS]


class StepMixin:
    """Optimizer steps of a trainer (a mixin of :class:`ndunet.training.Trainer`)."""

    skipped_steps = 0  # steps skipped for a non-finite loss (nan_policy='skip')

    def _setup_steps(self) -> None:
        # a skipped step must not leave the running statistics of its NaN batch behind
        skip = self.config.nan_policy == "skip"
        self._stats = _running_stats(self.module) if skip else []

    def _train_step(self, micro: list[Any]) -> float:
        """One optimizer step over the micro-batches of `micro`; returns the (global) mean loss."""
        t_start = time.perf_counter()
        cfg, opt = self.config, self.optimizer
        batches = [unpack_batch(b) for b in micro]
        sizes = [len(x) for x, _ in batches]
        total = sum(sizes)
        saved = [b.clone() for b in self._stats]
        opt.zero_grad(set_to_none=True)
        self._graph_step_begin()  # CUDA graphs: the previous step's outputs may be overwritten
        single = len(batches) == 1
        loss_sum = torch.zeros((), device=self.device)  # replaced when single
        for i, (x, y) in enumerate(batches):
            x = input_layout(x.to(self.device, non_blocking=True), cfg.channels_last)
            y = y.to(self.device, non_blocking=True) if isinstance(y, Tensor) else y
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.ddp.no_sync()
            with sync:
                with self.autocast():
                    loss, _ = self._batch_loss(x, y)
                weight = sizes[i] / total  # sample-weighted: accumulation equals one big batch
                self.scaler.scale(loss if single else loss * weight).backward()
            part = loss.detach().float()
            loss_sum = part if single else loss_sum + part * weight
        if self.dist.enabled:  # global mean, and a NaN on any rank is seen by all
            loss_sum = (
                D.all_reduce_sum([loss_sum], self.dist, self.device)[0] / self.dist.world_size
            )
        value = float(loss_sum)
        if not math.isfinite(value):
            self._non_finite(value)
            with torch.no_grad():
                for buf, old in zip(self._stats, saved):
                    buf.copy_(old)
        else:
            if cfg.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), cfg.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.network)
        self.timings["step"] += time.perf_counter() - t_start
        return value

    def _batch_loss(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None]:
        try:
            return self.compute_loss(self.ddp, x, y)
        except ValueError as e:
            if "Expected more than 1 value per channel" not in str(e):
                raise
            cfg = self.config
            raise ValueError(
                f"a batch of {len(x)} sample(s) at step {self.step + 1}: BatchNorm needs more than "
                f"one value per channel in training. With batch_size={cfg.batch_size} the last "
                "batch of the epoch holds one sample: set drop_last=True or another batch_size "
                f"({e})"
            ) from None

    def _non_finite(self, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        first = self.batch_in_epoch + 1  # 1-based, like the step column of log.csv
        accum = self.config.grad_accum
        batches = f"batch {first}" if accum == 1 else f"batches {first}-{first + accum - 1}"
        where = f"step {self.step + 1} (epoch {self.epoch + 1}, {batches} of the epoch)"
        if self.config.nan_policy == "skip":
            self.skipped_steps += 1
            logger.warning(
                "non-finite loss %s at %s: update skipped (%d so far)",
                value,
                where,
                self.skipped_steps,
            )
            return
        amp = " or amp='bf16' (fp16 overflows above 65504)" if self.config.amp == "fp16" else ""
        raise NonFiniteLossError(
            f"loss is {value} at {where}. The last good checkpoint in "
            f"{str(self.out_dir / 'checkpoints')!r} is intact; lower the lr, enable grad_clip{amp}, "
            "or set nan_policy='skip' to skip such updates."
        )

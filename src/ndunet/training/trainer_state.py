"""A trainer's resumable state (a mixin of :class:`ndunet.training.Trainer`): everything beyond
the weights that an exact resume needs, as torch's ``state_dict`` / ``load_state_dict``."""

from __future__ import annotations

from typing import Any

from ndunet.rng import capture_rng
from ndunet.training import distributed as D
from ndunet.training.logging import logger
from ndunet.training.optim import load_optimizer_state

STATE_VERSION = 1


class StateMixin:
    """``state_dict()`` is trainer_state.pt of every checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond the weights that an exact resume needs (trainer_state.pt): tensors
        and plain containers only. Under DDP a collective: every rank calls it, and the per-rank
        RNG states and loss sums are gathered."""
        own = {
            "rng": capture_rng(),
            "epoch_loss": self._epoch_loss,
            "epoch_batches": self._epoch_count,
        }
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ranks": D.gather_objects(own, self.dist),
            "data_order": self.batches.state_dict(self.batch_in_epoch > 0),
            "best_value": self.best.value,
            "history": self.history,
            "elapsed": self.elapsed(),
            "skipped": self.skipped_steps,
            "sample_shape": list(self.sample_shape) if self.sample_shape else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (after fit's set-up built the optimizer and loader)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"trainer state version {state.get('version')!r} is not valid; expected "
                f"{STATE_VERSION}"
            )
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.best.value, self.history = state["best_value"], list(state["history"])
        self._elapsed, self.skipped_steps = state["elapsed"], state["skipped"]
        if state["sample_shape"] is not None:
            self.sample_shape = tuple(state["sample_shape"])
        ranks = state["ranks"]
        if len(ranks) == self.dist.world_size:
            mine = ranks[self.dist.rank]
            self._rng_after_iter = mine["rng"]
            self._epoch_loss, self._epoch_count = mine["epoch_loss"], mine["epoch_batches"]
        else:
            logger.warning(
                "checkpoint written by %d processes, resumed by %d: RNG streams restart",
                len(ranks), self.dist.world_size,
            )  # fmt: skip
            self._rng_after_iter = None
            self._epoch_loss, self._epoch_count = ranks[0]["epoch_loss"], ranks[0]["epoch_batches"]
        self.batches.load_state_dict(state["data_order"])

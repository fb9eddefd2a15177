"""The training engine shared by SupervisedTrainer and DiffusionTrainer: one loop, top to bottom.

A subclass says what a batch's loss is (`compute_loss`), which network the checkpoints hold
(`network`) and what else describes it (`diffusion_entry`, `extra_state`); the engine owns the
rest: devices, DDP, AMP, accumulation, clipping, LR schedule, EMA, NaN policy, validation and
"best", checkpoints with exact resume (`state_dict`/`load_state_dict`), logs and progress bars.
Users extend a run through `callbacks` (see :mod:`ndunet.training.callbacks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ndunet.data.loader import as_dataset, eval_loader
from ndunet.files import RunLock
from ndunet.rng import capture_rng, restore_rng, seed_everything
from ndunet.training import distributed as D
from ndunet.training.best import BestTracker
from ndunet.training.callbacks import Callback, check_callbacks
from ndunet.training.evaluation import evaluate_batches
from ndunet.training.folder import FolderMixin
from ndunet.training.logging import logger
from ndunet.training.metrics import Metric
from ndunet.training.setup import SetupMixin, cudnn_benchmark
from ndunet.training.steps import StepMixin
from ndunet.training.trainer_state import StateMixin


class Trainer(SetupMixin, StepMixin, StateMixin, FolderMixin):
    """Engine base class; use SupervisedTrainer or DiffusionTrainer.

    ``resume=True`` continues the run in ``out_dir`` from ``checkpoints/last`` (a changed model
    or diffusion config is refused unless ``allow_changes=True``); ``progress``
    shows tqdm bars; ``callbacks`` receive the run's events. Other keywords are
    :class:`TrainerConfig` fields (or pass ``config=``).
    """

    config_defaults: ClassVar[dict[str, Any]] = {}
    task = "custom"

    def __init__(
        self,
        module: nn.Module,
        train_data: Any,
        val_data: Any = None,
        *,
        config: Any = None,
        resume: bool = False,
        allow_changes: bool = False,
        progress: bool = True,
        callbacks: Sequence[Callback] | None = None,
        **overrides: Any,
    ) -> None:
        from ndunet.training.trainer_config import TrainerConfig

        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module to train, got {type(module).__name__}")
        if config is not None and not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if config is None:
            config = TrainerConfig(**{**self.config_defaults, **overrides})
        elif overrides:
            config = config.replace(**overrides)
        self.config = config
        self.resume, self.progress = bool(resume), bool(progress)
        self.allow_changes = bool(allow_changes)
        self.callbacks = check_callbacks(callbacks)
        self.module = module  # what forward() is called on (the model, or the Diffusion wrapper)
        # bad data fails here, before any work; a DataLoader is used as given
        self.train_data = (
            train_data
            if isinstance(train_data, DataLoader)
            else as_dataset(train_data, "train_data")
        )
        self.val_data = (
            val_data
            if val_data is None or isinstance(val_data, DataLoader)
            else as_dataset(val_data, "val_data")
        )
        self.metrics: list[Metric] = []
        self.out_dir = Path(self.config.out_dir)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best = BestTracker("loss", "min")  # resolved from the config by fit()
        self.history: list[dict[str, float]] = []
        # seconds spent: the whole epoch loop (wall and process CPU time), and within it waiting
        # for data, optimizer steps, checkpoints, evaluation, plots (benchmarks read these)
        keys = ("loop", "loop_cpu", "data", "step", "checkpoint", "eval", "plot")
        self.timings = dict.fromkeys(keys, 0.0)
        self.ema: nn.Module | None = None
        self._lock: RunLock | None = None
        self.sample_shape: tuple[int, ...] | None = None
        self.stop_reason: str | None = None
        self._ready = False
        self._rng_after_iter: dict[str, Any] | None = None
        self._epoch_loss, self._epoch_count, self._elapsed = 0.0, 0, 0.0

    # ----- what subclasses define -------------------------------------------------------------
    @property
    def network(self) -> nn.Module:
        """The bare network whose weights are model.safetensors."""
        return self.module

    def compute_loss(
        self, module: nn.Module, x: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """(scalar loss, predictions for metrics or None) of one batch."""
        raise NotImplementedError

    def diffusion_entry(self) -> dict[str, Any] | None:
        """config.json's "diffusion" entry (None: not a diffusion run)."""
        return None

    def extra_state(self) -> dict[str, Tensor]:
        """Tensors of the trained module outside `network` (saved as extra.safetensors)."""
        return {}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        """Inverse of extra_state."""

    def on_epoch_end(self, epoch: int) -> None:
        """Subclass hook after an epoch's checkpoint (DiffusionTrainer draws samples here)."""

    def eval_predictor(self) -> tuple[nn.Module, int]:
        """(what evaluate() passes to compute_loss in place of the module, its batch size);
        SupervisedTrainer predicts whole volumes by sliding windows when val_roi_size is set."""
        if self.config.val_roi_size is not None:
            raise ValueError(
                f"val_roi_size={list(self.config.val_roi_size)} is not valid for "
                f"{type(self).__name__}; expected None (sliding-window evaluation is supervised)"
            )
        return self.module, self.config.batch_size

    # ----- public controls --------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """End training after the current step (a callback may call this); fit() then saves
        checkpoints/last, so the run can be resumed."""
        self.stop_reason = reason

    def elapsed(self) -> float:
        """Seconds of training so far, resumed runs included."""
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else self._elapsed

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until `epochs`, `max_steps`, `time_limit` or a stop request, resuming from
        checkpoints/last when resume=True. Returns the last epoch's summary (loss, lr, val_*)."""
        cfg = self.config
        self._setup_runtime()
        # ranks draw independent noise (e.g. diffusion); DDP keeps their weights in sync
        seed_everything(cfg.seed + self.dist.rank)
        try:
            with cudnn_benchmark(self._cudnn_benchmark()):
                return self._fit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fit(self) -> dict[str, float]:
        cfg = self.config
        resume_from = self._setup_fit()
        if resume_from is not None:
            self.restore_checkpoint(resume_from)
            logger.info(
                "resumed from %s at step %d (epoch %d, batch %d)",
                resume_from, self.step, self.epoch, self.batch_in_epoch,
            )  # fmt: skip
        restart = resume_from is None and (self.out_dir / "log.csv").exists()  # see check_run_dir
        self.log.open_csv(self.step if resume_from is not None or restart else None)
        self.log.bars(cfg.epochs, self.epoch)
        self._t0 = time.perf_counter() - self._elapsed
        self._last_plot = time.perf_counter()
        self.stop_reason = None
        rng_after_iter = self._rng_after_iter if resume_from is not None else None
        for cb in self.callbacks:
            cb.on_fit_start(self)
        summary: dict[str, float] = {}
        t_loop, cpu_loop = time.perf_counter(), time.process_time()
        try:
            while not self._finished():
                if self.batch_in_epoch == 0:
                    self._epoch_loss, self._epoch_count = 0.0, 0
                batches = self.batches.epoch(self.epoch, self.batch_in_epoch, rng_after_iter)
                rng_after_iter = None
                self.log.epoch_start(
                    self.epoch, self.steps_per_epoch, self.batch_in_epoch // cfg.grad_accum
                )
                for micro in self._timed(batches):
                    loss = self._train_step(micro)
                    self.step += 1
                    self.batch_in_epoch += len(micro)
                    if math.isfinite(loss):  # a skipped (nan_policy='skip') step is not averaged
                        self._epoch_loss += loss * len(micro)
                        self._epoch_count += len(micro)
                    self._after_step(loss)
                    if self._limit_reached():
                        break
                if self._limit_reached() and self.batch_in_epoch < len(self.batches):
                    self._save(["last"])  # stopped mid-epoch: resumable from here
                    break
                summary = self._end_epoch()
            self.timings["loop"] += time.perf_counter() - t_loop
            self.timings["loop_cpu"] += time.process_time() - cpu_loop
            if self.dist.is_main and cfg.plot:
                self.log.plot()
            for cb in self.callbacks:
                cb.on_fit_end(self, summary)
        finally:
            self.log.close()
        D.barrier(self.dist)
        return summary

    def _timed(self, batches: Iterator[list[Any]]) -> Iterator[list[Any]]:
        while True:
            t = time.perf_counter()
            micro = next(batches, None)
            self.timings["data"] += time.perf_counter() - t
            if micro is None:
                return
            yield micro

    def _limit_reached(self) -> bool:
        """A step or time limit, or a stop request (checked after each step)."""
        cfg = self.config
        if self.stop_reason is not None:
            return True
        if 0 < cfg.max_steps <= self.step:
            self.stop_reason = f"max_steps={cfg.max_steps} reached"
        elif cfg.time_limit is not None and self.step > 0 and self.elapsed() >= cfg.time_limit:
            self.stop_reason = f"time_limit={cfg.time_limit:g}s reached"
        return self.stop_reason is not None

    def _finished(self) -> bool:
        epochs = self.config.epochs
        return (epochs is not None and self.epoch >= epochs) or self._limit_reached()

    def _after_step(self, loss: float) -> None:
        cfg = self.config
        postfix = None
        epoch_done = self.batch_in_epoch >= len(self.batches)
        if self.step % cfg.log_every_steps == 0 or epoch_done:  # >= 1 row per epoch
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"step": self.step, "epoch": self.epoch + 1, "loss": loss, "lr": lr}
            self.log.row({**row, "wall_time": self.elapsed()})
            postfix = {"loss": f"{loss:.4g}"}
        self.log.step(1, postfix)
        for cb in self.callbacks:
            cb.on_step_end(self, loss)
        in_epoch = not epoch_done  # the epoch's last step is validated and saved by _end_epoch
        every = cfg.val_every_steps
        validate = every and self.step % every == 0 and in_epoch and self.val_data is not None
        if validate and self._validate():
            self._save(["best"])
        if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and in_epoch:
            self._save(["last"])

    def _end_epoch(self) -> dict[str, float]:
        cfg = self.config
        if self._epoch_count:
            epoch_loss = self._epoch_loss / self._epoch_count
        else:  # every step of the epoch was skipped (nan_policy='skip'): no loss to report
            epoch_loss = math.nan
            logger.warning("epoch %d: every update was skipped (non-finite loss)", self.epoch + 1)
        if self.dist.enabled:
            total = D.all_reduce_sum([torch.tensor(epoch_loss)], self.dist, self.device)[0]
            epoch_loss = float(total) / self.dist.world_size
        summary = {"loss": epoch_loss, "lr": self.optimizer.param_groups[0]["lr"]}
        self.epoch += 1
        self.batch_in_epoch = 0
        improved = False
        if self.val_data is not None and cfg.val_every and self.epoch % cfg.val_every == 0:
            improved = self._validate(summary)
        elif self.val_data is None:
            improved = self.best.update(epoch_loss)
        self.history.append(summary)
        names = ["last"]
        if cfg.keep_last:
            names.append(f"epoch-{self.epoch:04d}")
        if improved:
            names.append("best")
        self._save(names)
        self.writer.prune()
        self.on_epoch_end(self.epoch)
        for cb in self.callbacks:
            cb.on_epoch_end(self, summary)
        t = time.perf_counter()
        if self.dist.is_main and cfg.plot and t - self._last_plot > 30:  # matplotlib is slow
            self.log.plot()
            self._last_plot = time.perf_counter()
            self.timings["plot"] += self._last_plot - t
        shown = {k: f"{v:.4g}" for k, v in summary.items() if k != "lr"}
        total_epochs = cfg.epochs if cfg.epochs is not None else "?"
        logger.info(
            "epoch %d/%s: %s",
            self.epoch,
            total_epochs,
            ", ".join(f"{k}={v}" for k, v in shown.items()),
        )
        self.log.epoch_end(shown)
        return summary

    def _validate(self, summary: dict[str, float] | None = None) -> bool:
        """Evaluate on val_data, log a row, and say whether the best metric improved."""
        results = {f"val_{k}": v for k, v in self.evaluate(self.val_data).items()}
        if summary is not None:
            summary.update(results)
        bad = [k for k, v in results.items() if not math.isfinite(v)]
        if bad:
            logger.warning("validation at step %d gave non-finite %s", self.step, bad)
        lr = self.optimizer.param_groups[0]["lr"]
        row = {"step": self.step, "epoch": self.epoch, "lr": lr, **results}
        self.log.row({**row, "wall_time": self.elapsed()})
        for cb in self.callbacks:
            cb.on_validation_end(self, results)
        return self.best.update(results[self.best.key]) if self.best.key in results else False

    # ----- evaluation -------------------------------------------------------------------------
    def evaluate(self, data: Any = None) -> dict[str, float]:
        """Mean loss and metrics over `data` (default: val_data), with the module in eval mode.
        Leaves every RNG untouched (it draws from a fixed seed: the same noise every time).
        Under DDP every rank must call it."""
        data = self.val_data if data is None else data
        if data is None:
            raise ValueError("evaluate: no data given and the trainer has no val_data")
        self._setup_runtime()
        t = time.perf_counter()
        cfg, dist = self.config, self.dist
        predictor, batch_size = self.eval_predictor()
        loader = eval_loader(
            data, batch_size=batch_size, rank=dist.rank, world_size=dist.world_size, name="data"
        )
        was_training = self.module.training
        rng = capture_rng()
        seed_everything(cfg.seed + 12345 + dist.rank)
        self.module.eval()
        try:
            out = evaluate_batches(
                loader, predictor, self.compute_loss, self.metrics,
                device=self.device, autocast=self.autocast, dist=dist,
            )  # fmt: skip
        finally:
            restore_rng(rng)
            self.module.train(was_training)
        self.timings["eval"] += time.perf_counter() - t
        return out

    # ----- checkpoints ------------------------------------------------------------------------
    def _save(self, names: list[str]) -> None:
        """Write checkpoints `names` (rank 0 writes; every rank calls: the state is gathered)."""
        if not self.config.save_checkpoints:
            return
        t = time.perf_counter()
        state = self.state_dict()
        if self.dist.is_main:
            self.writer.save(
                names,
                config=self.describe_run(),
                model_state=self.network.state_dict(),
                ema_state=self.ema.state_dict() if self.ema is not None else None,
                extra_state=self.extra_state(),
                trainer_state=state,
            )
        self.timings["checkpoint"] += time.perf_counter() - t

"""The training engine shared by SupervisedTrainer and DiffusionTrainer: one loop, top to bottom.

A subclass says what a batch's loss is (`compute_loss`), which network the checkpoints hold
(`network`) and what else describes it (`diffusion_entry`, `extra_state`); the engine owns the
rest: devices, DDP, AMP, accumulation, clipping, LR schedule, EMA, NaN policy, validation and
"best", checkpoints with exact resume (`state_dict`/`load_state_dict`), logs and progress bars.
Users extend a run through `callbacks` (see :mod:`ndunet.training.callbacks`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ndunet.data.loader import EpochBatches, as_dataset, build_loader, eval_loader
from ndunet.files import RunLock, safe_write_text
from ndunet.rng import capture_rng, restore_rng, seed_everything
from ndunet.training import distributed as D
from ndunet.training.best import BestTracker
from ndunet.training.callbacks import Callback, check_callbacks
from ndunet.training.checkpoints import CheckpointWriter
from ndunet.training.evaluation import evaluate_batches
from ndunet.training.folder import describe_run, restore_checkpoint
from ndunet.training.logging import RunLog, logger
from ndunet.training.metrics import Metric
from ndunet.training.optim import build_optimizer, build_scheduler
from ndunet.training.run_dir import check_run_dir, claim_run_dir
from ndunet.training.steps import StepRunner

STATE_VERSION = 1


class Trainer:
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

    # ----- public controls --------------------------------------------------------------------
    def request_stop(self, reason: str = "stop requested") -> None:
        """End training after the current step (a callback may call this); fit() then saves
        checkpoints/last, so the run can be resumed."""
        self.stop_reason = reason

    def elapsed(self) -> float:
        """Seconds of training so far, resumed runs included."""
        return time.perf_counter() - self._t0 if hasattr(self, "_t0") else self._elapsed

    # ----- setup ------------------------------------------------------------------------------
    def _setup_runtime(self) -> None:
        """Device, process group, device placement, EMA. Idempotent; needs no run folder."""
        if self._ready:
            return
        cfg = self.config
        device_type = (
            "cuda"
            if cfg.device == "auto" and torch.cuda.is_available()
            else cfg.device.split(":")[0]
        )
        self.dist = D.init_distributed(device_type)
        self.device = D.resolve_device(cfg.device, self.dist.local_rank)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError(
                f"amp='fp16' needs a CUDA device, got {self.device}; use amp='bf16' or 'none'"
            )
        self.module.to(self.device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        if cfg.ema_decay > 0 and self.ema is None:
            from ndunet.ema import EMA

            self.ema = EMA(self.network, decay=cfg.ema_decay, warmup=cfg.ema_warmup).to(self.device)
        self._ready = True

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's autocast context (a no-op without AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _setup_fit(self) -> Path | None:
        """Every check that can fail, then the run folder, loader, optimizer and log."""
        cfg = self.config
        names = ["val_loss", *(f"val_{m.name}" for m in self.metrics)] if self.val_data else []
        self.best = BestTracker.from_config(
            cfg.best_metric, cfg.best_mode, self.metrics, self.val_data is not None
        )
        if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise ImportError(
                "tensorboard=True needs the tensorboard package: pip install 'ndunet[tensorboard]'"
            )
        if self.dist.is_main:  # the writer: check, lock, check again under the lock, mark
            self._lock, resume_from = claim_run_dir(self.out_dir, self.resume)
        else:
            resume_from = check_run_dir(self.out_dir, self.resume)
        D.barrier(self.dist)
        loader = build_loader(
            self.train_data,
            batch_size=cfg.batch_size,
            shuffle=cfg.shuffle,
            drop_last=cfg.drop_last,
            seed=cfg.seed,
            num_workers=cfg.num_workers,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            pin_memory=self.device.type == "cuda",
            name="train_data",
        )
        self.batches = EpochBatches(loader, cfg.seed, cfg.grad_accum)
        self.steps_per_epoch = math.ceil(len(self.batches) / cfg.grad_accum)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_data yields no batch (batch_size={cfg.batch_size}, drop_last={cfg.drop_last})"
            )
        total = cfg.max_steps or (cfg.epochs or 0) * self.steps_per_epoch or None
        self.optimizer = build_optimizer(self.module.parameters(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, total, self._time_fraction)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ddp: nn.Module = self.module
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.module, device_ids=ids)
        self.steps = StepRunner(self)
        main = self.dist.is_main
        self.writer = CheckpointWriter(self.out_dir, cfg.keep_last, cfg.save_checkpoints and main)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume_from is None:
                safe_write_text(
                    self.out_dir / "config.json", describe_run(self, indent=2), root=self.out_dir
                )
        self.log = RunLog(
            self.out_dir if main else None,
            names,
            progress=self.progress,
            tensorboard=cfg.tensorboard,
        )
        return resume_from

    def _time_fraction(self) -> float:
        limit = self.config.time_limit
        return self.elapsed() / limit if limit else 0.0

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train until `epochs`, `max_steps`, `time_limit` or a stop request, resuming from
        checkpoints/last when resume=True. Returns the last epoch's summary (loss, lr, val_*)."""
        cfg = self.config
        self._setup_runtime()
        # ranks draw independent noise (e.g. diffusion); DDP keeps their weights in sync
        seed_everything(cfg.seed + self.dist.rank)
        try:
            return self._fit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fit(self) -> dict[str, float]:
        cfg = self.config
        resume_from = self._setup_fit()
        if resume_from is not None:
            restore_checkpoint(self, resume_from)
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
                    loss = self.steps.run(micro)
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
        loader = eval_loader(
            data, batch_size=cfg.batch_size, rank=dist.rank, world_size=dist.world_size, name="data"
        )
        was_training = self.module.training
        rng = capture_rng()
        seed_everything(cfg.seed + 12345 + dist.rank)
        self.module.eval()
        try:
            out = evaluate_batches(
                loader, self.module, self.compute_loss, self.metrics,
                device=self.device, autocast=self.autocast, dist=dist,
            )  # fmt: skip
        finally:
            restore_rng(rng)
            self.module.train(was_training)
        self.timings["eval"] += time.perf_counter() - t
        return out

    # ----- state ------------------------------------------------------------------------------
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
            "skipped": self.steps.skipped,
            "sample_shape": list(self.sample_shape) if self.sample_shape else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (after fit's set-up built the optimizer and loader)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"trainer state version {state.get('version')!r} is not valid; expected "
                f"{STATE_VERSION}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.best.value, self.history = state["best_value"], list(state["history"])
        self._elapsed, self.steps.skipped = state["elapsed"], state["skipped"]
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
                config=describe_run(self),
                model_state=self.network.state_dict(),
                ema_state=self.ema.state_dict() if self.ema is not None else None,
                extra_state=self.extra_state(),
                trainer_state=state,
            )
        self.timings["checkpoint"] += time.perf_counter() - t

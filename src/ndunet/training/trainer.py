"""The training engine shared by SupervisedTrainer and DiffusionTrainer: one loop, top to bottom.

A subclass says what a batch's loss is (`compute_loss`), which network the checkpoints hold
(`network`), and how to describe it in config.json; the engine owns everything else: devices,
DDP, AMP, accumulation, clipping, LR schedule, EMA, NaN policy, validation and "best", atomic
checkpoints with exact resume, logs and progress bars.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ndunet.data.loader import (
    ResumableSampler,
    SeededSamples,
    as_dataset,
    build_loader,
    eval_loader,
    unpack_batch,
)
from ndunet.pretrained import atomic_write_text, link_checkpoint, save_checkpoint
from ndunet.training import distributed as D
from ndunet.training.best import BestTracker
from ndunet.training.evaluation import evaluate_batches
from ndunet.training.logging import RunLog, logger
from ndunet.training.metrics import Metric
from ndunet.training.optim import build_optimizer, build_scheduler
from ndunet.training.rng import capture_rng, restore_rng, seed_everything
from ndunet.training.run_dir import check_run_dir
from ndunet.training.state import describe, load_state_into, run_config, trainer_state
from ndunet.training.trainer_config import TrainerConfig


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or Inf (nan_policy='raise')."""


class Trainer:
    """Engine base class; use SupervisedTrainer or DiffusionTrainer."""

    _defaults: ClassVar[dict[str, Any]] = {}
    task = "custom"

    def __init__(
        self,
        module: nn.Module,
        train_data: Any,
        val_data: Any = None,
        *,
        config: TrainerConfig | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"expected an nn.Module to train, got {type(module).__name__}")
        if config is not None and not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        base = (
            config.to_dict()
            if config is not None
            else {**TrainerConfig().to_dict(), **self._defaults}
        )
        self.config = TrainerConfig.from_dict({**base, **overrides})
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
        self._ready = False
        self.ema: nn.Module | None = None
        self.sample_shape: tuple[int, ...] | None = None
        self._order: Tensor | None = None
        self._epoch_rng: Tensor | None = None
        self._rng: dict[str, Any] | None = None
        self._epoch_loss, self._epoch_batches_n, self._skipped, self._elapsed = 0.0, 0, 0, 0.0

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
        """Hook after an epoch's checkpoint (DiffusionTrainer writes sample grids here)."""

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

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _setup_fit(self) -> Path | None:
        cfg = self.config
        # every check that can fail comes before anything is written
        names = (
            ["val_loss", *(f"val_{m.name}" for m in self.metrics)]
            if self.val_data is not None
            else []
        )
        self.best = BestTracker.from_config(
            cfg.best_metric, cfg.best_mode, self.metrics, self.val_data is not None
        )
        if cfg.tensorboard:
            try:
                importlib.import_module("torch.utils.tensorboard")
            except ImportError as e:
                raise ImportError(
                    "tensorboard=True needs the tensorboard package: pip install 'ndunet[tensorboard]'"
                ) from e
        resume_from = check_run_dir(
            self.out_dir, cfg.resume
        )  # every rank checks before rank 0 writes
        D.barrier(self.dist)
        self.loader = build_loader(
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
        self.batches_per_epoch = len(self.loader)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train_data yields no batch (batch_size={cfg.batch_size}, drop_last={cfg.drop_last})"
            )
        total = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(self.module.parameters(), cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, total)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")
        self.ddp: nn.Module = self.module
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.module, device_ids=ids)
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume_from is None:
                atomic_write_text(self.out_dir / "config.json", describe(self))
        self.log = RunLog(
            self.out_dir if main else None,
            names,
            progress=cfg.progress,
            tensorboard=cfg.tensorboard,
        )
        return resume_from

    # ----- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train for `epochs` (or `max_steps`), resuming from checkpoints/last when resume=True.
        Returns the last epoch's summary (loss, lr, val metrics)."""
        cfg = self.config
        self._setup_runtime()
        # ranks draw independent noise (e.g. diffusion); DDP keeps their weights in sync
        seed_everything(cfg.seed + self.dist.rank)
        resume_from = self._setup_fit()
        if resume_from is not None:
            load_state_into(self, resume_from)
            logger.info(
                "resumed from %s at step %d (epoch %d, batch %d)",
                resume_from,
                self.step,
                self.epoch,
                self.batch_in_epoch,
            )
        restart = resume_from is None and (self.out_dir / "log.csv").exists()  # see check_run_dir
        self.log.open_csv(self.step if resume_from is not None or restart else None)
        self.log.bars(cfg.epochs, self.epoch)
        self._t0 = time.perf_counter() - self._elapsed
        self._last_plot = time.perf_counter()
        summary: dict[str, float] = {}
        t_loop, cpu_loop = time.perf_counter(), time.process_time()
        try:
            while self.epoch < cfg.epochs and not self._reached_max_steps():
                rng_after_iter = self._rng if resume_from is not None else None
                batches = self._epoch_batches(rng_after_iter)
                resume_from = None
                self.log.epoch_start(
                    self.epoch, self.steps_per_epoch, self.batch_in_epoch // cfg.grad_accum
                )
                for micro in batches:
                    loss = self._train_step(micro)
                    self.step += 1
                    self.batch_in_epoch += len(micro)
                    if math.isfinite(loss):  # a skipped (nan_policy='skip') step is not averaged
                        self._epoch_loss += loss * len(micro)
                        self._epoch_batches_n += len(micro)
                    self._after_step(loss)
                    if self._reached_max_steps():
                        break
                if self._reached_max_steps() and self.batch_in_epoch < self.batches_per_epoch:
                    self._save(["last"])  # stopped mid-epoch: resumable from here
                    break
                summary = self._end_epoch()
            self.timings["loop"] += time.perf_counter() - t_loop
            self.timings["loop_cpu"] += time.process_time() - cpu_loop
            if self.dist.is_main and cfg.plot:
                self.log.plot()
        finally:
            self.log.close()
        D.barrier(self.dist)
        return summary

    def _reached_max_steps(self) -> bool:
        return 0 < self.config.max_steps <= self.step

    def _epoch_batches(self, rng_after_iter: dict | None) -> Iterator[list[Any]]:
        """This epoch's batches from position `batch_in_epoch`, grouped by grad_accum."""
        loader: DataLoader = self.loader
        own = isinstance(loader.sampler, ResumableSampler)
        if own:
            loader.sampler.set_epoch(self.epoch)
            if isinstance(loader.dataset, SeededSamples):  # workers get a copy at iter()
                loader.dataset.epoch = self.epoch
            if self.batch_in_epoch > 0 and self._order is not None:  # resumed mid-epoch
                loader.sampler.order = self._order
            loader.sampler.skip = self.batch_in_epoch * self.loader.batch_size
            loader.generator.manual_seed(self.config.seed * 1_000_003 + self.epoch)  # worker seeds
            self._order = loader.sampler.order
            it = iter(loader)
        else:  # a user DataLoader draws its order (and worker seeds) from the global RNG
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(self.epoch)
            if self.batch_in_epoch == 0:
                if rng_after_iter is not None:  # resumed at an epoch boundary
                    restore_rng(rng_after_iter)
                    rng_after_iter = None
                self._epoch_rng = torch.get_rng_state()
            else:
                torch.set_rng_state(self._epoch_rng)
            it = iter(loader)
            for _ in range(self.batch_in_epoch):  # fast-forward (batches are loaded again)
                next(it)
        if rng_after_iter is not None:
            restore_rng(rng_after_iter)
        if self.batch_in_epoch == 0:
            self._epoch_loss, self._epoch_batches_n = 0.0, 0
        while True:
            t = time.perf_counter()
            micro = list(islice(it, self.config.grad_accum))
            self.timings["data"] += time.perf_counter() - t
            if not micro:
                return
            yield micro

    def _train_step(self, micro: list[Any]) -> float:
        """One optimizer step over the micro-batches of `micro`; returns the (global) mean loss."""
        t_start = time.perf_counter()
        cfg, opt = self.config, self.optimizer
        batches = [unpack_batch(b) for b in micro]
        sizes = [len(x) for x, _ in batches]
        total = sum(sizes)
        opt.zero_grad(set_to_none=True)
        single = len(batches) == 1
        loss_sum = torch.zeros((), device=self.device)  # replaced when single
        for i, (x, y) in enumerate(batches):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True) if isinstance(y, Tensor) else y
            last = i == len(batches) - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.ddp.no_sync()
            with sync:
                with self._autocast():
                    loss, _ = self.compute_loss(self.ddp, x, y)
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

    def _non_finite(self, value: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        first = self.batch_in_epoch + 1  # 1-based, like the step column of log.csv
        accum = self.config.grad_accum
        batches = f"batch {first}" if accum == 1 else f"batches {first}-{first + accum - 1}"
        where = f"step {self.step + 1} (epoch {self.epoch + 1}, {batches} of the epoch)"
        if self.config.nan_policy == "skip":
            self._skipped += 1
            logger.warning(
                "non-finite loss %s at %s: update skipped (%d so far)", value, where, self._skipped
            )
            return
        raise NonFiniteLossError(
            f"loss is {value} at {where}. The last good checkpoint in {str(self.out_dir / 'checkpoints')!r} "
            "is intact; lower the lr, enable grad_clip, or set nan_policy='skip' to skip such updates."
        )

    def _after_step(self, loss: float) -> None:
        cfg = self.config
        postfix = None
        epoch_done = self.batch_in_epoch >= self.batches_per_epoch
        if self.step % cfg.log_every_steps == 0 or epoch_done:  # >= 1 row per epoch
            lr = self.optimizer.param_groups[0]["lr"]
            self.log.row(
                {
                    "step": self.step,
                    "epoch": self.epoch + 1,
                    "loss": loss,
                    "lr": lr,
                    "wall_time": self._wall(),
                }
            )
            postfix = {"loss": f"{loss:.4g}"}
        self.log.step(1, postfix)
        in_epoch = not epoch_done  # the epoch's last step is validated and saved by _end_epoch
        if (
            cfg.val_every_steps
            and self.step % cfg.val_every_steps == 0
            and in_epoch
            and self.val_data is not None
        ):
            improved = self._validate()
            if improved:
                self._save(["best"])
        if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and in_epoch:
            self._save(["last"])

    def _end_epoch(self) -> dict[str, float]:
        cfg = self.config
        epoch_loss = self._epoch_loss / max(1, self._epoch_batches_n)
        if self.dist.enabled:
            epoch_loss = (
                float(D.all_reduce_sum([torch.tensor(epoch_loss)], self.dist, self.device)[0])
                / self.dist.world_size
            )
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
        self._prune_epochs()
        self.on_epoch_end(self.epoch)
        t = time.perf_counter()
        if self.dist.is_main and cfg.plot and t - self._last_plot > 30:  # matplotlib is slow
            self.log.plot()
            self._last_plot = time.perf_counter()
            self.timings["plot"] += self._last_plot - t
        shown = {k: f"{v:.4g}" for k, v in summary.items() if k != "lr"}
        logger.info(
            "epoch %d/%d: %s",
            self.epoch,
            cfg.epochs,
            ", ".join(f"{k}={v}" for k, v in shown.items()),
        )
        self.log.epoch_end(shown)
        return summary

    def _validate(self, summary: dict[str, float] | None = None) -> bool:
        """Evaluate on val_data, log a row, and say whether the best metric improved."""
        results = {f"val_{k}": v for k, v in self.evaluate(self.val_data).items()}
        if summary is not None:
            summary.update(results)
        self.log.row(
            {
                "step": self.step,
                "epoch": self.epoch,
                "lr": self.optimizer.param_groups[0]["lr"],
                **results,
                "wall_time": self._wall(),
            }
        )
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
                loader,
                self.module,
                self.compute_loss,
                self.metrics,
                device=self.device,
                autocast=self._autocast,
                dist=dist,
            )
        finally:
            restore_rng(rng)
            self.module.train(was_training)
        self.timings["eval"] += time.perf_counter() - t
        return out

    # ----- checkpoints ------------------------------------------------------------------------
    def _wall(self) -> float:
        return time.perf_counter() - self._t0

    def _save(self, names: list[str]) -> None:
        """Write one checkpoint folder and link the others to it (rank 0; all ranks call).
        "last", the folder resume reads, is swapped in after the others: a kill in between
        leaves a "best" from the future that the resumed run rewrites identically, never a
        "last" whose best_value disagrees with checkpoints/best."""
        t = time.perf_counter()
        names = sorted(names, key=lambda name: name == "last")
        state = trainer_state(self)  # gathers every rank's RNG state (a collective)
        if self.dist.is_main:
            ckpt = self.out_dir / "checkpoints"
            extra = self.extra_state()
            ema = self.ema.state_dict() if self.ema is not None else None
            first = save_checkpoint(
                ckpt / names[0],
                config=run_config(self),
                model_state=self.network.state_dict(),
                ema_state=ema,
                extra_state=extra,
                trainer_state=state,
            )
            for name in names[1:]:
                link_checkpoint(first, ckpt / name)
        self.timings["checkpoint"] += time.perf_counter() - t

    def _prune_epochs(self) -> None:
        """Keep the newest `keep_last` per-epoch checkpoints (the only deletion the engine does)."""
        if not self.dist.is_main:
            return
        import shutil

        ckpt = self.out_dir / "checkpoints"
        ours = (p for p in ckpt.glob("epoch-*") if p.is_dir() and p.name[6:].isdigit())
        epochs = sorted(ours, key=lambda p: int(p.name[6:]))
        for p in epochs[: max(0, len(epochs) - self.config.keep_last)]:
            shutil.rmtree(p)

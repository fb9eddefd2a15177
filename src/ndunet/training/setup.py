"""Set-up of a trainer (a mixin of :class:`ndunet.training.Trainer`): devices, DDP, AMP, EMA,
the run folder (checked, locked, marked), the training loader, optimizer, schedule and log."""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ndunet.data.loader import EpochBatches, build_loader
from ndunet.files import safe_write_text
from ndunet.inference.amp import AMP_DTYPES
from ndunet.inference.compiled import CUDA_GRAPH_MODES
from ndunet.training import distributed as D
from ndunet.training.best import BestTracker
from ndunet.training.checkpoints import CheckpointWriter
from ndunet.training.logging import RunLog, logger
from ndunet.training.optim import build_optimizer, build_scheduler
from ndunet.training.run_dir import check_run_dir, claim_run_dir

# channels-last memory formats by tensor rank: (B, C, H, W) and (B, C, D, H, W), and conv weights
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def to_channels_last(module: nn.Module) -> nn.Module:
    """Put every rank-4/5 parameter and buffer of `module` (the 2-D/3-D conv weights) in the
    channels-last layout, in place; other tensors keep theirs. Values, names and the state dict
    are unchanged (checkpoints are written contiguous)."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            fmt = CHANNELS_LAST.get(t.dim())
            if fmt is not None and not t.is_contiguous(memory_format=fmt):
                t.data = t.data.contiguous(memory_format=fmt)
    return module


def input_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`x` channels-last when asked and it is a 2-D/3-D batch, else unchanged."""
    fmt = CHANNELS_LAST.get(x.dim()) if channels_last else None
    return x if fmt is None else x.contiguous(memory_format=fmt)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark = enabled`` inside the block, the caller's value after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


class SetupMixin:
    """What fit() prepares before the first step; evaluate() and sample() need only the runtime."""

    _cuda_graphs = False  # compiled in a CUDA-graph mode on CUDA (set by _compiled)

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
        D.use_device(self.device, self.dist)
        if cfg.amp == "fp16" and self.device.type != "cuda":
            raise ValueError(
                f"amp='fp16' needs a CUDA device, got {self.device}; use amp='bf16' or 'none'"
            )
        self.module.to(self.device)
        if cfg.channels_last:  # before the EMA copies the network and the optimizer sees it
            to_channels_last(self.module)
        self.amp_dtype = AMP_DTYPES.get(cfg.amp)
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
        if cfg.compile:  # compiles what the steps call; the weights stay the module's own
            self.ddp = self._compiled(self.ddp, loader)
        self._setup_steps()
        main = self.dist.is_main
        self.writer = CheckpointWriter(self.out_dir, cfg.keep_last, cfg.save_checkpoints and main)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if resume_from is None:
                safe_write_text(
                    self.out_dir / "config.json", self.describe_run(indent=2), root=self.out_dir
                )
        self.log = RunLog(
            self.out_dir if main else None,
            names,
            progress=self.progress,
            tensorboard=cfg.tensorboard,
        )
        return resume_from

    def _compiled(self, module: nn.Module, loader: torch.utils.data.DataLoader) -> nn.Module:
        """``torch.compile(module)`` in the configured mode. The CUDA-graph modes replay fixed
        shapes, so they compile static shapes (each batch shape its own graph), and every step
        starts a new graph iteration (:meth:`_graph_step_begin`)."""
        cfg = self.config
        self._cuda_graphs = cfg.compile_mode in CUDA_GRAPH_MODES and self.device.type == "cuda"
        if cfg.compile_mode not in CUDA_GRAPH_MODES:
            return torch.compile(module, mode=cfg.compile_mode)
        per_rank = len(loader.sampler) if hasattr(loader.sampler, "__len__") else 0
        last = per_rank % (loader.batch_size or 1) if not loader.drop_last else 0
        if last:  # the ragged batch costs one more compile and CUDA-graph recording
            logger.info(
                "compile_mode=%r: the last batch of each epoch holds %d sample(s) and is compiled "
                "and recorded as a second static graph; drop_last=True keeps one shape",
                cfg.compile_mode, last,
            )  # fmt: skip
        return torch.compile(module, mode=cfg.compile_mode, dynamic=False)

    def _graph_step_begin(self) -> None:
        """Mark a new training iteration for CUDA graphs (its outputs may be overwritten)."""
        if self._cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def _cudnn_benchmark(self) -> bool:
        """The run's cuDNN autotuning: the config's choice, else on for CUDA."""
        choice = self.config.cudnn_benchmark
        return self.device.type == "cuda" if choice is None else choice

    def _time_fraction(self) -> float:
        limit = self.config.time_limit
        return self.elapsed() / limit if limit else 0.0

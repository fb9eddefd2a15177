"""TrainerConfig: every setting of the training engine, flat and JSON-friendly (the CLI builds it
from the [trainer] section of a run file)."""

from __future__ import annotations

import os
from dataclasses import field
from typing import ClassVar, Literal

from ndunet._checks import check_float, check_int
from ndunet.config import Config, config
from ndunet.inference.amp import Amp
from ndunet.inference.compiled import CompileMode

Optimizer = Literal["adamw", "adam", "sgd"]
Scheduler = Literal["constant", "cosine"]
NanPolicy = Literal["raise", "skip"]
BestMode = Literal["auto", "min", "max"]
BlendMode = Literal["constant", "gaussian"]

DEFAULT_EPOCHS = 10  # when neither epochs, max_steps nor time_limit bounds training


@config
class TrainerConfig(Config):
    """Settings of one training run. `batch_size` is per process (DDP: global = batch_size * world).

    Counting: a *step* is one optimizer update, made of `grad_accum` batches. Training stops at
    the first of `epochs`, `max_steps` and `time_limit` (seconds of training, resumes included);
    with none of them set it runs 10 epochs. The cosine schedule follows whichever of
    step / total steps and elapsed / time_limit is further along.
    """

    moved: ClassVar[dict[str, str]] = {
        **dict.fromkeys(
            ("sampler", "sample_steps", "guidance_scale"),
            "how to sample is the diffusion's config: Diffusion(..., sampler=, sample_steps=, "
            "guidance_scale=) or the run file's [diffusion] section",
        ),
        "resume": "pass resume=True to the trainer (ndunet train --resume)",
        "progress": "pass progress=False to the trainer (ndunet train --quiet)",
    }

    out_dir: str = "runs/ndunet"
    epochs: int | None = None
    max_steps: int = 0  # stop after this many optimizer steps (0: no step limit)
    time_limit: float | None = None  # stop after this many seconds of training (None: no limit)
    batch_size: int = 64
    seed: int = 0  # seeds torch, numpy and random (seed + rank) before the run starts
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
    # torch.compile the training forward (opt in; checkpoints stay those of the eager model)
    compile: bool = False
    compile_mode: CompileMode = "default"
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), or any torch device string
    # GPU speed: channels-last weights and 2-D/3-D inputs (NHWC / NDHWC, the layout of cuDNN's
    # fastest bf16 convolutions; other spatial_dims are left as they are), and cuDNN autotuning
    # of convolution algorithms per input shape (None: on for CUDA, off elsewhere)
    channels_last: bool = False
    cudnn_benchmark: bool | None = None
    # data
    num_workers: int = 0  # > 0: each sample loads under RNGs seeded by (seed, epoch, index)
    shuffle: bool = True
    drop_last: bool = False
    # validation, best checkpoint
    val_every: int = 1  # validate every N epochs (0: never at epoch end)
    val_every_steps: int = 0  # also validate every N steps (0: off)
    best_metric: str = "val_loss"  # "val_<metric>", or "loss" (epoch-mean training loss)
    best_mode: BestMode = "auto"  # auto: max for accuracy/dice/iou/psnr, min otherwise
    # whole-volume evaluation (SupervisedTrainer): with val_roi_size set, each volume (batch of
    # 1) is predicted by ndunet.inference.sliding_window_inference, and loss/metrics/best are
    # computed on the stitched output (None: the model on the batches as they come)
    val_roi_size: tuple[int, ...] | None = None  # window size per spatial axis
    val_overlap: float = 0.5
    val_sw_batch_size: int = 4  # windows per forward pass
    val_mode: BlendMode = "gaussian"  # how overlapping windows are blended
    # checkpoints
    save_checkpoints: bool = True  # False: write no checkpoints (benchmarks, throwaway runs)
    save_every_steps: int = 0  # also write checkpoints/last every N steps (0: only per epoch)
    keep_last: int = 2  # per-epoch checkpoints kept (0: none)
    nan_policy: NanPolicy = "raise"
    # logging
    log_every_steps: int = 10  # log.csv / TensorBoard rows of the training loss
    tensorboard: bool = False
    plot: bool = True  # draw loss.png (at the end, and every >= 30 s at epoch ends)
    # EMA and samples during training (DiffusionTrainer; how to sample is the diffusion's config)
    ema_decay: float = 0.0  # 0: no EMA
    ema_warmup: bool = True
    # power-function EMA profiles (EDM2 sigma_rel, e.g. [0.05, 0.1]) kept for post-hoc EMA
    # (ndunet.posthoc_ema), snapshots in ema/ every N steps (0: at each epoch end)
    ema_profiles: tuple[float, ...] = ()
    ema_snapshot_every: int = 0
    sample_every: int = 0  # sample a grid every N epochs (0: off)
    sample_n: int = 16
    # supervised
    loss: str = "cross_entropy"  # name; a callable given to the trainer is recorded by name
    metrics: tuple[str, ...] = field(default_factory=lambda: ("accuracy",))

    def check_values(self) -> None:
        for name in ("batch_size", "grad_accum", "sample_n", "log_every_steps"):
            check_int(name, getattr(self, name), 1)
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1)
        for name in ("max_steps", "warmup_steps", "num_workers", "val_every", "val_every_steps"):
            check_int(name, getattr(self, name), 0)
        for name in ("save_every_steps", "keep_last", "sample_every"):
            check_int(name, getattr(self, name), 0)
        if self.time_limit is not None:
            check_float("time_limit", self.time_limit, 0.0, low_open=True)
        for name in ("lr", "weight_decay", "grad_clip", "min_lr_ratio", "momentum"):
            check_float(name, getattr(self, name), 0.0)
        check_float("ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        for sigma_rel in self.ema_profiles:
            check_float("ema_profiles", sigma_rel, 0.0, 0.28, low_open=True, high_open=True)
        check_int("ema_snapshot_every", self.ema_snapshot_every, 0)
        roi = self.val_roi_size
        if roi is not None and (not roi or min(roi) < 1):
            raise ValueError(
                f"val_roi_size={list(roi)!r} is not valid; expected one positive window "
                "length per spatial axis, or None"
            )
        check_float("val_overlap", self.val_overlap, 0.0, 1.0, high_open=True)
        check_int("val_sw_batch_size", self.val_sw_batch_size, 1)
        if not self.out_dir:
            raise ValueError(f"out_dir={self.out_dir!r} is not valid; expected a folder path")
        if self.epochs is None and not self.max_steps and self.time_limit is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)

    def __post_init__(self) -> None:
        if isinstance(self.out_dir, os.PathLike):  # keep the config JSON-ready
            object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        super().__post_init__()

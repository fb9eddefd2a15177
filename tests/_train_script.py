"""Training run used by the resume and DDP tests, in-process (import `run`) or as a subprocess
(`python tests/_train_script.py OUT_DIR [--resume] [--batch-size N] ...`, also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ndunet.training import SupervisedTrainer


class NoisyPairs(Dataset):
    """(x + noise, y): the noise is drawn from the global torch RNG while loading, so exact
    resume must also restore the RNG that data loading sees."""

    def __init__(self, n: int, seed: int, noise: float, crash_after: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.calls, self.crash_after = 0, crash_after
        self.x = torch.randn(n, 2, 8, generator=g)  # (N, C, L): 1-D signals
        self.y = (self.x[:, 0].mean(-1) > self.x[:, 1].mean(-1)).long()
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if self.calls == self.crash_after:
            raise RuntimeError("simulated crash while loading")
        x = self.x[i]
        return (x + self.noise * torch.randn_like(x) if self.noise else x), self.y[i]


def make_model(dropout: float) -> nn.Module:
    torch.manual_seed(1234)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 2)
    )


def compile_with(backend: str) -> None:
    """Make torch.compile use ``backend`` (e.g. "aot_eager": AOTAutograd, and DDP's graph split
    at bucket boundaries, without inductor's C++ build); the trainer's mode is dropped."""
    real = torch.compile

    def compile_(module, mode=None, **options):
        return real(module, backend=backend, **options)

    torch.compile = compile_


def run(
    out_dir: str | Path,
    *,
    resume: bool = False,
    n: int = 128,
    noise: float = 0.1,
    dropout: float = 0.2,
    crash_after: int = 0,
    **overrides,
) -> SupervisedTrainer:
    """Train the tiny classifier; settings chosen to exercise every part of the resumable state."""
    settings = dict(
        epochs=3,
        batch_size=8,
        grad_accum=2,
        lr=3e-2,
        scheduler="cosine",
        warmup_steps=3,
        grad_clip=1.0,
        ema_decay=0.0,
        save_every_steps=1,
        keep_last=1,
        progress=False,
        seed=7,
        device="cpu",
        plot=False,
        log_every_steps=1,
    )
    settings.update(overrides)
    trainer = SupervisedTrainer(
        make_model(dropout),
        NoisyPairs(n, 0, noise, crash_after),
        NoisyPairs(32, 1, 0.0),
        out_dir=str(out_dir),
        resume=resume,
        **settings,
    )
    trainer.fit()
    return trainer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--save-every-steps", type=int, default=1)
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--scheduler", default="cosine")
    p.add_argument(
        "--then-resume-to", type=int, default=0, help="then resume in-process to N epochs"
    )
    p.add_argument("--compile-backend", help="train compiled (compile=True) with this backend")
    p.add_argument("--device", default="cpu", help="cpu (gloo under torchrun) or cuda (nccl)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.compile_backend:
        compile_with(a.compile_backend)
    kw = dict(
        n=a.samples,
        noise=a.noise,
        dropout=a.dropout,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        save_every_steps=a.save_every_steps,
        ema_decay=a.ema_decay,
        scheduler=a.scheduler,
        device=a.device,
    )
    run(a.out_dir, resume=a.resume, epochs=a.epochs, compile=bool(a.compile_backend), **kw)
    if a.then_resume_to:  # eager: a compiled run's checkpoint resumes without compile
        run(a.out_dir, resume=True, epochs=a.then_resume_to, **kw)


if __name__ == "__main__":
    main()

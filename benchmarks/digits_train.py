"""The training loop and picture helpers the digits benchmarks share (digits_quality.py,
digits_peer.py, digits_generation.py): one loop for ndunet and the peer alike."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ndunet.ema import EMA


def train(
    diffusion: torch.nn.Module,
    network: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    seconds: float,
    batch_size: int,
    lr: float,
    ema_decay: float,
    max_steps: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
) -> tuple[EMA, int]:
    """AdamW with warmup and a time-based cosine learning-rate decay, so any budget ends at a low
    rate; ``clock`` measures the budget (``time.process_time`` for CPU time). Returns (EMA,
    steps)."""
    opt = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=0.0)
    ema = EMA(network, decay=ema_decay)
    start, steps = clock(), 0
    gen = torch.Generator().manual_seed(seed)
    while (elapsed := clock() - start) < seconds:
        if max_steps and steps >= max_steps:
            break
        frac = max(elapsed / seconds, steps / max_steps if max_steps else 0.0)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (steps + 1) / 100) * 0.5 * (1 + math.cos(math.pi * frac))
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = diffusion(x[idx], None if y is None else y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
        opt.step()
        ema.update(network)
        steps += 1
    return ema, steps


def to_unit(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) / 2).squeeze(1).numpy()  # (N, 8, 8) in [0, 1]


def save_grid(samples: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(100, len(samples))
    rows = math.ceil(n / 10)
    fig, axes = plt.subplots(rows, 10, figsize=(10, rows * 1.05))
    for ax, img in zip(axes.flat, samples[:n]):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)

"""One pass over evaluation batches: mean loss and metrics, exact across batches and DDP ranks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ndunet.data.loader import unpack_batch
from ndunet.training import distributed as D
from ndunet.training.metrics import Metric

LossFn = Callable[[nn.Module, Tensor, Tensor | None], tuple[Tensor, Tensor | None]]


@torch.no_grad()
def evaluate_batches(
    batches: Iterable[Any],
    module: nn.Module,
    compute_loss: LossFn,
    metrics: Sequence[Metric],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    dist: D.DistInfo,
) -> dict[str, float]:
    """{"loss": sample-weighted mean loss, <metric name>: value}; metric sums are all-reduced
    over ranks before computing, so the result is that of the whole dataset."""
    for m in metrics:
        m.reset()
    totals = torch.zeros(2, dtype=torch.float64)  # sum of loss * n, n
    for batch in batches:
        x, y = unpack_batch(batch)
        x = x.to(device)
        y = y.to(device) if isinstance(y, Tensor) else y
        with autocast():
            loss, pred = compute_loss(module, x, y)
        totals += torch.tensor([float(loss) * len(x), len(x)], dtype=torch.float64)
        if pred is not None and y is not None:
            for m in metrics:
                m.update(pred.float(), y)
    states = D.all_reduce_sum([totals] + [s for m in metrics for s in m.state], dist, device)
    totals, rest = states[0], states[1:]
    for m in metrics:
        m.state, rest = rest[: len(m.state)], rest[len(m.state) :]
    out = {"loss": float(totals[0] / totals[1]) if totals[1] else float("nan")}
    out.update({m.name: m.compute() for m in metrics})
    return out

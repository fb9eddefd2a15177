"""One pass over evaluation batches: mean loss and metrics, exact across batches and DDP ranks;
and the whole-volume predictor that evaluation may use in place of the module."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ndunet._checks import invalid
from ndunet.data.loader import unpack_batch
from ndunet.inference import sliding_window_inference
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


class SlidingWindowPredictor(nn.Module):
    """``module`` run window by window over whole volumes (``sliding_window_inference`` with
    ``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``), called as the module is:
    (B, C, *spatial) -> (B, C_out, *spatial). Evaluation passes it to ``compute_loss`` in place
    of the module, so loss and metrics are those of the stitched whole-volume output."""

    def __init__(
        self,
        module: nn.Module,
        roi_size: Sequence[int],
        sw_batch_size: int = 4,
        overlap: float = 0.5,
        mode: str = "gaussian",
    ) -> None:
        super().__init__()
        self.module = module
        self.roi_size = tuple(roi_size)
        self.sw_batch_size, self.overlap, self.mode = sw_batch_size, overlap, mode

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() - 2 != len(self.roi_size):
            raise ValueError(
                invalid("val_roi_size", list(self.roi_size), f"{x.dim() - 2} window lengths, one")
                + f" per spatial axis of the data {tuple(x.shape)} (B, C, *spatial)"
            )
        return sliding_window_inference(
            x, self.roi_size, self.sw_batch_size, self.module, self.overlap, self.mode
        )

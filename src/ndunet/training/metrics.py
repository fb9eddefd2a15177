"""Metrics: accuracy, Dice, IoU (segmentation, any spatial_dims), PSNR.

Each metric exists as a plain function of one batch and as an accumulator whose state is a few
tensors of sums, so a dataset-level value is exact across batches and across DDP ranks
(all-reduce the state, then compute).

Conventions: `pred` are logits (B, K, *spatial) or (B, K) with K classes; K == 1 means binary
(foreground where the logit > 0). `target` holds integer labels (B, *spatial), (B, 1, *spatial)
or (B,); for K == 1, 0/1 values. Dice and IoU are computed from counts summed over the whole
dataset, per class, then averaged over the classes present in prediction or target (for binary,
foreground only) -- the macro F1 / Jaccard of scikit-learn on the flattened labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor


def _labels(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, int]:
    """(predicted labels, target labels, number of classes), both shaped like target (B, ...)."""
    if pred.dim() < 2:
        raise ValueError(f"pred of shape {tuple(pred.shape)}; expected logits (B, K, *spatial)")
    k = pred.shape[1]
    if target.dim() == pred.dim() and target.shape[1] == 1:
        target = target[:, 0]  # (B, *spatial)
    if target.shape != pred.shape[:1] + pred.shape[2:]:
        raise ValueError(
            f"target of shape {tuple(target.shape)} does not match pred {tuple(pred.shape)}; "
            "expected (B, *spatial) or (B, 1, *spatial)"
        )
    labels = (pred[:, 0] > 0).long() if k == 1 else pred.argmax(dim=1)
    return labels, target.long(), max(k, 2)


class Metric:
    """Accumulator: `update(pred, target)` per batch, `compute()` at the end. `state` is a list
    of float64 tensors of sums (all-reduce them to combine ranks). `higher_is_better` picks the
    direction of best_mode="auto"."""

    name = "metric"
    higher_is_better = True

    def __init__(self) -> None:
        self.state: list[Tensor] = []
        self.reset()

    def reset(self) -> None:
        """Zero the sums."""
        raise NotImplementedError

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one batch."""
        raise NotImplementedError

    def compute(self) -> float:
        """The value over everything added since reset()."""
        raise NotImplementedError


class Accuracy(Metric):
    """Fraction of correctly classified samples (or pixels/voxels for dense targets)."""

    name = "accuracy"

    def reset(self) -> None:
        self.state = [torch.zeros(2, dtype=torch.float64)]  # correct, total

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels, target, _ = _labels(pred.detach(), target)
        self.state[0] += torch.tensor(
            [(labels == target).sum().item(), target.numel()], dtype=torch.float64
        )

    def compute(self) -> float:
        correct, total = self.state[0].tolist()
        return correct / total if total else float("nan")


class _Overlap(Metric):
    """Per-class intersection / prediction / target counts, summed over all batches."""

    def reset(self) -> None:
        self.state = [torch.zeros(0, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)]

    def update(self, pred: Tensor, target: Tensor) -> None:
        labels, target, k = _labels(pred.detach(), target)
        if target.numel() and (target.min() < 0 or target.max() >= k):
            raise ValueError(
                f"target labels must lie in [0, {k - 1}], got [{int(target.min())}, {int(target.max())}]"
            )
        flat_p, flat_t = labels.reshape(-1), target.reshape(-1)  # (B * prod(spatial),)
        inter = torch.bincount(flat_t[flat_p == flat_t], minlength=k)
        counts = torch.stack(
            [inter, torch.bincount(flat_p, minlength=k), torch.bincount(flat_t, minlength=k)]
        )
        counts = counts.to(torch.float64).cpu()  # (3, K)
        if self.state[0].numel() == 0:
            self.state[0] = counts
            self.state[1] = torch.tensor([1.0 if pred.shape[1] == 1 else 0.0], dtype=torch.float64)
        else:
            self.state[0] += counts

    def _per_class(self) -> tuple[Tensor, Tensor, Tensor]:
        inter, n_pred, n_true = self.state[0]
        if self.state[1].item() > 0:  # binary: foreground only
            inter, n_pred, n_true = inter[1:], n_pred[1:], n_true[1:]
        return inter, n_pred, n_true

    def _reduce(self, score: Tensor, present: Tensor) -> float:
        return score[present].mean().item() if present.any() else float("nan")


class Dice(_Overlap):
    """Dice = 2|P∩T| / (|P| + |T|), macro-averaged over present classes."""

    name = "dice"

    def compute(self) -> float:
        if self.state[0].numel() == 0:
            return float("nan")
        inter, n_pred, n_true = self._per_class()
        denom = n_pred + n_true
        return self._reduce(2 * inter / denom.clamp_min(1), denom > 0)


class IoU(_Overlap):
    """IoU (Jaccard) = |P∩T| / |P∪T|, macro-averaged over present classes."""

    name = "iou"

    def compute(self) -> float:
        if self.state[0].numel() == 0:
            return float("nan")
        inter, n_pred, n_true = self._per_class()
        union = n_pred + n_true - inter
        return self._reduce(inter / union.clamp_min(1), union > 0)


class PSNR(Metric):
    """Mean over samples of 10 log10(data_range² / MSE); `pred` and `target` are images of the
    same shape. data_range defaults to 2 (data in [-1, 1])."""

    name = "psnr"

    def __init__(self, data_range: float = 2.0) -> None:
        self.data_range = data_range
        super().__init__()

    def reset(self) -> None:
        self.state = [torch.zeros(2, dtype=torch.float64)]  # sum of per-sample psnr, count

    def update(self, pred: Tensor, target: Tensor) -> None:
        values = psnr(pred.detach(), target, self.data_range, reduction="none")
        self.state[0] += torch.tensor([values.sum().item(), values.numel()], dtype=torch.float64)

    def compute(self) -> float:
        total, n = self.state[0].tolist()
        return total / n if n else float("nan")


def psnr(
    pred: Tensor,
    target: Tensor,
    data_range: float = 2.0,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Peak signal-to-noise ratio in dB per sample (B,), or its mean. Identical images give inf."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"psnr: reduction={reduction!r}; allowed: 'mean', 'none'")
    if pred.shape != target.shape:
        raise ValueError(
            f"psnr: pred {tuple(pred.shape)} and target {tuple(target.shape)} must match"
        )
    mse = (pred.double() - target.double()).pow(2).reshape(len(pred), -1).mean(dim=1)  # (B,)
    values = 10 * torch.log10(data_range**2 / mse)
    return values if reduction == "none" else values.mean()


def _functional(cls: type[Metric]) -> Callable[[Tensor, Tensor], float]:
    def fn(pred: Tensor, target: Tensor) -> float:
        m = cls()
        m.update(pred, target)
        return m.compute()

    fn.__name__ = cls.name
    fn.__doc__ = f"{cls.__doc__} (one batch)"
    return fn


accuracy = _functional(Accuracy)
dice = _functional(Dice)
iou = _functional(IoU)

_METRICS: dict[str, type[Metric]] = {"accuracy": Accuracy, "dice": Dice, "iou": IoU, "psnr": PSNR}


def get_metric(spec: str | Metric) -> Metric:
    """A fresh accumulator from a name (accuracy, dice, iou, psnr) or a Metric instance."""
    if isinstance(spec, Metric):
        return spec
    if not isinstance(spec, str) or spec not in _METRICS:
        raise ValueError(
            f"metrics: unknown metric {spec!r}; valid: {', '.join(_METRICS)} (or a Metric instance)"
        )
    return _METRICS[spec]()

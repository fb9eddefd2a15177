"""Which checkpoint is "best": one metric, a direction, the best value so far."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ndunet.training.metrics import Metric


class BestTracker:
    """Tracks `key` ("loss": epoch-mean training loss, "val_loss", or "val_<metric>")."""

    def __init__(self, key: str, mode: str) -> None:
        self.key, self.mode = key, mode
        self.value: float | None = None

    @classmethod
    def from_config(
        cls, best_metric: str, best_mode: str, metrics: Sequence[Metric], has_val: bool
    ) -> BestTracker:
        """Resolve the config: without validation data the key falls back to "loss"; mode "auto"
        is max for metrics whose `higher_is_better` is set, min for losses. Raises ValueError
        for a key this run will never produce."""
        by_name = {f"val_{m.name}": m for m in metrics} if has_val else {}
        allowed = ["loss", *(["val_loss"] if has_val else []), *by_name]
        key = best_metric if has_val else "loss"
        if key not in allowed:
            raise ValueError(
                f"best_metric={best_metric!r}; with this setup allowed: {', '.join(allowed)}"
            )
        mode = best_mode
        if mode == "auto":
            mode = "max" if key in by_name and by_name[key].higher_is_better else "min"
        return cls(key, mode)

    def update(self, value: float) -> bool:
        """Record a new value; True when it is the best so far (NaN never is)."""
        if not math.isfinite(value):
            return False
        better = self.value is None or (
            value < self.value if self.mode == "min" else value > self.value
        )
        if better:
            self.value = value
        return better

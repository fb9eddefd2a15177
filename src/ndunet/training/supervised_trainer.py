"""SupervisedTrainer: classification, segmentation and regression with the shared engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from ndunet.training.evaluation import SlidingWindowPredictor
from ndunet.training.losses import get_loss
from ndunet.training.metrics import Metric, get_metric
from ndunet.training.trainer import Trainer
from ndunet.training.trainer_config import TrainerConfig


class SupervisedTrainer(Trainer):
    """Train `model` so that loss(model(x), y) falls.

    `train_data` / `val_data`: see `ndunet.data.loader` (Dataset, DataLoader, tensor/array,
    `(X, Y)` or `{"x": X, "y": Y}`; samples `(x, y)` or `{"x", "y"}`). `loss`: a name
    (cross_entropy, bce, dice, dice_ce, mse, l1) or `fn(pred, target) -> scalar`. `metrics`: names
    (accuracy, dice, iou, psnr) or Metric instances. Other keywords are TrainerConfig fields;
    `val_roi_size=(64, 64, 32)` evaluates whole volumes through sliding windows (`val_overlap`,
    `val_sw_batch_size`, `val_mode`), so the best checkpoint is chosen on what `predict` outputs.

        trainer = SupervisedTrainer(model, train, val, out_dir="runs/cls", epochs=10, lr=1e-3)
        trainer.fit(); trainer.evaluate(test)
    """

    task = "supervised"

    def __init__(
        self,
        model: nn.Module,
        train_data: Any,
        val_data: Any = None,
        loss: str | Callable[[Tensor, Tensor], Tensor] | None = None,
        metrics: Sequence[str | Metric] | None = None,
        *,
        config: TrainerConfig | None = None,
        **overrides: Any,
    ) -> None:
        if loss is not None:
            fn, name = get_loss(loss)
            overrides["loss"] = name
        if metrics is not None:
            if isinstance(metrics, (str, Metric)):
                raise TypeError(f"metrics={metrics!r}; pass a sequence, e.g. ('accuracy',)")
            overrides["metrics"] = [m if isinstance(m, str) else m.name for m in metrics]
        super().__init__(model, train_data, val_data, config=config, **overrides)
        self.loss_fn = fn if loss is not None else get_loss(self.config.loss)[0]
        specs = list(metrics) if metrics is not None else list(self.config.metrics)
        self.metrics = [get_metric(m) for m in specs]

    def eval_predictor(self) -> tuple[nn.Module, int]:
        """The model, or with ``val_roi_size`` set the model over whole volumes by sliding
        windows, one volume per batch (volumes may differ in shape)."""
        cfg = self.config
        if cfg.val_roi_size is None:
            return self.module, cfg.batch_size
        predictor = SlidingWindowPredictor(
            self.module, cfg.val_roi_size, cfg.val_sw_batch_size, cfg.val_overlap, cfg.val_mode
        )
        return predictor, 1

    def compute_loss(
        self, module: nn.Module, x: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if y is None:
            raise ValueError(
                "SupervisedTrainer needs targets: samples must be (x, y) or {'x': x, 'y': y}"
            )
        pred = module(x)
        return self.loss_fn(pred, y), pred

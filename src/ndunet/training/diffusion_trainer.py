"""DiffusionTrainer: train a `ndunet.Diffusion` wrapper (its forward returns the loss), keep an
EMA of the network (and power-function EMA profiles for post-hoc EMA), and write sample grids as
training goes."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ndunet.data.loader import as_dataset, unpack_batch
from ndunet.rng import capture_rng, restore_rng
from ndunet.training.callbacks import Callback
from ndunet.training.trainer import Trainer

POWER_EMA_PREFIX = "power_ema."  # extra_state keys of the power-function EMA profiles


def _num_classes(diffusion: nn.Module) -> int | None:
    for obj in (diffusion, getattr(diffusion, "model", None)):
        n = getattr(obj, "num_classes", None)
        if n:
            return int(n)
    return None


class PowerEMACallback(Callback):
    """Updates the trainer's power-function EMA profiles after each step and writes snapshots to
    ``ema/`` (every ``ema_snapshot_every`` steps, or at each epoch end, and at the end)."""

    def on_fit_start(self, trainer: Trainer) -> None:
        tr: Any = trainer
        tr.power_ema.to(tr.device)  # after a resume has loaded it

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        tr: Any = trainer
        if not math.isfinite(loss):  # a skipped update changes no weights
            return
        tr.power_ema.update(tr.network)
        every = tr.config.ema_snapshot_every
        if every and tr.step % every == 0:
            self._snapshot(tr)

    def on_epoch_end(self, trainer: Trainer, summary: dict[str, float]) -> None:
        if not trainer.config.ema_snapshot_every:
            self._snapshot(trainer)

    def on_fit_end(self, trainer: Trainer, summary: dict[str, float]) -> None:
        self._snapshot(trainer)

    @staticmethod
    def _snapshot(trainer: Any) -> None:
        if trainer.dist.is_main and trainer.power_ema.count > 0:
            from ndunet.posthoc_ema import save_snapshot

            save_snapshot(trainer.out_dir, trainer.power_ema)


class DiffusionTrainer(Trainer):
    """Train `diffusion` (e.g. `Diffusion(UNet(...))`) on samples x or (x, y). y is passed on as
    class labels when the network is class-conditional (`num_classes`); with an image condition
    (DiffusionConfig condition='image') the items are (input, target) pairs, as for supervised
    restoration: the model learns to generate the target given the input. EMA is on by default
    (ema_decay=0.9999); `ema_profiles` also keeps power-function EMAs for post-hoc EMA
    (ndunet.posthoc_ema); `sample_every=N` writes `samples/epoch-XXXX.png` every N epochs from
    the EMA weights. Other keywords are TrainerConfig fields."""

    task = "diffusion"
    config_defaults: ClassVar[dict[str, Any]] = {"ema_decay": 0.9999, "metrics": ()}

    def __init__(
        self,
        diffusion: nn.Module,
        train_data: Any,
        val_data: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(getattr(diffusion, "model", None), nn.Module):
            raise TypeError(
                f"diffusion must wrap a network in `.model` (ndunet.Diffusion), got {type(diffusion).__name__}"
            )
        super().__init__(diffusion, train_data, val_data, **options)
        self.num_classes = _num_classes(diffusion)
        cfg = getattr(diffusion, "config", None)
        self.condition = getattr(cfg, "condition", "none")
        self.power_ema: nn.Module | None = None
        if self.config.ema_profiles:
            from ndunet.posthoc_ema import PowerEMA

            self.power_ema = PowerEMA(self.network, self.config.ema_profiles)
            self.callbacks.append(PowerEMACallback())

    @property
    def network(self) -> nn.Module:
        return self.module.model

    def compute_loss(
        self, module: nn.Module, x: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if self.condition == "image":
            cond, x = x, self._target(y)
        if self.sample_shape is None:
            self.sample_shape = tuple(x.shape[1:])
        if self.condition == "image":
            return module(x, cond=cond), None
        return module(x, y if self.num_classes else None), None

    @staticmethod
    def _target(y: Any) -> Tensor:
        if not isinstance(y, Tensor) or not y.is_floating_point() or y.dim() < 3:
            got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, Tensor) else repr(y)
            raise ValueError(
                "condition='image' trains on (input, target) pairs with a floating target "
                f"(B, C, *spatial); got a target {got}"
            )
        return y

    def diffusion_entry(self) -> dict[str, Any] | None:
        cfg = getattr(self.module, "config", None)
        return {
            "type": type(self.module).__name__,
            "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        }

    def extra_state(self) -> dict[str, Tensor]:
        state = {k: v for k, v in self.module.state_dict().items() if not k.startswith("model.")}
        if self.power_ema is not None:
            state.update({POWER_EMA_PREFIX + k: v for k, v in self.power_ema.state_dict().items()})
        return state

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        power = {
            k.removeprefix(POWER_EMA_PREFIX): v
            for k, v in state.items()
            if k.startswith(POWER_EMA_PREFIX)
        }
        state = {k: v for k, v in state.items() if not k.startswith(POWER_EMA_PREFIX)}
        if self.power_ema is not None:
            if not power:
                raise ValueError("the checkpoint has no power EMA profiles but ema_profiles is set")
            self.power_ema.load_state_dict(power)
        if state:
            missing = self.module.load_state_dict(
                {**state, **{f"model.{k}": v for k, v in self.network.state_dict().items()}},
                strict=False,
            )
            if missing.unexpected_keys:
                raise ValueError(
                    f"checkpoint has unknown diffusion tensors {missing.unexpected_keys}"
                )

    def _first_item(self) -> tuple[Any, Any]:
        """The first training item, RNG untouched."""
        rng = capture_rng()
        try:
            data = (
                self.train_data.dataset
                if isinstance(self.train_data, torch.utils.data.DataLoader)
                else as_dataset(self.train_data)
            )
            return unpack_batch(data[0])
        finally:
            restore_rng(rng)

    def _shape(self) -> tuple[int, ...]:
        if self.sample_shape is None:  # before training: peek at one sample
            x, y = self._first_item()
            item = self._target(torch.as_tensor(y)[None])[0] if self.condition == "image" else x
            self.sample_shape = tuple(torch.as_tensor(item).shape)
        return self.sample_shape

    def _conditions(self, n: int) -> Tensor:
        """Inputs of the first ``n`` items (val data first) for an image-conditioned model."""
        data = self.val_data if self.val_data is not None else self.train_data
        if isinstance(data, torch.utils.data.DataLoader):
            data = data.dataset
        rng = capture_rng()
        try:
            items = [torch.as_tensor(unpack_batch(data[i % len(data)])[0]) for i in range(n)]
        finally:
            restore_rng(rng)
        return torch.stack(items).to(self.device)

    @torch.no_grad()
    def sample(
        self,
        n: int = 16,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        y: Tensor | None = None,
        cond: Tensor | None = None,
        use_ema: bool = True,
        seed: int | None = None,
    ) -> Tensor:
        """`n` samples of the training shape (C, *spatial), from the EMA weights when there are
        any. `steps`, `sampler` and `guidance_scale` default to the diffusion's config.
        Class-conditional networks get labels 0, 1, ... cycling unless `y` is given; an image
        condition defaults to the inputs of the first `n` items (val data first). Uses its own
        generator (seed: config.seed by default), so the training RNG streams are untouched.
        The network runs under the run's `amp` (the samplers' arithmetic stays float32)."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; must be an integer >= 1")
        self._setup_runtime()
        cfg = self.config
        if y is None and self.num_classes:
            y = torch.arange(n, device=self.device) % self.num_classes
        if cond is None and self.condition == "image":
            cond = self._conditions(n)
        generator = torch.Generator(self.device).manual_seed(cfg.seed if seed is None else seed)
        model = self.ema.module if use_ema and self.ema is not None else None
        rng = capture_rng()
        try:
            out = self.module.sample(
                n,
                self._shape(),
                steps=steps,
                sampler=sampler,
                guidance_scale=guidance_scale,
                y=y,
                generator=generator,
                progress=False,
                model=model,
                amp=cfg.amp,  # the network's forward under the run's autocast dtype
                **({"cond": cond} if cond is not None else {}),
            )
        finally:
            restore_rng(rng)
        return out

    def on_epoch_end(self, epoch: int) -> None:
        every = self.config.sample_every
        if not every or epoch % every:
            return
        x = self.sample(self.config.sample_n)  # every rank samples (cheap) so no rank waits
        if not self.dist.is_main:
            return
        folder = self.out_dir / "samples"
        folder.mkdir(exist_ok=True)
        from ndunet.files import safe_write_with
        from ndunet.viz import save_samples

        safe_write_with(
            folder / f"epoch-{epoch:04d}.png",
            lambda path: save_samples(x.float().cpu(), path),
            root=self.out_dir,
        )

"""DiffusionTrainer: train a `ndunet.Diffusion` wrapper (its forward returns the loss), keep an
EMA of the network, and write sample grids as training goes."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ndunet.data.loader import as_dataset, unpack_batch
from ndunet.rng import capture_rng, restore_rng
from ndunet.training.trainer import Trainer


def _num_classes(diffusion: nn.Module) -> int | None:
    for obj in (diffusion, getattr(diffusion, "model", None)):
        n = getattr(obj, "num_classes", None)
        if n:
            return int(n)
    return None


class DiffusionTrainer(Trainer):
    """Train `diffusion` (e.g. `Diffusion(UNet(...))`) on samples x or (x, y); y is passed on
    only when the network is class-conditional (`num_classes`). EMA is on by default
    (ema_decay=0.9999); `sample_every=N` writes `samples/epoch-XXXX.png` every N epochs from the
    EMA weights. Other keywords are TrainerConfig fields."""

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

    @property
    def network(self) -> nn.Module:
        return self.module.model

    def compute_loss(
        self, module: nn.Module, x: Tensor, y: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        if self.sample_shape is None:
            self.sample_shape = tuple(x.shape[1:])
        return module(x, y if self.num_classes else None), None

    def diffusion_entry(self) -> dict[str, Any] | None:
        cfg = getattr(self.module, "config", None)
        return {
            "type": type(self.module).__name__,
            "config": cfg.to_dict() if hasattr(cfg, "to_dict") else None,
        }

    def extra_state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.module.state_dict().items() if not k.startswith("model.")}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        if state:
            missing = self.module.load_state_dict(
                {**state, **{f"model.{k}": v for k, v in self.network.state_dict().items()}},
                strict=False,
            )
            if missing.unexpected_keys:
                raise ValueError(
                    f"checkpoint has unknown diffusion tensors {missing.unexpected_keys}"
                )

    def _shape(self) -> tuple[int, ...]:
        if self.sample_shape is None:  # before training: peek at one sample, RNG untouched
            rng = capture_rng()
            try:
                data = (
                    self.train_data.dataset
                    if isinstance(self.train_data, torch.utils.data.DataLoader)
                    else as_dataset(self.train_data)
                )
                x, _ = unpack_batch(data[0])
            finally:
                restore_rng(rng)
            self.sample_shape = tuple(torch.as_tensor(x).shape)
        return self.sample_shape

    @torch.no_grad()
    def sample(
        self,
        n: int = 16,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        guidance_scale: float | None = None,
        y: Tensor | None = None,
        use_ema: bool = True,
        seed: int | None = None,
    ) -> Tensor:
        """`n` samples of the training shape (C, *spatial), from the EMA weights when there are
        any. `steps`, `sampler` and `guidance_scale` default to the diffusion's config.
        Class-conditional networks get labels 0, 1, ... cycling unless `y` is given. Uses its
        own generator (seed: config.seed by default), so the training RNG streams are untouched."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; must be an integer >= 1")
        self._setup_runtime()
        cfg = self.config
        if y is None and self.num_classes:
            y = torch.arange(n, device=self.device) % self.num_classes
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

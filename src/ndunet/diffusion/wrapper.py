"""Diffusion: wraps a network, owns the schedule, the parameterization, the loss and sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from . import losses, parameterization, process
from .config import DiffusionConfig
from .denoise import Model, call_model, eval_mode, guided_output, make_denoiser, replacement
from .samplers import Callback, SamplerName, get_sampler, sample_timesteps
from .schedules import Schedule, ScheduleName
from .validation import check_data_shape, check_labels


class Diffusion(nn.Module):
    """Gaussian diffusion around ``model(x_t, t, y=None)`` for data ``(B, C, *spatial)`` of any N.

    ``diffusion(x0, y)`` is the training loss; :meth:`sample` and :meth:`inpaint` generate.
    """

    def __init__(
        self,
        model: Model,
        timesteps: int = 1000,
        schedule: ScheduleName = "cosine",
        prediction: parameterization.Prediction = "v",
        loss: losses.LossName = "l2",
        loss_weighting: losses.Weighting = "min_snr",
        min_snr_gamma: float = 5.0,
        cond_drop_prob: float = 0.0,
        num_classes: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y=None), got {model!r}")
        model_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            num_classes = model_classes
        elif model_classes is not None and model_classes != num_classes:
            raise ValueError(
                f"num_classes={num_classes} disagrees with model.num_classes={model_classes}"
            )
        self.config = DiffusionConfig(
            timesteps=timesteps,
            schedule=schedule,
            prediction=prediction,
            loss=loss,
            loss_weighting=loss_weighting,
            min_snr_gamma=min_snr_gamma,
            cond_drop_prob=cond_drop_prob,
            num_classes=num_classes,
            **options,
        )
        self.model = model  # registered as a submodule when it is an nn.Module
        self.schedule = Schedule.from_name(schedule, timesteps, **self.config.schedule_kwargs)

    @classmethod
    def from_config(cls, model: Model, config: DiffusionConfig | dict[str, Any]) -> Diffusion:
        """Build from a :class:`DiffusionConfig` (or its ``to_dict()``)."""
        if isinstance(config, dict):
            config = DiffusionConfig.from_dict(config)
        return cls(model, **config.to_dict())

    @property
    def timesteps(self) -> int:
        return self.config.timesteps

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    # ---- forward process and training -------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Noise clean data to step ``t`` (int64 tensor of shape (B,))."""
        noise = torch.randn_like(x0) if noise is None else noise
        return process.q_sample(self.schedule, x0, t, noise)

    def forward(
        self,
        x0: Tensor,
        y: Tensor | None = None,
        *,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Training loss (scalar) at a random step per sample (or the given ``t``/``noise``)."""
        if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 3:
            raise ValueError(
                "x0 must be a floating tensor (B, C, *spatial) with at least one spatial axis, got "
                + (f"shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else repr(type(x0)))
            )
        check_data_shape(self.model, tuple(x0.shape[1:]), "x0.shape[1:]")
        batch = x0.shape[0]
        check_labels(y, batch, self.num_classes, allow_null=True)
        if t is None:
            t = torch.randint(0, self.timesteps, (batch,), device=x0.device)
        elif t.shape != (batch,) or t.dtype != torch.long:
            raise ValueError(
                f"t must be an int64 tensor of shape ({batch},), got {t.shape} {t.dtype}"
            )
        noise = torch.randn_like(x0) if noise is None else noise
        if y is not None and self.config.cond_drop_prob > 0:  # classifier-free guidance dropout
            drop = torch.rand(batch, device=y.device) < self.config.cond_drop_prob
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        ac = self.schedule.alphas_cumprod
        alpha = self.schedule.gather(ac.sqrt(), t, x0)  # (B, 1, ..., 1)
        sigma = self.schedule.gather((1.0 - ac).sqrt(), t, x0)
        x_t = alpha * x0 + sigma * noise
        out = call_model(self.model, x_t, t, y)
        if out.shape != x0.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} != input {tuple(x0.shape)}")
        cfg = self.config
        target = parameterization.target(cfg.prediction, x0, noise, alpha, sigma)
        per_sample = losses.per_sample_loss(out.float(), target.float(), cfg.loss, cfg.huber_delta)
        if cfg.loss_weighting == "min_snr":
            snr = self.schedule.snr[t.cpu()].to(per_sample.device, per_sample.dtype)
            per_sample = per_sample * losses.min_snr_weight(snr, cfg.prediction, cfg.min_snr_gamma)
        return per_sample.mean()

    # ---- the reverse process ------------------------------------------------------------------
    def model_output(
        self,
        x_t: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        guidance_scale: float = 1.0,
        model: Model | None = None,
    ) -> Tensor:
        """Raw network output with classifier-free guidance (cond and uncond in one batch)."""
        model = self.model if model is None else model
        return guided_output(model, x_t, t, y, guidance_scale, self.num_classes)

    def denoiser(
        self,
        y: Tensor | None = None,
        guidance_scale: float = 1.0,
        clip_denoised: bool = False,
        model: Model | None = None,
    ) -> Callable[[Tensor, int], tuple[Tensor, Tensor]]:
        """``denoise(x_t, t) -> (x0_hat, eps_hat)`` for the samplers."""
        model = self.model if model is None else model
        return make_denoiser(
            model, self.schedule.alphas_cumprod, self.config, y, guidance_scale, clip_denoised
        )

    def _prepare(
        self,
        model: Model | None,
        shape: Sequence[int],
        batch_size: int,
        steps: int,
        sampler: str,
        eta: float,
        guidance_scale: float,
        y: Tensor | None,
    ) -> tuple[Model, list[int], Callable[..., Tensor]]:
        """Validate every sampling argument before any work."""
        model = self.model if model is None else model
        if not callable(model):
            raise TypeError(f"model must be callable, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        check_data_shape(model, shape, "shape")
        fn = get_sampler(sampler)
        ts = sample_timesteps(self.timesteps, steps, self.config.timestep_spacing)
        if not eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        if eta != 0.0 and sampler != "ddim":
            raise ValueError(f"eta={eta} is only used by sampler='ddim', got sampler={sampler!r}")
        if not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")
        if guidance_scale != 1.0:
            if self.num_classes is None:
                raise ValueError(
                    f"guidance_scale={guidance_scale} needs a class-conditioned model "
                    "(num_classes is None); use guidance_scale=1.0"
                )
            if y is None:
                raise ValueError(f"guidance_scale={guidance_scale} needs class labels y")
        check_labels(y, batch_size, self.num_classes, allow_null=True)
        return model, ts, fn

    @staticmethod
    def _device_dtype(model: Model, device: torch.device | str | None) -> tuple[Any, Any]:
        param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        if device is None:
            device = param.device if param is not None else torch.device("cpu")
        return torch.device(device), dtype

    def sample(
        self,
        batch_size: int,
        shape: Sequence[int],
        steps: int = 50,
        sampler: SamplerName = "ddim",
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        return_intermediates: bool = False,
        clip_denoised: bool | None = None,
        model: Model | None = None,
        device: torch.device | str | None = None,
        callback: Callback | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Generate ``(batch_size, *shape)`` samples, ``shape = (C, *spatial)``.

        ``model`` overrides the network (e.g. EMA weights); ``return_intermediates`` also returns
        the trajectory ``(steps + 1, B, C, *spatial)`` from pure noise to the result.
        """
        shape = tuple(shape)
        model, ts, fn = self._prepare(
            model, shape, batch_size, steps, sampler, eta, guidance_scale, y
        )
        device, dtype = self._device_dtype(model, device)
        x = torch.randn((batch_size, *shape), generator=generator, device=device, dtype=dtype)
        y = None if y is None else y.to(device)
        return self._run(
            fn,
            model,
            x,
            ts,
            eta,
            guidance_scale,
            y,
            generator,
            progress,
            return_intermediates,
            clip_denoised,
            callback,
            post_step=None,
        )

    def inpaint(
        self,
        known: Tensor,
        mask: Tensor,
        steps: int = 50,
        sampler: SamplerName = "ddpm",
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        return_intermediates: bool = False,
        clip_denoised: bool | None = None,
        model: Model | None = None,
        callback: Callback | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Complete ``known`` (B, C, *spatial) where ``mask`` is 0, keeping it where mask is 1.

        After every step the known region is replaced by ``known`` noised to the next step
        (RePaint's replacement, Lugmayr et al. 2022, https://arxiv.org/abs/2201.09865).
        """
        if not isinstance(known, Tensor) or not known.is_floating_point() or known.dim() < 3:
            raise ValueError("known must be a floating tensor (B, C, *spatial)")
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a tensor, got {type(mask).__name__}")
        try:
            torch.broadcast_shapes(mask.shape, known.shape)
        except RuntimeError as err:
            raise ValueError(
                f"mask shape {tuple(mask.shape)} does not broadcast to known {tuple(known.shape)}"
            ) from err
        model, ts, fn = self._prepare(
            model, tuple(known.shape[1:]), known.shape[0], steps, sampler, eta, guidance_scale, y
        )
        replace = replacement(known, mask, self.schedule.alphas_cumprod, generator)
        x = torch.randn(known.shape, generator=generator, device=known.device, dtype=known.dtype)
        x = replace(x, ts[0])
        y = None if y is None else y.to(known.device)
        return self._run(
            fn,
            model,
            x,
            ts,
            eta,
            guidance_scale,
            y,
            generator,
            progress,
            return_intermediates,
            clip_denoised,
            callback,
            post_step=replace,
        )

    def _run(
        self,
        fn: Callable[..., Tensor],
        model: Model,
        x: Tensor,
        ts: list[int],
        eta: float,
        guidance_scale: float,
        y: Tensor | None,
        generator: torch.Generator | None,
        progress: bool,
        return_intermediates: bool,
        clip_denoised: bool | None,
        callback: Callback | None,
        post_step: Callable[[Tensor, int], Tensor] | None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        clip = self.config.clip_denoised if clip_denoised is None else bool(clip_denoised)
        trajectory = [x] if return_intermediates else []

        def observe(i: int, t: int, x_next: Tensor, x0: Tensor) -> None:
            if return_intermediates:
                trajectory.append(x_next)
            if callback is not None:
                callback(i, t, x_next, x0)

        with eval_mode(model):
            out = fn(
                self.denoiser(y, guidance_scale, clip, model),
                x,
                ts,
                self.schedule.alphas_cumprod,
                eta=eta,
                generator=generator,
                post_step=post_step,
                callback=observe,
                progress=progress,
            )
        if return_intermediates:
            return out, torch.stack(trajectory)  # (steps + 1, B, C, *spatial)
        return out

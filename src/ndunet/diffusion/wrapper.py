"""Diffusion: wraps a network, owns the schedule, the parameterization, the loss and sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import torch
from torch import Tensor, nn

from ndunet._checks import did_you_mean

if TYPE_CHECKING:
    from typing_extensions import Unpack

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
        *,
        config: DiffusionConfig | None = None,
        **options: Any,
    ) -> None:
        """Options are :class:`DiffusionConfig` fields; or pass ``config=`` (used as it is)."""
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x_t, t, y=None), got {model!r}")
        model_classes = getattr(model, "num_classes", None)
        if config is None:
            num_classes = model_classes if num_classes is None else num_classes
            config = DiffusionConfig(
                timesteps=timesteps, schedule=schedule, prediction=prediction, loss=loss,
                loss_weighting=loss_weighting, min_snr_gamma=min_snr_gamma,
                cond_drop_prob=cond_drop_prob, num_classes=num_classes, **options,
            )  # fmt: skip
        elif not isinstance(config, DiffusionConfig):
            raise TypeError(f"config must be a DiffusionConfig, got {type(config).__name__}")
        if config.num_classes is None and model_classes is not None:
            config = config.replace(num_classes=model_classes)
        elif model_classes is not None and model_classes != config.num_classes:
            raise ValueError(
                f"num_classes={config.num_classes} disagrees with model.num_classes={model_classes}"
            )
        self.config = config
        self.model = model  # registered as a submodule when it is an nn.Module
        self.schedule = Schedule.from_name(
            config.schedule, config.timesteps, **config.schedule_kwargs
        )

    @classmethod
    def from_config(cls, model: Model, config: DiffusionConfig | dict[str, Any]) -> Diffusion:
        """Build from a :class:`DiffusionConfig` (or its ``to_dict()``)."""
        if isinstance(config, dict):
            config = DiffusionConfig.from_dict(config)
        return cls(model, config=config)

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
        self, shape: Sequence[int], batch_size: int, options: SampleOptions, default_sampler: str
    ) -> _Plan:
        """Resolve the defaults (from the config) and validate every sampling option before any
        work."""
        unknown = sorted(set(options) - set(SampleOptions.__annotations__))
        if unknown:
            names = sorted(SampleOptions.__annotations__)
            raise TypeError(
                f"unknown sampling option {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
                f"valid: {names}"
            )
        cfg = self.config
        model = options.get("model")
        model = self.model if model is None else model
        if not callable(model):
            raise TypeError(f"model must be callable, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        check_data_shape(model, shape, "shape")
        sampler = options.get("sampler")
        sampler = default_sampler if sampler is None else sampler
        steps = options.get("steps")
        steps = cfg.sample_steps if steps is None else steps
        guidance = options.get("guidance_scale")
        guidance = cfg.guidance_scale if guidance is None else guidance
        eta = options.get("eta", 0.0)
        y = options.get("y")
        fn = get_sampler(sampler)
        ts = sample_timesteps(self.timesteps, steps, cfg.timestep_spacing)
        if not eta >= 0.0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        if eta != 0.0 and sampler != "ddim":
            raise ValueError(f"eta={eta} is only used by sampler='ddim', got sampler={sampler!r}")
        if not math.isfinite(guidance):
            raise ValueError(f"guidance_scale must be finite, got {guidance!r}")
        if guidance != 1.0 and y is None:
            if self.num_classes is None and options.get("guidance_scale") is None:
                guidance = 1.0  # the config's default guidance only applies to conditioned runs
            elif self.num_classes is None:
                raise ValueError(
                    f"guidance_scale={guidance} needs a class-conditioned model "
                    "(num_classes is None); use guidance_scale=1.0"
                )
            else:
                raise ValueError(f"guidance_scale={guidance} needs class labels y")
        check_labels(y, batch_size, self.num_classes, allow_null=True)
        clip = options.get("clip_denoised")
        return _Plan(
            fn, model, ts, eta, guidance, y, options.get("generator"),
            bool(options.get("progress", False)), bool(options.get("return_intermediates", False)),
            cfg.clip_denoised if clip is None else bool(clip), options.get("callback"),
        )  # fmt: skip

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
        steps: int | None = None,
        sampler: SamplerName | None = None,
        *,
        device: torch.device | str | None = None,
        **options: Unpack[SampleOptions],
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Generate ``(batch_size, *shape)`` samples, ``shape = (C, *spatial)``.

        Options (:class:`SampleOptions`): ``steps``, ``sampler``, ``guidance_scale`` (defaults:
        the config's ``sample_steps``, ``sampler``, ``guidance_scale``), ``eta`` (DDIM), ``y``
        class labels, ``generator``, ``progress``, ``clip_denoised``, ``callback``, ``model``
        (another network, e.g. EMA weights) and ``return_intermediates`` (also return the
        trajectory ``(steps + 1, B, C, *spatial)`` from pure noise to the result).
        """
        shape = tuple(shape)
        options = {**options, "steps": steps, "sampler": sampler}  # type: ignore[typeddict-item]
        plan = self._prepare(shape, batch_size, options, self.config.sampler)
        device, dtype = self._device_dtype(plan.model, device)
        x = torch.randn((batch_size, *shape), generator=plan.generator, device=device, dtype=dtype)
        return self._run(x, plan._replace(y=None if plan.y is None else plan.y.to(device)), None)

    def inpaint(
        self,
        known: Tensor,
        mask: Tensor,
        steps: int | None = None,
        sampler: SamplerName | None = None,
        **options: Unpack[SampleOptions],
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Complete ``known`` (B, C, *spatial) where ``mask`` is 0, keeping it where mask is 1.

        After every step the known region is replaced by ``known`` noised to the next step
        (RePaint's replacement, Lugmayr et al. 2022, https://arxiv.org/abs/2201.09865). Options
        as for :meth:`sample`; the sampler defaults to ``"ddpm"``.
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
        options = {**options, "steps": steps, "sampler": sampler}  # type: ignore[typeddict-item]
        plan = self._prepare(tuple(known.shape[1:]), known.shape[0], options, "ddpm")
        replace = replacement(known, mask, self.schedule.alphas_cumprod, plan.generator)
        x = torch.randn(
            known.shape, generator=plan.generator, device=known.device, dtype=known.dtype
        )
        x = replace(x, plan.timesteps[0])
        y = None if plan.y is None else plan.y.to(known.device)
        return self._run(x, plan._replace(y=y), replace)

    def _run(
        self, x: Tensor, plan: _Plan, post_step: Callable[[Tensor, int], Tensor] | None
    ) -> Tensor | tuple[Tensor, Tensor]:
        trajectory = [x] if plan.return_intermediates else []

        def observe(i: int, t: int, x_next: Tensor, x0: Tensor) -> None:
            if plan.return_intermediates:
                trajectory.append(x_next)
            if plan.callback is not None:
                plan.callback(i, t, x_next, x0)

        with eval_mode(plan.model):
            out = plan.fn(
                self.denoiser(plan.y, plan.guidance_scale, plan.clip_denoised, plan.model),
                x,
                plan.timesteps,
                self.schedule.alphas_cumprod,
                eta=plan.eta,
                generator=plan.generator,
                post_step=post_step,
                callback=observe,
                progress=plan.progress,
            )
        if plan.return_intermediates:
            return out, torch.stack(trajectory)  # (steps + 1, B, C, *spatial)
        return out


class SampleOptions(TypedDict, total=False):
    """Keyword options of :meth:`Diffusion.sample` and :meth:`Diffusion.inpaint`."""

    steps: int | None
    sampler: SamplerName | None
    eta: float
    guidance_scale: float | None
    y: Tensor | None
    generator: torch.Generator | None
    progress: bool
    return_intermediates: bool
    clip_denoised: bool | None
    model: Model | None
    callback: Callback | None


class _Plan(NamedTuple):
    """Resolved, validated sampling options."""

    fn: Callable[..., Tensor]
    model: Model
    timesteps: list[int]
    eta: float
    guidance_scale: float
    y: Tensor | None
    generator: torch.Generator | None
    progress: bool
    return_intermediates: bool
    clip_denoised: bool
    callback: Callback | None

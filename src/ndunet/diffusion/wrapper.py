"""Diffusion: wraps a network, owns the process (Gaussian diffusion, flow matching or EDM), the
parameterization, the conditioning, the loss and sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ndunet.inference.amp import resolve_amp, with_autocast
from ndunet.inference.compiled import with_compile
from ndunet.rng import randn

if TYPE_CHECKING:
    from typing_extensions import Unpack

from . import conditioning, losses, parameterization, process
from .config import DiffusionConfig
from .denoise import Model, call_model, eval_mode, guided_output, make_denoiser, replacement
from .processes import Grid, build_process
from .samplers import SamplerName
from .sampling import Plan, SampleOptions, prepare
from .schedules import Schedule, ScheduleName
from .stepping import Denoiser
from .validation import check_data_shape, check_labels


class Diffusion(nn.Module):
    """A generative process around ``model(x_t, t, y=None)`` for data ``(B, C, *spatial)`` of any
    N: discrete Gaussian diffusion, flow matching or EDM (``config.process``), optionally
    conditioned on class labels ``y`` and/or a tensor ``cond`` (``config.condition``).

    ``diffusion(x0, y, cond=...)`` is the training loss; :meth:`sample` and :meth:`inpaint`
    generate.
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
        if getattr(getattr(model, "config", None), "time_embedding", None) is False:
            raise ValueError(
                f"model: {type(model).__name__} was built with time_embedding=False, but "
                "Diffusion calls model(x_t, t, ...) with the noise level t; build it with "
                "time_embedding=True"
            )
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
        self.process = build_process(config)

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

    @property
    def schedule(self) -> Schedule | None:
        """The discrete schedule of a Gaussian process (None for flow matching and EDM)."""
        return getattr(self.process, "schedule", None)

    def extra_channels(self, data_channels: int) -> int:
        """Input channels the condition adds to ``data_channels`` (image: cond_channels; mask:
        the mask and the known values, 2 * data_channels)."""
        cfg = self.config
        return conditioning.extra_channels(cfg.condition, data_channels, cfg.cond_channels)

    # ---- training ----------------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Noise clean data to step ``t`` (int64 tensor of shape (B,)); Gaussian process only."""
        if self.schedule is None:
            raise ValueError(f"q_sample needs process='gaussian', not {self.config.process!r}")
        noise = torch.randn_like(x0) if noise is None else noise
        return process.q_sample(self.schedule, x0, t, noise)

    def forward(
        self,
        x0: Tensor,
        y: Tensor | None = None,
        *,
        cond: Tensor | None = None,
        mask: Tensor | None = None,
        t: Tensor | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Training loss (scalar) at a random time per sample (or the given ``t``: an int64 step
        for "gaussian", a float time in [0, 1] for "flow", a sigma for "edm"). ``cond``: the
        tensor condition (condition='image'); ``mask``: which values are known (condition='mask';
        default: CSDI's random mask)."""
        if not isinstance(x0, Tensor) or not x0.is_floating_point() or x0.dim() < 3:
            raise ValueError(
                "x0 must be a floating tensor (B, C, *spatial) with at least one spatial axis, got "
                + (f"shape {tuple(x0.shape)}" if isinstance(x0, Tensor) else repr(type(x0)))
            )
        cfg = self.config
        check_data_shape(
            self.model, tuple(x0.shape[1:]), "x0.shape[1:]", self.extra_channels(x0.shape[1])
        )
        batch = x0.shape[0]
        check_labels(y, batch, self.num_classes, allow_null=True)
        conditioning.check_cond(cond, batch, tuple(x0.shape[2:]), cfg.cond_channels, cfg.condition)
        # labels, times, noise and condition given on another device (CPU ones for a CUDA x0)
        y, t, noise, cond = (
            v.to(x0.device) if isinstance(v, Tensor) else v for v in (y, t, noise, cond)
        )
        if mask is not None and cfg.condition != "mask":
            raise ValueError(f"mask needs condition='mask' (this one has {cfg.condition!r})")
        if cfg.condition == "mask":
            mask = (
                conditioning.random_mask(x0) if mask is None else conditioning.check_mask(mask, x0)
            )
            cond = x0  # the known values
        if t is not None:
            self.process.check_time(t, batch)
        noise = torch.randn_like(x0) if noise is None else noise
        conditioned = y is not None or cond is not None
        if conditioned and cfg.cond_drop_prob > 0:  # classifier-free guidance dropout
            keep = torch.rand(batch, device=x0.device) >= cfg.cond_drop_prob
            if y is not None:
                y = torch.where(keep.to(y.device), y, torch.full_like(y, self.num_classes))
            cond = None if cond is None else conditioning.drop(keep, cond)
            mask = None if mask is None else conditioning.drop(keep, mask)
        point = self.process.training_point(x0, noise, t)
        inputs = conditioning.network_input(point.x_in, cond, mask)
        out = call_model(self.model, inputs, point.time, y)
        if out.shape != x0.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} != input {tuple(x0.shape)}")
        per_sample = losses.per_sample_loss(
            out.float(), point.target.float(), cfg.loss, cfg.huber_delta,
            mask=None if mask is None else 1 - mask,
        )  # fmt: skip
        if point.weight is not None:
            per_sample = per_sample * point.weight.to(per_sample.device, per_sample.dtype)
        return per_sample.mean()

    # ---- the reverse process -----------------------------------------------------------------
    def model_output(
        self,
        x_t: Tensor,
        t: Tensor,
        y: Tensor | None = None,
        guidance_scale: float = 1.0,
        model: Model | None = None,
        *,
        cond: Tensor | None = None,
    ) -> Tensor:
        """Raw network output at network input ``x_t`` and network time ``t``, with classifier-free
        guidance (cond and uncond in one batch)."""
        model = self.model if model is None else model
        return guided_output(model, x_t, t, y, guidance_scale, self.num_classes, cond=cond)

    def grid(self, steps: int, spatial: Sequence[int]) -> Grid:
        """The sampling grid of ``steps`` steps for data of spatial shape ``spatial``."""
        return self.process.grid(steps, tuple(spatial))

    def denoiser(
        self,
        grid: Grid,
        y: Tensor | None = None,
        guidance_scale: float = 1.0,
        clip_denoised: bool = False,
        model: Model | None = None,
        *,
        cond: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Denoiser:
        """``denoise(x_t, t) -> (x0_hat, eps_hat)`` for the samplers, on ``grid``."""
        model = self.model if model is None else model
        return make_denoiser(
            model, self.process, grid, self.config, y, guidance_scale, clip_denoised,
            cond=cond, mask=mask,
        )  # fmt: skip

    def _plan(self, shape: Sequence[int], batch_size: int, options: dict[str, Any]) -> Plan:
        return prepare(
            self.config, self.process, self.model, shape, batch_size, options,
            self.extra_channels(shape[0] if shape else 0),
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
        the config's ``sample_steps``, ``sampler``, ``guidance_scale``), ``eta`` (the samplers
        with noise: ddim, euler_a, dpm++2m_sde, heun's churn), ``y`` class labels, ``cond`` the
        tensor condition (batch_size, cond_channels, *spatial), ``generator``, ``progress``,
        ``clip_denoised``, ``callback``, ``model`` (another network, e.g. EMA weights) and
        ``return_intermediates`` (also return the trajectory ``(steps + 1, B, C, *spatial)`` of
        variance-preserving states from pure noise to the result) and ``amp`` (``"none"``,
        ``"bf16"``, ``"fp16"``: the network's forward under ``torch.autocast`` on the sampling
        device; the samplers' arithmetic and the returned samples stay in x's dtype) and
        ``compile`` (a torch.compile mode for the network, True for "default":
        :func:`ndunet.inference.with_compile`; "reduce-overhead" replays each step as a CUDA
        graph on a GPU). An
        imputation model (condition='mask') samples with nothing known; see :meth:`inpaint`.
        """
        shape = tuple(shape)
        options = {**options, "steps": steps, "sampler": sampler}  # type: ignore[typeddict-item]
        plan = self._plan(shape, batch_size, options)
        device, dtype = self._device_dtype(plan.model, device)
        plan = self._on(plan, device)
        x = randn((batch_size, *shape), generator=plan.generator, device=device, dtype=dtype)
        mask = torch.zeros_like(x) if self.config.condition == "mask" else None
        return self._run(x, plan, None, mask)

    def inpaint(
        self,
        known: Tensor,
        mask: Tensor,
        steps: int | None = None,
        sampler: SamplerName | None = None,
        **options: Unpack[SampleOptions],
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Complete ``known`` (B, C, *spatial) where ``mask`` is 0, keeping it where mask is 1.

        An imputation model (condition='mask') is given (mask, known values) as its condition and
        keeps them exactly. Any other model gets, after every step, the known region replaced by
        ``known`` noised to the next level (RePaint's replacement, Lugmayr et al. 2022,
        https://arxiv.org/abs/2201.09865; its sampler defaults to "ddpm"). Options as for
        :meth:`sample`.
        """
        if not isinstance(known, Tensor) or not known.is_floating_point() or known.dim() < 3:
            raise ValueError(
                f"known must be a floating tensor (B, C, *spatial), got "
                f"{conditioning.describe(known)}"
            )
        m = conditioning.check_mask(mask, known)
        imputer = self.config.condition == "mask"
        if sampler is None and not imputer:
            sampler = "ddpm"
        options = {**options, "steps": steps, "sampler": sampler}  # type: ignore[typeddict-item]
        plan = self._on(self._plan(tuple(known.shape[1:]), known.shape[0], options), known.device)
        x = randn(known.shape, generator=plan.generator, device=known.device, dtype=known.dtype)
        if imputer:
            return self._run(x, plan._replace(cond=known), None, m)
        replace = replacement(known, m, plan.grid.alphas_cumprod, plan.generator)
        x = replace(x, plan.grid.timesteps[0])
        return self._run(x, plan, replace, None)

    @staticmethod
    def _on(plan: Plan, device: torch.device) -> Plan:
        resolve_amp(plan.amp, device)  # autocast runs there in that dtype, or a ValueError
        y = None if plan.y is None else plan.y.to(device)
        cond = None if plan.cond is None else plan.cond.to(device)
        return plan._replace(y=y, cond=cond)

    def _run(
        self,
        x: Tensor,
        plan: Plan,
        post_step: Callable[[Tensor, int], Tensor] | None,
        mask: Tensor | None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        trajectory = [x] if plan.return_intermediates else []

        def observe(i: int, t: int, x_next: Tensor, x0: Tensor) -> None:
            if plan.return_intermediates:
                trajectory.append(x_next)
            if plan.callback is not None:
                plan.callback(i, t, x_next, x0)

        cond = plan.cond
        if mask is not None and cond is None:
            cond = torch.zeros_like(x)  # nothing known
        # the one place sampling calls the network: with amp, its forward alone runs under
        # autocast and returns x's dtype, so guidance and every sampler update stay float32;
        # compiled, every step runs the one static shape (CUDA graphs in their modes)
        network = with_compile(plan.model, plan.compile, x.device)
        model = with_autocast(network, plan.amp, x.device)
        denoise = self.denoiser(
            plan.grid, plan.y, plan.guidance_scale, plan.clip_denoised, model,
            cond=cond, mask=mask,
        )  # fmt: skip
        with eval_mode(plan.model):
            out = plan.fn(
                denoise,
                x,
                plan.grid.timesteps,
                plan.grid.alphas_cumprod,
                eta=plan.eta,
                generator=plan.generator,
                post_step=post_step,
                callback=observe,
                progress=plan.progress,
            )
        if plan.return_intermediates:
            return out, torch.stack(trajectory)  # (steps + 1, B, C, *spatial)
        return out

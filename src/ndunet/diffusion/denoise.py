"""From a network to the samplers' ``denoise(x_t, t) -> (x0_hat, eps_hat)``: calling convention,
conditions and classifier-free guidance, the process's view and parameterization, x0 clipping;
plus the inpainting replacement."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ndunet.rng import randn

from . import conditioning, parameterization
from .config import DiffusionConfig
from .processes import Grid, Process

Model = Callable[..., Tensor]
Denoiser = Callable[[Tensor, int], tuple[Tensor, Tensor]]


def call_model(model: Model, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
    """``model(x, t)``, or ``model(x, t, y=y)``: a plain callable without classes never sees y."""
    return model(x, t) if y is None else model(x, t, y=y)


@contextlib.contextmanager
def eval_mode(model: Model) -> Iterator[None]:
    """No grad and eval mode (dropout off) for the duration; the training flag is restored."""
    was_training = isinstance(model, nn.Module) and model.training
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()


def guided_output(
    model: Model,
    x: Tensor,
    t: Tensor,
    y: Tensor | None,
    scale: float,
    null_id: int | None,
    *,
    cond: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """The network on ``x`` with its condition channels (:func:`conditioning.network_input`), with
    classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598):
    ``uncond + scale * (cond - uncond)``, both halves in one batched forward pass. The
    unconditional half has the null class and zeroed tensor conditions (no known values).

    The guided combination is taken on the raw output; eps, x0, v (and EDM's F) are affine in
    each other at fixed ``x_t``, so this is the same guidance whatever the parameterization.
    """
    inputs = conditioning.network_input(x, cond, mask)
    if (y is None and cond is None and mask is None) or scale == 1.0:
        return call_model(model, inputs, t, y)
    if y is not None and null_id is None:
        raise ValueError(f"guidance_scale={scale} needs a class-conditioned model")
    null_y = None if y is None else torch.full_like(y, null_id)
    empty = None if mask is None else torch.zeros_like(mask)
    null_inputs = conditioning.network_input(
        x, None if cond is None else torch.zeros_like(cond), empty
    )
    if scale == 0.0:
        return call_model(model, null_inputs, t, null_y)
    both_y = None if y is None else torch.cat([y, null_y])  # type: ignore[list-item]
    both = call_model(model, torch.cat([inputs, null_inputs]), torch.cat([t, t]), both_y)
    guided, uncond = both.chunk(2)  # (B, C, *spatial) each
    return uncond + scale * (guided - uncond)


def make_denoiser(
    model: Model,
    process: Process,
    grid: Grid,
    config: DiffusionConfig,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_denoised: bool = False,
    *,
    cond: Tensor | None = None,
    mask: Tensor | None = None,
) -> Denoiser:
    """The samplers' view of ``model``: ``denoise(x_t, t) -> (x0_hat, eps_hat)`` at index t of
    ``grid``, ``x_t`` variance-preserving. With ``mask`` (imputation), ``cond`` holds the known
    values and x0_hat keeps them exactly."""

    def denoise(x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        time = grid.times[t]
        x_native, x_in, label = process.view(x, time)
        out = guided_output(
            model, x_in, label, y, guidance_scale, config.num_classes, cond=cond, mask=mask
        )
        if out.shape != x.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} != input {tuple(x.shape)}")
        x0, eps = process.to_x0_eps(out, x_native, time)
        if not clip_denoised and mask is None:
            return x0, eps
        if clip_denoised and config.dynamic_threshold is not None:
            x0 = parameterization.dynamic_threshold(x0, config.dynamic_threshold, config.clip_value)
        elif clip_denoised:
            x0 = x0.clamp(-config.clip_value, config.clip_value)
        if mask is not None and cond is not None:
            x0 = mask * cond + (1 - mask) * x0
        abar = float(grid.alphas_cumprod[t])
        eps = parameterization.x0_to_eps(x, x0, math.sqrt(abar), math.sqrt(1.0 - abar))
        return x0, eps  # eps consistent with the clipped / completed x0

    return denoise


def replacement(
    known: Tensor, mask: Tensor, alphas_cumprod: Tensor, generator: torch.Generator | None
) -> Callable[[Tensor, int], Tensor]:
    """A sampler ``post_step`` for inpainting: where ``mask`` is 1, put ``known`` noised to the
    next step (exactly ``known`` at the end); RePaint's replacement (Lugmayr et al. 2022,
    https://arxiv.org/abs/2201.09865)."""
    m = mask.to(known.device, known.dtype).expand_as(known)

    def replace(x: Tensor, t_next: int) -> Tensor:
        if t_next < 0:
            return m * known + (1 - m) * x
        a = float(alphas_cumprod[t_next])
        noise = randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return m * (math.sqrt(a) * known + math.sqrt(1 - a) * noise) + (1 - m) * x

    return replace

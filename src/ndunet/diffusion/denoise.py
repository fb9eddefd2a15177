"""From a network to the samplers' ``denoise(x_t, t) -> (x0_hat, eps_hat)``: calling convention,
classifier-free guidance, parameterization and x0 clipping; plus the inpainting replacement."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from . import parameterization
from .config import DiffusionConfig

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
    model: Model, x: Tensor, t: Tensor, y: Tensor | None, scale: float, null_id: int | None
) -> Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, https://arxiv.org/abs/2207.12598):
    ``uncond + scale * (cond - uncond)``, both halves in one batched forward pass.

    The guided combination is taken on the raw output; eps, x0 and v are affine in each other at
    fixed ``x_t``, so this is the same guidance whatever the parameterization.
    """
    if y is None or scale == 1.0:
        return call_model(model, x, t, y)
    if null_id is None:
        raise ValueError(f"guidance_scale={scale} needs a class-conditioned model")
    null = torch.full_like(y, null_id)
    if scale == 0.0:
        return call_model(model, x, t, null)
    both = call_model(model, torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    cond, uncond = both.chunk(2)  # (B, C, *spatial) each
    return uncond + scale * (cond - uncond)


def make_denoiser(
    model: Model,
    alphas_cumprod: Tensor,
    config: DiffusionConfig,
    y: Tensor | None = None,
    guidance_scale: float = 1.0,
    clip_denoised: bool = False,
) -> Denoiser:
    """The samplers' view of ``model``: ``denoise(x_t, t) -> (x0_hat, eps_hat)`` at int step t."""

    def denoise(x: Tensor, t: int) -> tuple[Tensor, Tensor]:
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        out = guided_output(model, x, tt, y, guidance_scale, config.num_classes)
        if out.shape != x.shape:
            raise ValueError(f"model output shape {tuple(out.shape)} != input {tuple(x.shape)}")
        abar = float(alphas_cumprod[t])
        alpha, sigma = math.sqrt(abar), math.sqrt(1.0 - abar)
        x0, eps = parameterization.to_x0_eps(config.prediction, out, x, alpha, sigma)
        if clip_denoised:
            if config.dynamic_threshold is not None:
                x0 = parameterization.dynamic_threshold(
                    x0, config.dynamic_threshold, config.clip_value
                )
            else:
                x0 = x0.clamp(-config.clip_value, config.clip_value)
            eps = parameterization.x0_to_eps(x, x0, alpha, sigma)  # consistent with clipped x0
        return x0, eps

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
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return m * (math.sqrt(a) * known + math.sqrt(1 - a) * noise) + (1 - m) * x

    return replace

"""Conditioning on a tensor: an image or volume concatenated to the network input, or known
values with their mask (imputation, CSDI-style: Tashiro et al. 2021,
https://arxiv.org/abs/2107.03502), and dropping either for classifier-free guidance."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ndunet.rng import rand


def describe(value: object) -> str:
    """A short description of an argument for error messages (never a tensor's values)."""
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_cond(
    cond: Tensor | None, batch: int, spatial: Sequence[int], channels: int, condition: str
) -> None:
    """``cond`` must be a floating tensor (batch, channels, *spatial) when ``condition='image'``,
    absent otherwise."""
    if condition != "image":
        if cond is not None:
            raise ValueError(
                f"cond ({describe(cond)}) needs a diffusion built with condition='image' "
                f"(this one has condition={condition!r})"
            )
        return
    want = (batch, channels, *spatial)
    if cond is None:
        raise ValueError(f"cond is required (condition='image'): a tensor of shape {want}")
    if not isinstance(cond, Tensor) or not cond.is_floating_point():
        raise TypeError(f"cond must be a floating tensor of shape {want}, got {describe(cond)}")
    if tuple(cond.shape) != want:
        raise ValueError(
            f"cond has shape {tuple(cond.shape)}; expected {want} (batch, cond_channels, *spatial)"
        )


def check_mask(mask: Tensor, like: Tensor, name: str = "mask") -> Tensor:
    """A 0/1 mask that broadcasts to ``like`` (B, C, *spatial), as ``like``'s dtype, expanded."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a tensor, got {describe(mask)}")
    try:
        torch.broadcast_shapes(mask.shape, like.shape)
    except RuntimeError as err:
        raise ValueError(
            f"{name} shape {tuple(mask.shape)} does not broadcast to {tuple(like.shape)}"
        ) from err
    return mask.to(like.device, like.dtype).expand_as(like)


def random_mask(x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """CSDI's random training mask: per sample a share ``u ~ U(0, 1)`` of the values is known
    (1), the rest is to be imputed (0); shape and dtype of ``x0``."""
    batch = x0.shape[0]  # drawn on the generator's device: a CPU one serves a CUDA x0 too
    share = rand((batch,), generator=generator, device=x0.device)
    share = share.view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, ..., 1)
    u = rand(x0.shape, generator=generator, device=x0.device)
    return (u < share).to(x0.dtype)


def mask_cond(mask: Tensor, known: Tensor) -> Tensor:
    """The network's extra input for imputation: ``(mask, mask * known)`` on the channels."""
    return torch.cat([mask, mask * known], dim=1)  # (B, 2C, *spatial)


def network_input(x: Tensor, cond: Tensor | None, mask: Tensor | None) -> Tensor:
    """The noisy data with its condition channels: ``[x, cond]`` for an image condition,
    ``[(1 - mask) x, mask, mask * known]`` for imputation (``cond`` then holds the known values;
    the known part of ``x`` is hidden, as in CSDI, so training and sampling see the same)."""
    if mask is not None:
        known = cond if cond is not None else torch.zeros_like(x)
        return torch.cat([(1 - mask) * x, mask_cond(mask, known)], dim=1)
    if cond is None:
        return x
    return torch.cat([x, cond.to(x.dtype)], dim=1)  # (B, C + cond_channels, *spatial)


def drop(keep: Tensor, value: Tensor) -> Tensor:
    """``value`` where ``keep`` (B,) is true, zeros elsewhere (classifier-free guidance)."""
    k = keep.to(value.device).view(-1, *([1] * (value.dim() - 1)))  # (B, 1, ..., 1)
    return torch.where(k, value, torch.zeros_like(value))


def extra_channels(condition: str, data_channels: int, cond_channels: int) -> int:
    """Channels the condition adds to the network input."""
    if condition == "image":
        return cond_channels
    if condition == "mask":
        return 2 * data_channels
    return 0

"""Input checks and the pad-to-a-multiple / crop-back step shared by ndunet's models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ndunet.functional import pad_nd

__all__ = ["check_conditioning", "check_image", "check_sizes", "crop", "pad_to_multiple"]


def check_image(x: Any, spatial_dims: int, in_channels: int, weight: Tensor | None = None) -> None:
    """``x`` must be a floating (B, in_channels, *spatial) tensor in ``weight``'s dtype (the
    first layer's; autocast lifts that rule)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point torch.Tensor, got "
            f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
        )
    if (
        weight is not None
        and x.dtype != weight.dtype
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise TypeError(
            f"x has dtype {x.dtype} but the model's weights are {weight.dtype}; convert the "
            f"input (x.to({weight.dtype})), the model (model.to({x.dtype})), or run under "
            "torch.autocast (trainer: amp='bf16')"
        )
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected (batch, {in_channels}, *spatial) "
            f"with spatial_dims={spatial_dims}, i.e. {spatial_dims + 2} dims"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"x has {x.shape[1]} channels (shape {tuple(x.shape)}); expected "
            f"in_channels={in_channels}"
        )


def check_sizes(x: Tensor, factors: Sequence[int], what: str) -> None:
    """Sizes are padded to multiples of ``factors`` (per axis); at most half of the padded input
    may be padding (so the deepest level still sees data, and reflect padding is possible)."""
    small = [a for a, (s, f) in enumerate(zip(x.shape[2:], factors)) if 2 * s <= f]
    if small:
        need = tuple(f // 2 + 1 for f in factors)
        raise ValueError(
            f"x spatial shape {tuple(x.shape[2:])} is too small for {what} (down-sampling "
            f"factors {tuple(factors)} per axis): axis {small[0]} must be > "
            f"{factors[small[0]] // 2}; every size must be at least {need} per axis"
        )


def pad_to_multiple(
    x: Tensor, factors: Sequence[int], mode: str
) -> tuple[Tensor, list[tuple[int, int]]]:
    """``x`` padded (centred, ``mode``) so each spatial size is a multiple of its factor, and the
    (before, after) pads per axis."""
    pads = []
    for s, f in zip(x.shape[2:], factors):
        total = (-s) % f
        pads.append((total // 2, total - total // 2))
    if any(a or b for a, b in pads):
        x = pad_nd(x, pads, mode)  # (B, C, *padded)
    return x, pads


def crop(h: Tensor, pads: Sequence[tuple[int, int]], spatial: Sequence[int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on an output with the same spatial axes."""
    if not any(a or b for a, b in pads) or h.dim() != len(spatial) + 2:
        return h
    index = (slice(None), slice(None), *(slice(a, a + s) for (a, _), s in zip(pads, spatial)))
    return h[index]  # (B, C, *spatial)


def check_conditioning(
    x: Tensor,
    t: Tensor | float | None,
    y: Tensor | None,
    time_embedding: bool,
    num_classes: int | None,
) -> tuple[Tensor | None, Tensor | None]:
    """``t`` as a (B,) tensor when the model takes time; ``y`` as (B,) class ids in
    ``[0, num_classes]`` (``num_classes`` = the null class, also used when ``y`` is None)."""
    batch = x.shape[0]
    if time_embedding:
        if t is None:
            raise ValueError("t is required: the model was built with time_embedding=True")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},) or (), got {tuple(t.shape)}")
    elif t is not None:
        raise ValueError("t was given but the model was built with time_embedding=False")
    k = num_classes
    if k is None:
        if y is not None:
            raise ValueError("y was given but the model was built with num_classes=None")
        return t, None  # type: ignore[return-value]
    if y is None:
        return t, torch.full((batch,), k, dtype=torch.long, device=x.device)  # type: ignore[return-value]
    if not isinstance(y, Tensor) or y.shape != (batch,) or y.is_floating_point():
        raise ValueError(
            f"y must be an integer tensor of shape ({batch},), got "
            f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
        )
    if not torch.compiler.is_compiling() and y.numel() and (y.min() < 0 or y.max() > k):
        raise ValueError(
            f"y holds class ids in [{int(y.min())}, {int(y.max())}]; expected [0, {k}] "
            f"(num_classes={k}; id {k} is the null class)"
        )
    return t, y  # type: ignore[return-value]

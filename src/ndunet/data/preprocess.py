"""Value normalization and 2-D resizing shared by the image datasets."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .normalize import Normalization

Normalize = Literal["symmetric", "unit", "none"]
NORMALIZE: tuple[str, ...] = ("symmetric", "unit", "none")


def rescale(x: torch.Tensor, low: float, high: float, normalize: Normalize) -> torch.Tensor:
    """Map values from ``[low, high]`` to [-1, 1] ("symmetric", the range diffusion models use),
    [0, 1] ("unit"), or leave them as they are ("none")."""
    if normalize == "none":
        return x
    if not high > low:
        raise ValueError(f"cannot normalize data whose range [{low}, {high}] is empty")
    unit = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return unit * 2.0 - 1.0 if normalize == "symmetric" else unit


def rescale_record(low: float, high: float, normalize: Normalize) -> Normalization:
    """What ``rescale(x, low, high, normalize)`` did, as a record that can undo it."""
    if normalize == "none":
        return Normalization()
    if normalize == "symmetric":
        return Normalization("minmax", ((high + low) / 2,), ((high - low) / 2,))
    return Normalization("unit", (low,), (high - low,))


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` bilinearly (antialiased when shrinking).

    Every output is a convex combination of inputs, so the value range is kept (no bicubic
    overshoot) and a [-1, 1] or [0, 16] image stays inside its range.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrinking)

"""pad_nd: zeros/constant, reflect, replicate and circular padding of any number of axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ndunet._checks import check_choice
from ndunet.functional.checks import PAD_MODES, pad_pairs
from ndunet.functional.take import index_select

__all__ = ["PadMode", "pad_nd"]

PadMode = Literal["zeros", "constant", "reflect", "replicate", "circular"]


def _pad_index(size: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    idx = torch.arange(-before, size + after, device=device)
    if mode == "circular":
        return idx.remainder(size)
    if mode == "replicate":
        return idx.clamp(0, size - 1)
    # reflect (edge not repeated): fold the index back into [0, size - 1]
    period = 2 * (size - 1)
    idx = idx.abs().remainder(period) if period > 0 else torch.zeros_like(idx)
    return torch.where(idx >= size, period - idx, idx)


def pad_nd(
    input: torch.Tensor,
    padding: Sequence[tuple[int, int]],
    mode: PadMode = "zeros",
    value: float = 0.0,
) -> torch.Tensor:
    """Pad the spatial axes of ``(B, C, *spatial)``; ``padding[i] = (before, after)`` for axis i.

    ``mode`` is zeros/constant, reflect (edge not repeated), replicate or circular, for any N.
    """
    check_choice("mode", mode, PAD_MODES)
    pairs = pad_pairs(input, padding, mode)
    if mode in ("zeros", "constant"):
        flat = [p for pair in reversed(pairs) for p in pair]  # F.pad lists the last axis first
        return F.pad(input, flat, mode="constant", value=value) if any(flat) else input
    out = input
    for axis, (before, after) in enumerate(pairs):
        if before or after:
            idx = _pad_index(out.shape[2 + axis], before, after, mode, out.device)
            out = index_select(out, 2 + axis, idx)
    return out

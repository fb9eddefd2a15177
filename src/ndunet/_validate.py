"""Argument checks shared by the N-D operators: one clear error, raised before any compute."""

from __future__ import annotations

from collections.abc import Sequence

import torch

IntOrTuple = int | Sequence[int]


def as_tuple(
    value: IntOrTuple, spatial_dims: int, name: str, *, minimum: int = 0
) -> tuple[int, ...]:
    """Expand an int or per-axis sequence to a ``spatial_dims``-tuple, checking length and range."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    if isinstance(value, int):
        out = (value,) * spatial_dims
    elif isinstance(value, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = tuple(value)
        if len(out) == 1 and spatial_dims != 1:
            out = out * spatial_dims
        if len(out) != spatial_dims:
            raise ValueError(
                f"{name}={value!r} has {len(out)} entries; expected 1 or spatial_dims={spatial_dims}"
            )
    else:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    for v in out:
        if v < minimum:
            raise ValueError(f"{name}={value!r}: every entry must be >= {minimum}")
    return out


def check_input(input: torch.Tensor, spatial_dims: int, name: str = "input") -> None:
    """Require a (B, C, *spatial) tensor with exactly ``spatial_dims`` spatial axes."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name} has shape {tuple(input.shape)} ({input.dim()} dims); expected "
            f"(batch, channels, *spatial) with spatial_dims={spatial_dims}, i.e. "
            f"{spatial_dims + 2} dims"
        )
    for axis, size in enumerate(input.shape[2:]):
        if size < 1:
            raise ValueError(f"{name} spatial axis {axis} has size {size}; sizes must be >= 1")


def spatial_dims_of(input: torch.Tensor, name: str = "input") -> int:
    """Infer spatial_dims from a (B, C, *spatial) tensor."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() < 3:
        raise ValueError(
            f"{name} has shape {tuple(input.shape)}; expected (batch, channels, *spatial) with "
            "at least one spatial axis"
        )
    return input.dim() - 2

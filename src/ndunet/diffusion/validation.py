"""Input checks shared by training and sampling: raise before any work is done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def check_data_shape(
    model: Any, shape: Sequence[int], name: str = "shape", extra_channels: int = 0
) -> None:
    """``shape = (C, *spatial)`` must be positive ints that fit the model's declared attributes;
    the network input has ``extra_channels`` condition channels beyond the data's C."""
    shape = tuple(shape)
    if len(shape) < 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(f"{name} must be (C, *spatial) of positive ints, got {shape!r}")
    in_ch = getattr(model, "in_channels", None)
    out_ch = getattr(model, "out_channels", None)
    dims = getattr(model, "spatial_dims", None)
    if in_ch is not None and shape[0] + extra_channels != in_ch:
        if extra_channels:
            raise ValueError(
                f"{name}={shape} has {shape[0]} channels, with {extra_channels} condition "
                f"channels the network input has {shape[0] + extra_channels}, but "
                f"model.in_channels={in_ch}"
            )
        raise ValueError(f"{name}={shape} has {shape[0]} channels but model.in_channels={in_ch}")
    if out_ch is not None and out_ch != shape[0]:
        raise ValueError(
            f"model.out_channels={out_ch} must equal the data channels {shape[0]} for diffusion"
        )
    if dims is not None and len(shape) - 1 != dims:
        raise ValueError(
            f"{name}={shape} has {len(shape) - 1} spatial axes but model.spatial_dims={dims}"
        )


def check_labels(y: Tensor | None, batch: int, num_classes: int | None, allow_null: bool) -> None:
    """Class labels: an int tensor (batch,) with ids in [0, num_classes) (or the null id)."""
    if y is None:
        return
    if not isinstance(y, Tensor) or y.dtype in (torch.bool,) or y.is_floating_point():
        got = (
            f"a {y.dtype} tensor of shape {tuple(y.shape)}"
            if isinstance(y, Tensor)
            else f"a {type(y).__name__}"
        )
        hint = (
            "; an image or volume condition goes in cond= (DiffusionConfig condition='image')"
            if isinstance(y, Tensor) and y.dim() > 1
            else ""
        )
        raise TypeError(f"y must be an integer tensor of class ids, got {got}{hint}")
    if y.shape != (batch,):
        raise ValueError(f"y must have shape ({batch},), got {tuple(y.shape)}")
    if num_classes is not None and batch > 0:
        top = num_classes + 1 if allow_null else num_classes
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= top:
            raise ValueError(
                f"y must hold class ids in [0, {top}) (num_classes={num_classes}, the null id is "
                f"{num_classes}), got values in [{lo}, {hi}]"
            )

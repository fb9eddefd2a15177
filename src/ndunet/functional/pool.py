"""max_pool_nd and avg_pool_nd: torch's native op for N <= 3, exact separable passes above.

A max or a mean over a box factors into per-axis passes, so N >= 4 needs no new kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndunet._checks import IntOrTuple
from ndunet.functional.checks import pool_args
from ndunet.functional.pad import pad_nd

__all__ = ["avg_pool_nd", "max_pool_nd"]

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _windows(x: torch.Tensor, axis: int, k: int, s: int, d: int) -> torch.Tensor:
    """Sliding windows along one spatial axis: (..., L_out on that axis, ..., k)."""
    w = x.unfold(2 + axis, (k - 1) * d + 1, s)
    return w[..., ::d] if d > 1 else w


def max_pool_nd(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
) -> torch.Tensor:
    """N-D max pooling (floor mode; padded positions never win), torch's semantics."""
    n, kernel, stride_t, padding_t, dilation_t = pool_args(
        input, kernel_size, stride, padding, dilation
    )
    if n <= 3:
        return _MAX_POOL[n](input, kernel, stride_t, padding_t, dilation_t)
    out = input
    for axis in range(n):
        p = padding_t[axis]
        if p:
            pads = [(0, 0)] * n
            pads[axis] = (p, p)
            out = pad_nd(out, pads, "constant", value=float("-inf"))
        out = _windows(out, axis, kernel[axis], stride_t[axis], dilation_t[axis]).amax(-1)
    return out


def avg_pool_nd(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    count_include_pad: bool = True,
) -> torch.Tensor:
    """N-D average pooling (floor mode), torch's semantics including ``count_include_pad``."""
    n, kernel, stride_t, padding_t, _ = pool_args(input, kernel_size, stride, padding, 1)
    if n <= 3:
        return _AVG_POOL[n](input, kernel, stride_t, padding_t, False, count_include_pad)
    out = input
    for axis in range(n):
        k, s, p = kernel[axis], stride_t[axis], padding_t[axis]
        pads = [(0, 0)] * n
        pads[axis] = (p, p)
        summed = _windows(pad_nd(out, pads), axis, k, s, 1).sum(-1)
        if count_include_pad or p == 0:
            out = summed / k
        else:
            # the box's valid count factorises over axes, so dividing per axis is exact
            ones = torch.ones(out.shape[2 + axis], dtype=out.dtype, device=out.device)
            count = F.pad(ones, (p, p)).unfold(0, k, s).sum(-1)
            shape = [1] * out.dim()
            shape[2 + axis] = -1
            out = summed / count.view(shape)
    return out

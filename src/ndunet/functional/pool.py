"""max_pool_nd and avg_pool_nd: torch's native op for N <= 3, exact separable passes above.

A max or a mean over a box factors into per-axis passes, so N >= 4 needs no new kernel; axes
where a pass is the identity (kernel 1, stride 1, no padding) are skipped. For the max, torch's
3-D max pool does the last three axes at once (the leading axes folded into channels, a view of
a contiguous input; with its own backward, 3.7x faster forward + backward than a pass per axis
for 2x32x16^4, kernel 2, CPU), then one pass per leading axis. For the mean, the per-axis passes
measured 1.3-1.9x faster than torch's 3-D average pool on the CPU (its count also factorises
over the axes, so ``count_include_pad`` is exact per pass).
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


def _passes(
    kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...], axes: int
) -> list[int]:
    """The first ``axes`` axes whose pass is not the identity (kernel 1, stride 1, no padding)."""
    return [a for a in range(axes) if (kernel[a], stride[a], padding[a]) != (1, 1, 0)]


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
    x5 = input.reshape(input.shape[0], -1, *input.shape[-3:])  # (B, C * prod(L), D, H, W)
    y5 = F.max_pool3d(x5, kernel[-3:], stride_t[-3:], padding_t[-3:], dilation_t[-3:])
    out = y5.reshape(*input.shape[:-3], *y5.shape[-3:])  # (B, C, *L, D', H', W')
    for axis in _passes(kernel, stride_t, padding_t, n - 3):
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
    for axis in _passes(kernel, stride_t, padding_t, n):
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

"""N >= 4 convolutions whose frames never meet: one native 3-D conv on a view, no fold.

A conv that is pointwise along the leading N - 3 axes (kernel 1, stride 1, no padding there)
never mixes them, so they can merge with the depth axis into one axis of F frames of D rows. One
conv3d over that axis is the N-D operator exactly when no depth tap reaches from one frame into
the next: no depth padding, the depth kernel within the stride (d (k - 1) < s) and D a multiple
of s, so every frame gives D / s rows and the frames' rows tile the merged output. That covers a
U-Net's 1x1 skip convs, and kernel-2 stride-2 downsampling along the inner axes of an
anisotropic plan; the transposed conv's counterpart (depth taps that tile the output, as in
(1, 2, 2, 2) kernel-2 stride-2 upsampling) likewise. The merged axis is a view of a contiguous
input and the output a view of the conv's: no copy either way, nothing but the input kept for
backward.

Kernels that reach across frames, such as (1, 3, 3, 3), are left to the fold: holding the frames
apart with zero rows costs an input and an output copy, which is what the fold's single-tap
"outputs" costs anyway (measured no faster on the CPU, benchmarks/conv_nd.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ndunet.functional.onednn import conv3d

__all__ = ["merged_conv", "merged_conv_transpose"]

# the merged path can be switched off (benchmarks A/B it against the fold; tests check both)
enabled = True


def _mergeable(kernel: tuple[int, ...], stride: tuple[int, ...], *zero: tuple[int, ...]) -> bool:
    """Kernel 1 and stride 1 on every leading axis, and every ``zero`` (padding, output padding)
    0 there and along the depth axis."""
    lead = len(kernel) - 3
    pointwise = all(kernel[i] == 1 and stride[i] == 1 for i in range(lead))
    return enabled and pointwise and not any(v for z in zero for v in z[: lead + 1])


def merged_conv(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor | None:
    """``conv_nd`` as one conv3d over the merged leading and depth axes, or None where a frame's
    taps would reach into another."""
    n = x.dim() - 2
    kernel = tuple(w.shape[2:])
    k, s, d = kernel[-3], stride[-3], dilation[-3]
    if not _mergeable(kernel, stride, padding) or d * (k - 1) >= s or x.shape[n - 1] % s:
        return None
    y = conv3d(
        x.flatten(2, n - 1), w.flatten(2, n - 1), bias, stride[-3:], padding[-3:], dilation[-3:],
        groups,
    )  # fmt: skip  # (B, O, F * D / s, H', W')
    return y.unflatten(2, (*x.shape[2 : n - 1], x.shape[n - 1] // s))


def merged_conv_transpose(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    groups: int,
    dilation: tuple[int, ...],
) -> torch.Tensor | None:
    """``conv_transpose_nd`` as one conv_transpose3d over the merged leading and depth axes, or
    None where the depth taps do not tile the output (d (k - 1) + 1 + output_padding == s)."""
    n = x.dim() - 2
    kernel = tuple(w.shape[2:])
    k, s, op, d = kernel[-3], stride[-3], output_padding[-3], dilation[-3]
    if not _mergeable(kernel, stride, padding, output_padding[:-3]) or d * (k - 1) + 1 + op != s:
        return None
    y = F.conv_transpose3d(
        x.flatten(2, n - 1), w.flatten(2, n - 1), bias, stride[-3:], padding[-3:],
        output_padding[-3:], groups, dilation[-3:],
    )  # fmt: skip  # (B, O, F * D * s, H', W')
    return y.unflatten(2, (*x.shape[2 : n - 1], x.shape[n - 1] * s))

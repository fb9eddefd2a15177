"""conv_nd and conv_transpose_nd: torch's native op for N <= 3 (conv3d routed around a oneDNN
bug, onednn.py); for N >= 4, axes that never mix merged first (merged.py: a native conv where
three or fewer axes are left), and the exact fold (fold.py) for the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ndunet._checks import IntOrTuple, as_tuple
from ndunet.functional.checks import (
    check_conv,
    check_conv_output,
    check_conv_transpose_output,
    check_output_padding,
    resolve_padding,
)
from ndunet.functional.fold import conv_fold, conv_transpose_fold
from ndunet.functional.merged import merge_axes, merged
from ndunet.functional.onednn import conv3d
from ndunet.functional.pad import pad_nd

__all__ = ["conv_nd", "conv_transpose_nd"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_nd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
) -> torch.Tensor:
    """N-D cross-correlation, torch's conv semantics; weight is (out, in/groups, *kernel)."""
    n = check_conv(input, weight, bias, groups, transposed=False)
    kernel = tuple(weight.shape[2:])
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    pads = resolve_padding(padding, kernel, stride_t, dilation_t)
    check_conv_output(input, weight.shape[0], kernel, padding, pads, stride_t, dilation_t)
    if any(pb != pa for pb, pa in pads):  # 'same' with an even kernel: pad, then no padding
        input = pad_nd(input, pads)
        pads = ((0, 0),) * n
    padding_t = tuple(p for p, _ in pads)
    return _conv(input, weight, bias, stride_t, padding_t, dilation_t, groups)


def _conv(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """conv_nd on checked arguments: native, on merged axes, or folded."""
    n = x.dim() - 2
    if n <= 3:
        return _CONV[n](x, w, bias, stride, padding, dilation, groups)
    axes = merge_axes(x.shape[2:], w.shape[2:], stride, padding, dilation, None, x.device)
    if axes is not None:

        def on_merged(xm: torch.Tensor, wm: torch.Tensor, *geometry: Any) -> torch.Tensor:
            return _conv(xm, wm, bias, *geometry, groups)

        return merged(on_merged, x, w, axes, (stride, padding, dilation))
    return _standard(conv_fold, x, w, stride, padding, dilation, groups, bias)


def _standard(fold: Callable[..., torch.Tensor], x: torch.Tensor, *args: Any) -> torch.Tensor:
    """``fold(x, *args)``; for a standard (contiguous) x with a standard output and input
    gradient (see :class:`_GradStandard`), else in the fold's own layout."""
    if not x.is_contiguous():
        return fold(x, *args)
    return fold(_GradStandard.apply(x), *args).contiguous()


class _GradStandard(torch.autograd.Function):
    """Identity whose backward hands the gradient back in the standard layout.

    The fold convolves channels-last frames, so its output and its input's gradient come out
    channels-last, a layout torch has no memory format for at N >= 4: GroupNorm copies such an
    input to the standard layout, and the backward of SiLU or an add, given a channels-last
    gradient for a standard saved input, runs several times slower (6x for SiLU on a 4-D
    16-channel 12^4 volume, CPU). So an N >= 4 conv of a standard input returns a standard output
    and a standard input gradient (a copy each), as torch's convs keep their input's layout."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous()


def conv_transpose_nd(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> torch.Tensor:
    """N-D transposed convolution, torch's semantics; weight is (in, out/groups, *kernel)."""
    n = check_conv(input, weight, bias, groups, transposed=True)
    kernel = tuple(weight.shape[2:])
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    output_padding_t = as_tuple(output_padding, n, "output_padding")
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    check_output_padding(output_padding, output_padding_t, stride_t, dilation_t)
    given = {"padding": padding, "stride": stride, "dilation": dilation}
    out_channels = weight.shape[1] * groups
    check_conv_transpose_output(
        input, out_channels, kernel, given, padding_t, output_padding_t, stride_t, dilation_t
    )
    return _conv_transpose(
        input, weight, bias, stride_t, padding_t, output_padding_t, groups, dilation_t
    )


def _conv_transpose(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    groups: int,
    dilation: tuple[int, ...],
) -> torch.Tensor:
    """conv_transpose_nd on checked arguments: native, on merged axes, or folded."""
    n = x.dim() - 2
    if n <= 3:
        return _CONV_T[n](x, w, bias, stride, padding, output_padding, groups, dilation)
    axes = merge_axes(x.shape[2:], w.shape[2:], stride, padding, dilation, output_padding, x.device)
    if axes is not None:

        def on_merged(xm: torch.Tensor, wm: torch.Tensor, *geometry: Any) -> torch.Tensor:
            return _conv_transpose(xm, wm, bias, *geometry[:3], groups, geometry[3])

        per_axis = (stride, padding, output_padding, dilation)
        return merged(on_merged, x, w, axes, per_axis)
    return _standard(
        conv_transpose_fold, x, w, stride, padding, output_padding, dilation, groups, bias
    )

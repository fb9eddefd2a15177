"""Exact N-D operators as plain functions, valid for every spatial_dims >= 1.

For spatial_dims <= 3 each function dispatches to torch's native op. For spatial_dims >= 4 it
computes the same numbers as the true N-D operation:

* convolution folds the first spatial axis into channels (each output frame sees the ``k0`` input
  frames under its kernel, stacked as ``C * k0`` channels) and recurses, so the work ends up in
  one batched native ``conv3d`` with exactly the multiply-adds of the N-D operator;
* transposed convolution folds the first axis' taps into output channels and scatters the frames
  back (its adjoint);
* pooling and interpolation are separable over axes (a max or mean over a box, and N-linear
  weights, factor exactly into per-axis operations).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ndunet._checks import IntOrTuple, as_tuple, spatial_dims_of

__all__ = [
    "avg_pool_nd",
    "conv_nd",
    "conv_output_size",
    "conv_transpose_nd",
    "interpolate_nd",
    "max_pool_nd",
    "pad_nd",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}

PadMode = Literal["zeros", "constant", "reflect", "replicate", "circular"]


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of a convolution/pool along one axis (floor mode)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


# ----------------------------------------------------------------------------------------------
# Padding
# ----------------------------------------------------------------------------------------------


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
    spatial_dims = spatial_dims_of(input)
    if len(padding) != spatial_dims:
        raise ValueError(
            f"padding={padding!r} has {len(padding)} (before, after) pairs; expected "
            f"spatial_dims={spatial_dims}"
        )
    if mode not in ("zeros", "constant", "reflect", "replicate", "circular"):
        raise ValueError(
            f"mode={mode!r} is not supported; expected one of zeros, constant, reflect, "
            "replicate, circular"
        )
    for axis, ((before, after), size) in enumerate(zip(padding, input.shape[2:])):
        if before < 0 or after < 0:
            raise ValueError(f"padding={padding!r}: axis {axis} has a negative amount")
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"padding={padding!r}: reflect padding on axis {axis} must be < the input size "
                f"{size}"
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"padding={padding!r}: circular padding on axis {axis} must be <= the input "
                f"size {size}"
            )
    if mode in ("zeros", "constant"):
        flat = [p for pair in reversed(padding) for p in pair]  # F.pad lists the last axis first
        return F.pad(input, flat, mode="constant", value=value) if any(flat) else input
    out = input
    for axis, (before, after) in enumerate(padding):
        if before or after:
            idx = _pad_index(out.shape[2 + axis], before, after, mode, out.device)
            out = out.index_select(2 + axis, idx)
    return out


def _resolve_padding(
    padding: IntOrTuple | str,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """(before, after) per axis; "same" puts the odd extra element after, as torch does."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' needs stride=1 on every axis, got stride={stride}"
                )
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        raise ValueError(
            f"padding={padding!r} is not valid; expected an int, a tuple, 'same' or 'valid'"
        )
    return tuple((p, p) for p in as_tuple(padding, n, "padding"))


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------


def _check_conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
    transposed: bool,
) -> int:
    spatial_dims = spatial_dims_of(input)
    if not isinstance(weight, torch.Tensor) or weight.dim() != spatial_dims + 2:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight
        raise ValueError(
            f"weight has shape {shape}; expected {spatial_dims + 2} dims for an input with "
            f"spatial_dims={spatial_dims}"
        )
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive int")
    in_channels = input.shape[1]
    if transposed:
        if weight.shape[0] != in_channels:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}: its first dim must equal the input's "
                f"{in_channels} channels (layout (in_channels, out_channels/groups, *kernel))"
            )
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        out_channels = weight.shape[1] * groups
    else:
        if weight.shape[0] % groups:
            raise ValueError(f"out_channels={weight.shape[0]} is not divisible by groups={groups}")
        if weight.shape[1] * groups != in_channels:
            raise ValueError(
                f"input has {in_channels} channels but weight {tuple(weight.shape)} with "
                f"groups={groups} expects {weight.shape[1] * groups}"
            )
        out_channels = weight.shape[0]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({out_channels},)")
    return spatial_dims


# -- N >= 4: the leading N - 3 axes are folded so that one native conv3d does all the work -----
#
# Tensors travel channels-innermost, (B, *spatial, C) in memory: oneDNN's channels_last_3d
# convolutions are ~1.6x faster on CPU than the default layout, tap slices of such a tensor are
# contiguous runs of channels, and the results come back as permuted views without a copy.
# The data movement around the conv3d is a handful of strided copies/adds, each written as an
# autograd.Function with an explicit adjoint (autograd through unfold would scatter-add slowly).


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C) contiguous; free when x already has that memory layout."""
    xl = x.movedim(1, -1)  # (B, *S, C)
    if xl.is_contiguous():
        return xl
    if x.is_contiguous():  # torch's vectorised channels-last conversion, on a 5-D view
        x5 = x.flatten(2, x.dim() - 3)  # (B, C, prod(S[:-2]), S[-2], S[-1])
        x5 = x5.contiguous(memory_format=torch.channels_last_3d)
        return x5.movedim(1, -1).unflatten(1, x.shape[2:-2])  # (B, *S, C)
    return xl.contiguous()


def _fold_geometry(
    lengths: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, ...], list[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]]:
    """Output lengths, and per kernel tap the output positions that see a real (unpadded) input
    position and those input positions: ``out[t] <- in[t * s + tap * d - p]``."""
    outs = tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(lengths, kernel, stride, padding, dilation)
    )
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        out_sl, in_sl = [], []
        for n, o, t, s, p, d in zip(lengths, outs, tap, stride, padding, dilation):
            offset = t * d - p
            lo, hi = max(0, -(offset // s)), min(o, (n - 1 - offset) // s + 1)
            start = lo * s + offset
            out_sl.append(slice(lo, hi))
            in_sl.append(slice(start, start + (hi - lo - 1) * s + 1, s))
        if all(sl.start < sl.stop for sl in out_sl):  # else the tap only ever sees padding
            taps.append((tap, tuple(out_sl), tuple(in_sl)))
    return outs, taps


def _copy_rest_zero(dst: torch.Tensor, src: torch.Tensor, sl: tuple[slice, ...]) -> None:
    """``dst[:, *sl] = src``, and zero everywhere else in dst."""
    if any(s.step != 1 for s in sl):
        dst.zero_()
    else:  # zero only the margins outside the window, axis by axis
        for axis, s in enumerate(sl):
            lead = (slice(None),) * (1 + axis)
            if s.start > 0:
                dst[(*lead, slice(0, s.start))].zero_()
            if s.stop < dst.shape[1 + axis]:
                dst[(*lead, slice(s.stop, None))].zero_()
    dst[(slice(None), *sl)].copy_(src)


def _tap_sum(shape: tuple[int, ...], parts: list, like: torch.Tensor) -> torch.Tensor:
    """Sum of ``(slices, tensor)`` parts into a new contiguous tensor: ``out[:, *sl] += t``."""
    full = next(
        (
            i
            for i, (sl, _) in enumerate(parts)
            if all(s.start == 0 and s.stop == n and s.step == 1 for s, n in zip(sl, shape[1:]))
        ),
        None,
    )
    if full is None:
        out = like.new_zeros(shape)
    else:  # a tap that covers every position initialises the sum: no zero fill
        out = parts.pop(full)[1].clone(memory_format=torch.contiguous_format)
    for sl, t in parts:
        out[(slice(None), *sl)] += t
    return out


class _GatherTaps(torch.autograd.Function):
    """(B, *L, *R, G, Cg) -> (B, *Lout, *R, G, *k, Cg): every output frame gets the input frames
    under each kernel tap (zero where that falls into padding); its adjoint sums them back."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation):  # type: ignore[override]
        m = len(kernel)
        lengths = x.shape[1 : 1 + m]
        outs, taps = _fold_geometry(lengths, kernel, stride, padding, dilation)
        ctx.geometry = (lengths, outs, taps)
        buf = x.new_empty(x.shape[0], *outs, *x.shape[1 + m : -1], *kernel, x.shape[-1])
        covered = {tap for tap, _, _ in taps}
        for tap in itertools.product(*(range(k) for k in kernel)):
            if tap not in covered:
                buf[(..., *tap, slice(None))].zero_()
        for tap, out_sl, in_sl in taps:
            _copy_rest_zero(buf[(..., *tap, slice(None))], x[(slice(None), *in_sl)], out_sl)
        return buf

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        lengths, _, taps = ctx.geometry
        m = len(lengths)
        shape = (grad.shape[0], *lengths, *grad.shape[1 + m : -1 - m], grad.shape[-1])
        parts = [
            (in_sl, grad[(..., *tap, slice(None))][(slice(None), *out_sl)])
            for tap, out_sl, in_sl in taps
        ]
        return _tap_sum(shape, parts, grad), None, None, None, None


class _ShiftSum(torch.autograd.Function):
    """(B, *L, *R, G, *k, Og) -> (B, *Lout, *R, G, Og): each output frame sums, over the kernel
    taps, the frame computed for that tap from the input frame under it; the adjoint of
    _GatherTaps with the taps on the other side."""

    @staticmethod
    def forward(ctx, z, kernel, stride, padding, dilation):  # type: ignore[override]
        m = len(kernel)
        lengths = z.shape[1 : 1 + m]
        outs, taps = _fold_geometry(lengths, kernel, stride, padding, dilation)
        ctx.geometry = (lengths, kernel, taps)
        shape = (z.shape[0], *outs, *z.shape[1 + m : -1 - m], z.shape[-1])
        parts = [
            (out_sl, z[(..., *tap, slice(None))][(slice(None), *in_sl)])
            for tap, out_sl, in_sl in taps
        ]
        return _tap_sum(shape, parts, z)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        lengths, kernel, taps = ctx.geometry
        m = len(lengths)
        gz = grad.new_empty(
            grad.shape[0], *lengths, *grad.shape[1 + m : -1], *kernel, grad.shape[-1]
        )
        covered = {tap for tap, _, _ in taps}
        for tap in itertools.product(*(range(k) for k in kernel)):
            if tap not in covered:
                gz[(..., *tap, slice(None))].zero_()
        for tap, out_sl, in_sl in taps:
            _copy_rest_zero(gz[(..., *tap, slice(None))], grad[(slice(None), *out_sl)], in_sl)
        return gz, None, None, None, None


def _conv_fold(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    n = x.dim() - 2
    if n <= 3:
        return _CONV[n](x, w, None, stride, padding, dilation, groups)
    m = n - 3  # leading axes to fold
    batch, out_channels, kernel = x.shape[0], w.shape[0], tuple(w.shape[2 : 2 + m])
    geometry = (kernel, stride[:m], padding[:m], dilation[:m])
    inner = (stride[m:], padding[m:], dilation[m:], groups)
    xl = _channels_last(x)  # (B, *L, *R, C)
    if all(s == 1 for s in stride[:m]):
        # taps -> output channels: conv3d on every input frame, then sum the frames each output
        # frame needs (no k-fold copy of the input is made, or kept for backward)
        wt = w.unflatten(0, (groups, -1)).movedim(tuple(range(3, 3 + m)), tuple(range(1, 1 + m)))
        wt = wt.flatten(0, m + 1)  # (G * prod(k) * O/g, C/g, *k_rest), channels (g, *k, o)
        z = F.conv3d(xl.flatten(0, m).movedim(-1, 1), wt, None, *inner)  # (B*prod(L), ., *R')
        z = z.unflatten(0, (batch, *x.shape[2 : 2 + m])).movedim(1 + m, -1)  # (B, *L, *R', .)
        z = z.unflatten(-1, (groups, *kernel, out_channels // groups))  # (B,*L,*R',G,*k,O/g)
        y = _ShiftSum.apply(z, *geometry)  # (B, *Lout, *R', G, O/g)
        return y.flatten(-2).movedim(-1, 1)  # (B, O, *Lout, *R')
    # strided: taps -> input channels, so only the output frames are convolved
    xg = _GatherTaps.apply(xl.unflatten(-1, (groups, -1)), *geometry)  # (B,*Lo,*R,G,*k,C/g)
    outs = xg.shape[1 : 1 + m]
    xg = xg.flatten(-2 - m).flatten(0, m).movedim(-1, 1)  # (B*prod(Lo), G*prod(k)*C/g, *R)
    wg = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (O, prod(k) * C/g, *k_rest), channels (*k, c)
    y = F.conv3d(xg, wg, None, *inner)  # (B*prod(Lout), O, *R')
    return y.unflatten(0, (batch, *outs)).movedim(1 + m, 1)  # (B, O, *Lout, *R')


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
    n = _check_conv(input, weight, bias, groups, transposed=False)
    kernel = tuple(weight.shape[2:])
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    pads = _resolve_padding(padding, kernel, stride_t, dilation_t)
    for axis, (size, k, d, (pb, pa)) in enumerate(zip(input.shape[2:], kernel, dilation_t, pads)):
        if d * (k - 1) + 1 > size + pb + pa:
            raise ValueError(
                f"kernel size {k} (dilation {d}) on spatial axis {axis} is larger than the "
                f"padded input size {size + pb + pa}"
            )
    if n <= 3 and not isinstance(padding, str):
        return _CONV[n](input, weight, bias, stride_t, [p for p, _ in pads], dilation_t, groups)
    symmetric = all(pb == pa for pb, pa in pads)
    if not symmetric:
        input = pad_nd(input, pads)
        pads = ((0, 0),) * n
    out = _conv_fold(input, weight, stride_t, tuple(p for p, _ in pads), dilation_t, groups)
    if bias is not None:
        out = out + bias.view(1, -1, *([1] * n))
    return out


def _conv_transpose_fold(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    n = x.dim() - 2
    if n <= 3:
        return _CONV_T[n](x, w, bias, stride, padding, output_padding, groups, dilation)
    m = n - 3  # leading axes to fold: their frames -> batch, their taps -> output channels
    batch, lengths, kernel = x.shape[0], x.shape[2 : 2 + m], tuple(w.shape[2 : 2 + m])
    out_channels = w.shape[1] * groups
    xl = _channels_last(x).flatten(0, m).movedim(-1, 1)  # (B*prod(L), C, *R), channels-last
    wt = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (C, prod(k) * O/g, *k_rest), channels (*k, o)
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(lengths, kernel, stride, dilation)]
    keep = [f - 2 * p + op for f, p, op in zip(full, padding, output_padding)]
    tiled = all(s == k and d == 1 for s, k, d in zip(stride, kernel, dilation))
    extra = [max(0, p + kp - f) for p, kp, f in zip(padding, keep, full)]
    # when the taps tile the output exactly, every output voxel comes from one inner output
    # channel: the bias rides along in the conv3d (per tap) instead of costing extra passes
    fuse_bias = bias is not None and tiled and not any(extra)
    inner_bias = None
    if fuse_bias:
        inner_bias = (
            bias.view(groups, *([1] * m), -1).expand(groups, *kernel, -1).reshape(-1)
        )  # (G*prod(k)*O/g,), ordered (G, *k, o) like the conv's output channels
    r = F.conv_transpose3d(
        xl, wt, inner_bias, stride[m:], padding[m:], output_padding[m:], groups, dilation[m:]
    )  # (B*prod(L), G*prod(k)*O/g, *R')
    rest = r.shape[2:]
    r = r.unflatten(0, (batch, *lengths)).movedim(1 + m, -1)  # (B, *L, *R', G*prod(k)*O/g)
    r = r.unflatten(-1, (groups, *kernel, -1))  # (B, *L, *R', G, *k, O/g)
    r = r.movedim(tuple(range(-1 - m, -1)), tuple(range(1 + m, 1 + 2 * m)))  # (B,*L,*k,*R',G,O/g)
    if tiled:
        # taps tile the output without overlap (the U-Net's kernel 2 / stride 2): interleave
        inter = [0] + [a for i in range(m) for a in (1 + i, 1 + m + i)]
        y = r.permute(*inter, *range(1 + 2 * m, r.dim()))  # (B, L0, k0, L1, k1, .., *R', G, O/g)
        y = y.reshape(batch, *[n * k for n, k in zip(lengths, kernel)], *rest, out_channels)
        if any(extra):  # output_padding beyond the last tap: zeros
            y = F.pad(y, [0, 0] * (len(rest) + 1) + [v for e in reversed(extra) for v in (0, e)])
    else:  # overlapping (or gapped) taps: add each tap's frames at its stride
        size = [max(f, p + kp) for f, p, kp in zip(full, padding, keep)]
        y = r.new_zeros(batch, *size, *rest, out_channels)  # (B, *full, *R', O)
        r = r.flatten(-2)  # (B, *L, *k, *R', O)
        for tap in itertools.product(*(range(k) for k in kernel)):
            sl = [
                slice(t * d, t * d + (n - 1) * s + 1, s)
                for t, d, n, s in zip(tap, dilation, lengths, stride)
            ]
            y[(slice(None), *sl)] += r[(slice(None),) * (1 + m) + tap]
    y = y[(slice(None), *[slice(p, p + kp) for p, kp in zip(padding, keep)])]
    if bias is not None and not fuse_bias:
        y = y + bias  # channels are last here: (B, *out, O)
    return y.movedim(-1, 1)  # (B, O, *out)


def check_output_padding(
    given: IntOrTuple,
    output_padding: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> None:
    """torch's rule: on every axis output_padding < stride or output_padding < dilation."""
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op >= s and op >= d:
            raise ValueError(
                f"output_padding={given!r}: on axis {axis} it must be smaller than "
                f"stride ({s}) or dilation ({d})"
            )


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
    n = _check_conv(input, weight, bias, groups, transposed=True)
    kernel = tuple(weight.shape[2:])
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    output_padding_t = as_tuple(output_padding, n, "output_padding")
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    check_output_padding(output_padding, output_padding_t, stride_t, dilation_t)
    for axis in range(n):
        op, s, d = output_padding_t[axis], stride_t[axis], dilation_t[axis]
        size = (input.shape[2 + axis] - 1) * s - 2 * padding_t[axis] + d * (kernel[axis] - 1)
        if size + op + 1 < 1:
            raise ValueError(
                f"padding={padding!r} leaves no output on spatial axis {axis} "
                f"(computed size {size + op + 1})"
            )
    if n <= 3:
        return _CONV_T[n](
            input, weight, bias, stride_t, padding_t, output_padding_t, groups, dilation_t
        )
    return _conv_transpose_fold(
        input, weight, stride_t, padding_t, output_padding_t, dilation_t, groups, bias
    )


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------


def _pool_args(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: IntOrTuple,
    dilation: IntOrTuple,
) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    n = spatial_dims_of(input)
    kernel = as_tuple(kernel_size, n, "kernel_size", minimum=1)
    stride_t = kernel if stride is None else as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    for axis in range(n):
        span = (kernel[axis] - 1) * dilation_t[axis] + 1
        if 2 * padding_t[axis] > span:
            raise ValueError(
                f"padding={padding!r}: on axis {axis} it must be at most half the effective "
                f"kernel size {span}"
            )
        if span > input.shape[2 + axis] + 2 * padding_t[axis]:
            raise ValueError(
                f"kernel_size={kernel_size!r} on spatial axis {axis} is larger than the padded "
                f"input size {input.shape[2 + axis] + 2 * padding_t[axis]}"
            )
    return n, kernel, stride_t, padding_t, dilation_t


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
    n, kernel, stride_t, padding_t, dilation_t = _pool_args(
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
    n, kernel, stride_t, padding_t, _ = _pool_args(input, kernel_size, stride, padding, 1)
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


# ----------------------------------------------------------------------------------------------
# Interpolation
# ----------------------------------------------------------------------------------------------

InterpMode = Literal["nearest", "nearest-exact", "linear"]


def _out_sizes(
    input: torch.Tensor,
    n: int,
    size: IntOrTuple | None,
    scale_factor: float | Sequence[float] | None,
) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"exactly one of size and scale_factor must be given, got size={size!r}, "
            f"scale_factor={scale_factor!r}"
        )
    if size is not None:
        return as_tuple(size, n, "size", minimum=1), (None,) * n
    if isinstance(scale_factor, (int, float)) and not isinstance(scale_factor, bool):
        scales: tuple[float, ...] = (float(scale_factor),) * n
    elif isinstance(scale_factor, Sequence) and len(scale_factor) in (1, n):
        scales = tuple(float(s) for s in scale_factor) * (n if len(scale_factor) == 1 else 1)
    else:
        raise ValueError(
            f"scale_factor={scale_factor!r} must be a positive number or a sequence of "
            f"spatial_dims={n} of them"
        )
    if any(s <= 0 for s in scales):
        raise ValueError(f"scale_factor={scale_factor!r} must be positive on every axis")
    sizes = tuple(math.floor(s0 * s) for s0, s in zip(input.shape[2:], scales))
    if any(s < 1 for s in sizes):
        raise ValueError(f"scale_factor={scale_factor!r} gives an empty output size {sizes}")
    return sizes, scales


def _interp_axis(
    x: torch.Tensor,
    axis: int,
    out_size: int,
    scale_factor: float | None,
    mode: str,
    align_corners: bool,
) -> torch.Tensor:
    in_size = x.shape[2 + axis]
    dim = 2 + axis
    # torch computes the coordinate map in its "opmath" type (float64 for double, else float32)
    opmath = torch.float64 if x.dtype == torch.float64 else torch.float32
    dst = torch.arange(out_size, dtype=opmath, device=x.device)
    if mode == "linear" and align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    elif scale_factor is not None:
        scale = 1.0 / scale_factor
    else:
        scale = in_size / out_size
    scale_t = torch.tensor(scale, dtype=opmath)
    if mode == "nearest":
        idx = (dst * scale_t).floor().long().clamp(max=in_size - 1)
        return x.index_select(dim, idx)
    if mode == "nearest-exact":
        idx = ((dst + 0.5) * scale_t).floor().long().clamp(max=in_size - 1)
        return x.index_select(dim, idx)
    src = dst * scale_t if align_corners else ((dst + 0.5) * scale_t - 0.5).clamp(min=0.0)
    i0 = src.long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    lam1 = (src - i0.to(src.dtype)).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_size
    lam1 = lam1.view(shape)
    return x.index_select(dim, i0) * (1 - lam1) + x.index_select(dim, i1) * lam1


def interpolate_nd(
    input: torch.Tensor,
    size: IntOrTuple | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: InterpMode = "nearest",
    align_corners: bool | None = None,
) -> torch.Tensor:
    """N-D resize: nearest, nearest-exact, or N-linear (bi/trilinear generalised), torch's maps."""
    n = spatial_dims_of(input)
    if mode not in ("nearest", "nearest-exact", "linear"):
        raise ValueError(
            f"mode={mode!r} is not supported; expected nearest, nearest-exact or linear"
        )
    if align_corners is not None and mode != "linear":
        raise ValueError(f"align_corners={align_corners!r} only applies to mode='linear'")
    sizes, scales = _out_sizes(input, n, size, scale_factor)
    if n <= 3:
        torch_mode = _LINEAR[n] if mode == "linear" else mode
        if size is not None:
            return F.interpolate(input, size=sizes, mode=torch_mode, align_corners=align_corners)
        return F.interpolate(
            input, scale_factor=scales, mode=torch_mode, align_corners=align_corners
        )
    return _interpolate_separable(input, sizes, scales, mode, bool(align_corners))


def _interpolate_separable(
    input: torch.Tensor,
    sizes: tuple[int, ...],
    scales: tuple[float | None, ...],
    mode: str,
    align_corners: bool,
) -> torch.Tensor:
    out = input
    for axis, (s, sf) in enumerate(zip(sizes, scales)):
        if s != out.shape[2 + axis] or sf not in (None, 1.0):
            out = _interp_axis(out, axis, s, sf, mode, align_corners)
    return out

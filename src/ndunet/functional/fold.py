"""The N >= 4 convolutions: the leading N - 3 axes are folded so that native conv3d does all the
work, with exactly the multiply-adds of the N-D operator.

Four strategies compute the same operator; they differ in the buffer holding the leading
axes' kernel taps (k = prod of the leading kernel sizes):

* ``outputs``: taps -> output channels. One conv3d on every input frame with k * O channels out,
  then each output frame sums the frames its taps need. Buffer: k x (input frames x O).
* ``inputs``: taps -> input channels. Each output frame gathers the input frames under its taps
  (k * C channels), one conv3d on the output frames. Buffer: k x (output frames x C), kept for
  backward. The natural choice for strided leading axes (only the output frames are convolved).
* ``taps``: one conv3d per leading tap over all frames, added into the output (fold_taps.py).
  No buffer; k smaller convolutions.
* ``chunks``: ``inputs`` for a chunk of output frames of the first leading axis at a time, read
  from the input's own layout (fold_chunks.py): no input-sized copies, the per-frame loop's
  memory, the buffer bounded by CHUNK_RATIO x (input + output).
* ``blocks``: ``outputs`` for any leading stride (one conv3d per residue class of the taps, so
  strided axes convolve only the frames their taps read), in blocks of frames, each tensor read
  in its own layout, bias fused, gradient-layout-aware backward (fold_blocks.py). Buffer: one
  block; the per-frame loop's memory at about ``outputs``'s time for large volumes (CPU).

Where the leading taps of a transposed conv tile the output (stride == kernel, dilation 1: the
U-Net's kernel 2 / stride 2), "outputs" is fold_tiled.py: the output is the conv's result with
the taps moved next to their frames (for layout "frames" and one leading axis, a view of it).

``strategy`` (from ``NDUNET_FOLD_STRATEGY`` at import; "auto" unless set) forces one for both
conv and transposed conv ("inputs", "chunks" and "blocks" have no transposed form: there "auto"
applies).
"auto" picks by device and by the buffer's size against input + output (_choose); the benchmark
forces each strategy for its A/B.

Tensors travel channels-innermost, (B, *spatial, C) in memory: oneDNN's channels_last_3d
convolutions are ~1.6x faster on CPU than the default layout, tap slices of such a tensor are
contiguous runs of channels, and the results come back as permuted views without a copy.
``layout`` ("frames", from ``NDUNET_FOLD_LAYOUT``) instead hands conv3d standard NCDHW frames,
an A/B for cuDNN; every view works on logical shapes, so the layout changes copies, not results.
"auto" (the default) is channels-last for every strategy but "blocks", which picks per call
(channels-last on CPU and for channels-innermost tensors, NCDHW frames otherwise).
The data movement around the conv3d is a handful of strided copies/adds, each written as an
autograd.Function with an explicit adjoint (autograd through unfold would scatter-add slowly).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ndunet.functional.fold_blocks import conv_blocks
from ndunet.functional.fold_chunks import chunk_frames, conv_chunks
from ndunet.functional.fold_taps import (
    _copy_rest_zero,
    conv_taps,
    conv_transpose_taps,
    fold_geometry,
)
from ndunet.functional.fold_tiled import channels_last, conv_transpose_tiled
from ndunet.functional.onednn import conv3d

__all__ = ["LAYOUTS", "STRATEGIES", "conv_fold", "conv_transpose_fold", "forced_strategy"]

STRATEGIES = ("auto", "outputs", "inputs", "taps", "chunks", "blocks")


LAYOUTS = ("auto", "channels_last", "frames")


def _checked(label: str, name: str, allowed: tuple[str, ...]) -> str:
    if name not in allowed:
        raise ValueError(f"{label}={name!r} is not valid; use one of {allowed}")
    return name


def _from_env(variable: str, allowed: tuple[str, ...]) -> str:
    return _checked(variable, os.environ.get(variable, allowed[0]), allowed)


strategy = _from_env("NDUNET_FOLD_STRATEGY", STRATEGIES)
# the memory layout of the folded input: channels innermost (oneDNN's fast layout), or "frames":
# frame-major with channels before the inner axes, so conv3d sees standard NCDHW frames (an A/B
# for cuDNN; it changes only copies, never the result); "auto": channels innermost, except that
# "blocks" picks by device and the tensors' layouts
layout = _from_env("NDUNET_FOLD_LAYOUT", LAYOUTS)


@contextmanager
def forced_strategy(name: str, fold_layout: str | None = None) -> Iterator[None]:
    """Within the block, every N >= 4 conv uses strategy ``name`` (and layout ``fold_layout``
    where given): for benchmarks and tests."""
    global strategy, layout
    _checked("strategy", name, STRATEGIES)
    if fold_layout is not None:
        _checked("fold_layout", fold_layout, LAYOUTS)
    before = strategy, layout
    strategy, layout = name, fold_layout or layout
    try:
        yield
    finally:
        strategy, layout = before


# "auto": on CPU, always the fastest there (measured with benchmarks/conv_nd.py, time first):
# "outputs" for unit leading strides, "inputs" for strided ones. On CUDA the same while the
# buffer stays within BUFFER_RATIO x (input + output) elements; beyond it (a memory-bound call)
# "chunks", whose memory is the per-frame loop's. Provisional for CUDA until the GPU A/B of
# benchmarks/conv_nd.py --device cuda (every strategy against the ceiling and the loop) decides.
BUFFER_RATIO = 1.5
# "chunks" sizes its chunks so one chunk's gathered buffer is at most this x (input + output)
CHUNK_RATIO = 0.25
# CPU, unit leading strides: "blocks" from an "outputs" buffer of this many elements on (the
# same time as "outputs" there, ~0.7x its peak memory; below it, per-block overhead costs more
# than the copies it saves: 1.1-1.2x "outputs"'s time for 8^4 and 6^5 volumes and the 4-D U-Net)
BLOCKS_FROM = 2**22


def _choose(
    unit_stride: bool, buffer: int, in_out: int, device: torch.device, transposed: bool = False
) -> str:
    if strategy != "auto" and not (transposed and strategy in ("inputs", "chunks", "blocks")):
        return strategy
    if transposed:  # its "outputs" buffer is the output itself for the U-Net's kernel 2 stride 2
        return "outputs"
    if device.type == "cuda" and buffer > BUFFER_RATIO * in_out:
        return "chunks"
    if device.type == "cpu" and unit_stride and buffer >= BLOCKS_FROM:
        return "blocks"
    return "outputs" if unit_stride else "inputs"


def _fold_layout(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *L, *R) -> (B, *L, *R, C), in memory channels-innermost or, for layout "frames",
    (B, *L, C, *R): either way every view below works on the same logical shape."""
    if layout == "frames":
        m = x.dim() - 5
        xf = x.movedim(1, 1 + m).contiguous()  # (B, *L, C, *R)
        return xf.movedim(1 + m, -1)  # (B, *L, *R, C), a view
    return channels_last(x)


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
        outs, taps = fold_geometry(lengths, kernel, stride, padding, dilation)
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
        outs, taps = fold_geometry(lengths, kernel, stride, padding, dilation)
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


def conv_fold(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """conv_nd for spatial_dims >= 4 (padding symmetric, per axis)."""
    m = x.dim() - 5  # leading axes to fold
    batch, out_channels, kernel = x.shape[0], w.shape[0], tuple(w.shape[2 : 2 + m])
    geometry = (kernel, stride[:m], padding[:m], dilation[:m])
    inner = (stride[m:], padding[m:], dilation[m:], groups)
    lengths, rest = x.shape[2 : 2 + m], x.shape[2 + m :]
    outs, _ = fold_geometry(lengths, *geometry)
    rest_out = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(rest, w.shape[2 + m :], *inner[:3])
    ]
    unit = all(s == 1 for s in stride[:m])
    frame_out = math.prod(rest_out) * out_channels  # elements of one output frame
    out_numel = batch * math.prod(outs) * frame_out
    # "inputs": k x (output frames x one input frame); "outputs": k x (input frames x one
    # output frame)
    gathered = math.prod(kernel) * batch * math.prod(outs) * math.prod(rest) * x.shape[1]
    buffer = math.prod(kernel) * batch * math.prod(lengths) * frame_out if unit else gathered
    how = _choose(unit, buffer, x.numel() + out_numel, x.device)
    if how == "blocks":
        return conv_blocks(x, w, bias, geometry, inner, layout)
    if how == "chunks":
        budget = int(CHUNK_RATIO * (x.numel() + out_numel))
        y = conv_chunks(x, w, bias, geometry, inner, chunk_frames(gathered, budget, outs[0]))
        return y.movedim(-1, 1)  # (B, O, *Lout, *R')
    xl = _fold_layout(x)  # (B, *L, *R, C)
    if how == "taps":
        y = conv_taps(xl, w, bias, geometry, inner)  # (B, *Lout, *R', O)
        return y.movedim(-1, 1)  # (B, O, *Lout, *R')
    if how == "outputs":
        # taps -> output channels: conv3d on every input frame, then sum the frames each output
        # frame needs (no k-fold copy of the input is made, or kept for backward)
        wt = w.unflatten(0, (groups, -1)).movedim(tuple(range(3, 3 + m)), tuple(range(1, 1 + m)))
        wt = wt.flatten(0, m + 1)  # (G * prod(k) * O/g, C/g, *k_rest), channels (g, *k, o)
        z = conv3d(xl.flatten(0, m).movedim(-1, 1), wt, None, *inner)  # (B*prod(L), ., *R')
        z = z.unflatten(0, (batch, *lengths)).movedim(1 + m, -1)  # (B, *L, *R', .)
        z = z.unflatten(-1, (groups, *kernel, out_channels // groups))  # (B,*L,*R',G,*k,O/g)
        y = _ShiftSum.apply(z, *geometry).flatten(-2)  # (B, *Lout, *R', O)
        if bias is not None:
            y = y + bias
        return y.movedim(-1, 1)  # (B, O, *Lout, *R')
    # taps -> input channels, so only the output frames are convolved
    xg = _GatherTaps.apply(xl.unflatten(-1, (groups, -1)), *geometry)  # (B,*Lo,*R,G,*k,C/g)
    xg = xg.flatten(-2 - m).flatten(0, m).movedim(-1, 1)  # (B*prod(Lo), G*prod(k)*C/g, *R)
    wg = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (O, prod(k) * C/g, *k_rest), channels (*k, c)
    y = conv3d(xg, wg, bias, *inner)  # (B*prod(Lout), O, *R')
    return y.unflatten(0, (batch, *outs)).movedim(1 + m, 1)  # (B, O, *Lout, *R')


def conv_transpose_fold(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """conv_transpose_nd for spatial_dims >= 4."""
    m = x.dim() - 5  # leading axes to fold: their frames -> batch, their taps -> output channels
    batch, lengths, kernel = x.shape[0], x.shape[2 : 2 + m], tuple(w.shape[2 : 2 + m])
    out_channels = w.shape[1] * groups
    full = [(n - 1) * s + (k - 1) * d + 1 for n, k, s, d in zip(lengths, kernel, stride, dilation)]
    keep = [f - 2 * p + op for f, p, op in zip(full, padding, output_padding)]
    crop = (slice(None), *[slice(p, p + kp) for p, kp in zip(padding, keep)])
    inner = (stride[m:], padding[m:], output_padding[m:], groups, dilation[m:])
    rest_full = [  # the inner axes' output lengths
        (n - 1) * s - 2 * p + (k - 1) * d + op + 1
        for n, k, s, p, op, d in zip(x.shape[2 + m :], w.shape[2 + m :], *inner[:3], inner[4])
    ]
    out_numel = batch * math.prod(keep) * math.prod(rest_full) * out_channels
    # "outputs" computes every tap's frames (k x input frames x one output frame)
    buffer = math.prod(kernel) * batch * math.prod(lengths) * math.prod(rest_full) * out_channels
    how = _choose(True, buffer, x.numel() + out_numel, x.device, transposed=True)
    if how == "taps":
        xl = _fold_layout(x).flatten(0, m).movedim(-1, 1)  # (B*prod(L), C, *R)
        size = [max(f, p + kp) for f, p, kp in zip(full, padding, keep)]
        y = conv_transpose_taps(
            xl, w, bias, lengths, (kernel, stride[:m], dilation[:m], size), inner
        )
        return y[crop].movedim(-1, 1)  # (B, O, *out)
    wt = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (C, prod(k) * O/g, *k_rest), channels (*k, o)
    extra = [max(0, p + kp - f) for p, kp, f in zip(padding, keep, full)]
    if all(s == k and d == 1 for s, k, d in zip(stride, kernel, dilation)):
        # taps tile the output without overlap (the U-Net's kernel 2 / stride 2): fold_tiled.py,
        # bias fused unless output_padding adds zeros past the last tap
        fused = bias if not any(extra) else None
        y = conv_transpose_tiled(x, wt, fused, kernel, inner, layout == "frames")
        if any(extra):  # output_padding beyond the last tap: zeros
            y = F.pad(y, [0, 0] * len(rest_full) + [v for e in reversed(extra) for v in (0, e)])
        y = y[(slice(None), *crop)]  # (B, O, *out, *R')
        return y if fused is not None or bias is None else y + bias.view(-1, *[1] * (m + 3))
    xl = _fold_layout(x).flatten(0, m).movedim(-1, 1)  # (B*prod(L), C, *R)
    # overlapping (or gapped) taps: add each tap's frames at its stride
    r = F.conv_transpose3d(xl, wt, None, *inner)  # (B*prod(L), G*prod(k)*O/g, *R')
    rest = r.shape[2:]
    r = r.unflatten(0, (batch, *lengths)).movedim(1 + m, -1)  # (B, *L, *R', G*prod(k)*O/g)
    r = r.unflatten(-1, (groups, *kernel, -1))  # (B, *L, *R', G, *k, O/g)
    r = r.movedim(tuple(range(-1 - m, -1)), tuple(range(1 + m, 1 + 2 * m)))  # (B,*L,*k,*R',G,O/g)
    size = [max(f, p + kp) for f, p, kp in zip(full, padding, keep)]
    y = r.new_zeros(batch, *size, *rest, out_channels)  # (B, *full, *R', O)
    r = r.flatten(-2)  # (B, *L, *k, *R', O)
    for tap in itertools.product(*(range(k) for k in kernel)):
        sl = [
            slice(t * d, t * d + (n - 1) * s + 1, s)
            for t, d, n, s in zip(tap, dilation, lengths, stride)
        ]
        y[(slice(None), *sl)] += r[(slice(None),) * (1 + m) + tap]
    y = y[crop]
    if bias is not None:
        y = y + bias  # channels are last here: (B, *out, O)
    return y.movedim(-1, 1)  # (B, O, *out)

"""The leading axes' kernel taps: their geometry, and the tap-by-tap fold strategy.

Tap by tap, one conv3d per tap of the leading axes runs over all frames at once (frames as
batch) with that tap's (N-3)-D slice of the weight, and its result is added into the output
frames it reaches. No k-fold buffer exists: besides input and output one tap's result is alive at a
time. The backward is explicit (autograd through the slice-adds would allocate a full-size
zero tensor per tap and copy twice): per tap, one conv backward on the output gradient shifted
to the frames that tap read. The cost is prod(k_lead) smaller convolutions instead of one wide.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ndunet.functional.onednn import conv3d, conv3d_backward

Taps = list[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]


def fold_geometry(
    lengths: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    outs: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], Taps]:
    """Output lengths, and per kernel tap the output positions that see a real (unpadded) input
    position and those input positions: ``out[t] <- in[t * s + tap * d - p]``. ``outs`` given:
    that many output positions (padding is then the front padding; a chunk of the frames)."""
    if outs is None:
        outs = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, k, s, p, d in zip(lengths, kernel, stride, padding, dilation)
        ]
    outs = tuple(outs)
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


def _covers(sl: tuple[slice, ...], shape: Sequence[int]) -> bool:
    return all(s.start == 0 and s.stop == n and s.step in (None, 1) for s, n in zip(sl, shape))


def _frames(t: torch.Tensor, m: int, sl: tuple[slice, ...] | None = None) -> torch.Tensor:
    """(B, *L, *R, C) -> (B*prod(L'), C, *R) channels-last, L' = the frames in sl (a copy
    unless sl takes every frame)."""
    if sl is not None:
        t = t[(slice(None), *sl)]
    return t.flatten(0, m).movedim(-1, 1)


def _unframes(t: torch.Tensor, lead: Sequence[int]) -> torch.Tensor:
    """(B*prod(L), C, *R) -> (B, *L, *R, C), a view."""
    return t.unflatten(0, tuple(lead)).movedim(len(lead), -1)


class _TapConv(torch.autograd.Function):
    """(B, *L, *R, C) channels-innermost -> (B, *Lout, *R', O), one conv3d per leading tap."""

    @staticmethod
    def forward(ctx, xl, w, bias, geometry, inner):  # type: ignore[override]
        kernel, stride = geometry[0], geometry[1]
        m, lengths = len(kernel), xl.shape[1 : 1 + len(kernel)]
        outs, taps = fold_geometry(lengths, *geometry)
        # a tap that reaches every output frame goes first: it initialises the sum (and bias)
        taps.sort(key=lambda t: not _covers(t[1], outs))
        ctx.save_for_backward(xl, w)
        ctx.setup = (taps, outs, inner, all(s == 1 for s in stride), bias is not None)
        unit, y = ctx.setup[3], None
        for tap, out_sl, in_sl in taps:
            wt = w[(slice(None), slice(None), *tap)]  # (O, C/g, *k_rest)
            b = bias if y is None and _covers(out_sl, outs) else None
            if unit:  # every frame (a view, no copy); a few border frames go unused
                r = _unframes(conv3d(_frames(xl, m), wt, b, *inner), xl.shape[: 1 + m])
                r = r[(slice(None), *in_sl)]  # (B, *len(out_sl), *R', O)
            else:  # strided: only the frames this tap reads (a copy of 1/prod(s) of them)
                lead = (xl.shape[0], *(len(range(n)[sl]) for n, sl in zip(lengths, in_sl)))
                r = _unframes(conv3d(_frames(xl, m, in_sl), wt, b, *inner), lead)
            if b is not None or (y is None and bias is None and _covers(out_sl, outs)):
                y = r.contiguous()  # (B, *Lout, *R', O); no copy for a unit stride
                continue
            if y is None:
                y = r.new_zeros(xl.shape[0], *outs, *r.shape[1 + m :])  # (B, *Lout, *R', O)
                if bias is not None:
                    y += bias
            y[(slice(None), *out_sl)] += r
            del r  # before the next tap's conv allocates its result
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        xl, w = ctx.saved_tensors
        taps, outs, inner, unit, has_bias = ctx.setup
        m, needs = len(outs), tuple(ctx.needs_input_grad[:2])
        lengths, batch = xl.shape[1 : 1 + m], xl.shape[0]
        gy = gy.contiguous()  # (B, *Lout, *R', O): channels-last frames for the conv backward
        gx, gw = None, w.new_zeros(w.shape) if needs[1] else None  # gx: (B, *L, *R, C)
        shifted = None  # unit stride: one buffer, reused, for each tap's shifted gradient
        for tap, out_sl, in_sl in taps:
            wt = w[(slice(None), slice(None), *tap)]  # (O, C/g, *k_rest)
            if unit:
                if _covers(out_sl, outs) and _covers(in_sl, lengths):
                    g = gy  # this tap maps every input frame to the same output frame
                else:
                    if shifted is None:
                        shifted = gy.new_empty(batch, *lengths, *gy.shape[1 + m :])
                    _copy_rest_zero(shifted, gy[(slice(None), *out_sl)], in_sl)
                    g = shifted  # (B, *L, *R', O)
                gi, gwt = conv3d_backward(_frames(g, m), _frames(xl, m), wt, *inner, needs)
                if gi is not None:
                    gi = _unframes(gi, xl.shape[: 1 + m])  # (B, *L, *R, C)
                    if gx is None and gi.is_contiguous():
                        gx = gi  # the first tap's gradient starts the sum: no zero fill
                    else:
                        gx = xl.new_zeros(xl.shape) if gx is None else gx
                        gx += gi
            else:
                g = gy[(slice(None), *out_sl)]  # (B, *n, *R', O)
                xs = _frames(xl, m, in_sl)  # (B*prod(n), C, *R)
                gi, gwt = conv3d_backward(_frames(g, m), xs, wt, *inner, needs)
                del xs
                if gi is not None:
                    gx = xl.new_zeros(xl.shape) if gx is None else gx
                    gx[(slice(None), *in_sl)] += _unframes(gi, g.shape[: 1 + m])
            del gi, g  # before the next tap's conv backward allocates
            if gwt is not None:
                gw[(slice(None), slice(None), *tap)] = gwt
        gb = gy.flatten(0, -2).sum(0) if has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None


def _copy_rest_zero(dst: torch.Tensor, src: torch.Tensor, sl: tuple[slice, ...]) -> None:
    """``dst[:, *sl] = src``, and zero everywhere else in dst."""
    if any(s.step not in (None, 1) for s in sl):
        dst.zero_()
    else:  # zero only the margins outside the window, axis by axis
        for axis, s in enumerate(sl):
            lead = (slice(None),) * (1 + axis)
            if s.start > 0:
                dst[(*lead, slice(0, s.start))].zero_()
            if s.stop < dst.shape[1 + axis]:
                dst[(*lead, slice(s.stop, None))].zero_()
    dst[(slice(None), *sl)].copy_(src)


def conv_taps(
    xl: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
) -> torch.Tensor:
    """(B, *L, *R, C) channels-innermost -> (B, *Lout, *R', O), one conv3d per leading tap."""
    return _TapConv.apply(xl, w, bias, geometry, inner)


class _TapConvTranspose(torch.autograd.Function):
    """(B*prod(L), C, *R) channels-last -> (B, *full, *R', O) uncropped, one transposed conv3d
    per leading tap, each added (or, where the taps tile the output, copied) at its stride; the
    backward takes one conv backward per tap on that tap's (strided) frames of the gradient."""

    @staticmethod
    def forward(ctx, xl, w, bias, lengths, geometry, inner):  # type: ignore[override]
        kernel, stride, dilation, size = geometry
        m, batch = len(kernel), xl.shape[0] // math.prod(lengths)
        # taps that tile the output exactly (the U-Net's kernel 2 / stride 2) write disjoint
        # frames covering all of it: copied into an uninitialised output, the bias fused
        exact = all(s == k and d == 1 for s, k, d in zip(stride, kernel, dilation))
        exact = exact and list(size) == [n * s for n, s in zip(lengths, stride)]
        taps = [
            (tap, [slice(t * d, t * d + (n - 1) * s + 1, s)
                   for t, d, n, s in zip(tap, dilation, lengths, stride)])
            for tap in itertools.product(*(range(k) for k in kernel))
        ]  # fmt: skip
        ctx.save_for_backward(xl, w)
        ctx.setup = (taps, tuple(lengths), inner, bias is not None)
        y = None
        for tap, sl in taps:
            wt = w[(slice(None), slice(None), *tap)]  # (C, O/g, *k_rest)
            r = F.conv_transpose3d(xl, wt, bias, *inner)  # (B*prod(L), O, *R')
            r = _unframes(r, (batch, *lengths))  # (B, *L, *R', O)
            if y is None:
                y = (r.new_empty if exact else r.new_zeros)(batch, *size, *r.shape[1 + m :])
            if exact:
                y[(slice(None), *sl)] = r
            else:
                y[(slice(None), *sl)] += r
            del r
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        xl, w = ctx.saved_tensors
        taps, lengths, (stride, padding, output_padding, groups, dilation), has_bias = ctx.setup
        needs = tuple(ctx.needs_input_grad[:2])
        gx, gw = None, w.new_zeros(w.shape) if needs[1] else None
        for tap, sl in taps:
            wt = w[(slice(None), slice(None), *tap)]  # (C, O/g, *k_rest)
            g = _frames(gy, len(lengths), tuple(sl))  # (B*prod(L), O, *R'), a 1/k-sized copy
            gi, gwt, _ = torch.ops.aten.convolution_backward(
                g, xl, wt, None, stride, padding, dilation, True, output_padding, groups,
                [*needs, False],
            )  # fmt: skip
            del g
            if gi is not None:
                gx = gi if gx is None else gx.add_(gi)
            if gwt is not None:
                gw[(slice(None), slice(None), *tap)] = gwt
        gb = gy.flatten(0, -2).sum(0) if has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None, None, None


def conv_transpose_taps(
    xl: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: Sequence[int],
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
) -> torch.Tensor:
    """(B*prod(L), C, *R) channels-last -> (B, *full, *R', O) uncropped."""
    kernel, stride, dilation, size = geometry
    exact = all(s == k and d == 1 for s, k, d in zip(stride, kernel, dilation))
    exact = exact and list(size) == [n * s for n, s in zip(lengths, stride)]
    y = _TapConvTranspose.apply(xl, w, bias if exact else None, lengths, geometry, inner)
    if bias is not None and not exact:
        y = y + bias  # channels are last: (B, *full, *R', O)
    return y

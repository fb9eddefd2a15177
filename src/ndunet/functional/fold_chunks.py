"""The chunked fold strategy: the "inputs" gather (taps -> input channels, one conv3d), done for a
chunk of output frames of the first leading axis at a time, straight from the input's own layout.

Nothing input-sized is copied or kept besides the output and, in backward, the input's gradient:
each chunk makes a channels-last copy of the input frames it reads, gathers its taps, convolves,
and copies its result into the output. Backward redoes the chunk's gather (copies, not convs),
takes one conv backward, and adds the gathered gradient back into the input's gradient. Peak
memory is output + input gradient + one chunk's buffers, like the per-frame loop, with
prod(L0)/chunk conv3d calls instead of one per frame and tap.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
from torch.autograd.function import once_differentiable

from ndunet.functional.fold_taps import Taps, _copy_rest_zero, _frames, _unframes, fold_geometry
from ndunet.functional.onednn import conv3d, conv3d_backward

Chunk = tuple[int, int, int, int, Taps]


def chunk_frames(buffer: int, budget: int, frames: int) -> int:
    """Output frames of the first leading axis per chunk, so one chunk's gathered buffer (the
    whole call's is ``buffer`` elements) stays within ``budget`` elements; at least one."""
    return max(1, min(frames, budget * frames // max(buffer, 1)))


def _chunks(
    lengths: tuple[int, ...], outs: tuple[int, ...], geometry: tuple, chunk: int
) -> Iterator[Chunk]:
    """Per chunk of output frames [o0, o1) of axis 0: the input frames [i0, i1) it reads, and
    the taps of that block (its padding on axis 0 is what is left of the front padding)."""
    kernel, stride, padding, dilation = geometry
    k, s, p, d = kernel[0], stride[0], padding[0], dilation[0]
    for o0 in range(0, outs[0], chunk):
        o1 = min(o0 + chunk, outs[0])
        lo, hi = o0 * s - p, (o1 - 1) * s - p + (k - 1) * d + 1  # the padded frames read
        i0, i1 = max(0, lo), max(max(0, lo), min(lengths[0], hi))
        _, taps = fold_geometry(
            (i1 - i0, *lengths[1:]),
            kernel,
            stride,
            (i0 - lo, *padding[1:]),
            dilation,
            (o1 - o0, *outs[1:]),
        )
        yield o0, o1, i0, i1, taps


def _gather(x: torch.Tensor, chunk: Chunk, kernel, outs, groups: int) -> torch.Tensor:
    """(B, C, *L, *R) -> the chunk's (B*c*prod(Lout[1:]), G*prod(k)*C/g, *R), channels-last."""
    o0, o1, i0, i1, taps = chunk
    m = len(kernel)
    xs = x[:, :, i0:i1].movedim(1, -1)  # (B, l, *L[1:], *R, C), a view
    xs = xs.unflatten(-1, (groups, -1))  # (B, l, *L[1:], *R, G, C/g)
    buf = x.new_empty(x.shape[0], o1 - o0, *outs[1:], *xs.shape[1 + m : -1], *kernel, xs.shape[-1])
    covered = {tap for tap, _, _ in taps}
    for tap in itertools.product(*(range(k) for k in kernel)):
        if tap not in covered:
            buf[(..., *tap, slice(None))].zero_()
    for tap, out_sl, in_sl in taps:  # (B, *Lo_c, *R, G, Cg) per tap: strided reads of x
        _copy_rest_zero(buf[(..., *tap, slice(None))], xs[(slice(None), *in_sl)], out_sl)
    return _frames(buf.flatten(-2 - m), m)  # (B*c*prod(Lout[1:]), G*prod(k)*C/g, *R)


class _ChunkedGather(torch.autograd.Function):
    """(B, C, *L, *R) any layout -> (B, *Lout, *R', O) channels-innermost."""

    @staticmethod
    def forward(ctx, x, w, bias, geometry, inner, chunk):  # type: ignore[override]
        kernel = geometry[0]
        m, groups = len(kernel), inner[3]
        lengths = tuple(x.shape[2 : 2 + m])
        outs, _ = fold_geometry(lengths, *geometry)
        wg = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (O, prod(k)*C/g, *k_rest), channels (*k, c)
        ctx.save_for_backward(x, w)
        ctx.setup = (geometry, inner, chunk, outs, bias is not None)
        y = None
        for part in _chunks(lengths, outs, geometry, chunk):
            r = conv3d(_gather(x, part, kernel, outs, groups), wg, bias, *inner)
            r = _unframes(r, (x.shape[0], part[1] - part[0], *outs[1:]))  # (B, c, .., *R', O)
            if y is None:
                y = r.new_empty(x.shape[0], *outs, *r.shape[1 + m :])  # (B, *Lout, *R', O)
            y[:, part[0] : part[1]] = r
            del r  # before the next chunk's buffers
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        x, w = ctx.saved_tensors
        geometry, inner, chunk, outs, has_bias = ctx.setup
        kernel = geometry[0]
        m, groups, needs = len(kernel), inner[3], tuple(ctx.needs_input_grad[:2])
        lengths = tuple(x.shape[2 : 2 + m])
        wg = w.movedim(1, 1 + m).flatten(1, 1 + m)  # (O, prod(k)*C/g, *k_rest)
        gx = torch.zeros_like(x) if needs[0] else None  # x's own layout
        gwg = torch.zeros_like(wg) if needs[1] else None
        for part in _chunks(lengths, outs, geometry, chunk):
            o0, o1, i0, i1, taps = part
            g = _frames(gy[:, o0:o1], m)  # (B*c*prod(Lout[1:]), O, *R'), a chunk-sized copy
            gb, gwc = conv3d_backward(g, _gather(x, part, kernel, outs, groups), wg, *inner, needs)
            del g
            if gwc is not None:
                gwg += gwc
            if gb is None:
                continue
            lead = (x.shape[0], o1 - o0, *outs[1:])
            gb = _unframes(gb, lead).unflatten(-1, (groups, *kernel, -1))  # (B,..,G,*k,C/g)
            gxs = gx[:, :, i0:i1].movedim(1, -1).unflatten(-1, (groups, -1))  # (B,l,..,G,C/g)
            for tap, out_sl, in_sl in taps:  # the gather's adjoint: add each tap back
                gxs[(slice(None), *in_sl)] += gb[(..., *tap, slice(None))][(slice(None), *out_sl)]
            del gb, gxs
        gw = None
        if gwg is not None:  # (O, prod(k)*C/g, *k_rest) -> (O, C/g, *k, *k_rest)
            gw = gwg.unflatten(1, (*kernel, -1)).movedim(1 + m, 1)
        gbias = gy.flatten(0, -2).sum(0) if has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gbias, None, None, None


def conv_chunks(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
    chunk: int,
) -> torch.Tensor:
    """(B, C, *L, *R) -> (B, *Lout, *R', O) channels-innermost, ``chunk`` output frames of the
    first leading axis at a time."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk} is not valid; use a positive number of frames")
    return _ChunkedGather.apply(x, w, bias, geometry, inner, math.floor(chunk))

"""The transposed fold when the leading axes' taps tile the output (stride == kernel, dilation 1:
the U-Net's kernel 2 / stride 2 upsampling), as one autograd.Function that owns every layout.

One conv_transpose3d over all input frames (frames as batch) with the leading taps as extra
output channels, ordered (G, *k, O/g), computes every output voxel exactly once; the output is
that result with the taps moved next to their frames. Where it can, the move is free:

* layout "frames" (NCDHW frames; cuDNN's native layout): the result is (B, *L, G, *k, O/g, *R')
  in memory, so for one leading axis and groups == 1 the output (B, L * k, O, *R') is a view of
  it, no copy at all; otherwise one copy in contiguous blocks of O/g x prod(R') elements.
* layout "channels_last" (oneDNN's fast layout on CPU, by ~2x for this conv): the taps sit
  inside each voxel's channels, so one copy in runs of O/g channels gives the output
  channels-innermost, (B, *(L * k), *R', O) in memory.

The backward reads the output gradient in whatever layout it arrives. When its channels are not
innermost (a standard contiguous gradient), the conv backward runs on NCDHW frames: gathering the
gradient into them is a copy in blocks of prod(R') elements (or, where the gradient already has
the "frames" output's layout, a view), where gathering it channels-last would be a transpose that
costs more than the conv backward itself. Otherwise it runs channels-last (a copy in runs of O/g).
The bias gradient is a sum over the arriving gradient (oneDNN's fused one costs more than that
sum). The backward is made of differentiable ops, so double backward works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["BLOCK_ELEMENTS", "CHUNK_RATIO", "channels_last", "conv_transpose_tiled"]

# the conv runs over blocks of frames of the first leading axis (at least one) whose result is
# at most CHUNK_RATIO x the output and BLOCK_ELEMENTS elements (0: no such bound): the forward's
# result block and, in backward, the gathered gradient block and oneDNN's blocked copy of it stay
# that small. On CPU (oneDNN, 2 threads) the blocked backward is also faster: ~3.7x at 2M
# elements in one block against four of 512K, 2-3x for some 512K blocks against two of 256K.
CHUNK_RATIO = 0.5
BLOCK_ELEMENTS = 2**19


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, *S) -> (B, *S, C) contiguous; free when x already has that memory layout."""
    xl = x.movedim(1, -1)  # (B, *S, C)
    if xl.is_contiguous():
        return xl
    if x.is_contiguous():  # torch's vectorised channels-last conversion, on a 5-D view
        x5 = x.flatten(2, x.dim() - 3)  # (B, C, prod(S[:-2]), S[-2], S[-1])
        x5 = x5.contiguous(memory_format=torch.channels_last_3d)
        return x5.movedim(1, -1).unflatten(1, x.shape[2:-2])  # (B, *S, C)
    return xl.contiguous()


def _frames(x: torch.Tensor, m: int, cl: bool) -> torch.Tensor:
    """(B, C, *L, *R) -> (B, *L, C, *R) with the frames outermost in memory, each one NCDHW or
    channels-last; a copy unless x already has that layout."""
    if cl:
        return channels_last(x).movedim(-1, 1 + m)
    return x.movedim(1, 1 + m).contiguous()


def _split(t: torch.Tensor, kernel: Sequence[int], groups: int) -> torch.Tensor:
    """(B, O, *(L*k), *R') -> (B, G, O/g, L0, k0, L1, k1, .., *R'), a view."""
    t = t.unflatten(1, (groups, -1))
    for i, k in enumerate(kernel):
        t = t.unflatten(3 + 2 * i, (-1, k))
    return t


def _conv_order(m: int, cl: bool) -> list[int]:
    """_split's dims in the order of the conv result's memory: (B, *L, G, *k, O/g, *R') for
    NCDHW, (B, *L, *R', G, *k, O/g) for channels-last."""
    frames, taps, rest = range(3, 3 + 2 * m, 2), range(4, 4 + 2 * m, 2), range(3 + 2 * m, 6 + 2 * m)
    channels = [1, *taps, 2]
    return [0, *frames, *rest, *channels] if cl else [0, *frames, *channels, *rest]


def _to_conv(g: torch.Tensor, kernel: Sequence[int], groups: int, cl: bool) -> torch.Tensor:
    """An output (gradient) block (b, O, *(l*k), *R') -> the conv result's (b*prod(l), G*k*O/g,
    *R'), NCDHW or channels-last: a copy, or a view where g already has that layout."""
    m, channels = len(kernel), g.shape[1] * math.prod(kernel)
    gs = _split(g, kernel, groups).permute(_conv_order(m, cl))
    if cl:
        return gs.reshape(-1, *g.shape[-3:], channels).movedim(-1, 1)
    return gs.reshape(-1, channels, *g.shape[-3:])


def _from_conv(r: torch.Tensor, lead: Sequence[int], kernel: Sequence[int], groups: int):
    """The conv result (b*prod(l), G*k*O/g, *R') -> _split's (b, G, O/g, l0, k0, .., *R'), a
    view (``lead``: (b, *l))."""
    m = len(kernel)
    r = r.unflatten(0, tuple(lead)).unflatten(1 + m, (groups, *kernel, -1))
    order = _conv_order(m, False)  # r's dims now, logically
    return r.permute(sorted(range(len(order)), key=order.__getitem__))


def _blocks(batch: int, length: int, per: int) -> list[tuple[slice, slice]]:
    """(batch, first leading axis) slices covering both in order, each block at most ``per``
    frames of that axis: whole batch items, or part of one."""
    if per >= length:
        nb = per // length
        return [(slice(b, min(b + nb, batch)), slice(None)) for b in range(0, batch, nb)]
    return [
        (slice(b, b + 1), slice(i, min(i + per, length)))
        for b in range(batch)
        for i in range(0, length, per)
    ]


def _out_block(t: torch.Tensor, block: tuple[slice, slice], k0: int) -> torch.Tensor:
    """A block's (b, O, *(l*k), *R') view of an output-shaped tensor."""
    bs, ls = block
    lo = None if ls.start is None else ls.start * k0
    hi = None if ls.stop is None else ls.stop * k0
    return t[bs, :, lo:hi]


class _TiledConvTranspose(torch.autograd.Function):
    """(B, C, *L, *R) -> (B, O, *(L*k), *R'), stride == kernel and dilation 1 on the leading
    axes, no leading padding (the caller crops and pads)."""

    @staticmethod
    def forward(ctx, x, wt, bias, kernel, inner, frames):  # type: ignore[override]
        m, groups, taps = len(kernel), inner[3], math.prod(kernel)
        batch, lengths = x.shape[0], x.shape[2 : 2 + m]
        xs = _frames(x, m, not frames)  # (B, *L, C, *R)
        fused = None
        if bias is not None:  # each output voxel comes from one conv channel: bias per tap
            fused = bias.view(groups, 1, -1).expand(groups, taps, -1).reshape(-1)
        per = CHUNK_RATIO * batch * lengths[0]  # frames of L0 per block
        if BLOCK_ELEMENTS:  # and at most BLOCK_ELEMENTS elements of the result
            out = [
                (n - 1) * s - 2 * p + (k - 1) * d + op + 1
                for n, k, s, p, op, d in zip(
                    x.shape[2 + m :], wt.shape[2:], inner[0], inner[1], inner[2], inner[4]
                )
            ]
            frame = wt.shape[1] * groups * math.prod(lengths[1:]) * math.prod(out)
            per = min(per, BLOCK_ELEMENTS / frame)
        blocks = _blocks(batch, lengths[0], max(1, int(per)))
        ctx.save_for_backward(x, xs, wt)
        ctx.setup = (kernel, inner, frames, bias is not None, blocks)
        if frames and m == 1 and groups == 1:  # (B, L, k, O, *R') in memory: y is a view
            r = F.conv_transpose3d(xs.flatten(0, m), wt, fused, *inner)
            y = _from_conv(r, (batch, *lengths), kernel, 1).flatten(1, 2).flatten(2, 3)
            return y
        y = None
        for block in blocks:  # one conv result block alive at a time
            xb = xs[block].flatten(0, m)  # (b*prod(l), C, *R)
            r = F.conv_transpose3d(xb, wt, fused, *inner)  # (b*prod(l), G*k*O/g, *R')
            if y is None:  # memory (B, *(L*k), O, *R') for frames, (B, *(L*k), *R', O) else
                out = [n * k for n, k in zip(lengths, kernel)]
                if frames:
                    y = r.new_empty(batch, *out, r.shape[1] // taps, *r.shape[2:]).movedim(1 + m, 1)
                else:
                    y = r.new_empty(batch, *out, *r.shape[2:], r.shape[1] // taps).movedim(-1, 1)
            yb = _out_block(y, block, kernel[0])
            lead = (yb.shape[0], yb.shape[2] // kernel[0], *lengths[1:])
            _split(yb, kernel, groups).copy_(_from_conv(r, lead, kernel, groups))
            del r
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, xs, wt = ctx.saved_tensors
        kernel, inner, frames, has_bias, blocks = ctx.setup
        stride, padding, output_padding, groups, dilation = inner
        m, needs = len(kernel), ctx.needs_input_grad
        # channels innermost in the arriving gradient: channels-last, else NCDHW frames
        cl = gy.stride(1) < gy.stride(-1)
        if cl == frames or torch.is_grad_enabled():  # the other layout, or double backward
            xs = _frames(x, m, cl)  # (from x: the forward's copy has no graph)
        gxs, gw = None, None
        for block in blocks:
            gr = _to_conv(_out_block(gy, block, kernel[0]), kernel, groups, cl)
            xb = xs[block]  # (b, *l, C, *R)
            gxb, gwb, _ = torch.ops.aten.convolution_backward(
                gr, xb.flatten(0, m), wt, None, stride, padding, dilation, True, output_padding,
                groups, [needs[0], needs[1], False],
            )  # fmt: skip
            del gr
            if gwb is not None:
                gw = gwb if gw is None else gw + gwb
            if gxb is None:
                continue
            gxb = gxb.unflatten(0, xb.shape[: 1 + m])  # (b, *l, C, *R), xs's layout
            if len(blocks) == 1:
                gxs = gxb
            else:
                gxs = torch.empty_like(xs) if gxs is None else gxs
                gxs[block].copy_(gxb)
        gx = None if gxs is None else gxs.movedim(1 + m, 1)  # (B, C, *L, *R)
        gb = None
        if has_bias and needs[2]:
            gb = gy.sum([d for d in range(gy.dim()) if d != 1])
        return gx, gw, gb, None, None, None


def conv_transpose_tiled(
    x: torch.Tensor,
    wt: torch.Tensor,
    bias: torch.Tensor | None,
    kernel: tuple[int, ...],
    inner: tuple,
    frames: bool,
) -> torch.Tensor:
    """(B, C, *L, *R) -> (B, O, *(L*k), *R') for leading taps that tile the output; ``wt`` is the
    transposed weight with the leading taps as output channels, (C, prod(k)*O/g, *k_rest) with
    channels (*k, o) in each group; ``inner`` the inner axes' (stride, padding, output_padding,
    groups, dilation); ``frames``: fold.layout "frames" (else channels-last)."""
    return _TiledConvTranspose.apply(x, wt, bias, kernel, inner, frames)

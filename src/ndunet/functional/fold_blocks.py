"""The blocked fold strategy: "outputs" (taps -> output channels) for any leading stride, in
blocks of frames, in the layout the tensors arrive in, as one autograd.Function.

The leading taps fall into classes by the residue of their offset ``tap * d - p`` modulo the
stride: the taps of a class read only the input frames of that residue, and map class frame j
to output frame j - q (q per tap). One conv3d per class, over that class's frames (frames as
batch) with the class's taps as extra output channels, ordered (G, taps, O/g), then computes
exactly the multiply-adds the outputs need: with a unit stride one class holds every tap; with
the U-Net's kernel 3 / stride 2 the even frames meet the middle tap, the odd ones the outer two.
Each tap's frames are then added into the output at their shift.

Copies are what cost on the CPU (the convs aside), so each tensor is read in its own layout:

* the conv runs on NCDHW frames unless the tensor it reads has its channels innermost: then
  channels-last, where oneDNN is faster. Forward: by the input's layout (its frames are copied
  in blocks of prod(R) elements, or viewed); backward: by the arriving gradient's, so that the
  gradient gather is a copy in runs of prod(R') elements, not a transpose (which costs more than
  the conv backward). The output has the forward conv's layout: standard contiguous for NCDHW.
* nothing input-sized is copied or kept: each block copies its own input frames, forward and
  backward; the input's gradient is written in the input's layout.
* the bias initialises the output (no extra pass); its gradient is a plain sum.

Blocks (whole batch items, or frames of the first leading axis of one) keep the conv result
within BLOCK_ELEMENTS elements and CHUNK_RATIO of all frames, so peak memory is about output +
one block beside the input; oneDNN's backward is also faster on such blocks. The backward is
made of differentiable ops (double backward works).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ndunet.functional.fold_taps import _copy_rest_zero, fold_geometry
from ndunet.functional.fold_tiled import _blocks, channels_last
from ndunet.functional.onednn import conv3d, conv3d_backward

__all__ = ["BLOCK_ELEMENTS", "CHUNK_RATIO", "conv_blocks"]

# a block's conv result (and its input frames) at most BLOCK_ELEMENTS elements (0: no such bound)
# and CHUNK_RATIO x the class's frames
BLOCK_ELEMENTS = 2**19
CHUNK_RATIO = 0.5


@dataclass
class _Class:
    """The taps of one residue class: ``frames`` the input frames they read (a strided slice
    per leading axis), ``taps`` (tap, output slice, class-frame slice) for each."""

    frames: tuple[slice, ...]
    counts: tuple[int, ...]
    taps: list[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]
    index: list[int]  # the taps' positions in the flattened leading kernel


def _classes(lengths: Sequence[int], geometry: tuple) -> tuple[tuple[int, ...], list[_Class]]:
    """The output lengths and the residue classes of the leading taps that meet real frames."""
    stride = geometry[1]
    outs, taps = fold_geometry(lengths, *geometry)
    grouped: dict[tuple[int, ...], list] = {}
    for tap, out_sl, in_sl in taps:
        r = tuple(sl.start % s for sl, s in zip(in_sl, stride))
        grouped.setdefault(r, []).append((tap, out_sl, in_sl))
    classes = []
    for r, members in grouped.items():
        # class frame j is input frame r + j * s; a tap's outputs [a, b) read class frames
        # [a + shift, b + shift)
        shift = [
            [(i.start - ra) // s - o.start for i, o, ra, s in zip(in_sl, out_sl, r, stride)]
            for _, out_sl, in_sl in members
        ]
        lo = [min(sh[a] + t[1][a].start for sh, t in zip(shift, members)) for a in range(len(r))]
        hi = [max(sh[a] + t[1][a].stop for sh, t in zip(shift, members)) for a in range(len(r))]
        frames = tuple(
            slice(ra + a * s, ra + (b - 1) * s + 1, s) for ra, a, b, s in zip(r, lo, hi, stride)
        )
        local = [
            (tap, out_sl, tuple(slice(o.start + h - a, o.stop + h - a)
                                for o, h, a in zip(out_sl, sh, lo)))
            for (tap, out_sl, _), sh in zip(members, shift)
        ]  # fmt: skip
        kernel = geometry[0]
        index = [
            sum(t * math.prod(kernel[a + 1 :]) for a, t in enumerate(tap)) for tap, _, _ in local
        ]
        classes.append(_Class(frames, tuple(b - a for a, b in zip(lo, hi)), local, index))
    return outs, classes


def _tap_major(w: torch.Tensor, m: int, groups: int) -> torch.Tensor:
    """(O, C/g, *k, *k_rest) -> (G, prod(k), O/g, C/g, *k_rest), the leading taps flattened."""
    wk = w.unflatten(0, (groups, -1)).movedim(tuple(range(3, 3 + m)), tuple(range(1, 1 + m)))
    return wk.flatten(1, m)


def _class_weight(wk: torch.Tensor, index: list[int]) -> torch.Tensor:
    """The class's taps (``index`` into _tap_major's taps) as output channels (G*T*O/g, C/g,
    *k_rest)."""
    if index != list(range(wk.shape[1])):
        wk = wk[:, index]
    return wk.flatten(0, 2)


def _block_frames(c: _Class, block: tuple[slice, slice]) -> tuple[tuple[slice, ...], int, int]:
    """A block's selection of the input (batch and leading axes), and its class frames [j0, j1)
    on the first leading axis."""
    bs, ls = block
    first = c.frames[0]
    j0, j1 = ls.start or 0, c.counts[0] if ls.stop is None else ls.stop
    s = first.step
    axis0 = slice(first.start + j0 * s, first.start + (j1 - 1) * s + 1, s)
    return (bs, slice(None), axis0, *c.frames[1:]), j0, j1


def _conv_input(xb: torch.Tensor, m: int, cl: bool) -> torch.Tensor:
    """(b, C, *l, *R) -> (b * prod(l), C, *R), NCDHW or channels-last (a copy unless x has it)."""
    if cl:
        return xb.movedim(1, -1).reshape(-1, *xb.shape[2 + m :], xb.shape[1]).movedim(-1, 1)
    return xb.movedim(1, 1 + m).reshape(-1, xb.shape[1], *xb.shape[2 + m :])


def _channels_inner(t: torch.Tensor) -> bool:
    return t.stride(1) < t.stride(-1)


def _conv_layout(t: torch.Tensor, layout: str) -> bool:
    """Whether the conv reading (or making the gradient) ``t`` runs channels-last: forced by
    ``layout``, else wherever t has its channels innermost (a standard t is read as NCDHW frames:
    on the CPU as fast as converting it for oneDNN's channels-last conv, with no copy of it)."""
    if layout != "auto":
        return layout == "channels_last"
    return _channels_inner(t)


def _in_layout(t: torch.Tensor, cl: bool) -> torch.Tensor:
    """t, or for cl t with its channels innermost in memory (one vectorised copy if needed)."""
    return channels_last(t).movedim(-1, 1) if cl else t


def _tap_range(loc: tuple[slice, ...], out: tuple[slice, ...], j0: int, j1: int):
    """A tap's class-frame and output slices restricted to the block's class frames [j0, j1) of
    the first axis (local to the block), or None where the tap misses the block."""
    a, b = max(loc[0].start, j0), min(loc[0].stop, j1)
    if a >= b:
        return None
    d = a - loc[0].start
    out0 = slice(out[0].start + d, out[0].start + d + b - a)
    return (slice(a - j0, b - j0), *loc[1:]), (out0, *out[1:])


class _BlockConv(torch.autograd.Function):
    """(B, C, *L, *R) any layout -> (B, O, *Lout, *R'), standard contiguous or channels-last."""

    @staticmethod
    def forward(ctx, x, w, bias, geometry, inner, layout):  # type: ignore[override]
        m, groups = len(geometry[0]), inner[3]
        lengths, batch = tuple(x.shape[2 : 2 + m]), x.shape[0]
        outs, classes = _classes(lengths, geometry)
        cl = _conv_layout(x, layout)
        ctx.save_for_backward(x, w)
        ctx.setup = (geometry, inner, layout, classes, bias is not None)
        xs = _in_layout(x, cl)  # (B, C, *L, *R), channels innermost in memory for cl
        y, wk = None, _tap_major(w, m, groups)
        for c in classes:
            wc = _class_weight(wk, c.index)
            for block in _class_blocks(c, batch, wc.shape[0], x.shape[1], x.shape[2 + m :]):
                sel, j0, j1 = _block_frames(c, block)
                xb = xs[sel]  # (b, C, *l, *R)
                r = conv3d(_conv_input(xb, m, cl), wc, None, *inner)  # (b*prod(l), G*T*O/g, *R')
                if y is None:
                    y = _output(x, w.shape[0], outs, r.shape[2:], cl, bias)
                z = _taps_view(r, (xb.shape[0], *xb.shape[2 : 2 + m]), groups, len(c.taps))
                yv = y[block[0]].unflatten(1, (groups, -1)).movedim((1, 2), (1 + m, 2 + m))
                for i, (_, out_sl, loc) in enumerate(c.taps):
                    ranges = _tap_range(loc, out_sl, j0, j1)
                    if ranges is not None:
                        yv[(slice(None), *ranges[1])] += z.select(2 + m, i)[
                            (slice(None), *ranges[0])
                        ]
                del r, z
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        x, w = ctx.saved_tensors
        geometry, inner, layout, classes, has_bias = ctx.setup
        m, groups, needs = len(geometry[0]), inner[3], tuple(ctx.needs_input_grad[:2])
        batch = x.shape[0]
        cl = _conv_layout(gy, layout)
        covered = sum(math.prod(c.counts) for c in classes) == math.prod(x.shape[2 : 2 + m])
        xs, gy = _in_layout(x, cl), _in_layout(gy, cl)
        gx = None
        if needs[0]:  # in the conv's layout
            gx = torch.empty_like(xs) if covered else torch.zeros_like(xs)
        wk = _tap_major(w, m, groups)
        gwk = None
        if needs[1]:  # taps that meet no real frame get zeros
            full = sorted(i for c in classes for i in c.index) == list(range(wk.shape[1]))
            gwk = None if full and len(classes) == 1 else torch.zeros_like(wk)
        gyv = gy.unflatten(1, (groups, -1)).movedim((1, 2), (1 + m, 2 + m))  # (B,*Lo,G,O/g,*R')
        rest = gy.shape[2 + m :]
        for c in classes:
            wc = _class_weight(wk, c.index)
            gwc = None
            blocks = _class_blocks(c, batch, wc.shape[0], x.shape[1], x.shape[2 + m :])
            if gx is not None and len(classes) == 1 and len(blocks) == 1 and covered:
                gx = None  # one conv backward makes all of it: its result is the gradient
            for block in blocks:
                sel, j0, j1 = _block_frames(c, block)
                xb = xs[sel]
                lead = (xb.shape[0], *xb.shape[2 : 2 + m])
                gz = _gathered(gy, lead, wc.shape[0], rest, cl)  # (b*prod(l), G*T*O/g, *R')
                gzv = _taps_view(gz, lead, groups, len(c.taps))  # (b, *l, G, T, O/g, *R')
                for i, (_, out_sl, loc) in enumerate(c.taps):
                    dst = gzv.select(2 + m, i)
                    ranges = _tap_range(loc, out_sl, j0, j1)
                    if ranges is None:
                        dst.zero_()
                    else:
                        _copy_rest_zero(dst, gyv[(block[0], *ranges[1])], ranges[0])
                gi, gwb = conv3d_backward(gz, _conv_input(xb, m, cl), wc, *inner, needs)
                del gz, gzv
                if gwb is not None:
                    gwc = gwb if gwc is None else gwc + gwb
                if gi is not None:
                    gi = gi.unflatten(0, lead).movedim(1 + m, 1)  # (b, C, *l, *R)
                    if gx is None:
                        gx = gi
                    else:
                        gx[sel] = gi
                del gi
            if gwc is not None:
                gwc = gwc.unflatten(0, (groups, len(c.taps), -1))  # (G, T, O/g, C/g, *k_rest)
                if gwk is None:
                    gwk = gwc
                else:
                    gwk[:, c.index] = gwc
        gw = None
        if gwk is not None:  # (G, prod(k), O/g, C/g, *k_rest) -> (O, C/g, *k, *k_rest)
            gw = gwk.unflatten(1, geometry[0]).movedim(
                tuple(range(1, 1 + m)), tuple(range(3, 3 + m))
            )
            gw = gw.flatten(0, 1)
        gb = None
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum([d for d in range(gy.dim()) if d != 1])
        return gx, gw, gb, None, None, None


def _class_blocks(c: _Class, batch: int, channels: int, cin: int, rest: Sequence[int]) -> list:
    """Blocks of (batch, class frames of the first leading axis) for one class's conv."""
    frame = math.prod(c.counts[1:]) * max(channels, cin) * math.prod(rest)
    per = CHUNK_RATIO * batch * c.counts[0]
    if BLOCK_ELEMENTS:
        per = min(per, BLOCK_ELEMENTS / max(frame, 1))
    # at least two conv frames: torch runs a one-frame NCDHW conv3d on its slow native path
    least = 2 if math.prod(c.counts[1:]) == 1 else 1
    per, n = max(least, int(per)), c.counts[0]
    if per < n:  # equal blocks within a batch item: no short remainder block
        per = -(-n // -(-n // per))
    return _blocks(batch, n, per)


def _output(x, channels, outs, rest, cl, bias) -> torch.Tensor:
    """The output (B, O, *Lout, *R'), standard contiguous or channels-last, holding the bias
    (or zeros)."""
    shape = (x.shape[0], *outs, *rest)
    if cl:
        y = x.new_empty(*shape, channels).movedim(-1, 1)
    else:
        y = x.new_empty(shape[0], channels, *shape[1:])
    if bias is None:
        return y.zero_()
    return y.copy_(bias.view(1, -1, *[1] * (y.dim() - 2)).expand(y.shape))


def _taps_view(r: torch.Tensor, lead: Sequence[int], groups: int, taps: int) -> torch.Tensor:
    """A class conv's result or gradient (b*prod(l), G*T*O/g, *R') -> (b, *l, G, T, O/g, *R'),
    a view."""
    return r.unflatten(0, tuple(lead)).unflatten(len(lead), (groups, taps, -1))


def _gathered(gy, lead, channels, rest, cl) -> torch.Tensor:
    """An uninitialised conv-result-shaped gradient buffer, NCDHW or channels-last."""
    n = math.prod(lead)
    if cl:
        return gy.new_empty(n, *rest, channels).movedim(-1, 1)
    return gy.new_empty(n, channels, *rest)


def conv_blocks(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
    layout: str = "auto",
) -> torch.Tensor:
    """(B, C, *L, *R) -> (B, O, *Lout, *R'); ``geometry`` the leading axes' (kernel, stride,
    padding, dilation), ``inner`` the inner axes' (stride, padding, dilation, groups);
    ``layout`` the conv's ("auto": by the tensors' layouts, "channels_last" or "frames")."""
    return _BlockConv.apply(x, w, bias, geometry, inner, layout)

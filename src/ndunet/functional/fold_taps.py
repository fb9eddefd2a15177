"""The leading axes' kernel taps: their geometry, and the tap-by-tap fold strategy.

Tap by tap, one conv3d per tap of the leading axes runs over all frames at once (frames as
batch) with that tap's (N-3)-D slice of the weight, and its result is added into the output
frames it reaches. No k-fold buffer exists: besides input and output there is one tap's result
alive at a time, forward and backward (plain autograd: each tap's conv saves only views of the
input and weight). The cost is prod(k_lead) smaller convolutions instead of one wide one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ndunet.functional.onednn import conv3d

Taps = list[tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]]


def fold_geometry(
    lengths: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, ...], Taps]:
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


def _covers(sl: tuple[slice, ...], shape: Sequence[int]) -> bool:
    return all(s.start == 0 and s.stop == n and s.step == 1 for s, n in zip(sl, shape))


def conv_taps(
    xl: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
) -> torch.Tensor:
    """(B, *L, *R, C) channels-innermost -> (B, *Lout, *R', O), one conv3d per leading tap."""
    kernel, stride = geometry[0], geometry[1]
    m, batch, lengths = len(kernel), xl.shape[0], xl.shape[1 : 1 + len(kernel)]
    outs, taps = fold_geometry(lengths, *geometry)
    unit = all(s == 1 for s in stride)
    frames = xl.flatten(0, m).movedim(-1, 1)  # (B*prod(L), C, *R), a channels-last view
    # a tap that reaches every output frame goes first: it initialises the sum (and the bias)
    taps.sort(key=lambda t: not _covers(t[1], outs))
    y = None
    for tap, out_sl, in_sl in taps:
        wt = w[(slice(None), slice(None), *tap)]  # (O, C/g, *k_rest)
        first_full = y is None and _covers(out_sl, outs)
        b = bias if first_full else None
        if unit:  # every frame (a view, no copy); a few border frames go unused
            r = conv3d(frames, wt, b, *inner)  # (B*prod(L), O, *R')
            r = r.unflatten(0, (batch, *lengths)).movedim(1 + m, -1)  # (B, *L, *R', O)
            r = r[(slice(None), *in_sl)]  # (B, *len(out_sl), *R', O)
        else:  # strided: only the frames this tap reads (a copy of 1/prod(s) of the input)
            xs = xl[(slice(None), *in_sl)]  # (B, *len(out_sl), *R, C)
            r = conv3d(xs.flatten(0, m).movedim(-1, 1), wt, b, *inner)  # (B*prod(.), O, *R')
            r = r.unflatten(0, xs.shape[: 1 + m]).movedim(1 + m, -1)  # (B, *., *R', O)
        if first_full:
            y = r if r.is_contiguous() else r.contiguous()
            continue
        if y is None:
            y = r.new_zeros(batch, *outs, *r.shape[1 + m :])  # (B, *Lout, *R', O)
            if bias is not None:
                y += bias
        y[(slice(None), *out_sl)] += r
    assert y is not None  # the geometry checks guarantee at least one tap reaches the input
    return y


def conv_transpose_taps(
    xl: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: Sequence[int],
    geometry: tuple[tuple[int, ...], ...],
    inner: tuple,
) -> torch.Tensor:
    """(B*prod(L), C, *R) channels-last -> (B, *full, *R', O) uncropped, one transposed conv3d
    per leading tap, each added (or, where the taps tile the output, copied) at its stride."""
    kernel, stride, dilation, size = geometry
    m, batch = len(kernel), xl.shape[0] // int(torch.Size(lengths).numel())
    # taps that tile the output exactly (the U-Net's kernel 2 / stride 2) write disjoint
    # frames covering all of it: copied into an uninitialised output, the bias fused
    exact = all(s == k and d == 1 for s, k, d in zip(stride, kernel, dilation)) and list(size) == [
        n * s for n, s in zip(lengths, stride)
    ]
    y = None
    for tap in itertools.product(*(range(k) for k in kernel)):
        wt = w[(slice(None), slice(None), *tap)]  # (C, O/g, *k_rest)
        r = F.conv_transpose3d(xl, wt, bias if exact else None, *inner)  # (B*prod(L), O, *R')
        r = r.unflatten(0, (batch, *lengths)).movedim(1 + m, -1)  # (B, *L, *R', O)
        if y is None:
            y = (r.new_empty if exact else r.new_zeros)(batch, *size, *r.shape[1 + m :])
        sl = [
            slice(t * d, t * d + (n - 1) * s + 1, s)
            for t, d, n, s in zip(tap, dilation, lengths, stride)
        ]
        if exact:
            y[(slice(None), *sl)] = r
        else:
            y[(slice(None), *sl)] += r
    assert y is not None
    if bias is not None and not exact:
        y = y + bias  # channels are last: (B, *full, *R', O)
    return y

"""interpolate_nd: nearest, nearest-exact and N-linear resizing, torch's coordinate maps.

N-linear weights are a product of per-axis linear weights, so for N >= 4 the resize runs as
torch's 3-D kernel over the last three axes and one exact 1-D pass per leading axis. Nearest
enlargement by whole factors (a U-Net's x2 upsampling) repeats
every voxel instead (torch's 3-D kernel and one copy of whole blocks; no index_add backward).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from ndunet._checks import IntOrTuple, check_choice, invalid, spatial_dims_of
from ndunet.functional.checks import INTERP_MODES, interpolate_sizes
from ndunet.functional.take import index_select

__all__ = ["InterpMode", "interpolate_nd", "interpolate_separable"]

InterpMode = Literal["nearest", "nearest-exact", "linear"]

_LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def interpolate_nd(
    input: torch.Tensor,
    size: IntOrTuple | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: InterpMode = "nearest",
    align_corners: bool | None = None,
) -> torch.Tensor:
    """N-D resize: nearest, nearest-exact, or N-linear (bi/trilinear generalised), torch's maps."""
    n = spatial_dims_of(input)
    check_choice("mode", mode, INTERP_MODES)
    if align_corners is not None and mode != "linear":
        raise ValueError(invalid("align_corners", align_corners, "None unless mode='linear'"))
    sizes, scales = interpolate_sizes(input, n, size, scale_factor)
    if n <= 3:
        torch_mode = _LINEAR[n] if mode == "linear" else mode
        if size is not None:
            return F.interpolate(input, size=sizes, mode=torch_mode, align_corners=align_corners)
        return F.interpolate(
            input, scale_factor=scales, mode=torch_mode, align_corners=align_corners
        )
    repeats = _whole_repeats(tuple(input.shape[2:]), sizes, scales)
    if mode in ("nearest", "nearest-exact") and repeats is not None:
        return _repeat_nearest(input, repeats)
    return _inner_native(input, sizes, scales, mode, bool(align_corners))


def _inner_native(
    x: torch.Tensor,
    sizes: tuple[int, ...],
    scales: tuple[float | None, ...],
    mode: str,
    align_corners: bool,
) -> torch.Tensor:
    """N >= 4: torch's 3-D kernel resizes the last three axes (the leading ones folded into
    channels, a view of a contiguous input) and one exact 1-D pass each the leading axes, the
    smaller side first (the passes commute: the weights are a product over axes). 4-D linear x2
    of 2x32x8^4 and 1x16x12^4: 1.5x faster forward + backward than a pass per axis (CPU)."""
    m = x.dim() - 5

    def leading(t: torch.Tensor) -> torch.Tensor:
        return interpolate_separable(
            t, (*sizes[:m], *t.shape[-3:]), (*scales[:m], None, None, None), mode, align_corners
        )

    def inner(t: torch.Tensor) -> torch.Tensor:
        if tuple(t.shape[-3:]) == sizes[-3:] and all(f in (None, 1.0) for f in scales[-3:]):
            return t
        t5 = t.reshape(t.shape[0], -1, *t.shape[-3:])  # (B, C * prod(L), D, H, W)
        given = (
            {"size": sizes[-3:]}
            if scales[-1] is None
            else {"scale_factor": [float(f) for f in scales[-3:]]}  # type: ignore[arg-type]
        )
        linear = mode == "linear"
        y5 = F.interpolate(
            t5, mode="trilinear" if linear else mode, align_corners=align_corners if linear else None,
            **given,
        )  # fmt: skip
        return y5.reshape(*t.shape[:-3], *y5.shape[-3:])

    growing = math.prod(sizes) >= math.prod(x.shape[2:])
    return inner(leading(x)) if growing else leading(inner(x))


def _whole_repeats(
    in_sizes: tuple[int, ...], sizes: tuple[int, ...], scales: tuple[float | None, ...]
) -> tuple[int, ...] | None:
    """Per axis, the whole number r with size = r x input size and scale factor r (or none
    given), else None. For such an axis torch's nearest and nearest-exact maps send output index
    i to input index floor(i / r): every input voxel repeated r times."""
    repeats = []
    for n_in, n_out, factor in zip(in_sizes, sizes, scales):
        if n_out % n_in or (factor is not None and factor != n_out // n_in):
            return None
        repeats.append(n_out // n_in)
    return tuple(repeats)


def _repeat_nearest(x: torch.Tensor, repeats: tuple[int, ...]) -> torch.Tensor:
    """``x`` (B, C, *L, D, H, W) with every voxel repeated ``repeats[i]`` times along axis i:
    torch's 3-D nearest kernel on the last three axes (the leading ones folded into channels),
    then the leading axes repeated by one expand and copy of whole (D', H', W') blocks. Autograd's
    backward is the native kernel's and a sum over the repeats (no index_add)."""
    b, c, *sizes = x.shape
    m = len(sizes) - 3  # leading axes
    lead, rest = sizes[:m], sizes[m:]
    y = x.reshape(b, c * math.prod(lead), *rest)  # (B, C * prod(L), D, H, W)
    if any(r != 1 for r in repeats[m:]):
        y = F.interpolate(y, size=[n * r for n, r in zip(rest, repeats[m:])], mode="nearest")
    out = y.shape[2:]  # (D', H', W')
    y = y.reshape(b, c, *(v for n in lead for v in (n, 1)), *out)  # (B, C, L0, 1, L1, 1, ..., *out)
    y = y.expand(b, c, *(v for n, r in zip(lead, repeats[:m]) for v in (n, r)), *out)
    return y.reshape(b, c, *(n * r for n, r in zip(lead, repeats[:m])), *out)  # (B, C, *rL, *out)


def interpolate_separable(
    input: torch.Tensor,
    sizes: tuple[int, ...],
    scales: tuple[float | None, ...],
    mode: str,
    align_corners: bool,
) -> torch.Tensor:
    """The resize as one 1-D pass per axis (any N; interpolate_nd uses it for N >= 4)."""
    out = input
    for axis, (s, sf) in enumerate(zip(sizes, scales)):
        if s != out.shape[2 + axis] or sf not in (None, 1.0):
            out = _interp_axis(out, axis, s, sf, mode, align_corners)
    return out


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
        return index_select(x, dim, idx)
    if mode == "nearest-exact":
        idx = ((dst + 0.5) * scale_t).floor().long().clamp(max=in_size - 1)
        return index_select(x, dim, idx)
    src = dst * scale_t if align_corners else ((dst + 0.5) * scale_t - 0.5).clamp(min=0.0)
    i0 = src.long().clamp(max=in_size - 1)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    lam1 = (src - i0.to(src.dtype)).to(x.dtype)
    shape = [1] * x.dim()
    shape[dim] = out_size
    lam1 = lam1.view(shape)
    return index_select(x, dim, i0) * (1 - lam1) + index_select(x, dim, i1) * lam1

"""N >= 4 convolutions with axes that never mix: merge them, so fewer axes are left to fold.

An axis along which a conv is pointwise (kernel 1, stride 1, no padding) never mixes its
positions. Two neighbouring spatial axes ``a, b`` of which ``a`` is pointwise merge into one
axis of ``L_a`` frames of ``L_b`` rows, and a conv along it with ``b``'s kernel is the conv along
``b`` exactly when no tap reaches from one frame into the next: ``b`` unpadded, its kernel within
its stride (``d (k - 1) < s``) and ``L_b`` a multiple of ``s``, so every frame gives
``L_b / s`` rows and the frames' rows tile the merged output. For a transposed conv the same
holds when ``b``'s taps tile the output (no padding, ``d (k - 1) + 1 + output_padding == s``).
A pointwise ``b`` always qualifies.

Merging runs left to right over the spatial axes. Where it leaves three axes or fewer, torch's
native conv does the whole operator (anisotropic plans of volumes over time, whose coarse axes
get kernel 1: (3, 3, 1, 1) for (x, y, z, t) NIfTI data, (1, 1, 1, 1) skip convs, (1, 2, 2, 2)
kernel-2 stride-2 resampling); otherwise the fold gets the merged, smaller problem. Merged axes
are views of a contiguous input (any input whose spatial axes are contiguous among themselves),
and the output is a view of the conv's: no copy either way.

Which merges run by default depends on the device (``mode`` below).

Kernels that reach across frames, such as (1, 3, 3, 3), are left as they are: holding the frames
apart with zero rows costs an input and an output copy, which is what the fold's single tap
costs anyway (measured no faster on the CPU, benchmarks/conv_nd.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["merge_axes", "merged"]

# mode: "auto", "all" or "none". "auto": every merge on CUDA (cuDNN reads NCDHW natively, so a merged conv saves the fold's
# copies outright); on the CPU only axes that are all pointwise but the last two (1x1 convs: the
# fold took 4x the ceiling, the merged conv3d 1.6-1.9x). oneDNN reorders default-layout tensors
# for every conv, which made the other merges a mixed result there (benchmarks/conv_nd.py rows
# k(3,3,1,1) and the 4-D planned U-Net step: faster in most rows, slower in some, and 7-33% more
# peak memory). "all" and "none" force it (the benchmark's A/B, the tests).
mode = "auto"


def merge_axes(
    lengths: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    output_padding: Sequence[int] | None = None,
    device: torch.device | None = None,
) -> list[list[int]] | None:
    """The spatial axes in groups that merge into one axis each (None where none merge, or
    ``mode`` and ``device`` rule it out); ``output_padding`` given: for a transposed conv."""
    n = len(lengths)
    op = output_padding or (0,) * n

    def pointwise(i: int) -> bool:
        return kernel[i] == 1 and stride[i] == 1 and not padding[i] and not op[i]

    on_cpu = device is None or device.type != "cuda"
    if mode == "none" or (
        mode == "auto" and on_cpu and not all(pointwise(i) for i in range(n - 2))
    ):
        return None

    def within_stride(i: int) -> bool:
        k, s, d = kernel[i], stride[i], dilation[i]
        if padding[i]:
            return False
        if output_padding is None:
            return d * (k - 1) < s and lengths[i] % s == 0
        return d * (k - 1) + 1 + op[i] == s

    groups = [[0]]
    for i in range(1, n):
        if all(pointwise(j) for j in groups[-1]) and within_stride(i):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups if len(groups) < n else None


def merged(
    op: Callable[..., torch.Tensor],
    x: torch.Tensor,
    w: torch.Tensor,
    groups: list[list[int]],
    per_axis: Sequence[Sequence[int]],
) -> torch.Tensor:
    """``op(x', w', *per_axis')`` on the merged axes, its output unmerged: (B, O, *out). Each
    merged axis takes the geometry of its group's last axis (the others are pointwise, so their
    lengths pass through and the last axis's output length is what is left)."""

    def merge(t: torch.Tensor) -> torch.Tensor:  # lists, not generators: dynamo traces them
        sizes = [math.prod([t.shape[2 + i] for i in g]) for g in groups]
        return t.reshape(*t.shape[:2], *sizes)

    y = op(merge(x), merge(w), *[tuple([v[g[-1]] for g in groups]) for v in per_axis])
    out: list[int] = []
    for g, merged_length in zip(groups, y.shape[2:]):
        kept = [x.shape[2 + i] for i in g[:-1]]
        out += [*kept, merged_length // math.prod(kept)]
    return y.reshape(*y.shape[:2], *out)

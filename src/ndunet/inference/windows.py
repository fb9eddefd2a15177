"""Where sliding windows go and how much each voxel of a window counts: MONAI's rules, any N.

Placement follows ``monai.inferers.utils._get_scan_interval`` and ``monai.data.utils.
dense_patch_slices``; weights follow ``monai.data.utils.compute_importance_map`` (MONAI 1.4).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

__all__ = ["importance_map", "scan_interval", "window_slices", "window_starts"]


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]):
    """Step between window starts per axis: ``int(roi * (1 - overlap))``, at least 1; a window
    as large as the axis steps by its own size (one window)."""
    out = []
    for size, roi, o in zip(image_size, roi_size, overlap):
        if roi == size:
            out.append(roi)
        else:
            out.append(max(int(roi * (1 - o)), 1))
    return tuple(out)


def window_starts(size: int, roi: int, interval: int) -> list[int]:
    """Starts along one axis: every ``interval`` until a window reaches the end; the last one is
    moved back so that it ends flush with the axis (``dense_patch_slices``)."""
    roi = min(roi, size)
    count = next(
        (d + 1 for d in range(math.ceil(size / interval)) if d * interval + roi >= size), 1
    )
    return [i * interval - max(i * interval + roi - size, 0) for i in range(count)]


def window_slices(
    image_size: Sequence[int], roi_size: Sequence[int], overlap: Sequence[float]
) -> list[tuple[slice, ...]]:
    """Every window as a tuple of per-axis slices, the first axis varying slowest (MONAI's order)."""
    steps = scan_interval(image_size, roi_size, overlap)
    starts = [window_starts(s, r, i) for s, r, i in zip(image_size, roi_size, steps)]
    return [
        tuple(slice(s, s + r) for s, r in zip(start, roi_size))
        for start in itertools.product(*starts)
    ]


def importance_map(
    roi_size: Sequence[int],
    mode: str = "constant",
    sigma_scale: Sequence[float] | float = 0.125,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Weight of each voxel of a window, shape ``roi_size``.

    ``"constant"``: ones. ``"gaussian"``: the separable product over axes of
    ``exp(-x^2 / (2 sigma^2))``, x measured from the window centre (``(roi - 1) / 2``) and
    ``sigma = sigma_scale * roi`` per axis, computed in float32; as MONAI 1.4, not rescaled (its
    peak is below 1 for even sizes) and floored at ``max(min, 1e-3)`` so that no voxel weighs 0.
    """
    n = len(roi_size)
    if mode == "constant":
        return torch.ones(tuple(roi_size), device=device, dtype=dtype)
    scales = (sigma_scale,) * n if isinstance(sigma_scale, (int, float)) else tuple(sigma_scale)
    weights = torch.ones((), device=device)
    for roi, scale in zip(roi_size, scales):
        sigma = roi * scale
        x = torch.arange(roi, dtype=torch.float32, device=device) - (roi - 1) / 2.0
        g = torch.exp(x**2 / (-2 * sigma**2))  # (roi,) along this axis
        weights = weights.unsqueeze(-1) * g  # (*earlier axes, roi)
    floor = max(weights.min().item(), 1e-3)
    return weights.clamp(min=floor).to(dtype)

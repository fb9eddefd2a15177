"""Random rotation and scaling for any number of spatial axes, by exact N-linear resampling.

The output voxel p (index coordinates) takes the input at ``c + R @ diag(s) @ (p - c)``, c the
centre ``(size - 1) / 2``: R is a product of Givens rotations in the chosen planes and s the
per-axis scales (s > 1 samples a wider field, so content looks smaller, as MONAI's
``RandAffine``). Values are gathered N-linearly from the 2^N neighbours (``grid_sample``'s
bi/trilinear weights for any N, ``align_corners=True`` geometry) or from the nearest voxel;
labels always take the nearest voxel unless told otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from ndunet._checks import check_choice, invalid

from .base import RandomTransform, Sample, as_range, uniform, with_channel
from .spatial import check_axes_fit, check_planes

__all__ = ["RandAffine", "affine_coords", "affine_matrix", "sample_nd"]

SampleMode = Literal["linear", "nearest"]
PaddingMode = Literal["zeros", "border"]


def affine_matrix(
    spatial_dims: int,
    planes: Sequence[tuple[int, int]] = (),
    angles: Sequence[float] = (),
    scales: Sequence[float] | None = None,
) -> Tensor:
    """``R @ diag(scales)`` (float64, (N, N)), R the product of rotations by ``angles[k]`` in
    ``planes[k]``; a 90-degree angle in plane (i, j) samples as ``torch.rot90(x, 1, (i, j))``."""
    m = torch.eye(spatial_dims, dtype=torch.float64)
    for (i, j), angle in zip(planes, angles):
        g = torch.eye(spatial_dims, dtype=torch.float64)
        cos, sin = math.cos(angle), math.sin(angle)
        g[i, i], g[i, j], g[j, i], g[j, j] = cos, sin, -sin, cos
        m = m @ g
    if scales is not None:
        m = m @ torch.diag(torch.tensor(scales, dtype=torch.float64))
    return m


def affine_coords(
    spatial_size: Sequence[int],
    matrix: Tensor,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Source coordinates ``c + matrix @ (p - c)`` of every output voxel p: (N, *spatial_size)."""
    n = len(spatial_size)
    centre = torch.tensor([(s - 1) / 2 for s in spatial_size], dtype=dtype, device=device)
    centre = centre.view(n, 1)
    axes = [torch.arange(s, dtype=dtype, device=device) for s in spatial_size]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(n, -1)  # (N, P)
    coords = matrix.to(dtype=dtype, device=grid.device) @ (grid - centre) + centre  # (N, P)
    return coords.view(n, *spatial_size)


def sample_nd(
    input: Tensor, coords: Tensor, mode: SampleMode = "linear", padding_mode: PaddingMode = "zeros"
) -> Tensor:
    """Values of ``input`` (C, *S) at index coordinates ``coords`` (N, *out) -> (C, *out).

    ``"linear"``: the N-linear blend of the 2^N voxels around each point (points outside count
    the missing voxels as 0 with ``"zeros"``; ``"border"`` clamps the points into the volume).
    ``"nearest"``: the voxel at the rounded point (half to even, as grid_sample), 0 outside.
    """
    n = input.dim() - 1
    if coords.dim() < 2 or coords.shape[0] != n:
        raise ValueError(
            invalid("coords", tuple(coords.shape), f"(spatial_dims={n}, *out) for {n} axes")
        )
    check_choice("mode", mode, ("linear", "nearest"))
    check_choice("padding_mode", padding_mode, ("zeros", "border"))
    if mode == "linear" and not input.is_floating_point():
        raise ValueError(invalid("mode", mode, f"'nearest' for a {input.dtype} input"))
    sizes = input.shape[1:]
    out_shape = coords.shape[1:]
    flat = input.reshape(input.shape[0], -1)  # (C, prod S)
    points = coords.reshape(n, -1).to(input.device)  # (N, P)
    if padding_mode == "border":
        limits = torch.tensor([s - 1 for s in sizes], dtype=points.dtype, device=points.device)
        points = torch.minimum(points.clamp(min=0), limits[:, None])
    strides = [math.prod(sizes[a + 1 :]) for a in range(n)]
    if mode == "nearest":
        idx = torch.zeros(points.shape[1], dtype=torch.long, device=points.device)
        valid = torch.ones_like(idx, dtype=torch.bool)
        for a in range(n):
            i = torch.round(points[a]).long()
            valid &= (i >= 0) & (i < sizes[a])
            idx += i.clamp(0, sizes[a] - 1) * strides[a]
        out = torch.where(valid, flat[:, idx], torch.zeros((), dtype=flat.dtype))
        return out.view(-1, *out_shape)
    # per axis, per neighbour (0: floor, 1: floor + 1): flat offset and weight (0 outside)
    taps = []
    for a in range(n):
        low = points[a].floor()
        frac = (points[a] - low).to(input.dtype)
        i0 = low.long()
        axis_taps = []
        for i, w in ((i0, 1 - frac), (i0 + 1, frac)):
            inside = (i >= 0) & (i < sizes[a])
            axis_taps.append((i.clamp(0, sizes[a] - 1) * strides[a], w * inside))
        taps.append(axis_taps)
    out = torch.zeros(flat.shape[0], points.shape[1], dtype=input.dtype, device=input.device)

    def corners(axis: int, offset: Tensor | int, weight: Tensor | float) -> None:
        # depth first over the 2^N corners: O(N * P) memory, ~2^(N+1) vector ops
        if axis == n:
            out.add_(flat[:, offset] * weight)
            return
        for off, w in taps[axis]:
            corners(axis + 1, offset + off, weight * w)

    corners(0, 0, 1.0)
    return out.view(-1, *out_shape)


def _ranges(name: str, value: object, count: int, what: str) -> list[tuple[float, float]]:
    """One (low, high) per item: a number r for all, or a sequence of ``count`` numbers/pairs."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(invalid(name, value, f"a number or a sequence of {count} ({what})"))
        return [as_range(name, v) for v in value]  # type: ignore[arg-type]
    return [as_range(name, value)] * count  # type: ignore[arg-type]


class RandAffine(RandomTransform):
    """With probability ``prob``, rotate in ``rotate_planes`` and scale each axis, any N.

    Args:
        rotate_planes: pairs (i, j) of spatial axes; one Givens rotation per plane, composed in
            this order.
        rotate_range: radians: a number r (U(-r, r) in every plane) or one number / (low, high)
            pair per plane, as MONAI's ``rotate_range``.
        scale_range: scale = 1 + U(-r, r): a number for every axis, or one number / (low, high)
            pair per spatial axis (1.0 added, as MONAI's ``scale_range``).
        prob: probability of applying the transform.
        mode: image interpolation, ``"linear"`` (N-linear) or ``"nearest"``.
        label_mode: label interpolation, ``"nearest"`` unless the label is a dense target.
        padding_mode: ``"zeros"`` or ``"border"`` for points outside the volume.
    """

    def __init__(
        self,
        rotate_planes: Sequence[Sequence[int]] = ((0, 1),),
        rotate_range: float | Sequence[float | Sequence[float]] = 0.0,
        scale_range: float | Sequence[float | Sequence[float]] = 0.0,
        prob: float = 0.1,
        mode: SampleMode = "linear",
        label_mode: SampleMode = "nearest",
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__(prob)
        self.rotate_planes = check_planes("rotate_planes", rotate_planes)
        self.rotate_range = _ranges(
            "rotate_range", rotate_range, len(self.rotate_planes), "one per plane"
        )
        self.scale_range = scale_range
        if not isinstance(scale_range, Sequence):
            as_range("scale_range", scale_range)
        self.mode = check_choice("mode", mode, ("linear", "nearest"))
        self.label_mode = check_choice("label_mode", label_mode, ("linear", "nearest"))
        self.padding_mode = check_choice("padding_mode", padding_mode, ("zeros", "border"))

    def check(self, image: Tensor, label: Tensor | None) -> None:
        n = image.dim() - 1
        check_axes_fit("rotate_planes", [a for p in self.rotate_planes for a in p], n)
        _ranges("scale_range", self.scale_range, n, "one per spatial axis")
        if self.mode == "linear" and not image.is_floating_point():
            raise ValueError(invalid("mode", self.mode, f"'nearest' for a {image.dtype} image"))
        if label is not None and self.label_mode == "linear" and not label.is_floating_point():
            raise ValueError(
                invalid("label_mode", self.label_mode, f"'nearest' for a {label.dtype} label")
            )

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        n = image.dim() - 1
        angles = [uniform(lo, hi, generator) for lo, hi in self.rotate_range]
        scale_ranges = _ranges("scale_range", self.scale_range, n, "one per spatial axis")
        scales = [1.0 + uniform(lo, hi, generator) for lo, hi in scale_ranges]
        matrix = affine_matrix(n, self.rotate_planes, angles, scales)
        dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
        coords = affine_coords(image.shape[1:], matrix, dtype, image.device)  # (N, *spatial)
        image = sample_nd(image, coords, self.mode, self.padding_mode)
        if label is None:
            return image, None
        lab, added = with_channel(label, n)
        assert lab is not None
        lab = sample_nd(lab, coords, self.label_mode, self.padding_mode)
        return image, lab.squeeze(0) if added else lab

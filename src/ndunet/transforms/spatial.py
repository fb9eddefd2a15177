"""Lossless spatial transforms: random flips and 90-degree rotations in any pair of axes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ndunet._checks import check_float, check_int, invalid

from .base import RandomTransform, Sample, check_sample

__all__ = ["RandFlip", "RandRot90"]


def check_axes(name: str, value: Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, int) or not isinstance(value, Sequence):
        raise TypeError(invalid(name, value, "a sequence of distinct spatial axes >= 0"))
    axes = tuple(check_int(name, a, 0) for a in value)
    if len(set(axes)) != len(axes):
        raise ValueError(invalid(name, value, "distinct spatial axes"))
    return axes


def check_planes(name: str, planes: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Pairs (i, j) of distinct spatial axes."""
    what = "a sequence of pairs (i, j) of distinct spatial axes >= 0"
    if isinstance(planes, (str, bytes)) or not isinstance(planes, Sequence):
        raise TypeError(invalid(name, planes, what))
    out = []
    for p in planes:
        if not isinstance(p, Sequence) or len(p) != 2:
            raise ValueError(invalid(name, planes, what))
        i, j = check_axes(name, p)
        out.append((i, j))
    return tuple(out)


def check_axes_fit(name: str, axes: Sequence[int], spatial_dims: int) -> None:
    if axes and max(axes) >= spatial_dims:
        raise ValueError(invalid(name, axes, f"spatial axes < spatial_dims={spatial_dims}"))


def _dims(t: Tensor, axes: Sequence[int], spatial_dims: int) -> list[int]:
    """Tensor dims of spatial axes, for (C, *spatial) and channel-less (*spatial) tensors alike."""
    return [t.dim() - spatial_dims + a for a in axes]


class RandFlip:
    """Flip each of ``axes`` independently with probability ``prob`` (nnU-Net's mirroring; with
    one axis this is MONAI's ``RandFlip``). Spatial axes count from 0."""

    def __init__(self, axes: Sequence[int] = (0,), prob: float = 0.5) -> None:
        self.axes = check_axes("axes", axes)
        self.prob = check_float("prob", prob, 0.0, 1.0)

    def __call__(
        self, image: Tensor, label: Tensor | None = None, *, generator: torch.Generator
    ) -> Sample:
        check_sample(image, label, generator)
        n = image.dim() - 1
        check_axes_fit("axes", self.axes, n)
        draws = torch.rand(len(self.axes), generator=generator, dtype=torch.float64)
        flip = [a for a, u in zip(self.axes, draws.tolist()) if u < self.prob]
        if not flip:
            return image, label
        image = torch.flip(image, _dims(image, flip, n))
        return image, None if label is None else torch.flip(label, _dims(label, flip, n))

    def __repr__(self) -> str:
        return f"RandFlip(axes={self.axes}, prob={self.prob})"


class RandRot90(RandomTransform):
    """With probability ``prob``, rotate by k * 90 degrees (k uniform in 1..max_k) in one plane
    drawn uniformly from ``planes`` (pairs of spatial axes), as ``torch.rot90`` does; the two
    axes swap lengths when they differ (MONAI's ``RandRotate90`` for any pair of axes)."""

    def __init__(
        self, planes: Sequence[Sequence[int]] = ((0, 1),), prob: float = 0.5, max_k: int = 3
    ) -> None:
        super().__init__(prob)
        self.planes = check_planes("planes", planes)
        if not self.planes:
            raise ValueError(invalid("planes", planes, "at least one pair of spatial axes"))
        self.max_k = check_int("max_k", max_k, 1, 3)

    def check(self, image: Tensor, label: Tensor | None) -> None:
        check_axes_fit("planes", [a for p in self.planes for a in p], image.dim() - 1)

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        n = image.dim() - 1
        plane = self.planes[int(torch.randint(len(self.planes), (), generator=generator))]
        k = int(torch.randint(1, self.max_k + 1, (), generator=generator))
        image = torch.rot90(image, k, _dims(image, plane, n))
        return image, None if label is None else torch.rot90(label, k, _dims(label, plane, n))

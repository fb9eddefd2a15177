"""Per-axis pooling and kernels of a U-Net for a patch at a spacing: nnU-Net v2's rule for any N.

Isensee et al. 2021 (https://doi.org/10.1038/s41592-020-01008-z), ``get_pool_and_conv_props`` of
nnU-Net v2, with the spatial axes counted instead of fixed at 2 or 3:

- an axis is pooled at a level only while its feature map stays >= ``min_feature_map`` after
  the pooling (size >= 2 x ``min_feature_map``) and its spacing is less than 2x the finest
  spacing among the axes still large enough; a pooled axis' spacing doubles, its size halves;
- when a single axis is left to pool, it must hold >= 3 x ``min_feature_map`` voxels;
- an axis gets kernel 3 once its spacing is within 2x of the finest, and keeps it (else 1);
  the bottleneck level has kernel 3 everywhere;
- the levels stop when no axis can be pooled, and the patch is padded up to a multiple of each
  axis' pooling product.

A ratio of exactly 2 is "much coarser" (not pooled, kernel 1), as in nnU-Net: spacings (1.6,
0.8, 0.8) pool the fine axes once, after which the axes are isotropic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ndunet._checks import check_float, check_int, invalid

__all__ = ["Topology", "pooling_plan"]

ANISOTROPY = 2.0  # spacing ratio from which an axis counts as much coarser than the finest


@dataclass(frozen=True)
class Topology:
    """What the rule gives for one patch: ``strides`` per down-sampling and ``kernel_sizes`` per
    level (both per axis), each axis' pooling product, and the patch padded to it."""

    strides: tuple[tuple[int, ...], ...]  # one per down-sampling (levels - 1)
    kernel_sizes: tuple[tuple[int, ...], ...]  # one per level, the bottleneck's last
    patch_size: tuple[int, ...]  # the patch, padded up to multiples of `divisors`
    spacings: tuple[tuple[float, ...], ...]  # the feature map spacing at each level

    @property
    def num_levels(self) -> int:
        return len(self.kernel_sizes)

    @property
    def divisors(self) -> tuple[int, ...]:
        """Each axis' pooling product: patch sizes must be multiples of it."""
        return tuple(math.prod(s[axis] for s in self.strides) for axis in range(self.spatial_dims))

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)

    def level_sizes(self) -> tuple[tuple[int, ...], ...]:
        """The feature map size at each level (the padded patch divided by the strides so far)."""
        out, size = [self.patch_size], self.patch_size
        for step in self.strides:
            size = tuple(s // f for s, f in zip(size, step))
            out.append(size)
        return tuple(out)


def pooling_plan(
    spacing: Sequence[float], patch_size: Sequence[int], min_feature_map: int = 4
) -> Topology:
    """The per-axis strides and kernels for ``patch_size`` at ``spacing`` (see the module doc)."""
    n = len(spacing)
    if n < 1 or len(patch_size) != n:
        raise ValueError(
            invalid("patch_size", list(patch_size), f"one length per axis of spacing ({n})")
        )
    for s in spacing:
        check_float("spacing", s, 0.0, low_open=True)
    for p in patch_size:
        check_int("patch_size", p, 1)
    check_int("min_feature_map", min_feature_map, 1)
    current = [float(s) for s in spacing]
    size = [float(p) for p in patch_size]
    kernel = [1] * n
    strides: list[tuple[int, ...]] = []
    kernels: list[tuple[int, ...]] = []
    spacings = [tuple(current)]
    while True:
        axes = [i for i in range(n) if size[i] >= 2 * min_feature_map]
        if not axes:
            break
        finest = min(current[i] for i in axes)
        axes = [i for i in axes if current[i] / finest < ANISOTROPY]
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_map:
            break
        overall = min(current)
        kernel = [
            3 if k == 3 or current[i] / overall < ANISOTROPY else 1 for i, k in enumerate(kernel)
        ]
        kernels.append(tuple(kernel))
        strides.append(tuple(2 if i in axes else 1 for i in range(n)))
        for i in axes:
            current[i] *= 2
            size[i] = math.ceil(size[i] / 2)
        spacings.append(tuple(current))
    kernels.append((3,) * n)  # the bottleneck
    divisors = [math.prod(s[i] for s in strides) for i in range(n)]
    padded = tuple(math.ceil(p / d) * d for p, d in zip(patch_size, divisors))
    return Topology(tuple(strides), tuple(kernels), padded, tuple(spacings))

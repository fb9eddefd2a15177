"""Normalization layers for any spatial_dims and the ``norm(kind, spatial_dims, channels)`` factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from ndunet._checks import lookup
from ndunet.layers.conv import check_spatial_dims

NormKind = Literal["group", "batch", "instance", "layer", "none"]


def _check_dims(module: nn.Module, input: Tensor, spatial_dims: int, batched_only: bool) -> None:
    allowed = (spatial_dims + 2,) if batched_only else (spatial_dims + 1, spatial_dims + 2)
    if input.dim() not in allowed:
        raise ValueError(
            f"{type(module).__name__}(spatial_dims={spatial_dims}) expects an input with "
            f"{' or '.join(map(str, allowed))} dims, got shape {tuple(input.shape)}"
        )


class BatchNormNd(_BatchNorm):
    """Batch normalization over (B, *spatial) per channel, any spatial_dims; torch's state dict."""

    def __init__(
        self,
        spatial_dims: int,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.spatial_dims = check_spatial_dims(spatial_dims)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def _check_input_dim(self, input: Tensor) -> None:
        _check_dims(self, input, self.spatial_dims, batched_only=True)


class InstanceNormNd(_InstanceNorm):
    """Instance normalization over the spatial axes per sample and channel, any spatial_dims."""

    def __init__(
        self,
        spatial_dims: int,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.spatial_dims = check_spatial_dims(spatial_dims)
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def _get_no_batch_dim(self) -> int:
        return self.spatial_dims + 1

    def _check_input_dim(self, input: Tensor) -> None:
        _check_dims(self, input, self.spatial_dims, batched_only=False)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every position of a (B, C, *spatial) tensor (ConvNeXt's)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, input: Tensor) -> Tensor:
        x = input.movedim(1, -1)  # (B, *spatial, C)
        x = F.layer_norm(x, (self.num_channels,), self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)  # (B, C, *spatial)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


def group_count(num_channels: int, num_groups: int) -> int:
    """The largest divisor of ``num_channels`` that is <= ``num_groups``."""
    g = max(1, min(num_groups, num_channels))
    while num_channels % g:
        g -= 1
    return g


def _batch(spatial_dims: int, c: int, **kw: object) -> nn.Module:
    native = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
    return (
        native[spatial_dims](c, **kw) if spatial_dims <= 3 else BatchNormNd(spatial_dims, c, **kw)
    )


def _instance(spatial_dims: int, c: int, **kw: object) -> nn.Module:
    kw.setdefault("affine", True)  # learnable scale/shift, as U-Nets use it
    native = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
    if spatial_dims <= 3:
        return native[spatial_dims](c, **kw)
    return InstanceNormNd(spatial_dims, c, **kw)


def _group(spatial_dims: int, c: int, num_groups: int = 32, **kw: object) -> nn.Module:
    return nn.GroupNorm(group_count(c, num_groups), c, **kw)


def _layer(spatial_dims: int, c: int, **kw: object) -> nn.Module:
    return ChannelLayerNorm(c, **kw)


def _none(spatial_dims: int, c: int, **kw: object) -> nn.Module:
    return nn.Identity()


NORMS: dict[str, Callable[..., nn.Module]] = {
    "group": _group,
    "batch": _batch,
    "instance": _instance,
    "layer": _layer,
    "none": _none,
}


def norm(
    kind: NormKind | type[nn.Module] | Callable[..., nn.Module] | None,
    spatial_dims: int,
    num_channels: int,
    **kwargs: object,
) -> nn.Module:
    """A normalization layer for (B, num_channels, *spatial) inputs.

    ``kind``: "group" (``num_groups``, default 32, lowered to a divisor of ``num_channels``),
    "batch", "instance" (affine by default), "layer" (over channels at each position), "none"/None,
    or a class / ``functools.partial`` called as ``kind(num_channels, **kwargs)``.
    """
    n = check_spatial_dims(spatial_dims)
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels={num_channels!r} must be a positive int")
    if kind is None:
        return nn.Identity()
    if isinstance(kind, str):
        return lookup(NORMS, kind, "norm")(n, num_channels, **kwargs)
    if callable(kind):
        return kind(num_channels, **kwargs)
    raise TypeError(
        f"norm={kind!r} must be a name ({', '.join(NORMS)}), a class, a partial or None"
    )

"""Normalization layers for any spatial_dims and the ``norm(kind, spatial_dims, channels)`` factory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
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


_LOW_PRECISION = (torch.float16, torch.bfloat16)
_HAS_DEVICE_AUTOCAST_API = hasattr(torch, "get_autocast_dtype") and hasattr(
    torch.amp, "is_autocast_available"
)  # torch >= 2.4


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast casts to on ``device_type`` right now, or None where autocast is off
    (or does not exist for that device, e.g. "meta")."""
    if _HAS_DEVICE_AUTOCAST_API:
        if not torch.amp.is_autocast_available(device_type):
            return None
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    if device_type == "cuda":  # torch < 2.4
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


def amp_dtype(x: Tensor) -> torch.dtype | None:
    """The 16-bit float dtype a normalization of ``x`` should compute in under autocast: ``x``'s
    own when it is fp16/bf16, autocast's for an fp32 ``x``; None outside autocast (and for
    float64 or non-float inputs, which autocast leaves alone)."""
    if x.dtype not in (torch.float32, *_LOW_PRECISION):
        return None
    dtype = autocast_dtype(x.device.type)
    if dtype not in _LOW_PRECISION:
        return None
    return x.dtype if x.dtype in _LOW_PRECISION else dtype


# Devices whose group_norm/layer_norm kernels take fp16/bf16 input with float32 weight and bias
# (aten's "mixed type" path, CPU only); elsewhere (CUDA) all three must share one dtype.
_MIXED_PARAM_DEVICES = frozenset({"cpu"})


def _params(
    x: Tensor, dtype: torch.dtype, weight: Tensor | None, bias: Tensor | None
) -> tuple[Tensor | None, Tensor | None]:
    """Weight and bias for a norm kernel running in ``dtype`` on ``x``'s device: as they are
    where the kernel accepts float32 ones (then their gradients are accumulated in float32 too),
    else cast to ``dtype`` (the CUDA kernels still accumulate in float32)."""
    if x.device.type in _MIXED_PARAM_DEVICES:
        return weight, bias
    return tuple(None if p is None else p.to(dtype) for p in (weight, bias))  # type: ignore[return-value]


def is_channels_last(x: Tensor) -> bool:
    """True for a (B, C, *spatial) tensor stored channels-last (C innermost), any spatial_dims,
    and not also plain contiguous (C == 1 or a single position)."""
    return x.dim() > 2 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


class _GroupNormChannelsLast(torch.autograd.Function):
    """GroupNorm computed on the (B, L, G, C/G) view of a channels-last tensor: float32
    statistics, output (and input gradient) in the input's dtype and channels-last layout.

    torch's CUDA kernel makes a channels-last input contiguous first and returns a contiguous
    output (``native_group_norm`` in aten/src/ATen/native/group_norm.cpp keeps the memory format
    on CPU only), so between channels-last convolutions each GroupNorm costs two layout copies
    forward and more backward. This path reads the channels-last tensor in place instead, with
    more but smaller kernels; which is faster on a GPU is measured, not assumed (see
    :attr:`GroupNorm.channels_last_kernel`). Numerics follow the CUDA kernel: float32 mean and
    float32 accumulation; the variance is reduced in float32 and rounded to the input dtype once,
    and the per-channel scale and shift are applied in the input's dtype. (On the CPU, where
    torch's kernel keeps channels-last anyway, the float32 reductions of a 16-bit input make a
    float32 copy first: this path is for GPUs.)
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float
    ) -> Tensor:
        d = x.shape[1] // groups
        acc = _accumulate_dtype(x.dtype)
        xg = _grouped(x, groups)  # (B, L, G, D): a view of a channels-last x
        n = xg.shape[1] * d
        mean = xg.sum((1, 3), dtype=acc) / n  # (B, G)
        rstd = (xg.var((1, 3), correction=0).to(acc) + eps).rsqrt()  # (B, G)
        scale = rstd[:, :, None]  # (B, G, 1), or (B, G, D) with a weight
        if weight is not None:
            scale = scale * weight.to(acc).view(groups, d)
        if bias is not None:  # shift = bias - mean * scale
            shift = torch.addcmul(bias.to(acc).view(groups, d), mean[:, :, None], scale, value=-1)
        else:
            shift = -(mean[:, :, None] * scale)
        y = torch.addcmul(shift.to(x.dtype)[:, None], xg, scale.to(x.dtype)[:, None])
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y.view(x.movedim(1, -1).shape).movedim(-1, 1)  # (B, C, *spatial) channels-last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        with torch.autocast(dy.device.type, enabled=False):  # a backward called under autocast
            return _group_norm_channels_last_backward(ctx, dy)


def _group_norm_channels_last_backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
    # The formulas of aten's GroupNormBackwardKernel (cuda/group_norm_kernel.cu), per group.
    x, weight, mean, rstd = ctx.saved_tensors
    acc, g = mean.dtype, ctx.groups
    xg, dyg = _grouped(x, g), _grouped(dy, g)  # (B, L, G, D); dy copied only if not channels-last
    n = xg.shape[1] * xg.shape[3]
    ds = (dyg * xg).sum(1, dtype=acc)  # (B, G, D): sum over positions of dy * x
    db = dyg.sum(1, dtype=acc)  # (B, G, D): sum of dy
    gamma = None if weight is None else weight.to(acc).view(g, -1)  # (G, D)
    dsg = (ds if gamma is None else ds * gamma).sum(2)  # (B, G)
    dbg = (db if gamma is None else db * gamma).sum(2)
    c2 = (dbg * mean - dsg) * rstd.pow(3) / n  # (B, G)
    c3 = -c2 * mean - dbg * rstd / n
    dx = dw = dbias = None
    if ctx.needs_input_grad[0]:
        dt = x.dtype  # dx = c1 * dy + (c2 * x + c3), the x-terms first (small near the mean)
        c1 = rstd[:, :, None] if gamma is None else rstd[:, :, None] * gamma  # (B, G, 1 or D)
        dxg = torch.addcmul(c3[:, None, :, None].to(dt), xg, c2[:, None, :, None].to(dt))
        dxg.addcmul_(dyg, c1[:, None].to(dt))
        dx = dxg.view(x.movedim(1, -1).shape).movedim(-1, 1)
    if weight is not None and ctx.needs_input_grad[2]:
        dw = ((ds - db * mean[:, :, None]) * rstd[:, :, None]).sum(0).reshape(-1).to(weight.dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[3]:
        dbias = db.sum(0).reshape(-1).to(ctx.bias_dtype)
    return dx, None, dw, dbias, None


def _grouped(x: Tensor, groups: int) -> Tensor:
    """(B, C, *spatial) -> (B, L, G, C/G) positions-major: a view for a channels-last x."""
    b, c = x.shape[:2]
    return x.movedim(1, -1).reshape(b, -1, groups, c // groups)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, state dict and repr) that keeps the activations' dtype
    under autocast.

    CUDA's autocast runs ``group_norm`` in float32: every GroupNorm of a bf16/fp16 network reads
    16-bit activations and writes float32 ones, so the FiLM, activation and dropout after it run
    in float32 (twice the bytes) and the next convolution casts back. Under autocast this layer
    instead runs ``F.group_norm`` with autocast off on the 16-bit input (an fp32 input is cast to
    autocast's dtype), with weight and bias cast to that dtype where the kernel needs it (CUDA;
    the CPU kernel takes them in float32); torch's CPU and CUDA kernels accumulate the statistics
    in float32 either way, so only the output is rounded. Outside autocast it is
    exactly ``nn.GroupNorm``.

    ``channels_last_kernel`` (class or instance attribute, default False) routes channels-last
    inputs through a layout-preserving implementation (see :class:`_GroupNormChannelsLast`);
    off by default until a GPU measurement shows it pays.
    """

    channels_last_kernel: bool = False

    def forward(self, input: Tensor) -> Tensor:
        dtype = amp_dtype(input)
        channels_last = self.channels_last_kernel and is_channels_last(input)
        if dtype is None and not channels_last:
            return super().forward(input)
        weight, bias = self.weight, self.bias
        if dtype is not None:
            input, weight, bias = input.to(dtype), *_params(input, dtype, weight, bias)
        with torch.autocast(input.device.type, enabled=False):
            if channels_last:
                _check_group_norm(input, self.num_groups, self.num_channels)
                out: Tensor = _GroupNormChannelsLast.apply(
                    input, self.num_groups, weight, bias, self.eps
                )
                return out
            return F.group_norm(input, self.num_groups, weight, bias, self.eps)


def _check_group_norm(x: Tensor, groups: int, channels: int) -> None:
    if x.shape[1] != channels:
        raise ValueError(
            f"GroupNorm({groups}, {channels}) expects {channels} channels, got shape "
            f"{tuple(x.shape)}"
        )


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis at every position of a (B, C, *spatial) tensor (ConvNeXt's).

    Under autocast it runs in the activations' dtype like :class:`GroupNorm` (CUDA's autocast
    would run ``layer_norm`` in float32); elsewhere it is plain ``F.layer_norm``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, input: Tensor) -> Tensor:
        x = input.movedim(1, -1)  # (B, *spatial, C)
        dtype = amp_dtype(x)
        if dtype is None:
            x = F.layer_norm(x, (self.num_channels,), self.weight, self.bias, self.eps)
        else:
            weight, bias = _params(x, dtype, self.weight, self.bias)
            with torch.autocast(x.device.type, enabled=False):
                x = F.layer_norm(x.to(dtype), (self.num_channels,), weight, bias, self.eps)
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
    return GroupNorm(group_count(c, num_groups), c, **kw)


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

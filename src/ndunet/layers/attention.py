"""Attention for (B, C, *spatial) tensors of any spatial_dims.

* :class:`SelfAttention`: multi-head (QKV) self-attention over the flattened positions with
  ``F.scaled_dot_product_attention`` (fused kernels), optional N-D sinusoidal position codes.
* :class:`CrossAttention`: the same with queries from another tensor (a U-Net decoder) and keys
  and values from ``x`` (its skip connection).
* :class:`ChannelAttention`, :class:`SpatialAttention`: the two halves of CBAM
  (https://arxiv.org/abs/1807.06521), usable alone; :class:`CBAM`: channel then spatial.
* :class:`AttentionGate`: additive gate on a skip connection (Attention U-Net,
  https://arxiv.org/abs/1804.03999).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ndunet._checks import check_choice
from ndunet.layers.activation import ActivationSpec, activation
from ndunet.layers.conv import check_spatial_dims, conv
from ndunet.layers.norm import norm as make_norm

__all__ = [
    "CBAM",
    "AttentionGate",
    "ChannelAttention",
    "CrossAttention",
    "PositionEmbedding",
    "SelfAttention",
    "SpatialAttention",
    "channel_gate",
    "sinusoidal_positions",
    "spatial_gate",
]

PositionEmbedding = Literal["sinusoidal"]


def _broadcast(v: Tensor, like: Tensor) -> Tensor:
    """(B, C) -> (B, C, 1, ..., 1) matching ``like``'s rank."""
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def sinusoidal_positions(
    spatial_shape: tuple[int, ...] | torch.Size,
    channels: int,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    max_period: float = 10000.0,
) -> Tensor:
    """(L, channels) position code for the row-major flattened grid ``spatial_shape``.

    The channels are split evenly over the axes; axis ``i`` gets the 1-D transformer code
    (https://arxiv.org/abs/1706.03762, sec. 3.5) of its integer coordinate. Channels left over
    when ``channels`` is not a multiple of ``2 * len(spatial_shape)`` are zero.
    """
    n = len(spatial_shape)
    half = channels // (2 * n)
    parts = []
    if half > 0:
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, device=device, dtype=torch.float32) / half
        )  # (half,)
        grids = torch.meshgrid(
            *[torch.arange(s, device=device, dtype=torch.float32) for s in spatial_shape],
            indexing="ij",
        )
        for g in grids:
            args = g.reshape(-1, 1) * freqs  # (L, half)
            parts += [torch.sin(args), torch.cos(args)]
    length = math.prod(spatial_shape)
    rest = channels - 2 * half * n
    if rest:
        parts.append(torch.zeros(length, rest, device=device))
    return torch.cat(parts, dim=1).to(dtype)  # (L, channels)


def head_count(channels: int, num_heads: int | None, head_dim: int) -> int:
    """``num_heads`` if given, else ``channels // head_dim`` (at least 1); must divide channels."""
    if num_heads is None:
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        num_heads = max(1, channels // head_dim)
    if num_heads < 1 or channels % num_heads:
        raise ValueError(
            f"channels={channels} must be divisible by the number of attention heads "
            f"{num_heads} (num_heads, or channels // head_dim with head_dim={head_dim})"
        )
    return num_heads


def _tokens(x: Tensor, pos_embedding: PositionEmbedding | None) -> Tensor:
    """(B, C, *spatial) -> (B, L, C) tokens, plus the N-D position code when asked."""
    h = x.flatten(2).transpose(1, 2)  # (B, L, C); a channels_last input is a view, no copy
    if pos_embedding is not None:
        h = h + sinusoidal_positions(tuple(x.shape[2:]), x.shape[1], x.device, h.dtype)
    return h


def _attend(module: nn.Module, q: Tensor, k: Tensor, v: Tensor, x: Tensor) -> Tensor:
    """``x + proj(attention(q, k, v))`` with the heads merged back; q, k, v are (B, H, L, D)."""
    b, heads, length, d = q.shape
    p = module.dropout if module.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, L, D)
    out = module.proj(out.transpose(1, 2).reshape(b, length, heads * d))  # (B, L, C)
    return x + out.transpose(1, 2).reshape(x.shape)  # (B, C, *spatial)


class SelfAttention(nn.Module):
    """Residual multi-head self-attention over all positions: ``x + proj(attn(norm(x)))``.

    Heads: ``num_heads`` if given, else ``channels // head_dim`` (at least 1). Cost grows with the
    square of the number of positions, so use it at coarse levels.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_heads: int | None = None,
        head_dim: int = 32,
        norm: object = "group",
        pos_embedding: PositionEmbedding | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        num_heads = head_count(channels, num_heads, head_dim)
        check_choice("pos_embedding", pos_embedding, (None, "sinusoidal"))
        self.channels, self.num_heads = channels, num_heads
        self.pos_embedding = pos_embedding
        self.dropout = dropout
        self.norm = make_norm(norm, spatial_dims, channels)  # type: ignore[arg-type]
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        length = math.prod(spatial)
        h = _tokens(self.norm(x), self.pos_embedding)  # (B, L, C)
        heads = self.num_heads
        qkv = self.qkv(h).reshape(b, length, 3, heads, c // heads)  # (B, L, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, D)
        return _attend(self, q, k, v, x)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, channels={self.channels}, "
            f"num_heads={self.num_heads}, pos_embedding={self.pos_embedding!r}"
        )


class CrossAttention(nn.Module):
    """Residual multi-head cross-attention: ``x + proj(attn(q(norm(query)), kv(norm(x))))``.

    Keys and values come from ``x`` (B, channels, *spatial) (a skip connection), queries from
    ``query`` (B, query_channels, *spatial) at the same positions (the decoder's features):
    every position of the output looks at every position of ``x``. Heads as
    :class:`SelfAttention`; the attention itself is ``torch.nn.MultiheadAttention``'s with
    ``embed_dim=channels``, the query first mapped from ``query_channels``.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        query_channels: int,
        num_heads: int | None = None,
        head_dim: int = 32,
        norm: object = "group",
        pos_embedding: PositionEmbedding | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.num_heads = head_count(channels, num_heads, head_dim)
        check_choice("pos_embedding", pos_embedding, (None, "sinusoidal"))
        self.channels, self.query_channels = channels, query_channels
        self.pos_embedding, self.dropout = pos_embedding, dropout
        self.norm = make_norm(norm, spatial_dims, channels)  # type: ignore[arg-type]
        self.query_norm = make_norm(norm, spatial_dims, query_channels)  # type: ignore[arg-type]
        self.q = nn.Linear(query_channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor, query: Tensor) -> Tensor:
        if x.shape[2:] != query.shape[2:]:
            raise ValueError(
                f"CrossAttention: x spatial shape {tuple(x.shape[2:])} != query spatial shape "
                f"{tuple(query.shape[2:])}"
            )
        b, c, *spatial = x.shape
        length, heads = math.prod(spatial), self.num_heads
        q = self.q(_tokens(self.query_norm(query), self.pos_embedding))  # (B, L, C)
        kv = self.kv(_tokens(self.norm(x), self.pos_embedding))  # (B, L, 2C)
        q = q.reshape(b, length, heads, c // heads).transpose(1, 2)  # (B, H, L, D)
        k, v = kv.reshape(b, length, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        return _attend(self, q, k, v, x)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, channels={self.channels}, query_channels="
            f"{self.query_channels}, num_heads={self.num_heads}, "
            f"pos_embedding={self.pos_embedding!r}"
        )


def _channel_mlp(channels: int, reduction: int, activation_fn: ActivationSpec) -> nn.Module:
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    hidden = max(1, channels // reduction)
    return nn.Sequential(
        nn.Linear(channels, hidden), activation(activation_fn), nn.Linear(hidden, channels)
    )


def _spatial_conv(spatial_dims: int, kernel_size: int) -> nn.Module:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and >= 1 (a 'same' conv), got {kernel_size}")
    return conv(spatial_dims, 2, 1, kernel_size, padding=kernel_size // 2)


def channel_gate(x: Tensor, mlp: nn.Module) -> Tensor:
    """CBAM's channel weights ``sigmoid(mlp(avg) + mlp(max))`` over all positions: (B, C)."""
    flat = x.flatten(2)  # (B, C, L)
    return torch.sigmoid(mlp(flat.mean(2)) + mlp(flat.amax(2)))


def spatial_gate(x: Tensor, conv_layer: nn.Module) -> Tensor:
    """CBAM's spatial weights ``sigmoid(conv([mean_c, max_c]))``: (B, 1, *spatial)."""
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, *sp)
    return torch.sigmoid(conv_layer(pooled))


class ChannelAttention(nn.Module):
    """CBAM's channel attention alone: ``x * channel_gate(x)`` (squeeze-and-excitation with
    max pooling too). ``reduction`` sets the MLP's hidden width ``channels // reduction``; the
    default 8 is the seed project's (the CBAM paper uses 16)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 8,
        activation_fn: ActivationSpec = "relu",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.mlp = _channel_mlp(channels, reduction, activation_fn)

    def forward(self, x: Tensor) -> Tensor:
        return x * _broadcast(channel_gate(x, self.mlp), x)


class SpatialAttention(nn.Module):
    """CBAM's spatial attention gate alone: ``x * sigmoid(conv([mean_c(x), max_c(x)]))``."""

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.conv = _spatial_conv(spatial_dims, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return x * spatial_gate(x, self.conv)  # (B, 1, *spatial) gate broadcast


class CBAM(nn.Module):
    """Convolutional Block Attention Module: channel gate from avg+max pooled features through a
    shared MLP, then a spatial gate from a conv over the channel-wise mean and max."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        activation_fn: ActivationSpec = "relu",
    ) -> None:
        super().__init__()
        self.mlp = _channel_mlp(channels, reduction, activation_fn)
        self.spatial = _spatial_conv(spatial_dims, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x * _broadcast(channel_gate(x, self.mlp), x)
        return x * spatial_gate(x, self.spatial)


class AttentionGate(nn.Module):
    """``skip * sigmoid(psi(relu(theta(skip) + phi(gate))))`` with 1x1 convolutions.

    ``gate`` is the decoder feature at the skip's resolution (already upsampled), so no resampling
    is needed inside the gate.
    """

    def __init__(
        self,
        spatial_dims: int,
        skip_channels: int,
        gate_channels: int,
        inter_channels: int | None = None,
    ) -> None:
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        self.theta = conv(spatial_dims, skip_channels, inter, 1, bias=False)
        self.phi = conv(spatial_dims, gate_channels, inter, 1)
        self.psi = conv(spatial_dims, inter, 1, 1)

    def forward(self, skip: Tensor, gate: Tensor) -> Tensor:
        if skip.shape[2:] != gate.shape[2:]:
            raise ValueError(
                f"AttentionGate: skip spatial shape {tuple(skip.shape[2:])} != gate spatial "
                f"shape {tuple(gate.shape[2:])}"
            )
        alpha = torch.sigmoid(self.psi(F.relu(self.theta(skip) + self.phi(gate))))  # (B, 1, *sp)
        return skip * alpha

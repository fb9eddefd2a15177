"""U-Net building blocks for any spatial_dims: they take ``spatial_dims`` and pass it down.

Every block maps ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; blocks that can be
conditioned take ``emb`` (B, embed_dim) and apply it as a per-channel scale and shift (FiLM,
https://arxiv.org/abs/1709.07871, as in ADM https://arxiv.org/abs/2105.05233).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ndunet._checks import lookup
from ndunet.functional import interpolate_nd
from ndunet.layers.activation import ActivationSpec, activation
from ndunet.layers.attention import CBAM, AttentionGate, PositionEmbedding, SelfAttention
from ndunet.layers.conv import conv, conv_transpose
from ndunet.layers.norm import norm as make_norm
from ndunet.layers.pool import avg_pool, max_pool

__all__ = [
    "AttentionGate",
    "ConvBlock",
    "Downsample",
    "ResBlock",
    "Unit",
    "Upsample",
    "make_attention",
]

BlockType = Literal["residual", "plain"]
DownsampleMode = Literal["conv", "max", "avg"]
UpsampleMode = Literal["transpose", "nearest", "linear"]
AttentionKind = Literal["self", "cbam"]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


def _film(h: Tensor, proj: nn.Module | None, emb: Tensor | None) -> Tensor:
    """``h * (1 + scale) + shift`` with (scale, shift) = proj(emb) split in two, per channel."""
    if proj is None or emb is None:
        return h
    scale, shift = proj(emb).chunk(2, dim=1)  # (B, C) each
    shape = scale.shape + (1,) * (h.dim() - 2)  # (B, C, 1, ..., 1)
    return h * (1 + scale.reshape(shape)) + shift.reshape(shape)


class ResBlock(nn.Module):
    """Pre-activation residual block: norm-act-conv, FiLM(emb), norm-act-dropout-conv, + skip.

    The skip is a 1x1 conv when the channel count changes. ``emb`` is the (already activated)
    conditioning vector; it is required when ``embed_dim`` was given.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        embed_dim: int | None = None,
        kernel_size: int = 3,
        norm: object = "group",
        act: ActivationSpec = "silu",
        dropout: float = 0.0,
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.norm1 = make_norm(norm, spatial_dims, in_channels)  # type: ignore[arg-type]
        self.act1 = activation(act)
        self.conv1 = conv(
            spatial_dims, in_channels, out_channels, kernel_size, padding=pad,
            padding_mode=padding_mode,
        )  # fmt: skip
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels) if embed_dim else None
        self.norm2 = make_norm(norm, spatial_dims, out_channels)  # type: ignore[arg-type]
        self.act2 = activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = conv(
            spatial_dims, out_channels, out_channels, kernel_size, padding=pad,
            padding_mode=padding_mode,
        )  # fmt: skip
        self.skip = (
            conv(spatial_dims, in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = _film(self.norm2(h), self.emb_proj, emb)
        h = self.conv2(self.dropout(self.act2(h)))
        return self.skip(x) + h


class ConvBlock(nn.Module):
    """The classic U-Net unit: conv-norm-[FiLM(emb)]-act-dropout."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        embed_dim: int | None = None,
        kernel_size: int = 3,
        norm: object = "group",
        act: ActivationSpec = "silu",
        dropout: float = 0.0,
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__()
        self.conv = conv(
            spatial_dims, in_channels, out_channels, kernel_size, padding=kernel_size // 2,
            padding_mode=padding_mode,
        )  # fmt: skip
        self.norm = make_norm(norm, spatial_dims, out_channels)  # type: ignore[arg-type]
        self.emb_proj = nn.Linear(embed_dim, 2 * out_channels) if embed_dim else None
        self.act = activation(act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = _film(self.norm(self.conv(x)), self.emb_proj, emb)
        return self.dropout(self.act(h))


BLOCKS: dict[str, type[nn.Module]] = {"residual": ResBlock, "plain": ConvBlock}
ATTENTION: dict[str, str] = {"self": "self", "cbam": "cbam", "none": "none"}


def make_attention(
    kind: AttentionKind | None,
    spatial_dims: int,
    channels: int,
    *,
    norm: object = "group",
    head_dim: int = 32,
    num_heads: int | None = None,
    pos_embedding: PositionEmbedding | None = None,
    cbam_reduction: int = 16,
    cbam_kernel_size: int = 7,
) -> nn.Module | None:
    """An attention module by kind ("self", "cbam") or None for "none"/None."""
    name = "none" if kind is None else lookup(ATTENTION, kind, "attention")
    if name == "self":
        return SelfAttention(spatial_dims, channels, num_heads, head_dim, norm, pos_embedding)
    if name == "cbam":
        return CBAM(spatial_dims, channels, cbam_reduction, cbam_kernel_size)
    return None


class Unit(nn.Module):
    """One block followed by an optional attention module: ``attn(block(x, emb))``."""

    def __init__(self, block: nn.Module, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.attn = attn

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = self.block(x, emb)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    """Halve every spatial size: strided 3-wide conv, max pool or average pool (channels kept)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mode: DownsampleMode = "conv",
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__()
        self.mode = lookup({"conv": "conv", "max": "max", "avg": "avg"}, mode, "downsample")
        if self.mode == "conv":
            self.op = conv(
                spatial_dims, channels, channels, 3, stride=2, padding=1, padding_mode=padding_mode
            )
        elif self.mode == "max":
            self.op = max_pool(spatial_dims, 2)
        else:
            self.op = avg_pool(spatial_dims, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Resize2x(nn.Module):
    """Nearest/linear interpolation to exactly twice every spatial size.

    The output size is passed explicitly (the same numbers as ``scale_factor=2``), which keeps
    the size arithmetic in Python ints: no tensor-valued sizes, so torch.compile sees no graph
    break here.
    """

    def __init__(self, mode: Literal["nearest", "linear"] = "nearest") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        size = tuple(2 * s for s in x.shape[2:])
        return interpolate_nd(x, size=size, mode=self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class Upsample(nn.Module):
    """Double every spatial size: a 2-wide stride-2 transposed conv, or nearest/linear
    interpolation followed by a 3-wide conv (no checkerboard artefacts,
    https://distill.pub/2016/deconv-checkerboard/)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mode: UpsampleMode = "nearest",
        padding_mode: PaddingMode = "zeros",
    ) -> None:
        super().__init__()
        modes = {"transpose": "transpose", "nearest": "nearest", "linear": "linear"}
        self.mode = lookup(modes, mode, "upsample")
        if self.mode == "transpose":
            self.op: nn.Module = conv_transpose(spatial_dims, channels, channels, 2, stride=2)
        else:
            self.op = nn.Sequential(
                Resize2x(self.mode),  # type: ignore[arg-type]
                conv(spatial_dims, channels, channels, 3, padding=1, padding_mode=padding_mode),
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

"""U-Net building blocks for any spatial_dims: they take ``spatial_dims`` and pass it down.

Every block maps ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; blocks that can be
conditioned take ``emb`` (B, embed_dim) and apply it as a per-channel scale and shift (FiLM,
https://arxiv.org/abs/1709.07871, as in ADM https://arxiv.org/abs/2105.05233) or, with
``embed_mode="add"``, as a per-channel bias (DDPM's way, https://arxiv.org/abs/2006.11239).
Kernel sizes and resampling factors are an int or one int per axis (anisotropic data).
Attention modules and their composition live in :mod:`ndunet.attention_units`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ndunet._checks import IntOrTuple, as_tuple, check_choice, lookup
from ndunet.attention_units import SkipAttention, attention_kinds, make_attention
from ndunet.functional import interpolate_nd
from ndunet.layers.activation import ActivationSpec, activation
from ndunet.layers.attention import AttentionGate
from ndunet.layers.conv import conv, conv_transpose
from ndunet.layers.norm import norm as make_norm
from ndunet.layers.pool import avg_pool, max_pool

__all__ = [
    "AttentionGate",
    "ConvBlock",
    "Downsample",
    "ResBlock",
    "Resize",
    "SkipAttention",
    "Unit",
    "Upsample",
    "attention_kinds",
    "make_attention",
]

BlockType = Literal["residual", "plain"]
DownsampleMode = Literal["conv", "max", "avg"]
UpsampleMode = Literal["transpose", "nearest", "linear"]
EmbedMode = Literal["scale_shift", "add"]
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


def same_padding(kernel_size: IntOrTuple, spatial_dims: int) -> tuple[int, ...]:
    """Per-axis padding that keeps the size for an odd kernel (an int or one per axis)."""
    return tuple(k // 2 for k in as_tuple(kernel_size, spatial_dims, "kernel_size", minimum=1))


def _conditioning(
    h: Tensor, proj: nn.Module | None, emb: Tensor | None, mode: str = "scale_shift"
) -> Tensor:
    """``h * (1 + scale) + shift`` with (scale, shift) = proj(emb) split in two, per channel; or
    ``h + proj(emb)`` for mode "add".

    In ``h``'s dtype: the (B, C) vectors are cast to it, so a float32 embedding never promotes
    bf16/fp16 activations to float32. On a GPU one fused pass over ``h`` (``addcmul``); on the
    CPU a multiply and an add, whose kernels have vectorized paths for the broadcast (B, C, 1, ...)
    operand that ``addcmul``'s lacks (2-5x slower there on a contiguous ``h``).
    """
    if proj is None or emb is None:
        return h
    e = proj(emb).to(h.dtype)  # (B, C) or (B, 2C); a no-op under autocast
    shape = (e.shape[0], -1) + (1,) * (h.dim() - 2)  # (B, C, 1, ..., 1)
    if mode == "add":
        return h + e.reshape(shape)
    scale, shift = e.chunk(2, dim=1)  # (B, C) each
    scale, shift = (1 + scale).reshape(shape), shift.reshape(shape)
    if h.device.type == "cpu":
        return h * scale + shift
    return torch.addcmul(shift, h, scale)


def _kernels(kernel_size: IntOrTuple, kernel_sizes: Sequence[IntOrTuple] | None, n: int) -> list:
    ks = [kernel_size] * n if kernel_sizes is None else list(kernel_sizes)
    if not ks:
        raise ValueError(f"kernel_sizes={kernel_sizes!r} is not valid; expected >= 1 kernel")
    return ks


class ResBlock(nn.Module):
    """Pre-activation residual block: ``skip(x) + attn(h)`` with ``h`` from one
    norm-act-conv step per kernel (two by default), the embedding applied after the second norm
    (after the only conv when there is one) and dropout before the last conv.

    ``kernel_sizes`` gives each conv its kernel (e.g. ``(1, 3, 1)``, an int or one per axis);
    ``attn`` is an optional module on the residual branch before the addition (the CBAM/SE
    placement, https://arxiv.org/abs/1807.06521 fig. 3). The skip is a 1x1 conv when the
    channel count changes. ``emb`` is the (already activated) conditioning vector; it is required
    when ``embed_dim`` was given.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        embed_dim: int | None = None,
        kernel_size: IntOrTuple = 3,
        norm: object = "group",
        act: ActivationSpec = "silu",
        dropout: float = 0.0,
        padding_mode: PaddingMode = "zeros",
        *,
        kernel_sizes: Sequence[IntOrTuple] | None = None,
        embed_mode: EmbedMode = "scale_shift",
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.embed_mode = check_choice("embed_mode", embed_mode, ("scale_shift", "add"))
        ks = _kernels(kernel_size, kernel_sizes, 2)
        self.num_convs = len(ks)
        for j, k in enumerate(ks):  # registration order = the two-conv block's of before
            c_in = in_channels if j == 0 else out_channels
            setattr(self, f"norm{j + 1}", make_norm(norm, spatial_dims, c_in))  # type: ignore[arg-type]
            setattr(self, f"act{j + 1}", activation(act))
            if j == len(ks) - 1:
                self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            pad = same_padding(k, spatial_dims)
            setattr(
                self, f"conv{j + 1}",
                conv(spatial_dims, c_in, out_channels, k, padding=pad, padding_mode=padding_mode),
            )  # fmt: skip
            if j == 0:
                width = out_channels if embed_mode == "add" else 2 * out_channels
                self.emb_proj = nn.Linear(embed_dim, width) if embed_dim else None
        self.attn = attn
        self.skip = (
            conv(spatial_dims, in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h, last = x, self.num_convs - 1
        for j in range(self.num_convs):
            h = getattr(self, f"norm{j + 1}")(h)
            if j == 1:
                h = _conditioning(h, self.emb_proj, emb, self.embed_mode)
            h = getattr(self, f"act{j + 1}")(h)
            if j == last:
                h = self.dropout(h)
            h = getattr(self, f"conv{j + 1}")(h)
            if j == 0 and last == 0:
                h = _conditioning(h, self.emb_proj, emb, self.embed_mode)
        if self.attn is not None:
            h = self.attn(h)
        return self.skip(x) + h


class ConvBlock(nn.Module):
    """The classic U-Net unit: conv-norm-[embedding]-act, once per kernel of ``kernel_sizes``
    (one by default), then dropout and the optional ``attn`` module. The layers of the first
    conv are ``conv``/``norm``/``act``, those of conv j > 1 ``conv{j}``/``norm{j}``/``act{j}``."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        embed_dim: int | None = None,
        kernel_size: IntOrTuple = 3,
        norm: object = "group",
        act: ActivationSpec = "silu",
        dropout: float = 0.0,
        padding_mode: PaddingMode = "zeros",
        *,
        kernel_sizes: Sequence[IntOrTuple] | None = None,
        embed_mode: EmbedMode = "scale_shift",
        attn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.embed_mode = check_choice("embed_mode", embed_mode, ("scale_shift", "add"))
        ks = _kernels(kernel_size, kernel_sizes, 1)
        self.names = ["" if j == 0 else str(j + 1) for j in range(len(ks))]
        for j, (k, name) in enumerate(zip(ks, self.names)):
            c_in = in_channels if j == 0 else out_channels
            pad = same_padding(k, spatial_dims)
            setattr(
                self, f"conv{name}",
                conv(spatial_dims, c_in, out_channels, k, padding=pad, padding_mode=padding_mode),
            )  # fmt: skip
            setattr(self, f"norm{name}", make_norm(norm, spatial_dims, out_channels))  # type: ignore[arg-type]
            if j == 0:
                width = out_channels if embed_mode == "add" else 2 * out_channels
                self.emb_proj = nn.Linear(embed_dim, width) if embed_dim else None
            setattr(self, f"act{name}", activation(act))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.attn = attn

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        h = x
        for j, name in enumerate(self.names):
            h = getattr(self, f"norm{name}")(getattr(self, f"conv{name}")(h))
            if j == 0:
                h = _conditioning(h, self.emb_proj, emb, self.embed_mode)
            h = getattr(self, f"act{name}")(h)
        h = self.dropout(h)
        return h if self.attn is None else self.attn(h)


BLOCKS: dict[str, type[nn.Module]] = {"residual": ResBlock, "plain": ConvBlock}


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
    """Divide each spatial size by ``factor`` (2, or one int per axis; 1 leaves an axis alone):
    a strided conv (kernel ``2 * (f // 2) + 1`` per axis), max pool or average pool."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mode: DownsampleMode = "conv",
        padding_mode: PaddingMode = "zeros",
        factor: IntOrTuple = 2,
    ) -> None:
        super().__init__()
        self.mode = lookup({"conv": "conv", "max": "max", "avg": "avg"}, mode, "downsample")
        self.factor = as_tuple(factor, spatial_dims, "factor", minimum=1)
        if self.mode == "conv":
            kernel = tuple(2 * (f // 2) + 1 for f in self.factor)
            self.op = conv(
                spatial_dims, channels, channels, kernel, stride=self.factor,
                padding=tuple(f // 2 for f in self.factor), padding_mode=padding_mode,
            )  # fmt: skip
        elif self.mode == "max":
            self.op = max_pool(spatial_dims, self.factor)
        else:
            self.op = avg_pool(spatial_dims, self.factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Resize(nn.Module):
    """Nearest/linear interpolation to exactly ``factor`` times every spatial size.

    The output size is passed explicitly (the same numbers as ``scale_factor``), which keeps
    the size arithmetic in Python ints: no tensor-valued sizes, so torch.compile sees no graph
    break here.
    """

    def __init__(
        self, mode: Literal["nearest", "linear"] = "nearest", factor: Sequence[int] | int = 2
    ) -> None:
        super().__init__()
        self.mode, self.factor = mode, factor

    def forward(self, x: Tensor) -> Tensor:
        f = as_tuple(self.factor, x.dim() - 2, "factor", minimum=1)
        size = tuple(s * k for s, k in zip(x.shape[2:], f))
        return interpolate_nd(x, size=size, mode=self.mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, factor={self.factor}"


class Upsample(nn.Module):
    """Multiply each spatial size by ``factor`` (2, or one int per axis): a transposed conv with
    kernel = stride = factor, or nearest/linear interpolation followed by a conv 3 wide along
    resized axes and 1 wide along the others (no checkerboard artefacts,
    https://distill.pub/2016/deconv-checkerboard/)."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mode: UpsampleMode = "nearest",
        padding_mode: PaddingMode = "zeros",
        factor: IntOrTuple = 2,
    ) -> None:
        super().__init__()
        modes = {"transpose": "transpose", "nearest": "nearest", "linear": "linear"}
        self.mode = lookup(modes, mode, "upsample")
        self.factor = as_tuple(factor, spatial_dims, "factor", minimum=1)
        if self.mode == "transpose":
            self.op: nn.Module = conv_transpose(
                spatial_dims, channels, channels, self.factor, stride=self.factor
            )
        else:
            kernel = tuple(3 if f > 1 else 1 for f in self.factor)
            self.op = nn.Sequential(
                Resize(self.mode, self.factor),  # type: ignore[arg-type]
                conv(
                    spatial_dims, channels, channels, kernel, padding=same_padding(kernel, spatial_dims),
                    padding_mode=padding_mode,
                ),
            )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)

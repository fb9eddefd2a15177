"""Attention kinds by name, singly or stacked in a chosen order, for any spatial_dims.

Kinds (``ATTENTION_KINDS``):

* ``"self"`` (alias ``"qkv"``): multi-head QKV self-attention over all positions;
* ``"channel"``: CBAM's channel attention (reduction ratio settable, 8 by default);
* ``"spatial"``: CBAM's spatial attention gate;
* ``"cbam"``: channel then spatial in one module (reduction 16, as the CBAM paper);
* on skip connections only, where the decoder's features are at hand: ``"gate"`` (Attention
  U-Net's additive gate, https://arxiv.org/abs/1804.03999) and ``"cross"`` (QKV cross-attention,
  queries from the decoder, keys and values from the skip).

A spec is ``None``/``False``/``"none"`` (nothing), ``True`` (a default kind), a name, or a
list of names applied in order (``["channel", "spatial", "self"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ndunet._checks import did_you_mean
from ndunet.layers.attention import (
    CBAM,
    AttentionGate,
    ChannelAttention,
    CrossAttention,
    PositionEmbedding,
    SelfAttention,
    SpatialAttention,
)

__all__ = [
    "ATTENTION_KINDS",
    "SKIP_KINDS",
    "SkipAttention",
    "attention_kinds",
    "make_attention",
    "make_skip_attention",
]

ATTENTION_KINDS: dict[str, str] = {
    "self": "self",
    "qkv": "self",
    "channel": "channel",
    "spatial": "spatial",
    "cbam": "cbam",
    "gate": "gate",
    "cross": "cross",
    "none": "none",
}
SKIP_KINDS = ("gate", "cross")  # need the decoder's features: only on skip connections


def attention_kinds(
    value: Any, name: str = "attention", default: str = "self", *, skip: bool = False
) -> tuple[str, ...]:
    """A spec (see the module docstring) -> its kinds in order, canonical names, "none" dropped.

    ``skip=False`` refuses the skip-only kinds ("gate", "cross")."""
    allowed = [k for k in ATTENTION_KINDS if skip or k not in SKIP_KINDS]
    expected = f"a bool, one of {allowed}, or a list of them (applied in order)"
    if value is None or value is False:
        return ()
    if value is True:
        value = default
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name}={value!r} is not valid; expected {expected}")
    kinds = []
    for item in items:
        key = item.lower().replace("-", "_") if isinstance(item, str) else item
        if key not in allowed:
            hint = did_you_mean(item, allowed)
            if key in SKIP_KINDS:
                hint = f" ({item!r} needs the decoder's features: use it on skip connections)"
            raise ValueError(f"{name}={value!r} is not valid; expected {expected}{hint}")
        if ATTENTION_KINDS[key] != "none":
            kinds.append(ATTENTION_KINDS[key])
    return tuple(kinds)


def _one(
    kind: str,
    spatial_dims: int,
    channels: int,
    decoder_channels: int | None,
    norm: object,
    head_dim: int,
    num_heads: int | None,
    pos_embedding: PositionEmbedding | None,
    cbam_reduction: int,
    channel_reduction: int,
    spatial_kernel_size: int,
) -> nn.Module:
    if kind == "self":
        return SelfAttention(spatial_dims, channels, num_heads, head_dim, norm, pos_embedding)
    if kind == "channel":
        return ChannelAttention(spatial_dims, channels, channel_reduction)
    if kind == "spatial":
        return SpatialAttention(spatial_dims, spatial_kernel_size)
    if kind == "cbam":
        return CBAM(spatial_dims, channels, cbam_reduction, spatial_kernel_size)
    if decoder_channels is None:  # attention_kinds refuses these kinds off the skips
        raise ValueError(f"attention kind {kind!r} needs the decoder's features (a skip)")
    if kind == "gate":
        return AttentionGate(spatial_dims, channels, decoder_channels)
    return CrossAttention(
        spatial_dims, channels, decoder_channels, num_heads, head_dim, norm, pos_embedding
    )


def make_attention(
    kind: str | Sequence[str] | bool | None,
    spatial_dims: int,
    channels: int,
    *,
    norm: object = "group",
    head_dim: int = 32,
    num_heads: int | None = None,
    pos_embedding: PositionEmbedding | None = None,
    cbam_reduction: int = 16,
    cbam_kernel_size: int = 7,
    channel_reduction: int = 8,
) -> nn.Module | None:
    """The attention a spec names on ``channels`` features: None for none, the module itself for
    one kind, an ``nn.Sequential`` in the given order for several. ``cbam_kernel_size`` is also
    the "spatial" gate's kernel."""
    kinds = attention_kinds(kind)
    args = (norm, head_dim, num_heads, pos_embedding, cbam_reduction, channel_reduction)
    mods = [_one(k, spatial_dims, channels, None, *args, cbam_kernel_size) for k in kinds]
    if not mods:
        return None
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


class SkipAttention(nn.Module):
    """Attention on a skip connection, applied in order: ``forward(skip, decoder)``; "gate" and
    "cross" also read the decoder's features (at the skip's resolution), the others only the
    skip."""

    def __init__(self, kinds: Sequence[str], modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.kinds = tuple(kinds)
        self.layers = nn.ModuleList(modules)

    def forward(self, skip: Tensor, decoder: Tensor) -> Tensor:
        for kind, layer in zip(self.kinds, self.layers):
            skip = layer(skip, decoder) if kind in SKIP_KINDS else layer(skip)
        return skip

    def extra_repr(self) -> str:
        return f"kinds={list(self.kinds)}"


def make_skip_attention(
    kind: str | Sequence[str] | bool | None,
    spatial_dims: int,
    channels: int,
    decoder_channels: int,
    *,
    norm: object = "group",
    head_dim: int = 32,
    num_heads: int | None = None,
    pos_embedding: PositionEmbedding | None = None,
    cbam_reduction: int = 16,
    cbam_kernel_size: int = 7,
    channel_reduction: int = 8,
) -> SkipAttention | None:
    """A :class:`SkipAttention` for a skip of ``channels`` meeting a decoder feature of
    ``decoder_channels``; None for an empty spec. ``True`` means "gate"."""
    kinds = attention_kinds(kind, "skip_attention", "gate", skip=True)
    args = (norm, head_dim, num_heads, pos_embedding, cbam_reduction, channel_reduction)
    mods = [
        _one(k, spatial_dims, channels, decoder_channels, *args, cbam_kernel_size) for k in kinds
    ]
    return SkipAttention(kinds, mods) if mods else None

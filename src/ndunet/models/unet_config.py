"""UNetConfig: every constructor option of :class:`ndunet.UNet` as a JSON-friendly dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ndunet._checks import did_you_mean
from ndunet.layers.activation import ActivationSpec, activation_name

__all__ = ["UNetConfig"]

_TUPLE_FIELDS = ("channels", "num_res_blocks", "attention_levels")
_ATTENTION = ("self", "cbam", "none")


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        hint = did_you_mean(value, [str(a) for a in allowed]) if isinstance(value, str) else ""
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}.{hint}")


def _attention_kind(name: str, value: Any, default: str) -> str | None:
    """bool/None/str -> "self" | "cbam" | None."""
    if value is None or value is False:
        return None
    if value is True:
        return default
    if isinstance(value, str) and value.lower() in _ATTENTION:
        return None if value.lower() == "none" else value.lower()
    raise ValueError(
        f"{name}={value!r} is not allowed; use a bool or one of {list(_ATTENTION)}"
        + (did_you_mean(value, list(_ATTENTION)) if isinstance(value, str) else "")
    )


@dataclass
class UNetConfig:
    """Options of :class:`ndunet.UNet` (see its docstring); ``to_dict``/``from_dict`` are JSON-safe.

    ``norm`` and ``activation`` may hold a class, partial or module instance for building a model,
    but only registered names can be written out: ``to_dict`` raises a TypeError otherwise.
    """

    spatial_dims: int
    in_channels: int
    out_channels: int
    channels: tuple[int, ...] = (32, 64, 128, 256)  # width per level, >= 2 levels, any order
    num_res_blocks: int | tuple[int, ...] = 2  # encoder blocks per level (int or per level)
    attention_levels: tuple[bool | str, ...] | None = None  # per level: bool, "self", "cbam"
    bottleneck_attention: bool | str | None = None  # None: as the deepest attended level
    attention_type: Literal["self", "cbam"] = "self"  # what True means above
    attention_head_dim: int = 32  # channels per self-attention head
    pos_embedding: Literal["sinusoidal"] | None = None  # N-D position code in self-attention
    attention_gates: bool = False  # gate skips (https://arxiv.org/abs/1804.03999)
    time_embedding: bool = False
    time_embed_dim: int | None = None  # None: 4 * channels[0]
    num_classes: int | None = None  # K classes + null id K (classifier-free guidance)
    block: Literal["residual", "plain"] = "residual"  # plain: conv-norm-act (classic U-Net)
    kernel_size: int = 3
    norm: Any = "group"
    num_groups: int = 32  # for norm="group", lowered to a divisor of the channels
    activation: ActivationSpec = "silu"
    dropout: float = 0.0
    dropout_in: Literal["all", "encoder", "decoder"] = "all"  # encoder includes the bottleneck
    downsample: Literal["conv", "max", "avg"] = "conv"
    upsample: Literal["transpose", "nearest", "linear"] = "nearest"
    skip_connections: Literal["block", "level"] = "block"  # see UNet
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros"  # convolutions
    input_pad_mode: Literal["zeros", "reflect", "replicate", "circular"] = "replicate"  # odd sizes
    gradient_checkpointing: bool = False
    custom_in_layer: bool = False  # set by UNet(in_layer=...); the module itself is not JSON
    custom_out_layer: bool = False

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:  # JSON gives lists; keep tuples so configs compare equal
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    # ---- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise a ValueError/TypeError naming the first invalid option."""
        _positive_int("spatial_dims", self.spatial_dims)
        _positive_int("in_channels", self.in_channels)
        _positive_int("out_channels", self.out_channels)
        ch = self.channels
        if not isinstance(ch, tuple) or len(ch) < 2:
            raise ValueError(
                f"channels must be a sequence of >= 2 ints (one per level), got {ch!r}"
            )
        for c in ch:
            _positive_int("every entry of channels", c)
        levels = len(ch)
        nrb = self.num_res_blocks
        if isinstance(nrb, tuple):
            if len(nrb) != levels:
                raise ValueError(
                    f"num_res_blocks={nrb!r} has {len(nrb)} entries; expected one per level "
                    f"(len(channels)={levels}) or a single int"
                )
            for n in nrb:
                _positive_int("every entry of num_res_blocks", n)
        else:
            _positive_int("num_res_blocks", nrb)
        _choice("attention_type", self.attention_type, ("self", "cbam"))
        if self.attention_levels is not None:
            if not isinstance(self.attention_levels, tuple) or len(self.attention_levels) != levels:
                raise ValueError(
                    f"attention_levels={self.attention_levels!r} must have one entry per level "
                    f"(len(channels)={levels})"
                )
            for a in self.attention_levels:
                _attention_kind("attention_levels entry", a, self.attention_type)
        _attention_kind("bottleneck_attention", self.bottleneck_attention, self.attention_type)
        _positive_int("attention_head_dim", self.attention_head_dim)
        _choice("pos_embedding", self.pos_embedding, (None, "sinusoidal"))
        if self.time_embed_dim is not None:
            _positive_int("time_embed_dim", self.time_embed_dim)
        if self.num_classes is not None:
            _positive_int("num_classes", self.num_classes)
        _choice("block", self.block, ("residual", "plain"))
        if (
            isinstance(self.kernel_size, bool)
            or not isinstance(self.kernel_size, int)
            or (self.kernel_size < 1 or self.kernel_size % 2 == 0)
        ):
            raise ValueError(
                f"kernel_size must be an odd int >= 1 (shape-preserving), got {self.kernel_size!r}"
            )
        _positive_int("num_groups", self.num_groups)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1), got {self.dropout!r}")
        _choice("dropout_in", self.dropout_in, ("all", "encoder", "decoder"))
        _choice("downsample", self.downsample, ("conv", "max", "avg"))
        _choice("upsample", self.upsample, ("transpose", "nearest", "linear"))
        _choice("skip_connections", self.skip_connections, ("block", "level"))
        modes = ("zeros", "reflect", "replicate", "circular")
        _choice("padding_mode", self.padding_mode, modes)
        _choice("input_pad_mode", self.input_pad_mode, modes)
        for flag in ("attention_gates", "time_embedding", "gradient_checkpointing"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")

    # ---- derived values -------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channels)

    @property
    def downsample_factor(self) -> int:
        """Every spatial size is padded to a multiple of this (2 ** number of downsamplings)."""
        return 2 ** (len(self.channels) - 1)

    def res_blocks(self) -> tuple[int, ...]:
        nrb = self.num_res_blocks
        return nrb if isinstance(nrb, tuple) else (nrb,) * self.num_levels

    def attention(self) -> tuple[str | None, ...]:
        """Per-level attention kind ("self", "cbam") or None."""
        levels = self.attention_levels or (False,) * self.num_levels
        return tuple(_attention_kind("attention_levels", a, self.attention_type) for a in levels)

    def mid_attention(self) -> str | None:
        """Bottleneck attention; None (the default) means "as the deepest attended level"."""
        if self.bottleneck_attention is None:
            kinds = [k for k in self.attention() if k is not None]
            return kinds[-1] if kinds else None
        return _attention_kind("bottleneck_attention", self.bottleneck_attention, "self")

    def embed_dim(self) -> int | None:
        if not self.time_embedding and self.num_classes is None:
            return None
        return self.time_embed_dim or 4 * self.channels[0]

    # ---- serialization --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; raises TypeError for a norm/activation given as an unnamed object."""
        out = dataclasses.asdict(self)
        for name in _TUPLE_FIELDS:
            if isinstance(out[name], tuple):
                out[name] = list(out[name])
        act = activation_name(self.activation)
        if act is None:
            raise TypeError(
                f"UNetConfig.activation={self.activation!r} has no registered name, so the config "
                "cannot be written to JSON; pass a name such as 'silu' or 'leaky_relu'"
            )
        out["activation"] = act
        if self.norm is not None and not isinstance(self.norm, str):
            raise TypeError(
                f"UNetConfig.norm={self.norm!r} is not a registered name, so the config cannot be "
                "written to JSON; pass one of 'group', 'batch', 'instance', 'layer', 'none'"
            )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(
                f"unknown UNetConfig option(s) {unknown}; valid: {names}."
                + did_you_mean(unknown[0], names)
            )
        return cls(**data)

    def replace(self, **changes: Any) -> UNetConfig:
        """A copy with some options changed (validated)."""
        return dataclasses.replace(self, **changes)

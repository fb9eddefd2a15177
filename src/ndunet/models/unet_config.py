"""UNetConfig: every constructor option of :class:`ndunet.UNet` as a JSON-friendly config."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ndunet._checks import check_float, check_int, did_you_mean, lookup
from ndunet.config import Config, config
from ndunet.layers.activation import activation_to_json, check_activation
from ndunet.layers.norm import NORMS

__all__ = ["UNetConfig"]

_ATTENTION = ("self", "cbam", "none")


def _attention_kind(name: str, value: Any, default: str) -> str | None:
    """bool/None/str -> "self" | "cbam" | None."""
    if value is None or value is False:
        return None
    if value is True:
        return default
    if isinstance(value, str) and value.lower() in _ATTENTION:
        return None if value.lower() == "none" else value.lower()
    raise ValueError(
        f"{name}={value!r} is not valid; expected a bool or one of {list(_ATTENTION)}"
        + did_you_mean(value, _ATTENTION)
    )


# Feasibility limits, checked before anything is allocated (a hostile or mistyped config.json
# must fail with a message naming the option, not exhaust memory or time).
MAX_SPATIAL_DIMS = 12
MAX_WIDTH = 65536
MAX_BLOCKS = 256
MAX_KERNEL_TAPS = 65536  # kernel_size ** spatial_dims
MAX_CLASSES = 2**24
MAX_PARAMETERS = 2**31  # about 8 GiB of float32 weights


@config
class UNetConfig(Config):
    """Options of :class:`ndunet.UNet` (see its docstring); ``to_dict``/``from_dict`` are JSON-safe.

    ``norm`` and ``activation`` may hold a class, partial or module instance. ``to_dict`` writes
    a registered name, a name with arguments (``{"name": "leaky_relu", "negative_slope": 0.2}``),
    or, for anything else, ``{"custom": "<repr>"}``: such a config rebuilds only when the same
    object is passed again (as for ``in_layer``).
    """

    unchecked: ClassVar[tuple[str, ...]] = ("norm", "activation")

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
    activation: Any = "silu"
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

    # ---- checks ---------------------------------------------------------------------------
    def check_values(self) -> None:
        """Ranges and combinations the field types cannot say, and the feasibility limits."""
        check_int("spatial_dims", self.spatial_dims, 1, MAX_SPATIAL_DIMS)
        check_int("in_channels", self.in_channels, 1, MAX_WIDTH)
        check_int("out_channels", self.out_channels, 1, MAX_WIDTH)
        ch = self.channels
        if len(ch) < 2:
            raise ValueError(
                f"channels={list(ch)!r} is not valid; expected a list of >= 2 ints (one per level)"
            )
        for c in ch:
            check_int("channels", c, 1, MAX_WIDTH)
        levels = len(ch)
        nrb = self.num_res_blocks
        if isinstance(nrb, tuple) and len(nrb) != levels:
            raise ValueError(
                f"num_res_blocks={list(nrb)!r} has {len(nrb)} entries; expected one per level "
                f"(len(channels)={levels}) or a single int"
            )
        for n in nrb if isinstance(nrb, tuple) else (nrb,):
            check_int("num_res_blocks", n, 1, MAX_BLOCKS)
        if self.attention_levels is not None:
            if len(self.attention_levels) != levels:
                raise ValueError(
                    f"attention_levels={list(self.attention_levels)!r} must have one entry per "
                    f"level (len(channels)={levels})"
                )
            for a in self.attention_levels:
                _attention_kind("attention_levels", a, self.attention_type)
        _attention_kind("bottleneck_attention", self.bottleneck_attention, self.attention_type)
        check_int("attention_head_dim", self.attention_head_dim, 1, MAX_WIDTH)
        if self.time_embed_dim is not None:
            check_int("time_embed_dim", self.time_embed_dim, 1, MAX_WIDTH)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        k = self.kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(
                f"kernel_size={k!r} is not valid; expected an odd int >= 1 (shape-preserving)"
            )
        if k**self.spatial_dims > MAX_KERNEL_TAPS:
            raise ValueError(
                f"kernel_size={k} is not valid with spatial_dims={self.spatial_dims}: "
                f"{k}**{self.spatial_dims} taps per filter, over the limit of {MAX_KERNEL_TAPS}"
            )
        check_int("num_groups", self.num_groups, 1)
        check_float("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_activation(self.activation)
        for name in ("norm", "activation"):
            value = getattr(self, name)
            if isinstance(value, dict) and "custom" in value:
                raise ValueError(
                    f"{name}={value!r} is not valid: the model was built with a custom {name} "
                    f"that JSON cannot hold; pass the object itself as {name}=..."
                )
        if isinstance(self.norm, str):
            lookup(NORMS, self.norm, "norm")
        params = self.estimated_parameters()
        if params > MAX_PARAMETERS:
            raise ValueError(
                f"channels={list(ch)!r} is not valid with kernel_size={k}, spatial_dims="
                f"{self.spatial_dims} and num_res_blocks={self.num_res_blocks!r}: about "
                f"{params:.2e} parameters, over the limit of {MAX_PARAMETERS:.2e}"
            )

    def estimated_parameters(self) -> float:
        """A quick upper estimate of the parameter count (no allocation), for the limits."""
        taps = self.kernel_size**self.spatial_dims
        convs = sum(
            (3 * n + 2) * 2 * taps * c * c for n, c in zip(self.res_blocks(), self.channels)
        )
        embed = (self.embed_dim() or 0) * ((self.num_classes or 0) + 4 * max(self.channels))
        return float(convs + embed)

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
        """JSON-ready options; a norm/activation object is written as a name, a name with its
        arguments, or ``{"custom": "<repr>"}`` (see the class docstring)."""
        out = super().to_dict()
        out["activation"] = activation_to_json(self.activation)
        if self.norm is not None and not isinstance(self.norm, str):
            out["norm"] = {"custom": repr(self.norm)}
        return out

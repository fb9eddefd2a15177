"""UNetConfig: every constructor option of :class:`ndunet.UNet` as a JSON-friendly config."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from ndunet._checks import as_tuple, check_float, check_int, lookup
from ndunet.attention_units import attention_kinds
from ndunet.config import Config, config
from ndunet.layers.activation import activation_to_json, check_activation
from ndunet.layers.norm import NORMS

__all__ = ["UNetConfig"]

# An attention spec: a bool, a kind, or a list of kinds applied in order (ndunet.attention_units).
AttentionSpec = bool | str | tuple[str, ...]
PerAxis = int | tuple[int, ...]  # one int for every axis, or one per axis

# Feasibility limits, checked before anything is allocated (a hostile or mistyped config.json
# must fail with a message naming the option, not exhaust memory or time).
MAX_SPATIAL_DIMS = 12
MAX_WIDTH = 65536
MAX_BLOCKS = 256
MAX_KERNEL_TAPS = 65536  # prod(kernel_size) over the axes
MAX_CLASSES = 2**24
MAX_PARAMETERS = 2**31  # about 8 GiB of float32 weights


@config
class UNetConfig(Config):
    """Options of :class:`ndunet.UNet` (see its docstring); ``to_dict``/``from_dict`` are JSON-safe.

    ``norm`` and ``activation`` may hold a class, partial or module instance. ``to_dict`` writes
    a registered name, a name with arguments (``{"name": "leaky_relu", "negative_slope": 0.2}``),
    or, for anything else, ``{"custom": "<repr>"}``: such a config rebuilds only when the same
    object is passed again (as for ``in_layer``).

    Attention specs (``attention_levels`` entries, ``bottleneck_attention``, ``skip_attention``
    entries) are a bool, a kind ("self"/"qkv", "channel", "spatial", "cbam"; on skips also
    "gate" and "cross") or a list of kinds applied in order; see :mod:`ndunet.attention_units`.

    Anisotropic data (nnU-Net / MONAI DynUNet style): ``strides`` gives each down-sampling its
    factor per axis (``[[1, 2, 2], [2, 2, 2]]``: the first keeps the depth axis) and
    ``kernel_sizes`` each level its kernel per axis (``[[1, 3, 3], [3, 3, 3], ...]``).
    """

    unchecked: ClassVar[tuple[str, ...]] = ("norm", "activation")

    spatial_dims: int
    in_channels: int
    out_channels: int
    channels: tuple[int, ...] = (32, 64, 128, 256)  # width per level, >= 2 levels, any order
    num_res_blocks: int | tuple[int, ...] = 2  # encoder blocks per level (int or per level)
    attention_levels: tuple[AttentionSpec, ...] | None = None  # per level, in its blocks
    bottleneck_attention: AttentionSpec | None = None  # None: as the deepest attended level
    attention_type: Literal["self", "qkv", "cbam", "channel", "spatial"] = "self"  # what True means
    attention_head_dim: int = 32  # channels per self-/cross-attention head
    attention_reduction: int | None = None  # channel MLP ratio; None: 8 "channel", 16 "cbam"
    attention_kernel_size: int = 7  # the spatial gate's conv ("spatial", "cbam")
    attention_placement: Literal["after", "residual"] = "after"  # after each block / in its branch
    pos_embedding: Literal["sinusoidal"] | None = None  # N-D position code in self-attention
    attention_gates: bool = False  # gate skips (https://arxiv.org/abs/1804.03999)
    skip_attention: tuple[AttentionSpec, ...] | None = None  # per level, on its skips
    time_embedding: bool = False
    time_embed_dim: int | None = None  # None: 4 * channels[0]
    time_freq_dim: int | None = None  # sinusoid width of the time embedding; None: channels[0]
    time_injection: Literal["scale_shift", "add"] = "scale_shift"  # how blocks take the embedding
    num_classes: int | None = None  # K classes + null id K (classifier-free guidance)
    block: Literal["residual", "plain"] = "residual"  # plain: conv-norm-act (classic U-Net)
    kernel_size: int = 3
    kernel_sizes: tuple[PerAxis, ...] | None = None  # per level, per axis; None: kernel_size
    block_kernel_sizes: tuple[PerAxis, ...] | None = None  # per conv in a block, e.g. (1, 3, 1)
    strides: tuple[PerAxis, ...] | None = None  # per down-sampling, per axis; None: 2 everywhere
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
        self._check_per_level("num_res_blocks", self.num_res_blocks, levels, allow_one=True)
        for n in self.res_blocks():
            check_int("num_res_blocks", n, 1, MAX_BLOCKS)
        for name in ("attention_levels", "skip_attention"):
            self._check_per_level(name, getattr(self, name), levels)
        self.attention(), self.mid_attention(), self.skip_attention_kinds()  # spec checks
        check_int("attention_head_dim", self.attention_head_dim, 1, MAX_WIDTH)
        if self.attention_reduction is not None:
            check_int("attention_reduction", self.attention_reduction, 1, MAX_WIDTH)
        self._check_odd("attention_kernel_size", self.attention_kernel_size)
        for name in ("time_embed_dim", "time_freq_dim"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, MAX_WIDTH)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 1, MAX_CLASSES)
        self._check_odd("kernel_size", self.kernel_size)
        self._check_per_level("kernel_sizes", self.kernel_sizes, levels)
        steps = self.strides
        if steps is not None and len(steps) not in (levels - 1, levels):
            raise ValueError(
                f"strides={_plain(steps)!r} has {len(steps)} entries; expected one per "
                f"down-sampling (len(channels) - 1 = {levels - 1}), or {levels} with a first "
                "entry of 1 (MONAI DynUNet / nnU-Net's layout)"
            )
        if (
            steps is not None
            and len(steps) == levels
            and set(self._axes("strides", steps[0])) != {1}
        ):
            raise ValueError(
                f"strides={_plain(steps)!r} is not valid; with {levels} entries the first is the "
                "input level's and must be 1 (the U-Net's stem does not down-sample)"
            )
        kernel_name = next(
            n for n in ("block_kernel_sizes", "kernel_sizes", "kernel_size") if getattr(self, n)
        )
        for i in range(levels):
            for k in self.conv_kernels(i):
                for v in k:
                    self._check_odd(kernel_name, v)
                if math.prod(k) > MAX_KERNEL_TAPS:
                    raise ValueError(
                        f"kernel_size={list(k)} is not valid with spatial_dims="
                        f"{self.spatial_dims}: {math.prod(k)} taps per filter, over the limit "
                        f"of {MAX_KERNEL_TAPS}"
                    )
        self.down_factors()
        check_block_options(
            self,
            f"channels={list(ch)!r} is not valid with kernel_size={self.kernel_size}, "
            f"spatial_dims={self.spatial_dims} and num_res_blocks={self.num_res_blocks!r}",
        )

    def _check_per_level(self, name: str, value: Any, levels: int, allow_one: bool = False) -> None:
        if isinstance(value, tuple) and len(value) != levels:
            raise ValueError(
                f"{name}={_plain(value)!r} has {len(value)} entries; expected one per level "
                f"(len(channels)={levels}){' or a single int' if allow_one else ''}"
            )

    @staticmethod
    def _check_odd(name: str, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise ValueError(
                f"{name}={k!r} is not valid; expected an odd int >= 1 (shape-preserving)"
            )

    def _axes(self, name: str, value: PerAxis) -> tuple[int, ...]:
        if isinstance(value, tuple) and len(value) != self.spatial_dims:
            raise ValueError(
                f"{name}={_plain(value)!r} is not valid; expected an int or a list of "
                f"spatial_dims={self.spatial_dims} ints"
            )
        return as_tuple(value, self.spatial_dims, name, minimum=1)

    def estimated_parameters(self) -> float:
        """A quick upper estimate of the parameter count (no allocation), for the limits."""
        convs = 0
        for i, (n, c) in enumerate(zip(self.res_blocks(), self.channels)):
            taps = sum(math.prod(k) for k in self.conv_kernels(i))
            convs += (3 * n + 2) * taps * c * c
        embed = (self.embed_dim() or 0) * ((self.num_classes or 0) + 4 * max(self.channels))
        return float(convs + embed)

    # ---- derived values -------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channels)

    def down_factors(self) -> tuple[tuple[int, ...], ...]:
        """The factor of each down-sampling (level i -> i + 1), per axis."""
        steps = self.strides
        if steps is None:
            return ((2,) * self.spatial_dims,) * (self.num_levels - 1)
        if len(steps) == self.num_levels:
            steps = steps[1:]
        return tuple(self._axes("strides", s) for s in steps)

    @property
    def downsample_factors(self) -> tuple[int, ...]:
        """Each spatial size is padded to a multiple of its axis' factor (the product of the
        down-sampling factors along it)."""
        out = [1] * self.spatial_dims
        for step in self.down_factors():
            out = [o * f for o, f in zip(out, step)]
        return tuple(out)

    @property
    def downsample_factor(self) -> int:
        """The largest of :attr:`downsample_factors` (``2 ** (levels - 1)`` when isotropic)."""
        return max(self.downsample_factors)

    def level_kernel(self, level: int) -> tuple[int, ...]:
        """The kernel of a level's convolutions, per axis."""
        if self.kernel_sizes is None:
            return (self.kernel_size,) * self.spatial_dims
        return self._axes("kernel_sizes", self.kernel_sizes[level])

    def conv_kernels(self, level: int) -> tuple[tuple[int, ...], ...]:
        """The kernel of each conv in a block of ``level``, per axis. An int in
        ``block_kernel_sizes`` is that width along the axes the level convolves (kernel > 1) and 1
        along the others; a list is used as it is. Default: the level's kernel for each conv."""
        level_k = self.level_kernel(level)
        n = 2 if self.block == "residual" else 1
        spec = self.block_kernel_sizes
        if spec is None:
            return (level_k,) * n
        if not spec:
            raise ValueError("block_kernel_sizes=[] is not valid; expected >= 1 kernel")
        return tuple(
            self._axes("block_kernel_sizes", k)
            if isinstance(k, tuple)
            else tuple(k if lk > 1 else 1 for lk in level_k)
            for k in spec
        )

    def res_blocks(self) -> tuple[int, ...]:
        nrb = self.num_res_blocks
        return nrb if isinstance(nrb, tuple) else (nrb,) * self.num_levels

    def attention(self) -> tuple[tuple[str, ...], ...]:
        """Per level, the attention kinds of its blocks, in order (empty: none)."""
        levels = self.attention_levels or (False,) * self.num_levels
        return tuple(attention_kinds(a, "attention_levels", self.attention_type) for a in levels)

    def mid_attention(self) -> tuple[str, ...]:
        """Bottleneck attention; None (the default) means "as the deepest attended level"."""
        if self.bottleneck_attention is None:
            kinds = [k for k in self.attention() if k]
            return kinds[-1] if kinds else ()
        return attention_kinds(self.bottleneck_attention, "bottleneck_attention", "self")

    def skip_attention_kinds(self) -> tuple[tuple[str, ...], ...]:
        """Per level, the attention kinds on its skips, in order (after ``attention_gates``'
        gate when that is on)."""
        levels = self.skip_attention or (False,) * self.num_levels
        return tuple(attention_kinds(a, "skip_attention", "gate", skip=True) for a in levels)

    def reductions(self) -> dict[str, int]:
        """The channel-MLP reduction of "cbam" (16 by default) and "channel" (8 by default)."""
        r = self.attention_reduction
        return {"cbam_reduction": r or 16, "channel_reduction": r or 8}

    def embed_dim(self) -> int | None:
        if not self.time_embedding and self.num_classes is None:
            return None
        return self.time_embed_dim or 4 * self.channels[0]

    # ---- serialization --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready options; a norm/activation object is written as a name, a name with its
        arguments, or ``{"custom": "<repr>"}`` (see the class docstring)."""
        return norm_activation_to_json(super().to_dict(), self.norm, self.activation)


def check_norm_activation(norm: Any, activation: Any) -> None:
    """A config's ``norm``/``activation``: registered names, or objects; a ``{"custom": ...}``
    record (from :func:`norm_activation_to_json`) is refused with what to do instead."""
    check_activation(activation)
    for name, value in (("norm", norm), ("activation", activation)):
        if isinstance(value, dict) and "custom" in value:
            raise ValueError(
                f"{name}={value!r} is not valid: the model was built with a custom {name} "
                f"that JSON cannot hold; pass the object itself as {name}=..."
            )
    if isinstance(norm, str):
        lookup(NORMS, norm, "norm")


def check_block_options(config: Any, layout: str) -> None:
    """The checks a UNetConfig and a ResNetConfig share: ``num_groups``, ``dropout``,
    ``norm``/``activation``, and the parameter limit, whose message starts with ``layout`` (the
    options that set the size)."""
    check_int("num_groups", config.num_groups, 1)
    check_float("dropout", config.dropout, 0.0, 1.0, high_open=True)
    check_norm_activation(config.norm, config.activation)
    params = config.estimated_parameters()
    if params > MAX_PARAMETERS:
        raise ValueError(
            f"{layout}: about {params:.2e} parameters, over the limit of {MAX_PARAMETERS:.2e}"
        )


def norm_activation_to_json(out: dict[str, Any], norm: Any, activation: Any) -> dict[str, Any]:
    """``out`` with ``norm``/``activation`` as names, names with arguments, or
    ``{"custom": "<repr>"}`` for objects JSON cannot hold."""
    out["activation"] = activation_to_json(activation)
    if norm is not None and not isinstance(norm, str):
        out["norm"] = {"custom": repr(norm)}
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists, for messages that quote a JSON/TOML value."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value

"""UNet: a U-Net generated from a list of channel widths, one code path for every spatial_dims."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ndunet.attention_units import make_attention, make_skip_attention
from ndunet.blocks import BLOCKS, Downsample, Unit, Upsample
from ndunet.layers.activation import activation
from ndunet.layers.attention import AttentionGate
from ndunet.layers.conv import conv
from ndunet.layers.embedding import ClassEmbedding, TimeEmbedding
from ndunet.layers.norm import norm as make_norm
from ndunet.models.inputs import check_conditioning, check_image, check_sizes, crop, pad_to_multiple
from ndunet.models.saving import PretrainedMixin
from ndunet.models.unet_config import UNetConfig

__all__ = ["UNet", "UNetConfig"]


class Level(nn.Module):
    """The units of one resolution, optional gates and attention on their skips (one per skip
    taken), and the resampling after them."""

    def __init__(
        self,
        units: list[Unit],
        resample: nn.Module | None,
        gates: list[nn.Module] | None = None,
        skip_attn: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.resample = resample
        self.gates = nn.ModuleList(gates) if gates else None
        self.skip_attn = nn.ModuleList(skip_attn) if skip_attn else None


class UNet(PretrainedMixin, nn.Module):
    """U-Net for ``(B, in_channels, *spatial)`` inputs with ``spatial_dims`` spatial axes.

    Encoder level ``i`` has ``num_res_blocks[i]`` blocks of width ``channels[i]`` (any positive
    widths, in any order: a 1x1 conv adapts channels wherever they change), then down-samples
    (halves every size, or divides each axis by its ``strides`` entry: nnU-Net-style anisotropic
    levels, with per-level, per-axis ``kernel_sizes``); a bottleneck (block, attention, block)
    follows and the decoder mirrors the encoder.
    ``skip_connections="block"`` keeps a skip after every encoder block (ADM/diffusers layout,
    ``num_res_blocks + 1`` decoder blocks per level); ``"level"`` keeps one per level (the classic
    U-Net, https://arxiv.org/abs/1505.04597). Spatial sizes that are not multiples of the
    per-axis down-sampling factor (``2 ** (len(channels) - 1)``, or the product of ``strides``
    along the axis) are padded inside (``input_pad_mode``) and cropped back.

    Attention (any kinds, stacked in order): ``attention_levels`` in the blocks of chosen levels
    (after each block, or on its residual branch with ``attention_placement="residual"``),
    ``bottleneck_attention``, and ``skip_attention`` on each level's skips, where "gate" and
    "cross" (cross-attention, queries from the decoder) also read the decoder's features.

    ``in_layer``/``out_layer`` replace the stem (``in_channels -> channels[0]``, keeping the
    spatial shape) and the head (``channels[0] -> anything``). They are not part of the JSON
    config: it records only that they exist (``custom_in_layer``/``custom_out_layer``), their
    weights are saved by :meth:`save_pretrained`, and :meth:`from_pretrained`/:meth:`from_config`
    need the same modules passed again.

    Other options are :class:`UNetConfig` fields, given as keywords.
    """

    config_class = UNetConfig

    def __init__(
        self,
        spatial_dims: int | UNetConfig,
        in_channels: int | None = None,
        out_channels: int | None = None,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        num_res_blocks: int | tuple[int, ...] = 2,
        attention_levels: tuple[bool | str, ...] | None = None,
        time_embedding: bool = False,
        num_classes: int | None = None,
        *,
        in_layer: nn.Module | None = None,
        out_layer: nn.Module | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        for key, module in (("in_layer", in_layer), ("out_layer", out_layer)):
            if module is not None and not isinstance(module, nn.Module):
                raise TypeError(f"{key} must be an nn.Module, got {type(module).__name__}")
        if isinstance(spatial_dims, UNetConfig):  # UNet(config): used as it is
            if in_channels is not None or out_channels is not None or options:
                raise TypeError("UNet(config) takes no other options; use config.replace(...)")
            cfg = spatial_dims
        else:
            options.setdefault("custom_in_layer", in_layer is not None)
            options.setdefault("custom_out_layer", out_layer is not None)
            cfg = UNetConfig(
                spatial_dims, in_channels, out_channels, channels, num_res_blocks,  # type: ignore[arg-type]
                attention_levels, time_embedding=time_embedding, num_classes=num_classes,
                **options,
            )  # fmt: skip
        for key, module, flag in (
            ("in_layer", in_layer, cfg.custom_in_layer),
            ("out_layer", out_layer, cfg.custom_out_layer),
        ):
            if flag != (module is not None):
                raise ValueError(
                    f"custom_{key}={flag} but {key} was {'not ' if module is None else ''}given; "
                    f"a config saved from a model with a custom {key} needs {key}=<the module>"
                )
        self.config = cfg
        self._factors = cfg.downsample_factors  # inputs are padded to multiples of these
        self._build(cfg, in_layer, out_layer)

    # ---- construction ---------------------------------------------------------------------
    def _build(
        self, cfg: UNetConfig, in_layer: nn.Module | None, out_layer: nn.Module | None
    ) -> None:
        sd, ch = cfg.spatial_dims, cfg.channels
        norm: Any = cfg.norm
        if isinstance(norm, str) and norm.lower() == "group":  # bind num_groups once
            norm = functools.partial(make_norm, "group", sd, num_groups=cfg.num_groups)
        embed_dim = cfg.embed_dim()
        block_cls = BLOCKS[cfg.block]
        attn_args = dict(
            norm=norm, head_dim=cfg.attention_head_dim, pos_embedding=cfg.pos_embedding,
            cbam_kernel_size=cfg.attention_kernel_size, **cfg.reductions(),
        )  # fmt: skip
        in_branch = cfg.attention_placement == "residual"

        def unit(c_in: int, c_out: int, kinds: tuple[str, ...], part: str, level: int) -> Unit:
            drop = cfg.dropout if cfg.dropout_in in ("all", part) else 0.0
            attn = make_attention(kinds, sd, c_out, **attn_args)
            block = block_cls(
                sd, c_in, c_out, embed_dim, cfg.level_kernel(level), norm, cfg.activation, drop,
                cfg.padding_mode, kernel_sizes=cfg.conv_kernels(level),
                embed_mode=cfg.time_injection, attn=attn if in_branch else None,
            )  # fmt: skip
            return Unit(block, None if in_branch else attn)

        self.time_embed = (
            TimeEmbedding(embed_dim, cfg.time_freq_dim or ch[0], cfg.activation)  # type: ignore[arg-type]
            if cfg.time_embedding
            else None
        )
        self.class_embed = (
            ClassEmbedding(cfg.num_classes, embed_dim)  # type: ignore[arg-type]
            if cfg.num_classes is not None
            else None
        )
        self.emb_act = activation(cfg.activation) if embed_dim else None
        k0 = cfg.level_kernel(0)
        pad0 = tuple(k // 2 for k in k0)
        self.stem = in_layer or conv(
            sd, cfg.in_channels, ch[0], k0, padding=pad0, padding_mode=cfg.padding_mode
        )

        per_block = cfg.skip_connections == "block"
        attn, nrb, last = cfg.attention(), cfg.res_blocks(), len(ch) - 1
        factors = cfg.down_factors()
        skip_ch = [ch[0]] if per_block else []
        c = ch[0]
        down = []
        for i, width in enumerate(ch):
            units = []
            for _ in range(nrb[i]):
                units.append(unit(c, width, attn[i], "encoder", i))
                c = width
                if per_block:
                    skip_ch.append(c)
            if not per_block:
                skip_ch.append(c)
            resample = (
                Downsample(sd, c, cfg.downsample, cfg.padding_mode, factors[i])
                if i < last
                else None
            )
            if resample is not None and per_block:
                skip_ch.append(c)
            down.append(Level(units, resample))
        self.down = nn.ModuleList(down)
        self.mid = nn.ModuleList(
            [unit(c, c, cfg.mid_attention(), "encoder", last), unit(c, c, (), "encoder", last)]
        )
        skip_kinds = cfg.skip_attention_kinds()
        up = []
        for i in reversed(range(len(ch))):
            units, gates, skip_attn = [], [], []
            n_units = nrb[i] + 1 if per_block else nrb[i]
            for j in range(n_units):
                s = skip_ch.pop() if (per_block or j == 0) else 0
                if s and cfg.attention_gates:
                    gates.append(AttentionGate(sd, s, c))
                if s and skip_kinds[i]:
                    skip_attn.append(make_skip_attention(skip_kinds[i], sd, s, c, **attn_args))
                units.append(unit(c + s, ch[i], attn[i], "decoder", i))
                c = ch[i]
            resample = (
                Upsample(sd, c, cfg.upsample, cfg.padding_mode, factors[i - 1]) if i > 0 else None
            )
            up.append(Level(units, resample, gates, skip_attn))
        self.up = nn.ModuleList(up)
        self._skips_per_up_level = [
            (nrb[i] + 1 if per_block else 1) for i in reversed(range(len(ch)))
        ]
        if out_layer is not None:
            self.head: nn.Module = out_layer
        elif cfg.block == "residual":  # pre-activation blocks leave un-normalized features
            self.head = nn.Sequential(
                make_norm(norm, sd, c),
                activation(cfg.activation),
                conv(sd, c, cfg.out_channels, k0, padding=pad0, padding_mode=cfg.padding_mode),
            )
        else:
            self.head = conv(sd, c, cfg.out_channels, 1)

    # ---- public attributes --------------------------------------------------------------------
    @property
    def spatial_dims(self) -> int:
        return self.config.spatial_dims

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    @property
    def out_channels(self) -> int:
        return self.config.out_channels

    @property
    def num_classes(self) -> int | None:
        return self.config.num_classes

    @property
    def time_embedding(self) -> bool:
        return self.config.time_embedding

    @property
    def gradient_checkpointing(self) -> bool:
        return self.config.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.config = self.config.replace(gradient_checkpointing=bool(value))

    # ---- forward ------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None
    ) -> Tensor:
        """``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``; ``t`` (B,) timesteps when
        ``time_embedding``; ``y`` (B,) class ids in ``[0, num_classes]`` (``num_classes`` = null,
        also used when ``y`` is None)."""
        t, y = self._check_inputs(x, t, y)
        emb = self._embed(x, t, y)
        spatial = x.shape[2:]
        x, pads = pad_to_multiple(x, self._factors, self.config.input_pad_mode)

        h = self.stem(x)
        per_block = self.config.skip_connections == "block"
        skips = [h] if per_block else []
        for level in self.down:
            for unit in level.units:
                h = self._run(unit, h, emb)
                if per_block:
                    skips.append(h)
            if not per_block:
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                if per_block:
                    skips.append(h)
        for unit in self.mid:
            h = self._run(unit, h, emb)
        for level, n_skips in zip(self.up, self._skips_per_up_level):
            for j, unit in enumerate(level.units):
                if j < n_skips:
                    s = skips.pop()
                    if level.gates is not None:
                        s = level.gates[j](s, h)
                    if level.skip_attn is not None:
                        s = level.skip_attn[j](s, h)
                    h = torch.cat([h, s], dim=1)  # (B, C_h + C_skip, *spatial)
                h = self._run(unit, h, emb)
            if level.resample is not None:
                h = level.resample(h)
        return crop(self.head(h), pads, spatial)  # (B, out_channels, *spatial)

    def _run(self, unit: nn.Module, h: Tensor, emb: Tensor | None) -> Tensor:
        if self.config.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(unit, h, emb, use_reentrant=False)  # type: ignore[no-any-return]
        return unit(h, emb)

    def _embed(self, x: Tensor, t: Tensor | None, y: Tensor | None) -> Tensor | None:
        emb = None
        if self.time_embed is not None and t is not None:
            emb = self.time_embed(t)  # (B, E)
        if self.class_embed is not None and y is not None:
            c = self.class_embed(y)  # (B, E)
            emb = c if emb is None else emb + c
        return None if emb is None or self.emb_act is None else self.emb_act(emb)

    def _check_inputs(
        self, x: Tensor, t: Tensor | float | None, y: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        cfg = self.config
        check_image(x, cfg.spatial_dims, cfg.in_channels, next(self.stem.parameters(), None))
        check_sizes(x, self._factors, f"{cfg.num_levels} levels")
        return check_conditioning(x, t, y, cfg.time_embedding, cfg.num_classes)

    # ---- configs and checkpoints --------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        config: UNetConfig | dict[str, Any],
        in_layer: nn.Module | None = None,
        out_layer: nn.Module | None = None,
    ) -> UNet:
        """Build a fresh model from a :class:`UNetConfig` (or its ``to_dict()``)."""
        if isinstance(config, dict):
            config = UNetConfig.from_dict(config)
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig or dict, got {type(config).__name__}")
        return cls(config, in_layer=in_layer, out_layer=out_layer)

"""UNet: a U-Net generated from a list of channel widths, one code path for every spatial_dims."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ndunet.blocks import BLOCKS, Downsample, Unit, Upsample, make_attention
from ndunet.functional import pad_nd
from ndunet.layers.activation import activation
from ndunet.layers.attention import AttentionGate
from ndunet.layers.conv import conv
from ndunet.layers.embedding import ClassEmbedding, TimeEmbedding
from ndunet.layers.norm import norm as make_norm
from ndunet.models.saving import PretrainedMixin
from ndunet.models.unet_config import UNetConfig

__all__ = ["UNet", "UNetConfig"]


class Level(nn.Module):
    """The units of one resolution, optional gates on their skips, and the resampling after them."""

    def __init__(
        self, units: list[Unit], resample: nn.Module | None, gates: list[nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.resample = resample
        self.gates = nn.ModuleList(gates) if gates else None


class UNet(PretrainedMixin, nn.Module):
    """U-Net for ``(B, in_channels, *spatial)`` inputs with ``spatial_dims`` spatial axes.

    Encoder level ``i`` has ``num_res_blocks[i]`` blocks of width ``channels[i]`` (any positive
    widths, in any order: a 1x1 conv adapts channels wherever they change), then halves the
    resolution; a bottleneck (block, attention, block) follows and the decoder mirrors the encoder.
    ``skip_connections="block"`` keeps a skip after every encoder block (ADM/diffusers layout,
    ``num_res_blocks + 1`` decoder blocks per level); ``"level"`` keeps one per level (the classic
    U-Net, https://arxiv.org/abs/1505.04597). Spatial sizes that are not multiples of
    ``2 ** (len(channels) - 1)`` are padded inside (``input_pad_mode``) and cropped back.

    ``in_layer``/``out_layer`` replace the stem (``in_channels -> channels[0]``, keeping the
    spatial shape) and the head (``channels[0] -> anything``). They are not part of the JSON
    config: it records only that they exist (``custom_in_layer``/``custom_out_layer``), their
    weights are saved by :meth:`save_pretrained`, and :meth:`from_pretrained`/:meth:`from_config`
    need the same modules passed again.

    Other options are :class:`UNetConfig` fields, given as keywords.
    """

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

        def unit(c_in: int, c_out: int, attn: str | None, part: str) -> Unit:
            drop = cfg.dropout if cfg.dropout_in in ("all", part) else 0.0
            block = block_cls(
                sd, c_in, c_out, embed_dim, cfg.kernel_size, norm, cfg.activation, drop,
                cfg.padding_mode,
            )  # fmt: skip
            return Unit(block, self._attention(attn, c_out, norm))

        self.time_embed = (
            TimeEmbedding(embed_dim, ch[0], cfg.activation)  # type: ignore[arg-type]
            if cfg.time_embedding
            else None
        )
        self.class_embed = (
            ClassEmbedding(cfg.num_classes, embed_dim)  # type: ignore[arg-type]
            if cfg.num_classes is not None
            else None
        )
        self.emb_act = activation(cfg.activation) if embed_dim else None
        k = cfg.kernel_size
        self.stem = in_layer or conv(
            sd, cfg.in_channels, ch[0], k, padding=k // 2, padding_mode=cfg.padding_mode
        )

        per_block = cfg.skip_connections == "block"
        attn, nrb, last = cfg.attention(), cfg.res_blocks(), len(ch) - 1
        skip_ch = [ch[0]] if per_block else []
        c = ch[0]
        down = []
        for i, width in enumerate(ch):
            units = []
            for _ in range(nrb[i]):
                units.append(unit(c, width, attn[i], "encoder"))
                c = width
                if per_block:
                    skip_ch.append(c)
            if not per_block:
                skip_ch.append(c)
            resample = Downsample(sd, c, cfg.downsample, cfg.padding_mode) if i < last else None
            if resample is not None and per_block:
                skip_ch.append(c)
            down.append(Level(units, resample))
        self.down = nn.ModuleList(down)
        self.mid = nn.ModuleList(
            [unit(c, c, cfg.mid_attention(), "encoder"), unit(c, c, None, "encoder")]
        )
        up = []
        for i in reversed(range(len(ch))):
            units, gates = [], []
            n_units = nrb[i] + 1 if per_block else nrb[i]
            for j in range(n_units):
                s = skip_ch.pop() if (per_block or j == 0) else 0
                if s and cfg.attention_gates:
                    gates.append(AttentionGate(sd, s, c))
                units.append(unit(c + s, ch[i], attn[i], "decoder"))
                c = ch[i]
            resample = Upsample(sd, c, cfg.upsample, cfg.padding_mode) if i > 0 else None
            up.append(Level(units, resample, gates))
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
                conv(sd, c, cfg.out_channels, k, padding=k // 2, padding_mode=cfg.padding_mode),
            )
        else:
            self.head = conv(sd, c, cfg.out_channels, 1)

    def _attention(self, kind: str | None, channels: int, norm: Any) -> nn.Module | None:
        cfg = self.config
        return make_attention(
            kind, cfg.spatial_dims, channels, norm=norm, head_dim=cfg.attention_head_dim,
            pos_embedding=cfg.pos_embedding,
        )  # fmt: skip

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
        factor = self.config.downsample_factor
        pads = [((-s) % factor // 2, (-s) % factor - (-s) % factor // 2) for s in spatial]
        if any(a or b for a, b in pads):
            x = pad_nd(x, pads, self.config.input_pad_mode)  # (B, C, *padded)

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
                    h = torch.cat([h, s], dim=1)  # (B, C_h + C_skip, *spatial)
                h = self._run(unit, h, emb)
            if level.resample is not None:
                h = level.resample(h)
        h = self.head(h)
        if any(a or b for a, b in pads) and h.dim() == x.dim():
            crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, spatial))
            index = (slice(None), slice(None), *crop)
            h = h[index]  # (B, out_channels, *spatial)
        return h

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
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point torch.Tensor, got "
                f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}"
            )
        weight = next(self.stem.parameters(), None)  # the first layer x meets
        if (
            weight is not None
            and x.dtype != weight.dtype
            and not torch.is_autocast_enabled(x.device.type)
        ):
            raise TypeError(
                f"x has dtype {x.dtype} but the model's weights are {weight.dtype}; convert the "
                f"input (x.to({weight.dtype})), the model (model.to({x.dtype})), or run under "
                "torch.autocast (trainer: amp='bf16')"
            )
        if x.dim() != cfg.spatial_dims + 2:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; expected (batch, {cfg.in_channels}, *spatial) "
                f"with spatial_dims={cfg.spatial_dims}, i.e. {cfg.spatial_dims + 2} dims"
            )
        if x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"x has {x.shape[1]} channels (shape {tuple(x.shape)}); expected "
                f"in_channels={cfg.in_channels}"
            )
        # Sizes are padded to multiples of `factor`; at most half of the padded input may be
        # padding (so the bottleneck still sees data, and reflect padding is possible).
        factor = cfg.downsample_factor
        if any(2 * s <= factor for s in x.shape[2:]):
            raise ValueError(
                f"x spatial shape {tuple(x.shape[2:])} is too small for {cfg.num_levels} levels: "
                f"every size must be > 2**{cfg.num_levels - 1} / 2 = {factor // 2}"
            )
        batch = x.shape[0]
        if cfg.time_embedding:
            if t is None:
                raise ValueError("t is required: the model was built with time_embedding=True")
            t = torch.as_tensor(t, device=x.device)
            if t.dim() == 0:
                t = t.expand(batch)
            if t.shape != (batch,):
                raise ValueError(f"t must have shape ({batch},) or (), got {tuple(t.shape)}")
        elif t is not None:
            raise ValueError("t was given but the model was built with time_embedding=False")
        k = cfg.num_classes
        if k is None:
            if y is not None:
                raise ValueError("y was given but the model was built with num_classes=None")
            return t, None
        if y is None:
            return t, torch.full((batch,), k, dtype=torch.long, device=x.device)  # null class
        if not isinstance(y, Tensor) or y.shape != (batch,) or y.is_floating_point():
            raise ValueError(
                f"y must be an integer tensor of shape ({batch},), got "
                f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
            )
        if not torch.compiler.is_compiling() and y.numel() and (y.min() < 0 or y.max() > k):
            raise ValueError(
                f"y holds class ids in [{int(y.min())}, {int(y.max())}]; expected [0, {k}] "
                f"(num_classes={k}; id {k} is the null class)"
            )
        return t, y

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

    def summary(self, input_shape: tuple[int, ...], **kwargs: Any) -> Any:
        """Per-layer table (name, output shape, parameters); see :func:`ndunet.summary`."""
        from ndunet.model_summary import summary

        return summary(self, input_shape, **kwargs)

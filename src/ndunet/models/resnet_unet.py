"""ResNetUNet: a U-Net whose encoder is a ResNet (any preset or layout), for any spatial_dims.

The design of the segmentation-models family's ``Unet`` (2-D there): the ResNet's stem and stage
outputs are the skips; each decoder stage resizes to the next skip's size, concatenates it and
applies two conv-norm-act steps; a last stage returns to the input's size when the stem
down-samples; a conv head maps to ``out_channels``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ndunet._checks import check_int
from ndunet.attention_units import attention_kinds, make_attention, make_skip_attention
from ndunet.blocks import ConvBlock
from ndunet.config import Config, config
from ndunet.functional import interpolate_nd
from ndunet.layers.conv import conv
from ndunet.layers.norm import norm as make_norm
from ndunet.models.inputs import check_image, check_sizes, crop, pad_to_multiple
from ndunet.models.resnet import ResNet
from ndunet.models.resnet_config import ResNetConfig, preset_layout
from ndunet.models.saving import PretrainedMixin
from ndunet.models.unet_config import (
    MAX_WIDTH,
    AttentionSpec,
    check_norm_activation,
    norm_activation_to_json,
)

__all__ = ["ResNetUNet", "ResNetUNetConfig"]

Preset = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@config
class ResNetUNetConfig(Config):
    """Options of :class:`ResNetUNet`. The encoder is the preset ``encoder`` unless
    ``encoder_layers``/``encoder_block`` give a custom layout; ``encoder_depth`` uses only the
    first stages (the stem always; the others are not built). ``decoder_channels`` has one width per decoder stage, deepest
    first (``num_decoder_stages()`` of them; None: 256, 128, 64, 32, 16, ... as segmentation
    models' Unet). ``skip_attention`` has one attention spec per skip (deepest first),
    ``decoder_attention`` one per decoder stage (see :mod:`ndunet.attention_units`)."""

    unchecked: ClassVar[tuple[str, ...]] = ("norm", "activation")

    spatial_dims: int
    in_channels: int
    out_channels: int
    encoder: Preset = "resnet34"
    encoder_layers: tuple[int, ...] | None = None  # blocks per stage, instead of the preset's
    encoder_block: Literal["basic", "bottleneck"] | None = None  # instead of the preset's
    encoder_widths: tuple[int, ...] = (64, 128, 256, 512)
    encoder_depth: int | None = None  # stages used; None: all
    stem_channels: int = 64
    stem_kernel_size: int = 7
    stem_stride: int = 2
    stem_pool: bool = True
    decoder_channels: tuple[int, ...] | None = None
    skip_attention: tuple[AttentionSpec, ...] | None = None
    decoder_attention: tuple[AttentionSpec, ...] | None = None
    attention_head_dim: int = 32
    attention_reduction: int | None = None  # None: 8 for "channel", 16 for "cbam"
    attention_kernel_size: int = 7
    upsample: Literal["nearest", "linear"] = "nearest"
    norm: Any = "batch"
    num_groups: int = 32
    activation: Any = "relu"
    input_pad_mode: Literal["zeros", "reflect", "replicate", "circular"] = "replicate"

    def check_values(self) -> None:
        check_int("out_channels", self.out_channels, 1, MAX_WIDTH)
        layers = self.encoder_layers or preset_layout(self.encoder, "encoder")["layers"]
        if len(self.encoder_widths) != len(layers):
            raise ValueError(
                f"encoder_widths={list(self.encoder_widths)!r} is not valid with encoder_layers="
                f"{list(layers)!r}; expected one width per stage"
            )
        if self.encoder_depth is not None:
            check_int("encoder_depth", self.encoder_depth, 1, len(layers))
        self.encoder_config()  # checks the encoder's options
        n = self.num_decoder_stages()
        for name, value, count in (
            ("decoder_channels", self.decoder_channels, n),
            ("skip_attention", self.skip_attention, self.depth()),
            ("decoder_attention", self.decoder_attention, n),
        ):
            if value is not None and len(value) != count:
                raise ValueError(
                    f"{name}={list(value)!r} has {len(value)} entries; expected {count} (one per "
                    f"{'skip' if name == 'skip_attention' else 'decoder stage'}, deepest first)"
                )
        for c in self.decoder_widths():
            check_int("decoder_channels", c, 1, MAX_WIDTH)
        for a in self.skip_attention or ():
            attention_kinds(a, "skip_attention", "gate", skip=True)
        for a in self.decoder_attention or ():
            attention_kinds(a, "decoder_attention")
        check_int("attention_head_dim", self.attention_head_dim, 1, MAX_WIDTH)
        if self.attention_reduction is not None:
            check_int("attention_reduction", self.attention_reduction, 1, MAX_WIDTH)
        k = self.attention_kernel_size
        if k < 1 or k % 2 == 0:
            raise ValueError(f"attention_kernel_size={k!r} is not valid; expected an odd int >= 1")
        check_norm_activation(self.norm, self.activation)

    def encoder_config(self) -> ResNetConfig:
        """The encoder's :class:`ResNetConfig`: the stages used, no classifier."""
        layout = preset_layout(self.encoder, "encoder")
        depth = self.depth()
        return ResNetConfig(
            self.spatial_dims, self.in_channels, None,
            layers=(self.encoder_layers or layout["layers"])[:depth],
            block=self.encoder_block or layout["block"], widths=self.encoder_widths[:depth],
            stem_channels=self.stem_channels, stem_kernel_size=self.stem_kernel_size,
            stem_stride=self.stem_stride, stem_pool=self.stem_pool, norm=self.norm,
            num_groups=self.num_groups, activation=self.activation,
        )  # fmt: skip

    def depth(self) -> int:
        """Encoder stages used."""
        layers = self.encoder_layers or preset_layout(self.encoder, "encoder")["layers"]
        return self.encoder_depth or len(layers)

    def scales(self) -> tuple[int, ...]:
        """Down-sampling factor of each skip (the stem's, then each stage's) vs the input."""
        factors = self.encoder_config().stage_factors()  # stem, pool + stage 1, stage 2, ...
        return tuple(math.prod(factors[: i + 1]) for i in range(self.depth() + 1))

    def num_decoder_stages(self) -> int:
        """One per skip below the deepest feature, plus one back to the input's size when the
        stem down-samples."""
        return self.depth() + (1 if self.scales()[0] > 1 else 0)

    def decoder_widths(self) -> tuple[int, ...]:
        n = self.num_decoder_stages()
        return self.decoder_channels or tuple(max(16, 256 >> i) for i in range(n))

    def to_dict(self) -> dict[str, Any]:
        return norm_activation_to_json(super().to_dict(), self.norm, self.activation)


class ResNetUNet(PretrainedMixin, nn.Module):
    """U-Net with a ResNet encoder: ``(B, in_channels, *spatial) -> (B, out_channels, *spatial)``
    for any spatial_dims. Sizes that are not multiples of the encoder's total down-sampling are
    padded inside (``input_pad_mode``) and cropped back. Options: :class:`ResNetUNetConfig`."""

    config_class = ResNetUNetConfig

    def __init__(self, spatial_dims: int | ResNetUNetConfig, **options: Any) -> None:
        super().__init__()
        if isinstance(spatial_dims, ResNetUNetConfig):
            if options:
                raise TypeError("ResNetUNet(config) takes no other options; use config.replace")
            cfg = spatial_dims
        else:
            cfg = ResNetUNetConfig(spatial_dims, **options)
        self.config = cfg
        sd = cfg.spatial_dims
        self.encoder = ResNet(cfg.encoder_config())
        norm: Any = functools.partial(make_norm, cfg.norm, sd)
        if isinstance(cfg.norm, str) and cfg.norm.lower() == "group":
            norm = functools.partial(make_norm, "group", sd, num_groups=cfg.num_groups)
        attn_args = {
            "norm": norm, "head_dim": cfg.attention_head_dim,
            "cbam_kernel_size": cfg.attention_kernel_size,
            "cbam_reduction": cfg.attention_reduction or 16,
            "channel_reduction": cfg.attention_reduction or 8,
        }  # fmt: skip
        enc_ch = self.encoder.config.stage_channels()
        widths, skip_specs = cfg.decoder_widths(), cfg.skip_attention or (None,) * cfg.depth()
        dec_specs = cfg.decoder_attention or (None,) * len(widths)
        skips = list(reversed(enc_ch[:-1])) + [0] * (len(widths) - cfg.depth())
        c, blocks, skip_attn = enc_ch[-1], [], []
        for k, (width, s) in enumerate(zip(widths, skips)):
            spec = skip_specs[k] if s else None
            skip_attn.append(make_skip_attention(spec, sd, s, c, **attn_args) if s else None)
            blocks.append(
                ConvBlock(
                    sd, c + s, width, None, 3, norm, cfg.activation, kernel_sizes=(3, 3),
                    attn=make_attention(dec_specs[k], sd, width, **attn_args),
                )
            )  # fmt: skip
            c = width
        self.decoder = nn.ModuleList(blocks)
        self.skip_attn = nn.ModuleList([m or nn.Identity() for m in skip_attn])
        self.head = conv(sd, c, cfg.out_channels, 3, padding=1)
        self._factor = cfg.scales()[-1]

    @property
    def spatial_dims(self) -> int:
        return self.config.spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.config
        check_image(x, cfg.spatial_dims, cfg.in_channels, self.encoder.conv1.weight)
        factors = (self._factor,) * cfg.spatial_dims
        check_sizes(x, factors, f"a {cfg.depth()}-stage ResNet encoder")
        spatial = x.shape[2:]
        x, pads = pad_to_multiple(x, factors, cfg.input_pad_mode)
        feats = self.encoder.features(x)
        h = feats.pop()
        for block, attn in zip(self.decoder, self.skip_attn):
            if feats:
                s = feats.pop()
                h = interpolate_nd(h, size=tuple(s.shape[2:]), mode=cfg.upsample)
                if not isinstance(attn, nn.Identity):
                    s = attn(s, h)
                h = torch.cat([h, s], dim=1)  # (B, C_h + C_skip, *spatial)
            else:
                h = interpolate_nd(h, size=tuple(x.shape[2:]), mode=cfg.upsample)
            h = block(h)
        return crop(self.head(h), pads, spatial)  # (B, out_channels, *spatial)

"""ResNet for any spatial_dims: torchvision's ResNet-18/34/50/101/152 and custom layouts.

The module names and parameter shapes at ``spatial_dims=2`` are torchvision's (``conv1``,
``bn1``, ``layer1``..., ``fc``; ``downsample.0/1`` in blocks), so the parameter counts are the
published ones and a torchvision state dict loads as it is. Every layer comes from
``ndunet.layers``' factories, so the same network runs on 1-D signals, volumes and 4-D data.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import Tensor, nn

from ndunet.layers.activation import activation
from ndunet.layers.conv import conv
from ndunet.layers.norm import norm as make_norm
from ndunet.layers.pool import max_pool
from ndunet.models.inputs import check_image
from ndunet.models.resnet_config import ResNetConfig
from ndunet.models.saving import PretrainedMixin

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNetConfig",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


class BasicBlock(nn.Module):
    """Two 3-wide convs with norms, the first strided, plus the (projected) input, then act."""

    expansion = 1

    def __init__(
        self, spatial_dims: int, in_channels: int, width: int, stride: int, norm: Any, act: Any
    ) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = conv(spatial_dims, in_channels, width, 3, stride, padding=1, bias=False)
        self.bn1 = norm(width)
        self.relu = activation(act)
        self.conv2 = conv(spatial_dims, width, out, 3, padding=1, bias=False)
        self.bn2 = norm(out)
        self.downsample = _projection(spatial_dims, in_channels, out, stride, norm)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1-3-1 convs (the 3-wide one strided, ResNet v1.5 as torchvision) widening 4x, plus the
    (projected) input, then act."""

    expansion = 4

    def __init__(
        self, spatial_dims: int, in_channels: int, width: int, stride: int, norm: Any, act: Any
    ) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = conv(spatial_dims, in_channels, width, 1, bias=False)
        self.bn1 = norm(width)
        self.conv2 = conv(spatial_dims, width, width, 3, stride, padding=1, bias=False)
        self.bn2 = norm(width)
        self.conv3 = conv(spatial_dims, width, out, 1, bias=False)
        self.bn3 = norm(out)
        self.relu = activation(act)
        self.downsample = _projection(spatial_dims, in_channels, out, stride, norm)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        h = self.bn3(self.conv3(h))
        return self.relu(h + (x if self.downsample is None else self.downsample(x)))


def _projection(
    spatial_dims: int, in_channels: int, out_channels: int, stride: int, norm: Any
) -> nn.Module | None:
    """A strided 1x1 conv + norm where the block changes the shape, else None (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        conv(spatial_dims, in_channels, out_channels, 1, stride, bias=False), norm(out_channels)
    )


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(PretrainedMixin, nn.Module):
    """ResNet (https://arxiv.org/abs/1512.03385) for ``(B, in_channels, *spatial)`` inputs:
    ``(B, num_classes)`` logits, or ``(B, out_features)`` pooled features when ``num_classes``
    is None. ``ResNet(config)`` or ``ResNet(spatial_dims, ...)`` with :class:`ResNetConfig`'s
    options; :func:`resnet18` ... :func:`resnet152` for the presets. Any spatial size >= 1 works
    (strided layers round up). :meth:`features` gives the stem's and every stage's maps.
    """

    config_class = ResNetConfig

    def __init__(self, spatial_dims: int | ResNetConfig, **options: Any) -> None:
        super().__init__()
        if isinstance(spatial_dims, ResNetConfig):
            if options:
                raise TypeError("ResNet(config) takes no other options; use config.replace(...)")
            cfg = spatial_dims
        else:
            cfg = ResNetConfig(spatial_dims, **options)
        self.config = cfg
        sd = cfg.spatial_dims
        norm: Any = functools.partial(make_norm, cfg.norm, sd)
        if isinstance(cfg.norm, str) and cfg.norm.lower() == "group":
            norm = functools.partial(make_norm, "group", sd, num_groups=cfg.num_groups)
        k = cfg.stem_kernel_size
        self.conv1 = conv(
            sd, cfg.in_channels, cfg.stem_channels, k, cfg.stem_stride, k // 2, bias=False
        )
        self.bn1 = norm(cfg.stem_channels)
        self.relu = activation(cfg.activation)
        self.maxpool = max_pool(sd, 3, 2, 1) if cfg.stem_pool else nn.Identity()
        block = BLOCKS[cfg.block]
        c = cfg.stem_channels
        for i, (n, width) in enumerate(zip(cfg.layers, cfg.widths)):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(sd, c, width, stride, norm, cfg.activation))
                c = width * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c, cfg.num_classes) if cfg.num_classes is not None else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torchvision's initialisation: He-normal (fan-out) convs, norms at scale 1 shift 0,
        and with ``zero_init_residual`` each block's last norm at scale 0."""
        for m in self.modules():
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if not isinstance(weight, Tensor) or m is self.fc:
                continue
            if weight.dim() > 2:  # a convolution of any spatial_dims
                nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
            elif weight.dim() == 1 and isinstance(bias, Tensor):  # an affine norm
                nn.init.ones_(weight)
                nn.init.zeros_(bias)
        if self.config.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    weight = getattr(m.last_norm(), "weight", None)
                    if weight is not None:
                        nn.init.zeros_(weight)

    @property
    def spatial_dims(self) -> int:
        return self.config.spatial_dims

    @property
    def stages(self) -> list[nn.Module]:
        """``layer1``, ``layer2``, ...: the stages in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.config.layers))]

    def features(self, x: Tensor, depth: int | None = None) -> list[Tensor]:
        """The stem's output (before the pool) and the first ``depth`` stages' outputs (all
        stages when None): ``(B, stage_channels[i], *spatial / stage factors)`` each."""
        check_image(x, self.config.spatial_dims, self.config.in_channels, self.conv1.weight)
        h = self.relu(self.bn1(self.conv1(x)))
        out = [h]
        h = self.maxpool(h)
        for stage in self.stages[:depth]:
            h = stage(h)
            out.append(h)
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)[-1]
        pooled = h.flatten(2).mean(-1)  # (B, C, prod(spatial)) -> (B, C): global average pool
        return self.fc(self.dropout(pooled))  # (B, num_classes)

    @classmethod
    def preset(cls, name: str, spatial_dims: int, **options: Any) -> ResNet:
        """A named ResNet ("resnet18" ... "resnet152"); see :meth:`ResNetConfig.preset`."""
        return cls(ResNetConfig.preset(name, spatial_dims, **options))


def resnet18(spatial_dims: int = 2, **options: Any) -> ResNet:
    """ResNet-18 (basic blocks 2-2-2-2); 11,689,512 parameters at 2-D, 3 -> 1000."""
    return ResNet.preset("resnet18", spatial_dims, **options)


def resnet34(spatial_dims: int = 2, **options: Any) -> ResNet:
    """ResNet-34 (basic blocks 3-4-6-3); 21,797,672 parameters at 2-D, 3 -> 1000."""
    return ResNet.preset("resnet34", spatial_dims, **options)


def resnet50(spatial_dims: int = 2, **options: Any) -> ResNet:
    """ResNet-50 (bottlenecks 3-4-6-3); 25,557,032 parameters at 2-D, 3 -> 1000."""
    return ResNet.preset("resnet50", spatial_dims, **options)


def resnet101(spatial_dims: int = 2, **options: Any) -> ResNet:
    """ResNet-101 (bottlenecks 3-4-23-3); 44,549,160 parameters at 2-D, 3 -> 1000."""
    return ResNet.preset("resnet101", spatial_dims, **options)


def resnet152(spatial_dims: int = 2, **options: Any) -> ResNet:
    """ResNet-152 (bottlenecks 3-8-36-3); 60,192,808 parameters at 2-D, 3 -> 1000."""
    return ResNet.preset("resnet152", spatial_dims, **options)

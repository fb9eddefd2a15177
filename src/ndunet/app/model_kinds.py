"""The networks a run file selects with ``[model] type`` other than the default U-Net: a ResNet
(a preset such as "resnet18", or "resnet" with its own layout) for one output per sample, and
"resnet_unet" (a U-Net with a ResNet encoder) for dense outputs. Channels, classes and
spatial_dims come from the data when [model] does not give them."""

from __future__ import annotations

from typing import Any

from torch import nn

from ndunet.app.run_config import RunConfig
from ndunet.config import ConfigError


def build_model_kind(cfg: RunConfig, data: Any) -> nn.Module:
    """The network of ``cfg.model["type"]`` for ``data`` (a ResNet kind or "resnet_unet")."""
    from ndunet.models import MODEL_KINDS, ResNet, ResNetUNet

    kind = cfg.model["type"]
    where = cfg.where("model", "type")
    if cfg.task.type != "supervised":
        raise ConfigError(
            f"is {kind!r}, which gives no time input; a diffusion run needs a denoiser that maps "
            'images to images at a timestep: use type = "unet"',
            "model.type",
            where,
        )
    if data.out_channels is None:
        raise ConfigError(f"dataset {cfg.data.name!r} has no targets to learn", "data", cfg.source)
    config_cls, layout = MODEL_KINDS[kind]
    values = {k: v for k, v in cfg.model.items() if k != "type"}
    values.setdefault("spatial_dims", data.spatial_dims)
    values.setdefault("in_channels", data.in_channels)
    per_sample = cfg.task.head == "pooled" or data.task == "classification"
    if kind == "resnet_unet":
        if cfg.task.head == "pooled":
            raise ConfigError(
                'is "resnet_unet", a dense network; for one output per sample (task.head = '
                '"pooled") use a ResNet, e.g. type = "resnet18"',
                "model.type",
                where,
            )
        values.setdefault("out_channels", data.out_channels)
        model_cls: Any = ResNetUNet
    else:
        if not per_sample:
            raise ConfigError(
                f"is {kind!r}, which gives one output per sample, but dataset {cfg.data.name!r} "
                f'is a {data.task} dataset; set task.head = "pooled", or use type = "resnet_unet"'
                " for per-voxel outputs",
                "model.type",
                where,
            )
        values.setdefault("num_classes", data.out_channels)
        model_cls = ResNet
    try:
        return model_cls(config_cls.from_dict({**layout, **values}))
    except ConfigError as e:
        raise cfg.located(e, "model") from None

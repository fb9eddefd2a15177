"""Models built from a config, for any spatial_dims: the U-Net, heads on it, ResNets and the
U-Net with a ResNet encoder.

Every model kind here is listed in ``MODEL_TYPES``: its folder's config.json names the type and
its config, so it rebuilds from the folder alone (``model_entry`` / ``build_model``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ndunet._checks import check_choice
from ndunet.config import Config, ConfigError
from ndunet.models.heads import UNetClassifier
from ndunet.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from ndunet.models.resnet_config import RESNET_PRESETS, ResNetConfig
from ndunet.models.resnet_unet import ResNetUNet, ResNetUNetConfig
from ndunet.models.unet import UNet
from ndunet.models.unet_config import UNetConfig

MODEL_TYPES: dict[str, type[nn.Module]] = {
    "UNet": UNet,
    "UNetClassifier": UNetClassifier,
    "ResNet": ResNet,
    "ResNetUNet": ResNetUNet,
}


# Run files choose a model kind with ``[model] type = "..."``: the config that checks its options,
# and the layout a preset name sets. A ResNet preset is a ResNet with its layout filled in.
MODEL_KINDS: dict[str, tuple[type[Config], dict[str, Any]]] = {
    "unet": (UNetConfig, {}),
    "resnet": (ResNetConfig, {}),
    **{name: (ResNetConfig, layout) for name, layout in RESNET_PRESETS.items()},
    "resnet_unet": (ResNetUNetConfig, {}),
}


def check_model_table(table: dict[str, Any]) -> dict[str, Any]:
    """A run file's [model] table, checked: ``type`` (default "unet", see ``MODEL_KINDS``) and
    every other key's name and type against that kind's config (the data fills the rest)."""
    kind = table.get("type", "unet")
    try:
        check_choice("type", kind, list(MODEL_KINDS))
    except ValueError as e:
        raise ConfigError(str(e), "type") from None
    cls, preset = MODEL_KINDS[kind]
    options = {k: v for k, v in table.items() if k != "type"}
    for key in preset:
        if key in options:
            raise ConfigError(
                f"{key}={options[key]!r} is not valid with type={kind!r}, which sets it; use "
                'type = "resnet" for a custom layout',
                key,
            )
    checked = cls.check_partial(options)
    return {"type": kind, **checked} if "type" in table else checked


def model_entry(model: nn.Module) -> dict[str, Any] | None:
    """``{"type": ..., "config": {...}}`` for a model kind of ``MODEL_TYPES``; None otherwise."""
    for name, cls in MODEL_TYPES.items():
        if type(model) is cls:
            return {"type": name, "config": model.config.to_dict()}  # type: ignore[operator]
    return None


def build_model(entry: dict[str, Any]) -> nn.Module:
    """A fresh model (random weights) from a :func:`model_entry`."""
    check_choice("model type", entry.get("type"), MODEL_TYPES)
    return MODEL_TYPES[entry["type"]].from_config(entry["config"])  # type: ignore[attr-defined]


__all__ = [
    "MODEL_KINDS",
    "MODEL_TYPES",
    "RESNET_PRESETS",
    "ResNet",
    "ResNetConfig",
    "ResNetUNet",
    "ResNetUNetConfig",
    "UNet",
    "UNetClassifier",
    "UNetConfig",
    "build_model",
    "check_model_table",
    "model_entry",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]

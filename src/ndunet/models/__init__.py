"""Models built from a config, for any spatial_dims: the U-Net, heads on it, ResNets and the
U-Net with a ResNet encoder.

Every model kind here is listed in ``MODEL_TYPES``: its folder's config.json names the type and
its config, so it rebuilds from the folder alone (``model_entry`` / ``build_model``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ndunet._checks import check_choice
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
    "model_entry",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]

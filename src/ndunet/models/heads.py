"""Heads on top of a U-Net, as importable modules that rebuild from their config alone."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ndunet.models.saving import PretrainedMixin
from ndunet.models.unet import UNet
from ndunet.models.unet_config import UNetConfig


class GlobalMean(nn.Module):
    """Mean over every spatial axis: ``(B, K, *spatial) -> (B, K)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1)  # (B, K, prod(spatial)) -> (B, K)


class UNetClassifier(PretrainedMixin, nn.Module):
    """A U-Net whose ``out_channels`` maps are averaged over space: one logit vector per sample
    (the classification head of the seed project's MNIST example). ``config`` is the U-Net's."""

    config_class = UNetConfig

    def __init__(self, config: UNetConfig | dict[str, Any]) -> None:
        super().__init__()
        self.unet = UNet.from_config(config)
        self.pool = GlobalMean()

    @property
    def config(self) -> UNetConfig:
        return self.unet.config

    @classmethod
    def from_config(cls, config: UNetConfig | dict[str, Any]) -> UNetClassifier:
        return cls(config)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.unet(x))  # (B, out_channels)

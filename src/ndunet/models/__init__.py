"""Models built from a config: the U-Net (any spatial_dims) and small heads."""

from ndunet.models.unet import UNet
from ndunet.models.unet_config import UNetConfig

__all__ = ["UNet", "UNetConfig"]

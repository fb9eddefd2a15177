"""Layers for any spatial_dims: the only place in ndunet that branches on spatial_dims."""

from ndunet._checks import lookup
from ndunet.layers.conv import (
    Conv3d,
    ConvNd,
    ConvTransposeNd,
    check_spatial_dims,
    conv,
    conv_transpose,
)
from ndunet.layers.norm import BatchNormNd, ChannelLayerNorm, GroupNorm, InstanceNormNd, norm
from ndunet.layers.pool import AvgPoolNd, MaxPoolNd, avg_pool, max_pool
from ndunet.layers.resample import UpsampleNd, upsample

__all__ = [
    "AvgPoolNd",
    "BatchNormNd",
    "ChannelLayerNorm",
    "Conv3d",
    "ConvNd",
    "ConvTransposeNd",
    "GroupNorm",
    "InstanceNormNd",
    "MaxPoolNd",
    "UpsampleNd",
    "avg_pool",
    "check_spatial_dims",
    "conv",
    "conv_transpose",
    "lookup",
    "max_pool",
    "norm",
    "upsample",
]

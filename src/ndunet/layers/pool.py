"""MaxPoolNd / AvgPoolNd for any spatial_dims, and factories that pick torch's own at N <= 3."""

from __future__ import annotations

from torch import Tensor, nn

from ndunet import functional as FN
from ndunet._checks import IntOrTuple, as_tuple, check_input
from ndunet.layers.conv import check_spatial_dims

_NATIVE_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_NATIVE_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _pool_args(
    n: int, kernel_size: IntOrTuple, stride: IntOrTuple | None, padding: IntOrTuple
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    kernel = as_tuple(kernel_size, n, "kernel_size", minimum=1)
    stride_t = kernel if stride is None else as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    for axis, (k, p) in enumerate(zip(kernel, padding_t)):
        if 2 * p > k:
            raise ValueError(
                f"padding={padding!r}: on axis {axis} it must be at most half the kernel size {k}"
            )
    return kernel, stride_t, padding_t


class MaxPoolNd(nn.Module):
    """N-D max pooling (floor mode), torch's MaxPool semantics for any spatial_dims."""

    def __init__(
        self,
        spatial_dims: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size, self.stride, self.padding = _pool_args(
            spatial_dims, kernel_size, stride, padding
        )
        self.dilation = as_tuple(dilation, spatial_dims, "dilation", minimum=1)

    def forward(self, input: Tensor) -> Tensor:
        check_input(input, self.spatial_dims)
        return FN.max_pool_nd(input, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
        )


class AvgPoolNd(nn.Module):
    """N-D average pooling (floor mode), torch's AvgPool semantics for any spatial_dims."""

    def __init__(
        self,
        spatial_dims: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple | None = None,
        padding: IntOrTuple = 0,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.kernel_size, self.stride, self.padding = _pool_args(
            spatial_dims, kernel_size, stride, padding
        )
        self.count_include_pad = count_include_pad

    def forward(self, input: Tensor) -> Tensor:
        check_input(input, self.spatial_dims)
        return FN.avg_pool_nd(
            input, self.kernel_size, self.stride, self.padding, self.count_include_pad
        )

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, "
            f"count_include_pad={self.count_include_pad}"
        )


def max_pool(
    spatial_dims: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    dilation: IntOrTuple = 1,
) -> nn.Module:
    """nn.MaxPool{1,2,3}d for spatial_dims <= 3, else MaxPoolNd."""
    n = check_spatial_dims(spatial_dims)
    kernel, stride_t, padding_t = _pool_args(n, kernel_size, stride, padding)
    if n <= 3:
        dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
        return _NATIVE_MAX[n](kernel, stride_t, padding_t, dilation_t)
    return MaxPoolNd(n, kernel, stride_t, padding_t, dilation)


def avg_pool(
    spatial_dims: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None = None,
    padding: IntOrTuple = 0,
    count_include_pad: bool = True,
) -> nn.Module:
    """nn.AvgPool{1,2,3}d for spatial_dims <= 3, else AvgPoolNd."""
    n = check_spatial_dims(spatial_dims)
    kernel, stride_t, padding_t = _pool_args(n, kernel_size, stride, padding)
    if n <= 3:
        return _NATIVE_AVG[n](kernel, stride_t, padding_t, count_include_pad=count_include_pad)
    return AvgPoolNd(n, kernel, stride_t, padding_t, count_include_pad)

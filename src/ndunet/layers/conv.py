"""ConvNd / ConvTransposeNd for any spatial_dims, and the factories that pick torch's own at N <= 3."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ndunet import functional as FN
from ndunet._checks import IntOrTuple, as_tuple, check_input
from ndunet.functional import onednn

PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NATIVE_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NATIVE_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def check_spatial_dims(spatial_dims: int) -> int:
    """Validate ``spatial_dims`` (an int >= 1)."""
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, int) or spatial_dims < 1:
        raise ValueError(f"spatial_dims={spatial_dims!r} must be an int >= 1")
    return spatial_dims


def _check_channels(in_channels: int, out_channels: int, groups: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups={groups!r} must be a positive int")
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"in_channels={in_channels} and out_channels={out_channels} must both be divisible "
            f"by groups={groups}"
        )


def _check_weight_size(
    kernel_size: IntOrTuple, in_channels: int, out_channels: int, shape: tuple[int, ...]
) -> None:
    """Refuse a weight over the size limit before torch allocates it, naming its largest factor."""
    if math.prod(shape[2:]) >= max(in_channels, out_channels):
        FN.check_numel("kernel_size", kernel_size, shape, "a weight")
    elif in_channels >= out_channels:
        FN.check_numel("in_channels", in_channels, shape, "a weight")
    else:
        FN.check_numel("out_channels", out_channels, shape, "a weight")


def _weight_shape(
    in_channels: int, out_channels: int, groups: int, kernel: tuple[int, ...], transposed: bool
) -> tuple[int, ...]:
    """Torch's weight layout: (out, in / groups, *kernel), in and out swapped when transposed."""
    if transposed:
        return (in_channels, out_channels // groups, *kernel)
    return (out_channels, in_channels // groups, *kernel)


def _conv_args(
    n: int,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: IntOrTuple | str,
    dilation: IntOrTuple,
    groups: int,
    padding_mode: str,
) -> tuple:
    """Validate a convolution's arguments; returns kernel, stride, padding, dilation, pad pairs."""
    _check_channels(in_channels, out_channels, groups)
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode={padding_mode!r} must be one of {_PADDING_MODES}")
    kernel = as_tuple(kernel_size, n, "kernel_size", minimum=1)
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    padding_t = padding if isinstance(padding, str) else as_tuple(padding, n, "padding")
    pads = FN.resolve_padding(padding_t, kernel, stride_t, dilation_t)  # checks 'same'/'valid'
    weight_shape = _weight_shape(in_channels, out_channels, groups, kernel, False)
    _check_weight_size(kernel_size, in_channels, out_channels, weight_shape)
    return kernel, stride_t, padding_t, dilation_t, pads


def _conv_transpose_args(
    n: int,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple,
    padding: IntOrTuple,
    output_padding: IntOrTuple,
    groups: int,
    dilation: IntOrTuple,
    padding_mode: str,
) -> tuple:
    """Validate a transposed convolution's arguments; returns the per-axis tuples."""
    _check_channels(in_channels, out_channels, groups)
    if padding_mode != "zeros":
        raise ValueError(
            f"padding_mode={padding_mode!r}: transposed convolution supports only 'zeros' "
            "(as torch's ConvTranspose)"
        )
    kernel = as_tuple(kernel_size, n, "kernel_size", minimum=1)
    stride_t = as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    output_padding_t = as_tuple(output_padding, n, "output_padding")
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    FN.check_output_padding(output_padding, output_padding_t, stride_t, dilation_t)
    weight_shape = _weight_shape(in_channels, out_channels, groups, kernel, True)
    _check_weight_size(kernel_size, in_channels, out_channels, weight_shape)
    return kernel, stride_t, padding_t, output_padding_t, dilation_t


class _ConvBase(nn.Module):
    """Attributes, parameters and initialisation shared by ConvNd and ConvTransposeNd (torch's
    layout and init); ``channels`` is (in_channels, out_channels, groups), already checked."""

    def __init__(
        self,
        spatial_dims: int,
        channels: tuple[int, int, int],
        kernel: tuple[int, ...],
        transposed: bool,
        bias: bool,
        padding_mode: str,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels, self.out_channels, self.groups = channels
        self.padding_mode = padding_mode
        factory = {"device": device, "dtype": dtype}
        shape = _weight_shape(*channels, kernel, transposed)
        self.weight = nn.Parameter(torch.empty(shape, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self.reset_parameters()

    def _check_forward(self, input: torch.Tensor) -> None:
        check_input(input, self.spatial_dims)
        if input.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {input.shape[1]} channels; this layer expects in_channels="
                f"{self.in_channels}"
            )

    def reset_parameters(self) -> None:
        """Torch's default: Kaiming-uniform weight (a=sqrt(5)), uniform bias in +-1/sqrt(fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(self.bias, -bound, bound)


class ConvNd(_ConvBase):
    """N-D convolution layer with torch's Conv{1,2,3}d signature and state dict, any spatial_dims."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple | str = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        n = check_spatial_dims(spatial_dims)
        channels = (in_channels, out_channels, groups)
        args = (kernel_size, stride, padding, dilation, groups, padding_mode)
        self.kernel_size, self.stride, self.padding, self.dilation, self._pads = _conv_args(
            n, in_channels, out_channels, *args
        )
        super().__init__(n, channels, self.kernel_size, False, bias, padding_mode, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_forward(input)
        if self.padding_mode != "zeros":
            x = FN.pad_nd(input, self._pads, self.padding_mode)
            return FN.conv_nd(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return FN.conv_nd(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}, "
            f"padding_mode={self.padding_mode!r}"
        )


class ConvTransposeNd(_ConvBase):
    """N-D transposed convolution with torch's ConvTranspose{1,2,3}d signature and state dict."""

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        output_padding: IntOrTuple = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrTuple = 1,
        padding_mode: Literal["zeros"] = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        n = check_spatial_dims(spatial_dims)
        channels = (in_channels, out_channels, groups)
        args = (kernel_size, stride, padding, output_padding, groups, dilation, padding_mode)
        self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation = (
            _conv_transpose_args(n, in_channels, out_channels, *args)
        )
        super().__init__(n, channels, self.kernel_size, True, bias, padding_mode, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_forward(input)
        return FN.conv_transpose_nd(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.output_padding,
            self.groups,
            self.dilation,
        )

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, {self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


class Conv3d(nn.Conv3d):
    """torch's nn.Conv3d (same parameters, state dict and arithmetic) whose convolution steps
    around torch 2.13's oneDNN CPU weight-gradient bug (large strided depth kernels on a short
    depth axis; see :mod:`ndunet.functional.onednn`). :func:`conv` picks it only for kernels that
    can meet that bug, such as a 3-D ResNet stem (7, stride 2, padding 3)."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if self.padding_mode != "zeros":
            return super()._conv_forward(input, weight, bias)
        return onednn.conv3d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )


def _may_meet_onednn_bug(
    kernel_size: IntOrTuple, stride: IntOrTuple, padding: object, dilation: IntOrTuple
) -> bool:
    if isinstance(padding, str):
        return False
    k, s, p, d = (as_tuple(v, 3, name) for v, name in (
        (kernel_size, "kernel_size"), (stride, "stride"), (padding, "padding"), (dilation, "dilation")
    ))  # fmt: skip
    return onednn.depth_padding_bug_possible(k, s, p, d)


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: PaddingMode = "zeros",
    **factory: object,
) -> nn.Module:
    """nn.Conv{1,2,3}d for spatial_dims <= 3, else ConvNd (same parameters and state dict)."""
    n = check_spatial_dims(spatial_dims)
    args = (
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        dilation,
        groups,
        bias,
        padding_mode,
    )
    if n <= 3:
        _conv_args(n, *args[:-2], padding_mode)  # ndunet's messages, before torch's
        if n == 3 and _may_meet_onednn_bug(kernel_size, stride, padding, dilation):
            return Conv3d(*args, **factory)
        return _NATIVE_CONV[n](*args, **factory)
    return ConvNd(n, *args, **factory)


def conv_transpose(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: IntOrTuple = 0,
    output_padding: IntOrTuple = 0,
    groups: int = 1,
    bias: bool = True,
    dilation: IntOrTuple = 1,
    **factory: object,
) -> nn.Module:
    """nn.ConvTranspose{1,2,3}d for spatial_dims <= 3, else ConvTransposeNd."""
    n = check_spatial_dims(spatial_dims)
    args = (
        in_channels,
        out_channels,
        kernel_size,
        stride,
        padding,
        output_padding,
        groups,
        bias,
        dilation,
    )
    if n <= 3:
        _conv_transpose_args(n, *args[:-2], dilation, "zeros")
        return _NATIVE_CONV_T[n](*args, **factory)
    return ConvTransposeNd(n, *args, **factory)

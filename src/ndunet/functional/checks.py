"""Argument checks of the N-D ops: shapes, paddings, and a size guard before any allocation.

Every op calls its checks before it computes (or allocates) anything, and the layers share the
ones that do not need an input (padding resolution, the output_padding rule, the weight size).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from ndunet._checks import (
    IntOrTuple,
    as_tuple,
    check_int,
    did_you_mean,
    invalid,
    spatial_dims_of,
)

# Results (and layer weights) above this many elements are refused before the allocator sees
# them: 2**31 float32 values are 8 GiB. A result no larger than its input is always allowed; to
# go further on purpose, raise it: ``ndunet.functional.checks.MAX_ELEMENTS = 2**34``.
MAX_ELEMENTS = 2**31


def _sci(count: int) -> str:
    """2147483648 -> '2.1e9'."""
    try:
        return f"{count:.1e}".replace("e+0", "e").replace("e+", "e")
    except OverflowError:  # beyond float range
        return f"{str(count)[0]}e{len(str(count)) - 1}"


def check_numel(
    name: str, value: Any, shape: Sequence[int], what: str = "an output", baseline: int = 0
) -> None:
    """Refuse a ``shape`` of more than ``max(MAX_ELEMENTS, baseline)`` elements, blaming ``name``.

    ``baseline`` is what the result may hold anyway (the input's element count, say), so the
    limit only ever stops what the parameter adds.
    """
    numel = math.prod(shape)
    if numel > MAX_ELEMENTS and numel > baseline:
        limit = (
            f"{_sci(baseline)} elements (what the input implies)"
            if baseline > MAX_ELEMENTS
            else f"{_sci(MAX_ELEMENTS)} elements (ndunet.functional.checks.MAX_ELEMENTS)"
        )
        shape_s = tuple(int(s) for s in shape)
        raise ValueError(
            invalid(
                name,
                value,
                f"{what} of at most {limit}, got shape {shape_s} = {_sci(numel)} elements",
            )
        )


# ----------------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------------


def check_conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: int,
    transposed: bool,
) -> int:
    """Weight, bias and groups against the input's channels; returns spatial_dims."""
    spatial_dims = spatial_dims_of(input)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != spatial_dims + 2:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}; expected {spatial_dims + 2} dims for an "
            f"input with spatial_dims={spatial_dims}"
        )
    check_int("groups", groups, minimum=1)
    in_channels = input.shape[1]
    if transposed:
        if weight.shape[0] != in_channels:
            raise ValueError(
                f"weight has shape {tuple(weight.shape)}: its first dim must equal the input's "
                f"{in_channels} channels (layout (in_channels, out_channels/groups, *kernel))"
            )
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        out_channels = weight.shape[1] * groups
    else:
        if weight.shape[0] % groups:
            raise ValueError(f"out_channels={weight.shape[0]} is not divisible by groups={groups}")
        if weight.shape[1] * groups != in_channels:
            raise ValueError(
                f"input has {in_channels} channels but weight {tuple(weight.shape)} with "
                f"groups={groups} expects {weight.shape[1] * groups}"
            )
        out_channels = weight.shape[0]
    if bias is not None and (
        not isinstance(bias, torch.Tensor) or bias.dim() != 1 or bias.shape[0] != out_channels
    ):
        shape = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"bias has shape {shape}; expected ({out_channels},)")
    return spatial_dims


def resolve_padding(
    padding: IntOrTuple | str,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """(before, after) per axis; "same" puts the odd extra element after, as torch does."""
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"padding='same' needs stride=1 on every axis, got stride={stride}"
                )
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in total)
        expected = "an int, a tuple, 'same' or 'valid'"
        raise ValueError(
            invalid("padding", padding, expected, did_you_mean(padding, ("same", "valid")))
        )
    return tuple((p, p) for p in as_tuple(padding, n, "padding"))


def check_conv_output(
    input: torch.Tensor,
    out_channels: int,
    kernel: tuple[int, ...],
    padding: Any,
    pads: tuple[tuple[int, int], ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> None:
    """The kernel fits the padded input on every axis, and the output fits the size limit."""
    outs = []
    for axis, (size, k, s, d, (pb, pa)) in enumerate(
        zip(input.shape[2:], kernel, stride, dilation, pads)
    ):
        if d * (k - 1) + 1 > size + pb + pa:
            raise ValueError(
                f"kernel size {k} (dilation {d}) on spatial axis {axis} is larger than the "
                f"padded input size {size + pb + pa}"
            )
        outs.append((size + pb + pa - d * (k - 1) - 1) // s + 1)
    # only padding can make the output's spatial extent exceed the input's
    batch, spatial = input.shape[0], math.prod(input.shape[2:])
    shape = (batch, out_channels, *outs)
    check_numel("padding", padding, shape, baseline=batch * out_channels * spatial)


def check_output_padding(
    given: IntOrTuple,
    output_padding: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> None:
    """torch's rule: on every axis output_padding < stride or output_padding < dilation."""
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op >= s and op >= d:
            raise ValueError(
                invalid(
                    "output_padding",
                    given,
                    f"less than stride ({s}) or dilation ({d}) on axis {axis}",
                )
            )


def check_conv_transpose_output(
    input: torch.Tensor,
    out_channels: int,
    kernel: tuple[int, ...],
    given: dict[str, Any],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> None:
    """Every axis keeps some output, and the output fits the size limit; ``given`` holds the
    caller's padding, stride and dilation as passed, for the messages."""
    outs = []
    for axis, (size, k, p, op, s, d) in enumerate(
        zip(input.shape[2:], kernel, padding, output_padding, stride, dilation)
    ):
        out = (size - 1) * s - 2 * p + d * (k - 1) + op + 1
        if out < 1:
            raise ValueError(
                f"padding={given['padding']!r} leaves no output on spatial axis {axis} "
                f"(computed size {out})"
            )
        outs.append(out)
    # the output grows by the stride (the frames) and by the dilated kernel (their spread)
    name = "stride" if any(s > 1 for s in stride) else "dilation"
    batch, spatial = input.shape[0], math.prod(input.shape[2:])
    shape = (batch, out_channels, *outs)
    check_numel(name, given[name], shape, baseline=batch * out_channels * spatial)


# ----------------------------------------------------------------------------------------------
# pooling, interpolation, padding
# ----------------------------------------------------------------------------------------------


def pool_args(
    input: torch.Tensor,
    kernel_size: IntOrTuple,
    stride: IntOrTuple | None,
    padding: IntOrTuple,
    dilation: IntOrTuple,
) -> tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """spatial_dims and the per-axis kernel, stride (the kernel by default), padding, dilation."""
    n = spatial_dims_of(input)
    kernel = as_tuple(kernel_size, n, "kernel_size", minimum=1)
    stride_t = kernel if stride is None else as_tuple(stride, n, "stride", minimum=1)
    padding_t = as_tuple(padding, n, "padding")
    dilation_t = as_tuple(dilation, n, "dilation", minimum=1)
    for axis in range(n):
        span = (kernel[axis] - 1) * dilation_t[axis] + 1
        if 2 * padding_t[axis] > span:
            raise ValueError(
                invalid(
                    "padding",
                    padding,
                    f"at most half the effective kernel size {span} on axis {axis}",
                )
            )
        padded = input.shape[2 + axis] + 2 * padding_t[axis]
        if span > padded:
            raise ValueError(
                invalid(
                    "kernel_size",
                    kernel_size,
                    f"a window no larger than the padded input size {padded} on spatial axis {axis}",
                )
            )
    return n, kernel, stride_t, padding_t, dilation_t


INTERP_MODES = ("nearest", "nearest-exact", "linear")


def interpolate_sizes(
    input: torch.Tensor,
    n: int,
    size: IntOrTuple | None,
    scale_factor: float | Sequence[float] | None,
) -> tuple[tuple[int, ...], tuple[float | None, ...]]:
    """Output size and scale factor (None where a size was given) per axis, within the limit."""
    if (size is None) == (scale_factor is None):
        raise ValueError(
            f"exactly one of size and scale_factor must be given, got size={size!r}, "
            f"scale_factor={scale_factor!r}"
        )
    if size is not None:
        sizes = as_tuple(size, n, "size", minimum=1)
        scales: tuple[float | None, ...] = (None,) * n
        name, value = "size", size
    else:
        what = f"a positive number or a sequence of 1 or spatial_dims={n} of them"
        if isinstance(scale_factor, numbers.Real) and not isinstance(scale_factor, bool):
            given: tuple[Any, ...] = (scale_factor,) * n
        elif isinstance(scale_factor, Sequence) and len(scale_factor) in (1, n):
            given = tuple(scale_factor) * (n if len(scale_factor) == 1 else 1)
        else:
            raise ValueError(invalid("scale_factor", scale_factor, what))
        for s in given:
            if isinstance(s, bool) or not isinstance(s, numbers.Real):
                raise TypeError(invalid("scale_factor", scale_factor, what))
            if not (math.isfinite(s) and s > 0):
                raise ValueError(invalid("scale_factor", scale_factor, what))
        scales = tuple(float(s) for s in given)
        sizes = tuple(math.floor(s0 * s) for s0, s in zip(input.shape[2:], scales))
        if any(s < 1 for s in sizes):
            raise ValueError(
                invalid("scale_factor", scale_factor, f"a non-empty output, got size {sizes}")
            )
        name, value = "scale_factor", scale_factor
    check_numel(name, value, (*input.shape[:2], *sizes), baseline=input.numel())
    return sizes, scales


PAD_MODES = ("zeros", "constant", "reflect", "replicate", "circular")


def _is_int(v: Any) -> bool:
    """A Python or numpy int, or a symbolic size under torch.compile; never a bool."""
    return isinstance(v, (numbers.Integral, torch.SymInt)) and not isinstance(v, bool)


def pad_pairs(
    input: torch.Tensor, padding: Sequence[tuple[int, int]], mode: str
) -> tuple[tuple[int, int], ...]:
    """``padding`` as spatial_dims (before, after) pairs of ints >= 0 that ``mode`` can serve."""
    n = spatial_dims_of(input)
    what = f"a sequence of spatial_dims={n} (before, after) pairs of ints >= 0"
    try:
        pairs = tuple(tuple(pair) for pair in padding)
    except TypeError:
        raise TypeError(invalid("padding", padding, what)) from None
    if any(len(pair) != 2 or not all(_is_int(v) for v in pair) for pair in pairs):
        raise TypeError(invalid("padding", padding, what))
    if len(pairs) != n:
        raise ValueError(invalid("padding", padding, what, f" (got {len(pairs)} pairs)"))
    for axis, ((before, after), size) in enumerate(zip(pairs, input.shape[2:])):
        if before < 0 or after < 0:
            raise ValueError(invalid("padding", padding, what, f" (axis {axis} is negative)"))
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                invalid(
                    "padding", padding, f"reflect padding < the input size {size} on axis {axis}"
                )
            )
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                invalid(
                    "padding", padding, f"circular padding <= the input size {size} on axis {axis}"
                )
            )
    shape = (*input.shape[:2], *(s + b + a for s, (b, a) in zip(input.shape[2:], pairs)))
    check_numel("padding", padding, shape, baseline=input.numel())
    return pairs

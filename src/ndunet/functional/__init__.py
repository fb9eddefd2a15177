"""Exact N-D operators as plain functions, valid for every spatial_dims >= 1.

For spatial_dims <= 3 each function dispatches to torch's native op. For spatial_dims >= 4 it
computes the same numbers as the true N-D operation:

* convolution folds the first spatial axis into channels (each output frame sees the ``k0`` input
  frames under its kernel, stacked as ``C * k0`` channels) and recurses, so the work ends up in
  one batched native ``conv3d`` with exactly the multiply-adds of the N-D operator;
* transposed convolution folds the first axis' taps into output channels and scatters the frames
  back (its adjoint);
* pooling and interpolation are separable over axes (a max or mean over a box, and N-linear
  weights, factor exactly into per-axis operations).

Every op checks its arguments before it computes or allocates anything, including the size of
its result (``checks.MAX_ELEMENTS``). The package's modules: ``conv`` (dispatch), ``fold`` (the
N >= 4 convolutions and their adjoints), ``pool``, ``interpolate``, ``pad`` and ``checks``.
"""

from __future__ import annotations

from ndunet.functional.checks import check_numel, check_output_padding, resolve_padding
from ndunet.functional.conv import conv_nd, conv_transpose_nd
from ndunet.functional.interpolate import InterpMode, interpolate_nd
from ndunet.functional.pad import PadMode, pad_nd
from ndunet.functional.pool import avg_pool_nd, max_pool_nd

__all__ = [
    "InterpMode",
    "PadMode",
    "avg_pool_nd",
    "check_numel",
    "check_output_padding",
    "conv_nd",
    "conv_transpose_nd",
    "interpolate_nd",
    "max_pool_nd",
    "pad_nd",
    "resolve_padding",
]

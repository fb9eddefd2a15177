"""conv3d with a guard around a oneDNN CPU bug: the weight gradient of a float32 conv3d with a
large depth kernel, depth stride >= 2 and depth padding, on a short depth axis, is wrong or
corrupts the heap (torch 2.13 CPU; e.g. k=7, s=2, p=3 with depth 5 segfaults, depth 6 or 7 gives
garbage; k=9, s=2 or 3, p=4 with depth 6-9 too). Padding the depth axis explicitly (and telling
the conv no depth padding) takes oneDNN off that path; the result is the same convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv3d", "conv3d_backward", "depth_padding_bug", "depth_padding_bug_possible"]


def depth_padding_bug(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> bool:
    """Whether the weight gradient of ``F.conv3d(x, w, ...)`` is in the family of configurations
    where oneDNN's is wrong: a superset of every case found by a sweep (depth kernels 3-9,
    strides 1-3, depths 1-12), since the exact boundary is oneDNN-internal."""
    span = (w.shape[2] - 1) * dilation[0] + 1  # the depth kernel's reach
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and depth_padding_bug_possible(tuple(w.shape[2:]), stride, padding, dilation)
        and x.shape[2] <= 2 * span
    )


def depth_padding_bug_possible(
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> bool:
    """Whether a conv3d of this geometry can meet the bug on some input (the input decides)."""
    return (kernel[0] - 1) * dilation[0] + 1 >= 7 and stride[0] >= 2 and padding[0] > 0


def conv3d(
    x: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
) -> torch.Tensor:
    """``F.conv3d`` with tuple geometry, routed around the oneDNN bug above."""
    grad_w = w.requires_grad and torch.is_grad_enabled()
    if grad_w and depth_padding_bug(x, w, stride, padding, dilation):
        x = F.pad(x, (0, 0, 0, 0, padding[0], padding[0]))  # zeros, as the conv's padding
        padding = (0, *padding[1:])
    return F.conv3d(x, w, bias, stride, padding, dilation, groups)


def conv3d_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    w: torch.Tensor,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    needs: tuple[bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The gradients of ``conv3d(x, w)``'s input and weight (where ``needs`` says) from the
    gradient of its output, routed around the oneDNN bug above like ``conv3d``."""
    pad = padding[0] if needs[1] and depth_padding_bug(x, w, stride, padding, dilation) else 0
    if pad:
        x = F.pad(x, (0, 0, 0, 0, pad, pad))
        padding = (0, *padding[1:])
    gx, gw, _ = torch.ops.aten.convolution_backward(
        grad, x, w, None, stride, padding, dilation, False, [0, 0, 0], groups, [*needs, False]
    )
    if pad and gx is not None:
        gx = gx[:, :, pad:-pad]  # the explicit padding's gradient is dropped
    return gx, gw

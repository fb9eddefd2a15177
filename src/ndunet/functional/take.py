"""index_select whose backward, under torch.compile on the CPU, runs as an extern kernel.

Inductor's CPU code for the backward of ``index_select`` (an index_add, ``atomic_add_vec`` in a
tiled kernel) writes out of bounds when the incoming gradient is channels-innermost, as the
input gradient of an mkldnn conv3d is: ``CppTile2DKernel.store`` applies the tile's inner-offset
substitution and ``CppVecKernel.store`` applies it again (x0 -> x0 + 2 * x0_inner), so a compiled
4-D U-Net's backward corrupts the heap (torch 2.13, with more than one thread; pytorch/pytorch
#191837, fix proposed in pytorch/pytorch#191861). Routing that index_add through a custom op
keeps it out of inductor's codegen; eager and CUDA calls are plain ``index_select``."""

from __future__ import annotations

import torch

__all__ = ["index_select"]


def _scatter_shape(grad: torch.Tensor, dim: int, size: int) -> list[int]:
    shape = list(grad.shape)
    shape[dim] = size
    return shape


_CUSTOM_OP = hasattr(torch.library, "custom_op")  # torch >= 2.4

if _CUSTOM_OP:

    @torch.library.custom_op("ndunet::index_select_backward", mutates_args=())
    def _index_select_backward(
        grad: torch.Tensor, dim: int, index: torch.Tensor, size: int
    ) -> torch.Tensor:
        """The adjoint of ``x.index_select(dim, index)`` for ``x.shape[dim] == size``."""
        return grad.new_zeros(_scatter_shape(grad, dim, size)).index_add_(dim, index, grad)

    @_index_select_backward.register_fake
    def _(grad: torch.Tensor, dim: int, index: torch.Tensor, size: int) -> torch.Tensor:
        return grad.new_empty(_scatter_shape(grad, dim, size))

    def _setup(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        _, ctx.dim, index, _ = inputs
        ctx.save_for_backward(index)

    def _double_backward(ctx, gg):  # type: ignore[no-untyped-def]
        (index,) = ctx.saved_tensors
        return gg.index_select(ctx.dim, index), None, None, None

    _index_select_backward.register_autograd(_double_backward, setup_context=_setup)


class _IndexSelect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, index):  # type: ignore[override]
        ctx.dim, ctx.size = dim, x.shape[dim]
        ctx.save_for_backward(index)
        return x.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (index,) = ctx.saved_tensors
        return _index_select_backward(grad, ctx.dim, index, ctx.size), None, None


def index_select(x: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(dim, index)``; while torch.compile traces a CPU tensor that needs a
    gradient, with the backward above (an extern kernel, not inductor's generated index_add)."""
    if (
        _CUSTOM_OP
        and x.device.type == "cpu"
        and x.requires_grad
        and torch.is_grad_enabled()
        and torch.compiler.is_compiling()
    ):
        return _IndexSelect.apply(x, dim, index)
    return x.index_select(dim, index)

"""UpsampleNd: nearest / N-linear resizing for any spatial_dims."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ndunet import functional as FN
from ndunet._checks import IntOrTuple, as_tuple, check_input
from ndunet.layers.conv import check_spatial_dims


class UpsampleNd(nn.Module):
    """Resize by ``size`` or ``scale_factor`` with nearest, nearest-exact or N-linear interpolation.

    Works for every spatial_dims (torch's own kernels for N <= 3, exact separable ones above).
    """

    def __init__(
        self,
        spatial_dims: int,
        size: IntOrTuple | None = None,
        scale_factor: float | Sequence[float] | None = None,
        mode: FN.InterpMode = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if (size is None) == (scale_factor is None):
            raise ValueError(
                f"exactly one of size and scale_factor must be given, got size={size!r}, "
                f"scale_factor={scale_factor!r}"
            )
        if mode not in ("nearest", "nearest-exact", "linear"):
            raise ValueError(
                f"mode={mode!r} is not supported; expected nearest, nearest-exact or linear"
            )
        if align_corners is not None and mode != "linear":
            raise ValueError(f"align_corners={align_corners!r} only applies to mode='linear'")
        self.size = None if size is None else as_tuple(size, spatial_dims, "size", minimum=1)
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, input: Tensor) -> Tensor:
        check_input(input, self.spatial_dims)
        return FN.interpolate_nd(input, self.size, self.scale_factor, self.mode, self.align_corners)

    def extra_repr(self) -> str:
        what = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        return f"spatial_dims={self.spatial_dims}, {what}, mode={self.mode!r}"


def upsample(
    spatial_dims: int,
    size: IntOrTuple | None = None,
    scale_factor: float | Sequence[float] | None = None,
    mode: FN.InterpMode = "nearest",
    align_corners: bool | None = None,
) -> nn.Module:
    """An UpsampleNd (it dispatches to torch's kernels itself at N <= 3)."""
    return UpsampleNd(spatial_dims, size, scale_factor, mode, align_corners)

"""Random intensity transforms of the image; the label passes through untouched. Any N."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ndunet._checks import check_bool, check_float, invalid

from .base import RandomTransform, Sample, uniform
from .spatial import check_axes, check_axes_fit

__all__ = ["RandContrast", "RandGamma", "RandGaussianBlur", "RandGaussianNoise", "gaussian_blur"]


def _positive_range(name: str, value: Sequence[float], low: float = 0.0) -> tuple[float, float]:
    what = f"a pair (low, high) with {low} < low <= high"
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(invalid(name, value, what))
    lo, hi = (check_float(name, v) for v in value)
    if not low < lo <= hi:
        raise ValueError(invalid(name, value, what))
    return lo, hi


class _Intensity(RandomTransform):
    def check(self, image: Tensor, label: Tensor | None) -> None:
        if not image.is_floating_point():
            raise TypeError(invalid("image", image.dtype, "a floating tensor"))

    def _per_channel(self, image: Tensor) -> tuple[int, ...]:
        return tuple(range(1, image.dim()))  # reduce over the spatial axes


class RandGamma(_Intensity):
    """Per channel: min-max normalise, raise to gamma ~ U(gamma_range), map back to the range
    (nnU-Net's gamma augmentation; MONAI's ``RandAdjustContrast``, per channel)."""

    def __init__(self, gamma_range: Sequence[float] = (0.7, 1.5), prob: float = 0.3) -> None:
        super().__init__(prob)
        self.gamma_range = _positive_range("gamma_range", gamma_range)

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        gamma = uniform(*self.gamma_range, generator)
        dims = self._per_channel(image)
        low = image.amin(dim=dims, keepdim=True)  # (C, 1, ..., 1)
        span = image.amax(dim=dims, keepdim=True) - low
        unit = (image - low) / (span + 1e-7)
        return unit.clamp(min=0) ** gamma * span + low, label


class RandGaussianNoise(_Intensity):
    """Add N(mean, std'^2) noise, std' ~ U(0, std) if ``sample_std`` else std (MONAI's)."""

    def __init__(
        self, prob: float = 0.1, mean: float = 0.0, std: float = 0.1, sample_std: bool = True
    ) -> None:
        super().__init__(prob)
        self.mean = check_float("mean", mean)
        self.std = check_float("std", std, 0.0)
        self.sample_std = check_bool("sample_std", sample_std)

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        std = uniform(0.0, self.std, generator) if self.sample_std else self.std
        noise = torch.randn(
            image.shape, generator=generator, device=generator.device, dtype=image.dtype
        )
        return image + (noise.to(image.device) * std + self.mean), label


class RandContrast(_Intensity):
    """Per channel: scale around the mean by a factor ~ U(factor_range) (nnU-Net's contrast)."""

    def __init__(self, factor_range: Sequence[float] = (0.75, 1.25), prob: float = 0.15) -> None:
        super().__init__(prob)
        self.factor_range = _positive_range("factor_range", factor_range)

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        factor = uniform(*self.factor_range, generator)
        mean = image.mean(dim=self._per_channel(image), keepdim=True)  # (C, 1, ..., 1)
        return (image - mean) * factor + mean, label


def gaussian_blur(
    image: Tensor, sigma: float, axes: Sequence[int] | None = None, truncate: float = 4.0
) -> Tensor:
    """Separable Gaussian blur of (C, *spatial) along ``axes`` (default: all), any N.

    One normalised 1-D kernel of radius ``int(truncate * sigma + 0.5)`` per axis, edges
    extended by their own value: ``scipy.ndimage.gaussian_filter(mode="nearest")``.
    """
    n = image.dim() - 1
    axes = range(n) if axes is None else axes
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return image
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(image.device, image.dtype).view(1, 1, -1)
    out = image
    for a in axes:
        moved = out.movedim(1 + a, -1)  # (C, *others, L)
        lines = moved.reshape(-1, 1, moved.shape[-1])  # (C * others, 1, L)
        lines = F.conv1d(F.pad(lines, (radius, radius), mode="replicate"), kernel)
        out = lines.view(moved.shape).movedim(-1, 1 + a)
    return out


class RandGaussianBlur(_Intensity):
    """Blur with one sigma ~ U(sigma_range) (voxels) along ``axes`` (default: all spatial axes)."""

    def __init__(
        self,
        sigma_range: Sequence[float] = (0.5, 1.0),
        prob: float = 0.2,
        axes: Sequence[int] | None = None,
    ) -> None:
        super().__init__(prob)
        self.sigma_range = _positive_range("sigma_range", sigma_range)
        if axes is not None:
            axes = check_axes("axes", axes)
        self.axes = axes

    def check(self, image: Tensor, label: Tensor | None) -> None:
        super().check(image, label)
        if self.axes is not None:
            check_axes_fit("axes", self.axes, image.dim() - 1)

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        sigma = uniform(*self.sigma_range, generator)
        return gaussian_blur(image, sigma, self.axes), label

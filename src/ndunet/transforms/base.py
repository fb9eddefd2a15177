"""The transform interface, Compose, and the helpers every random transform shares.

A transform is called as ``t(image, label=None, *, generator)`` on one sample: ``image`` is
(C, *spatial), ``label`` None, (*spatial) or (C', *spatial) with the same spatial shape, and it
returns ``(image, label)``. All randomness comes from ``generator`` (a CPU ``torch.Generator``),
so a sample seeded by the trainer or the dataset is augmented the same way on every run and
after a resume. Spatial transforms move image and label together; intensity transforms leave
the label as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ndunet._checks import check_float, invalid

__all__ = ["Compose", "RandomTransform", "Transform", "check_sample", "uniform"]

Sample = tuple[Tensor, Tensor | None]
Transform = Callable[..., Sample]


def check_sample(image: Tensor, label: Tensor | None, generator: torch.Generator) -> None:
    """Refuse a sample that is not (C, *spatial) [+ a label of the same spatial shape]."""
    if not isinstance(image, Tensor) or image.dim() < 2:
        raise TypeError(
            invalid(
                "image",
                tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__,
                "a tensor (C, *spatial) with at least one spatial axis",
            )
        )
    spatial = tuple(image.shape[1:])
    if label is not None and (
        not isinstance(label, Tensor)
        or label.dim() not in (len(spatial), len(spatial) + 1)
        or tuple(label.shape[-len(spatial) :]) != spatial
    ):
        raise ValueError(
            invalid(
                "label",
                tuple(label.shape) if isinstance(label, Tensor) else type(label).__name__,
                f"None or a tensor (*spatial) or (C', *spatial) with spatial={spatial} as the image",
            )
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(invalid("generator", generator, "a torch.Generator (keyword argument)"))


def uniform(low: float, high: float, generator: torch.Generator) -> float:
    """One draw from U(low, high) (one draw is consumed even when low == high)."""
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return low + (high - low) * u


def as_range(name: str, value: float | Sequence[float], *, center: float = 0.0) -> tuple:
    """MONAI's range convention: a number r means (center - r, center + r); a pair is (lo, hi)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ValueError(invalid(name, value, "a number r >= 0 or a pair (low, high)"))
        low, high = (check_float(name, v) for v in value)
        if low > high:
            raise ValueError(invalid(name, value, "a pair (low, high) with low <= high"))
        return (low, high)
    r = check_float(name, value, 0.0)
    return (center - r, center + r)


class RandomTransform:
    """Applies ``apply`` with probability ``prob``; one coin is drawn from the generator first.

    Subclasses implement ``apply(image, label, generator) -> (image, label)`` on a checked
    sample and may override ``check(image, label)``; ``__call__`` checks, then throws the coin.
    """

    def __init__(self, prob: float = 1.0) -> None:
        self.prob = check_float("prob", prob, 0.0, 1.0)

    def __call__(
        self, image: Tensor, label: Tensor | None = None, *, generator: torch.Generator
    ) -> Sample:
        check_sample(image, label, generator)
        self.check(image, label)
        if torch.rand((), generator=generator, dtype=torch.float64).item() >= self.prob:
            return image, label
        return self.apply(image, label, generator)

    def check(self, image: Tensor, label: Tensor | None) -> None:
        """Refuse arguments that do not fit this sample (before the coin and any work)."""

    def apply(self, image: Tensor, label: Tensor | None, generator: torch.Generator) -> Sample:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Compose:
    """Apply transforms in order, all drawing from the one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence):
            raise TypeError(invalid("transforms", transforms, "a sequence of transforms"))
        for t in transforms:
            if not callable(t):
                raise TypeError(invalid("transforms", t, "callables t(image, label, generator=)"))
        self.transforms = list(transforms)

    def __call__(
        self, image: Tensor, label: Tensor | None = None, *, generator: torch.Generator
    ) -> Sample:
        check_sample(image, label, generator)
        for t in self.transforms:
            image, label = t(image, label, generator=generator)
        return image, label

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def with_channel(label: Tensor | None, spatial_dims: int) -> tuple[Tensor | None, bool]:
    """(C', *spatial) view of the label, and whether a channel axis was added."""
    if label is None or label.dim() == spatial_dims + 1:
        return label, False
    return label.unsqueeze(0), True  # (*spatial) -> (1, *spatial)

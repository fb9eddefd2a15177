"""Test-time augmentation by flips: the mean of the predictions of all 2^k flipped inputs."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ndunet._checks import check_int, invalid

__all__ = ["flip_tta"]


def flip_tta(predictor: Callable[..., Tensor], axes: Sequence[int]) -> Callable[..., Tensor]:
    """Wrap ``predictor`` so that it averages over every subset of the spatial ``axes`` flipped.

    For each of the 2^k subsets (the empty one included) the input (B, C, *spatial) is flipped
    on those axes, predicted, and the prediction flipped back; the result is the mean. Spatial
    axes count from 0 (axis 0 is dim 2 of the tensor). Composes with sliding windows::

        sliding_window_inference(x, 64, 4, flip_tta(model, axes=(0, 1, 2)))
    """
    if not callable(predictor):
        raise TypeError(invalid("predictor", predictor, "a callable (input) -> tensor"))
    if isinstance(axes, int) or not isinstance(axes, Sequence):
        raise TypeError(invalid("axes", axes, "a sequence of distinct spatial axes >= 0"))
    axes = tuple(check_int("axes", a, 0) for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(invalid("axes", axes, "distinct spatial axes"))
    subsets = [c for k in range(len(axes) + 1) for c in itertools.combinations(axes, k)]

    def predict(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 3:
            raise TypeError(invalid("input", type(x).__name__, "a tensor (B, C, *spatial)"))
        if axes and max(axes) >= x.dim() - 2:
            raise ValueError(invalid("axes", axes, f"spatial axes < {x.dim() - 2} of the input"))
        total: Tensor | None = None
        for subset in subsets:
            dims = [2 + a for a in subset]
            out = predictor(torch.flip(x, dims) if dims else x, *args, **kwargs)
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        assert total is not None  # the empty subset always runs
        return total / len(subsets)

    return predict

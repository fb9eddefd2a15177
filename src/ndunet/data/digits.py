"""scikit-learn's embedded handwritten digits: 1,797 gray 8x8 images, labels 0..9."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ndunet._checks import check_choice, check_size

from .base import NDDataset
from .preprocess import NORMALIZE, Normalize, rescale, resize_bilinear
from .splits import SPLITS, Split, take_split


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # parses a CSV each call: cache it

    bunch = load_digits()
    return bunch.images, bunch.target


def digits(
    split: Split = "all",
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    size: int | tuple[int, int] | None = None,
    normalize: Normalize = "symmetric",
) -> NDDataset:
    """The UCI digits from ``sklearn.datasets.load_digits`` (no download): x (1, 8, 8), y 0..9.

    ``split`` picks a seeded, stratified part (see ``split_indices``); ``size`` upsamples (or
    shrinks) to ``size x size`` bilinearly, which keeps the value range; ``normalize`` maps the raw
    values 0..16 to [-1, 1] ("symmetric", for diffusion), [0, 1] ("unit") or keeps them ("none").
    """
    check_choice("split", split, SPLITS)
    check_choice("normalize", normalize, NORMALIZE)
    hw = check_size("size", size)
    images, targets = _load()
    x = torch.from_numpy(images).float().unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    y = torch.from_numpy(targets).long()  # (N,)
    idx = take_split(
        len(y), split, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, labels=y
    )
    x, y = x[idx], y[idx]
    if hw is not None:
        x = resize_bilinear(x, hw)  # (N, 1, *size)
    x = rescale(x, 0.0, 16.0, normalize).contiguous()
    return NDDataset(
        x,
        y,
        task="classification",
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        name=f"digits[{split}]",
    )

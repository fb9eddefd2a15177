"""scikit-learn's embedded handwritten digits: 1,797 gray 8x8 images, labels 0..9."""

from __future__ import annotations

import functools
from typing import Any

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
    return labelled_images(
        x, y, split, hw, 16.0, normalize, [str(d) for d in range(10)], "digits",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
    )  # fmt: skip


def labelled_images(
    x: torch.Tensor,
    y: torch.Tensor,
    split: Split,
    hw: tuple[int, int] | None,
    high: float,
    normalize: Normalize,
    class_names: list[str],
    name: str,
    **split_options: Any,
) -> NDDataset:
    """What ``digits`` and ``faces`` share: (N, 1, H, W) gray images with raw values in [0,
    ``high``] and their labels as the classification NDDataset of ``split`` (``split_options``:
    seed and fractions of ``take_split``, stratified), resized to ``hw``, rescaled by
    ``normalize``."""
    idx = take_split(len(y), split, labels=y, **split_options)
    x, y = x[idx], y[idx]
    if hw is not None:
        x = resize_bilinear(x, hw)  # (N, 1, *size)
    x = rescale(x, 0.0, high, normalize).contiguous()
    return NDDataset(
        x,
        y,
        task="classification",
        num_classes=len(class_names),
        class_names=class_names,
        name=f"{name}[{split}]",
    )

"""Random binary blobs in any spatial_dims (scikit-image), for segmentation and denoising."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ndunet._checks import check_choice, check_float, check_int

from .base import NDDataset
from .splits import SPLITS, Split, take_split

_MAX_ELEMENTS = 2**30  # refuse to build more than ~4 GiB of float32 in one go


def blobs(
    spatial_dims: int,
    length: int = 32,
    n: int = 64,
    *,
    task: Literal["segmentation", "denoising"] = "segmentation",
    noise: float = 0.8,
    seed: int = 0,
    blob_size_fraction: float = 0.2,
    volume_fraction: float = 0.5,
    split: Split = "all",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> NDDataset:
    """``n`` volumes of ``length ** spatial_dims`` voxels from ``skimage.data.binary_blobs``.

    Each clean volume is a binary mask m in {0, 1}; the input is ``x = (2m - 1) + noise * z``
    with z standard normal, float32 (N, 1, *spatial).

    - ``task="segmentation"``: y is the mask m, float32 (N, 1, *spatial) with values 0. and 1.
      (one logit channel: BCE-with-logits / Dice; ``num_classes=2``, ``out_channels=1``).
    - ``task="denoising"``: y is the clean volume ``2m - 1``, float32 (N, 1, *spatial) in {-1, 1}
      (also the data to train a diffusion model on; ``noise=0`` makes x clean as well).

    Sample i depends only on (seed, i), whatever ``n`` and ``split`` are.
    """
    check_int("spatial_dims", spatial_dims, 1)
    check_int("length", length, 2)
    check_int("n", n, 1)
    check_choice("task", task, ("segmentation", "denoising"))
    check_float("noise", noise, 0.0, float("inf"))
    check_int("seed", seed, 0)
    check_float("blob_size_fraction", blob_size_fraction, 0.0, 1.0, low_open=True)
    check_float("volume_fraction", volume_fraction, 0.0, 1.0, low_open=True)
    check_choice("split", split, SPLITS)
    if n * length**spatial_dims > _MAX_ELEMENTS:
        raise ValueError(
            f"n={n} volumes of length={length} in spatial_dims={spatial_dims} would hold "
            f"{n * length**spatial_dims:.3g} voxels (limit {_MAX_ELEMENTS:.3g}); lower n or length"
        )
    idx = take_split(n, split, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    from skimage.data import binary_blobs

    # Two independent streams per sample (blobs, noise), keyed by (seed, i) alone: the children
    # of SeedSequence(seed) are numbered, so sample i is the same whatever n and split are.
    streams = [child.spawn(2) for child in np.random.SeedSequence(seed).spawn(n)]
    masks = np.stack(
        [
            binary_blobs(
                length,
                blob_size_fraction=blob_size_fraction,
                n_dim=spatial_dims,
                volume_fraction=volume_fraction,
                rng=np.random.default_rng(streams[i][0]),
            )
            for i in idx.tolist()
        ]
    )  # (N, *spatial) bool
    mask = torch.from_numpy(masks).float().unsqueeze(1)  # (N, 1, *spatial)
    clean = 2.0 * mask - 1.0
    z = np.stack(
        [
            np.random.default_rng(streams[i][1]).standard_normal(masks.shape[1:], dtype=np.float32)
            for i in idx.tolist()
        ]
    )  # (N, *spatial)
    z = torch.from_numpy(z).unsqueeze(1)  # (N, 1, *spatial)
    x = (clean + noise * z).contiguous()
    name = f"blobs{spatial_dims}d[{split}]"
    if task == "segmentation":
        return NDDataset(x, mask, task="segmentation", num_classes=2, out_channels=1, name=name)
    return NDDataset(x, clean, task="denoising", out_channels=1, name=name)

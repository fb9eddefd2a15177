"""scikit-image's embedded LFW subset: 25x25 gray crops, 100 faces and 100 non-faces."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ndunet._checks import check_choice, check_size

from .base import NDDataset
from .digits import labelled_images
from .preprocess import NORMALIZE, Normalize
from .splits import SPLITS, Split

FACE, NON_FACE = 1, 0


def faces(
    split: Split = "all",
    *,
    subset: Literal["faces", "all"] = "faces",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    size: int | tuple[int, int] | None = None,
    normalize: Normalize = "symmetric",
) -> NDDataset:
    """``skimage.data.lfw_subset()`` (no download) as x (1, 25, 25) with labels 1=face, 0=non-face.

    The file holds 100 faces then 100 background crops ("non-faces"). ``subset="faces"`` (the
    default, for generation) keeps the 100 faces; ``"all"`` keeps all 200 for face/non-face
    classification. ``split``, ``size`` and ``normalize`` work as in ``digits`` (raw range [0, 1]).
    """
    check_choice("split", split, SPLITS)
    check_choice("subset", subset, ("faces", "all"))
    check_choice("normalize", normalize, NORMALIZE)
    hw = check_size("size", size)
    from skimage import data as skdata

    images = np.asarray(skdata.lfw_subset())  # (200, 25, 25)
    # Documented as uint8, shipped as float64 in [0, 1] by recent versions: accept both.
    high = 255.0 if np.issubdtype(images.dtype, np.integer) else 1.0
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1)  # (200, 1, 25, 25)
    y = torch.full((len(x),), NON_FACE, dtype=torch.long)
    y[: len(x) // 2] = FACE
    if subset == "faces":
        x, y = x[y == FACE], y[y == FACE]
    return labelled_images(
        x, y, split, hw, high, normalize, ["non-face", "face"], "faces",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
    )  # fmt: skip

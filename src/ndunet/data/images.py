"""A folder of PNG/JPEG images read with Pillow, optionally one subfolder per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndunet._checks import check_choice, check_size

from .base import NDDataset
from .preprocess import NORMALIZE, Normalize, rescale
from .splits import SPLITS, Split, take_split

EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")


def images(
    folder: str | os.PathLike[str],
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    normalize: Normalize = "symmetric",
    split: Split = "all",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    extensions: Sequence[str] = EXTENSIONS,
) -> NDDataset:
    """Images under ``folder`` as x (C, H, W), C=1 with ``grayscale`` else 3 (RGB, alpha dropped).

    Either the images lie in ``folder`` itself (unlabeled, items ``(x,)``) or in one subfolder
    per class (labels = index of the subfolder name in sorted order, ``class_names`` keeps the
    names). Files are read in name order; other file types are ignored. ``size`` (an int or
    (height, width)) resizes with Pillow's bicubic filter, antialiased when shrinking; without it
    all images must share one size. ``normalize`` maps 0..255 to [-1, 1], [0, 1] or keeps it.
    """
    check_choice("normalize", normalize, NORMALIZE)
    check_choice("split", split, SPLITS)
    hw = check_size("size", size)
    if not isinstance(grayscale, bool):
        raise TypeError(f"grayscale={grayscale!r} must be a bool")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder={str(folder)!r} is not an existing folder")
    exts = {e.lower() for e in extensions}

    def listing(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in exts)

    top = listing(root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and listing(p))
    if top and class_dirs:
        raise ValueError(
            f"folder={str(folder)!r} mixes images and class subfolders "
            f"{[d.name for d in class_dirs]}; use one layout"
        )
    if not top and not class_dirs:
        raise ValueError(f"folder={str(folder)!r} holds no images with extensions {sorted(exts)}")
    if top:
        files, labels, class_names = top, None, None
    else:
        class_names = [d.name for d in class_dirs]
        per_class = [listing(d) for d in class_dirs]
        files = [f for group in per_class for f in group]
        labels = torch.tensor([c for c, group in enumerate(per_class) for _ in group])

    arrays = [_read(f, hw, grayscale) for f in files]  # each (H, W, C) uint8
    for f, a in zip(files, arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(
                f"image {str(f)!r} is {a.shape[1]}x{a.shape[0]} but {files[0].name!r} is "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass size=... to resize them all"
            )
    pixels = np.stack(arrays)  # (N, H, W, C)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float()  # (N, C, H, W)
    x = rescale(x, 0.0, 255.0, normalize)
    idx = take_split(
        len(x),
        split,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        labels=labels,
    )
    return NDDataset(
        x[idx].contiguous(),
        None if labels is None else labels[idx],
        task="unlabeled" if labels is None else "classification",
        num_classes=None if class_names is None else len(class_names),
        class_names=class_names,
        name=f"{root.name}[{split}]",
    )


def _read(file: Path, hw: tuple[int, ...] | None, grayscale: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = img.convert("L" if grayscale else "RGB")
            if hw is not None:
                img = img.resize((hw[1], hw[0]), Image.Resampling.BICUBIC)  # Pillow wants (w, h)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {str(file)!r}: {err}") from None
    return array[..., None] if array.ndim == 2 else array  # (H, W, C)

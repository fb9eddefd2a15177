"""A folder of images (PNG, JPEG, TIFF stacks, ...), optionally one subfolder per class."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndunet._checks import check_choice, check_int, check_size
from ndunet.io import read, read_header, resolve_layout
from ndunet.io.base import match_suffix

from .base import NDDataset
from .preprocess import NORMALIZE, Normalize, rescale, rescale_record, resize_bilinear
from .splits import Split, check_splits, take_splits

EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
PILLOW_ONLY = (".jpg", ".jpeg")  # formats ndunet.io does not read: 8-bit pictures via Pillow
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, Pillow's RGB -> L


def images(
    folder: str | os.PathLike[str],
    *,
    size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
    normalize: Normalize = "symmetric",
    spatial_dims: int | None = None,
    channel_axis: int | None = None,
    split: Split | Sequence[Split] = "all",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    extensions: Sequence[str] = EXTENSIONS,
) -> NDDataset | dict[str, NDDataset]:
    """Images under ``folder`` as x (C, *spatial), C=1 with ``grayscale`` else 3 for pictures.

    Either the images lie in ``folder`` itself (unlabeled, items ``(x,)``) or in one subfolder
    per class (labels = index of the subfolder name in sorted order, ``class_names`` keeps the
    names). Files are read in name order; other file types are ignored.

    8-bit PNG and JPEG are read with Pillow (RGB, or gray with ``grayscale``; alpha dropped).
    Everything else among ``extensions`` (16-bit PNG, TIFF, any ``ndunet.io`` format) is read
    through ``ndunet.io`` in its own dtype, every page: a 2-D picture (axes YX / YXS) follows
    the same channel rule (gray = ITU-R 601 luma), stacks and multi-channel files keep their
    channels, with the layout from the file's axes or ``spatial_dims`` / ``channel_axis`` (see
    ``ndunet.io.resolve_layout``: a 10-page TIFF of unknown axes asks for one of them).

    ``size`` (an int or (height, width), 2-D only) resizes: Pillow's bicubic for 8-bit files,
    antialiased bilinear otherwise; without it all images must share one shape. ``normalize``
    maps the dtype's full range (0..255 for 8 bits, 0..65535 for 16 bits) to [-1, 1], [0, 1]
    or keeps the values ("none", required for float files); ``normalization`` records it. A
    list of splits gives ``{split: dataset}`` from one read of the files.
    """
    check_choice("normalize", normalize, NORMALIZE)
    splits = check_splits(split)
    hw = check_size("size", size)
    if not isinstance(grayscale, bool):
        raise TypeError(f"grayscale={grayscale!r} must be a bool")
    if spatial_dims is not None:
        check_int("spatial_dims", spatial_dims, 1)
    if hw is not None and spatial_dims not in (None, 2):
        raise ValueError(f"size={size!r} resizes 2-D images; spatial_dims={spatial_dims}")
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"folder={str(folder)!r} is not an existing folder")
    exts = {e.lower() for e in extensions}

    def listing(d: Path) -> list[Path]:
        return sorted(p for p in d.iterdir() if p.is_file() and _suffix(p) in exts)

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

    read_all = [_read(f, hw, grayscale, spatial_dims, channel_axis) for f in files]
    arrays = [a for a, _ in read_all]  # each (C, *spatial)
    for f, a in zip(files, arrays):
        if a.shape != arrays[0].shape:
            hint = "; pass size=... to resize them all" if a.ndim == 3 else ""
            raise ValueError(
                f"image {str(f)!r} has shape (C, *spatial) = {a.shape} but {files[0].name!r} "
                f"has {arrays[0].shape}{hint}"
            )
    low, high = _common_range(files, [r for _, r in read_all], normalize)
    x = torch.from_numpy(np.stack(arrays).astype(np.float32))  # (N, C, *spatial)
    x = rescale(x, low, high, normalize)
    fractions = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    parts = take_splits(len(x), splits, labels=labels, **fractions)
    out = {
        part: NDDataset(
            x[idx].contiguous(),
            None if labels is None else labels[idx],
            task="unlabeled" if labels is None else "classification",
            num_classes=None if class_names is None else len(class_names),
            class_names=class_names,
            name=f"{root.name}[{part}]",
            normalization=rescale_record(low, high, normalize),
        )
        for part, idx in parts.items()
    }
    return out[split] if isinstance(split, str) else out


def _suffix(path: Path) -> str:
    """The longest known suffix (``.ome.tif``, ``.nii.gz``) or the last one, lower case."""
    name = path.name.lower()
    for ext in (".ome.tiff", ".ome.tif", ".nii.gz"):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _full_range(dtype: np.dtype) -> tuple[float, float] | None:
    """The values a dtype can hold ([0, 1] for bool); None for floats (no fixed range)."""
    if dtype.kind == "b":
        return 0.0, 1.0
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def _common_range(
    files: list[Path], ranges: list[tuple[float, float] | None], normalize: str
) -> tuple[float, float]:
    if normalize == "none":
        return 0.0, 1.0
    for f, r in zip(files, ranges):
        if r is None:
            raise ValueError(
                f"image {str(f)!r} holds floats, which have no fixed range to normalize from: "
                "pass normalize='none', or use volumes(normalize='minmax')"
            )
        if r != ranges[0]:
            raise ValueError(
                f"image {str(f)!r} holds values in {r} but {files[0].name!r} in {ranges[0]}; "
                "normalize maps a dtype's full range, so use one bit depth (or normalize='none')"
            )
    return ranges[0]  # type: ignore[return-value]


def _read(
    file: Path,
    hw: tuple[int, ...] | None,
    grayscale: bool,
    spatial_dims: int | None,
    channel_axis: int | None,
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """The image as (C, *spatial) and the full range of the dtype it was stored in."""
    try:
        header = read_header(file) if match_suffix(file) else None
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read image {str(file)!r}: {err}") from None
    if header is None or (header.meta.get("format") == "png" and header.dtype != np.uint16):
        if spatial_dims not in (None, 2) or channel_axis is not None:
            raise ValueError(
                f"image {str(file)!r} is a 2-D 8-bit picture; spatial_dims={spatial_dims} and "
                f"channel_axis={channel_axis} do not apply to it"
            )
        return _read_pillow(file, hw, grayscale), (0.0, 255.0)
    layout = resolve_layout(header, spatial_dims, channel_axis, str(file))
    try:
        with read(file) as volume:
            array = np.array(layout.apply(volume.array))  # (C, *spatial), a copy
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot read image {str(file)!r}: {err}") from None
    full = _full_range(header.dtype)
    if layout.spatial_dims == 2 and set(header.axes or "") <= set("YXS"):  # a picture
        array = _picture_channels(array, grayscale)
    elif grayscale:
        raise ValueError(
            f"grayscale=True converts 2-D pictures, but {str(file)!r} has axes "
            f"{header.axes!r} and {layout.in_channels} channel(s); leave it False"
        )
    if hw is not None:
        if layout.spatial_dims != 2:
            raise ValueError(f"size={hw} resizes 2-D images, but {str(file)!r} is not 2-D")
        resized = resize_bilinear(torch.from_numpy(array.astype(np.float64))[None], hw)
        array = resized[0].numpy()
    return array, full


def _picture_channels(array: np.ndarray, grayscale: bool) -> np.ndarray:
    """(C, H, W) gray / gray+alpha / RGB / RGBA as 1 channel (``grayscale``) or 3 (RGB)."""
    if array.shape[0] in (2, 4):
        array = array[:-1]  # alpha dropped
    if grayscale and array.shape[0] == 3:
        weights = np.asarray(LUMA).reshape(3, 1, 1)
        return (array * weights).sum(axis=0, keepdims=True)  # float64 (1, H, W)
    if not grayscale and array.shape[0] == 1:
        return np.repeat(array, 3, axis=0)
    return array


def _read_pillow(file: Path, hw: tuple[int, ...] | None, grayscale: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img = img.convert("L" if grayscale else "RGB")
            if hw is not None:
                img = img.resize((hw[1], hw[0]), Image.Resampling.BICUBIC)  # Pillow wants (w, h)
            array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {str(file)!r}: {err}") from None
    array = array[..., None] if array.ndim == 2 else array  # (H, W, C)
    return array.transpose(2, 0, 1)  # (C, H, W)

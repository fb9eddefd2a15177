"""PNG, 8- and 16-bit, gray, gray+alpha, RGB(A) and palette, read exactly.

Pillow reads 8-bit images and 16-bit gray ("I;16": values come back as uint16, unscaled); 16-bit
colour, which Pillow would cut to 8 bits, is decoded by ``_png16``. Palette images give their
indices (label maps are often stored so). Axes are "YX", or "YXS" with samples last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._png16 import CHANNELS, decode16, encode16, read_ihdr
from .base import Header, Volume


def header(path: Path, key: str | None) -> Header:
    if key is not None:
        raise ValueError(f"key={key!r} given, but {str(path)!r} is a PNG with one image")
    height, width, depth, colour, _ = read_ihdr(path)
    channels = CHANNELS[colour]
    shape = (height, width) if channels == 1 else (height, width, channels)
    dtype = np.dtype(np.uint16 if depth == 16 else bool if depth == 1 and colour == 0 else np.uint8)
    meta = {"format": "png", "bit_depth": depth, "palette": colour == 3}
    return Header(shape, dtype, "YX" if channels == 1 else "YXS", meta=meta)


def read(path: Path, key: str | None) -> Volume:
    h = header(path, key)
    if h.meta["bit_depth"] == 16 and len(h.shape) == 3:
        array = decode16(path)
    else:
        from PIL import Image

        with Image.open(path) as image:
            image.load()
            array = np.array(image)
        depth = h.meta["bit_depth"]
        if depth == 16 and array.dtype != np.uint16:  # older Pillow: mode "I"
            array = array.astype(np.uint16)
        if depth in (2, 4) and not h.meta["palette"] and array.ndim == 2:
            array //= 255 // (2**depth - 1)  # Pillow stretches 2/4-bit gray to 0..255
    if array.shape != h.shape or array.dtype != h.dtype:
        raise ValueError(
            f"{str(path)!r}: decoded {array.dtype} {array.shape}, but its header says "
            f"{h.dtype} {h.shape}; this PNG variant is not read exactly here"
        )
    return Volume(array, h.axes, None, None, h.meta)


def check_write(array: np.ndarray, *, affine: Any, spacing: Any, axes: Any) -> None:
    if affine is not None or spacing is not None:
        raise ValueError("PNG stores no affine or spacing; use .tif or .nii(.gz) for those")
    channels = 1 if array.ndim == 2 else array.shape[-1] if array.ndim == 3 else 0
    if channels not in (1, 2, 3, 4) or array.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"array is {array.dtype} {array.shape}; PNG holds uint8 or uint16 (H, W) or "
            "(H, W, 2|3|4) (gray+alpha, RGB, RGBA)"
        )
    expected = "YX" if array.ndim == 2 else "YXS"
    if axes is not None and axes != expected:
        raise ValueError(f"axes={axes!r}: PNG axes are {expected!r}")


def write(tmp: Path, array: np.ndarray, **_: Any) -> None:
    if array.dtype == np.uint16:
        encode16(tmp, array)
        return
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")

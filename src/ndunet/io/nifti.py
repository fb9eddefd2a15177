"""NIfTI-1/2 (``.nii``, ``.nii.gz``) through nibabel: lazy voxel access via its array proxy.

Axes follow the NIfTI standard: the first three are spatial (x, y, z in voxel order, not
reoriented: the affine maps them to world space), the fourth is time, the fifth holds vector or
other components (channels). Spacing is the header's zooms (pixdim), one per axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Header, Volume, require

AXES = "XYZTC"


def _load(path: Path, key: str | None) -> Any:
    if key is not None:
        raise ValueError(f"key={key!r} given, but {str(path)!r} is a NIfTI file with one array")
    nib = require("nibabel")
    return nib.load(path, mmap="r")


def _describe(img: Any, path: Path) -> Header:
    proxy = img.dataobj
    shape = tuple(int(s) for s in img.shape)
    dtype = img.get_data_dtype()
    slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    if shape and not (slope == 1.0 and inter == 0.0):
        # scl_slope/scl_inter: nibabel returns scaled (float) values; read one voxel to see which.
        dtype = np.asarray(proxy[(0,) * len(shape)]).dtype
    hdr = img.header
    xyz, t = hdr.get_xyzt_units()
    meta = {"format": "nifti", "xyz_units": xyz, "t_units": t, "intent": hdr.get_intent()[0]}
    meta["qform_code"] = int(hdr["qform_code"])
    meta["sform_code"] = int(hdr["sform_code"])
    zooms = tuple(float(z) for z in hdr.get_zooms())
    return Header(
        shape,
        np.dtype(dtype),
        axes=AXES[: len(shape)] if len(shape) <= len(AXES) else None,
        affine=np.asarray(img.affine, dtype=np.float64),
        spacing=zooms if len(zooms) == len(shape) else None,
        meta=meta,
    )


def header(path: Path, key: str | None) -> Header:
    return _describe(_load(path, key), path)


def read(path: Path, key: str | None) -> Volume:
    img = _load(path, key)
    h = _describe(img, path)
    return Volume(img.dataobj, h.axes, h.affine, h.spacing, h.meta, dtype=h.dtype)


def check_write(array: np.ndarray, *, affine: Any, spacing: Any, axes: Any) -> None:
    if axes is not None and axes != AXES[: array.ndim]:
        raise ValueError(f"axes={axes!r}: NIfTI axes are fixed as {AXES[: array.ndim]!r}")
    if not 1 <= array.ndim <= 7:
        raise ValueError(f"array has {array.ndim} dims; NIfTI holds 1 to 7")
    if array.dtype == bool or not (array.dtype.kind in "iuf" or array.dtype.kind == "c"):
        raise TypeError(
            f"array has dtype {array.dtype}; NIfTI holds ints and floats (cast bool to uint8)"
        )
    if affine is not None and spacing is not None and array.ndim >= 1:
        k = min(3, array.ndim)
        zooms = np.sqrt((affine[:3, :k] ** 2).sum(axis=0))
        if not np.allclose(zooms, spacing[:k], rtol=1e-5):
            raise ValueError(
                f"spacing={spacing} disagrees with the voxel sizes {tuple(zooms.tolist())} of "
                "affine; give one of them, or both consistent"
            )


def write(tmp: Path, array: np.ndarray, *, affine: Any, spacing: Any, **_: Any) -> None:
    nib = require("nibabel")
    if affine is None:
        affine = np.eye(4)
        if spacing is not None:
            k = min(3, array.ndim)
            affine[np.arange(k), np.arange(k)] = spacing[:k]
    img = nib.Nifti1Image(array, affine, dtype=array.dtype)  # dtype: int64 kept as asked
    img.set_qform(affine, code=1)  # scanner-anatomical: readers that prefer qform agree
    img.set_sform(affine, code=1)
    if spacing is not None:
        img.header.set_zooms(spacing)
    nib.save(img, tmp)

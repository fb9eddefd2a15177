"""HDF5 (``.h5``, ``.hdf5``) through h5py, opened read-only; datasets are sliced lazily.

``key`` is the dataset's path; without it the file must hold exactly one dataset. Axes come from
HDF5 dimension labels (x, y, z, t, c) when every axis has one; spacing from the
``element_size_um`` attribute (ilastik, Fiji) or a ``spacing`` attribute, one value per axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ndunet._checks import did_you_mean

from .base import Header, Volume, axes_from_names, require


def _open(path: Path, key: str | None) -> tuple[Any, Any, Header]:
    h5py = require("h5py")
    handle = h5py.File(path, "r")
    try:
        names: list[str] = []
        handle.visititems(lambda n, obj: names.append(n) if isinstance(obj, h5py.Dataset) else None)
        names.sort()
        if key is None:
            if len(names) != 1:
                raise ValueError(
                    f"{str(path)!r} holds the datasets {names}; pass key=... to pick one"
                )
            key = names[0]
        node = handle.get(key)
        if not isinstance(node, h5py.Dataset):
            raise ValueError(
                f"key={key!r} is not a dataset of {str(path)!r}; its datasets are {names}"
                f"{did_you_mean(key, names)}"
            )
        shape = tuple(int(s) for s in node.shape)
        axes = axes_from_names([d.label for d in node.dims]) if shape else None
        spacing = None
        for attr in ("element_size_um", "spacing"):
            values = np.atleast_1d(node.attrs.get(attr, []))
            if values.ndim == 1 and len(values) == len(shape) and values.dtype.kind in "iuf":
                spacing = tuple(float(v) for v in values)
                break
        h = Header(shape, node.dtype, axes, None, spacing, {"format": "hdf5", "key": key})
        return handle, node, h
    except BaseException:
        handle.close()
        raise


def header(path: Path, key: str | None) -> Header:
    handle, _, h = _open(path, key)
    handle.close()
    return h


def read(path: Path, key: str | None) -> Volume:
    handle, node, h = _open(path, key)
    return Volume(node, h.axes, None, h.spacing, h.meta, closer=handle.close)

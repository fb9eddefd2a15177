"""NumPy ``.npy`` (memory-mapped, read-only) and ``.npz`` (one member; memory-mapped when stored
uncompressed). Never unpickles: object arrays are refused."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ndunet._checks import did_you_mean

from .base import Header, Volume


def _npy_header(handle: Any, where: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) from an open .npy stream at its start."""
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except ValueError as err:
        raise ValueError(f"{where} is not a readable .npy array: {err}") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds Python objects; reading it would need unpickling")
    return tuple(shape), dtype, fortran, handle.tell() - start


def _member(path: Path, key: str | None) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as archive:
        infos = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
    names = sorted(infos)
    if key is None:
        if len(names) != 1:
            raise ValueError(f"{str(path)!r} holds the arrays {names}; pass key=... to pick one")
        key = names[0]
    if key not in infos:
        raise ValueError(
            f"key={key!r} is not in {str(path)!r}; its arrays are {names}{did_you_mean(key, names)}"
        )
    return infos[key]


def header(path: Path, key: str | None) -> Header:
    if path.suffix.lower() == ".npz":
        info = _member(path, key)
        with zipfile.ZipFile(path) as archive, archive.open(info) as handle:
            shape, dtype, _, _ = _npy_header(handle, f"{str(path)!r}[{info.filename!r}]")
        return Header(shape, dtype, meta={"format": "npz", "key": info.filename[:-4]})
    _no_key(path, key)
    with open(path, "rb") as handle:
        shape, dtype, _, _ = _npy_header(handle, repr(str(path)))
    return Header(shape, dtype, meta={"format": "npy"})


def read(path: Path, key: str | None) -> Volume:
    if path.suffix.lower() != ".npz":
        _no_key(path, key)
        header(path, None)  # refuses object arrays before np.load sees them
        return Volume(np.load(path, mmap_mode="r", allow_pickle=False), meta={"format": "npy"})
    info = _member(path, key)
    meta = {"format": "npz", "key": info.filename.removesuffix(".npy")}
    where = f"{str(path)!r}[{info.filename!r}]"
    with zipfile.ZipFile(path) as archive, archive.open(info) as handle:
        shape, dtype, fortran, offset = _npy_header(handle, where)
    if info.compress_type == zipfile.ZIP_STORED and shape:
        # An uncompressed member is a plain .npy inside the zip: map its bytes in place.
        with open(path, "rb") as raw:
            raw.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(raw.read(4), "<u2")
        start = info.header_offset + 30 + int(name_len) + int(extra_len) + offset
        order = "F" if fortran else "C"
        array = np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape, order=order)
        return Volume(array, meta=meta)
    with zipfile.ZipFile(path) as archive, archive.open(info) as handle:
        return Volume(np.lib.format.read_array(handle, allow_pickle=False), meta=meta)


def _no_key(path: Path, key: str | None) -> None:
    if key is not None:
        raise ValueError(f"key={key!r} given, but {str(path)!r} is a .npy file with one array")


def check_write(array: np.ndarray, *, affine: Any, spacing: Any, axes: Any) -> None:
    if affine is not None or spacing is not None or axes is not None:
        raise ValueError(".npy stores no affine, spacing or axes; use .nii(.gz) or .tif for those")
    if array.dtype.hasobject:
        raise ValueError(f"array has dtype {array.dtype}; .npy files here hold numbers only")


def write(tmp: Path, array: np.ndarray, **_: Any) -> None:
    with open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)

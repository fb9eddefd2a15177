"""Zarr (v2 and v3 stores, ``.zarr`` folders) through zarr, opened read-only and sliced lazily.

A store may be one array or a group. In a group, ``key`` is the array's path; without it an
OME-Zarr (NGFF) image gives its full-resolution level with its axes and scale, and any other
group must hold exactly one array. Axes also come from xarray's ``_ARRAY_DIMENSIONS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ndunet._checks import did_you_mean

from .base import Header, Spacing, Volume, axes_from_names, require


def _multiscales(attrs: dict[str, Any]) -> dict[str, Any] | None:
    found = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    return found[0] if isinstance(found, list) and found and isinstance(found[0], dict) else None


def _ngff(ms: dict[str, Any], key: str) -> tuple[str | None, Spacing | None]:
    """Axes letters and scale of dataset ``key`` of an OME-Zarr multiscales record."""
    names = [a.get("name") if isinstance(a, dict) else a for a in ms.get("axes", [])]
    axes = axes_from_names(names)
    spacing = None
    for dataset in ms.get("datasets", []):
        if dataset.get("path") != key:
            continue
        for transform in dataset.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                spacing = tuple(float(v) for v in transform["scale"])
    return axes, spacing


def _open(path: Path, key: str | None) -> tuple[Any, Header]:
    zarr = require("zarr")
    node = zarr.open(str(path), mode="r")
    axes, spacing, meta = None, None, {"format": "zarr"}
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        ms = _multiscales(dict(node.attrs))
        if key is None:
            if ms is not None:
                key = ms["datasets"][0]["path"]
            elif len(names) == 1:
                key = names[0]
            else:
                raise ValueError(
                    f"{str(path)!r} holds the arrays {names}; pass key=... to pick one"
                )
        try:
            array = node[key]
        except KeyError:
            raise ValueError(
                f"key={key!r} is not in {str(path)!r}; its arrays are {names}"
                f"{did_you_mean(key, names)}"
            ) from None
        if isinstance(array, zarr.Group):
            raise ValueError(f"key={key!r} in {str(path)!r} is a group, not an array")
        if ms is not None:
            axes, spacing = _ngff(ms, key)
        meta["key"] = key
    elif key is not None:
        raise ValueError(f"key={key!r} given, but {str(path)!r} is a single zarr array")
    else:
        array = node
    if axes is None:
        axes = axes_from_names(dict(array.attrs).get("_ARRAY_DIMENSIONS") or [])
    shape = tuple(int(s) for s in array.shape)
    if axes is not None and len(axes) != len(shape):
        axes = None
    if spacing is not None and len(spacing) != len(shape):
        spacing = None
    return array, Header(shape, array.dtype, axes, None, spacing, meta)


def header(path: Path, key: str | None) -> Header:
    return _open(path, key)[1]


def read(path: Path, key: str | None) -> Volume:
    array, h = _open(path, key)
    return Volume(array, h.axes, None, h.spacing, h.meta)

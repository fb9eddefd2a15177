"""TIFF, multi-page stacks, ImageJ hyperstacks and OME-TIFF through tifffile.

Every page of a series is read, in its own dtype (uint16 stays uint16). Axes are tifffile's
series axes ("ZYX", "TZCYXS", OME axes; "IYX"/"QYX" when a stack does not say what its pages
are). Uncompressed data is memory-mapped read-only; compressed data is read lazily through zarr
when it is installed, else in full. ``key`` is a series index for files holding several.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from .base import Header, Spacing, Volume, require


def _series(tif: Any, path: Path, key: str | None) -> tuple[int, Any]:
    count = len(tif.series)
    if key is None:
        if count != 1:
            shapes = [tuple(s.shape) for s in tif.series]
            raise ValueError(
                f"{str(path)!r} holds {count} series with shapes {shapes}; pass key='0'..'{count - 1}'"
            )
        return 0, tif.series[0]
    if not str(key).isdigit() or int(key) >= count:
        raise ValueError(
            f"key={key!r} is not valid for {str(path)!r}; expected a series index '0'..'{count - 1}'"
        )
    return int(key), tif.series[int(key)]


def _resolution(page: Any) -> tuple[float | None, float | None]:
    """(y, x) pixel size from the resolution tags; None when they hold tifffile's default 1/1."""
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    unit = page.tags.get("ResolutionUnit")
    if xres is None or yres is None:
        return None, None
    values = [v.value[0] / v.value[1] if v.value[1] else 0.0 for v in (yres, xres)]
    if (values == [1.0, 1.0] and (unit is None or int(unit.value) == 1)) or 0.0 in values:
        return None, None
    return 1.0 / values[0], 1.0 / values[1]


def _ome_sizes(tif: Any, index: int) -> dict[str, float]:
    try:
        root = ET.fromstring(tif.ome_metadata)
    except (ET.ParseError, TypeError):
        return {}
    pixels = [e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"]
    if index >= len(pixels):
        return {}
    attrs = pixels[index].attrib
    return {a: float(attrs[f"PhysicalSize{a}"]) for a in "XYZ" if f"PhysicalSize{a}" in attrs}


def _spacing(tif: Any, index: int, series: Any, axes: str) -> Spacing | None:
    shaped = tif.shaped_metadata or ()
    if index < len(shaped) and isinstance(shaped[index].get("spacing"), list):
        values = shaped[index]["spacing"]  # written by ndunet.io.write: one per axis
        if len(values) == len(axes):
            return tuple(None if v is None else float(v) for v in values)
    sizes: dict[str, float | None] = {}
    if tif.is_ome:
        sizes.update(_ome_sizes(tif, index))
    else:
        sizes["Y"], sizes["X"] = _resolution(series.keyframe)
        if tif.is_imagej and "spacing" in (tif.imagej_metadata or {}):
            sizes["Z"] = float(tif.imagej_metadata["spacing"])
    spacing = tuple(sizes.get(a) for a in axes)
    return spacing if any(v is not None for v in spacing) else None


def _describe(tif: Any, path: Path, key: str | None) -> tuple[Header, Any, int]:
    index, series = _series(tif, path, key)
    axes = str(series.axes)
    meta: dict[str, Any] = {"format": "tiff", "series": index, "pages": len(tif.pages)}
    meta["kind"] = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "tiff"
    shape = tuple(int(s) for s in series.shape)
    spacing = _spacing(tif, index, series, axes)
    return Header(shape, np.dtype(series.dtype), axes, None, spacing, meta), series, index


def header(path: Path, key: str | None) -> Header:
    tifffile = require("tifffile")
    with tifffile.TiffFile(path) as tif:
        return _describe(tif, path, key)[0]


def read(path: Path, key: str | None) -> Volume:
    tifffile = require("tifffile")
    tif = tifffile.TiffFile(path)
    try:
        h, series, index = _describe(tif, path, key)
        if series.dataoffset is not None:  # contiguous and uncompressed: map it
            try:
                array = tifffile.memmap(path, series=index, mode="r")
            except ValueError:
                pass
            else:
                tif.close()
                return Volume(array, h.axes, None, h.spacing, h.meta)
        try:
            import zarr
        except ImportError:
            array, closer = series.asarray(), None
            tif.close()
        else:
            try:
                array, closer = zarr.open(series.aszarr(), mode="r"), tif.close
            except Exception:  # a tifffile too old for this zarr: read it in full instead
                array, closer = series.asarray(), None
                tif.close()
        return Volume(array, h.axes, None, h.spacing, h.meta, closer=closer)
    except BaseException:
        tif.close()
        raise


def check_write(array: np.ndarray, *, affine: Any, spacing: Any, axes: Any) -> None:
    if affine is not None:
        raise ValueError("TIFF stores no affine; use .nii(.gz) for oriented volumes")
    if array.ndim < 2:
        raise ValueError(f"array has {array.ndim} dims; TIFF images need at least 2 (Y, X)")
    if array.dtype.hasobject or array.dtype.kind not in "biuf":
        raise TypeError(f"array has dtype {array.dtype}; TIFF holds bool, ints and floats")
    if spacing is not None and axes is None:
        raise ValueError("spacing given without axes; pass axes='ZYX' (or the file's letters) too")
    if axes is not None and not (axes.endswith("YX") or axes.endswith("YXS")):
        raise ValueError(f"axes={axes!r}: TIFF images end in 'YX' (or 'YXS' for samples)")


def write(tmp: Path, array: np.ndarray, *, spacing: Any, axes: Any, **_: Any) -> None:
    tifffile = require("tifffile")
    kwargs: dict[str, Any] = {"metadata": None if axes is None else {"axes": axes}}
    # Samples last only when the axes say so: tifffile would otherwise store a (3|4, H, W)
    # array as planar RGB.
    rgb = axes is not None and axes.endswith("S") and array.shape[-1] in (3, 4)
    kwargs["photometric"] = "rgb" if rgb else "minisblack"
    if spacing is not None:
        kwargs["metadata"]["spacing"] = list(spacing)  # every axis, read back by `read`
        y, x = axes.index("Y"), axes.index("X")  # and X/Y as resolution tags for other readers
        kwargs["resolution"] = (1.0 / spacing[x], 1.0 / spacing[y])
        kwargs["resolutionunit"] = tifffile.RESUNIT.NONE
    tifffile.imwrite(tmp, array, **kwargs)

"""The files behind ``volumes``: one listing, labels matched by name, every header read once and
its layout resolved up front, so a bad file is reported before any voxel is read."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ndunet.io import Header, Layout, read, read_header, resolve_layout, stem_of, suffixes
from ndunet.io.base import match_suffix

PathInput = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class VolumeFile:
    """One sample: the image file (and its label file), their headers and layouts."""

    path: Path
    header: Header
    layout: Layout
    label_path: Path | None = None
    label_header: Header | None = None
    label_layout: Layout | None = None


def list_files(path: PathInput, param: str) -> list[Path]:
    """A folder's readable files in name order (hidden ones skipped), or the files given."""
    if isinstance(path, (str, os.PathLike)):
        root = Path(path)
        if not root.exists():
            raise FileNotFoundError(f"{param}={str(path)!r} does not exist")
        if root.is_dir() and match_suffix(root) is None:
            found = [
                p
                for p in sorted(root.iterdir())
                if not p.name.startswith(".")
                and (m := match_suffix(p))
                and m[0].folder == p.is_dir()
            ]
            if not found:
                raise ValueError(f"{param}={str(path)!r} holds no files ending in {suffixes()}")
            return found
        return [root]
    if not isinstance(path, Sequence) or not path:
        raise TypeError(
            f"{param}={path!r} is not valid; expected a folder, a file or a list of files"
        )
    files = [Path(p) for p in path]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{param}: {missing[:5]} do not exist ({len(missing)} files)")
    return files


def match_labels(images: list[Path], labels: PathInput) -> list[Path]:
    """The label file of each image: same position in a list, or same stem in a folder."""
    folder = isinstance(labels, (str, os.PathLike)) and Path(labels).is_dir()
    if not folder or match_suffix(labels) is not None:  # a list, a file or one .zarr store
        found = list_files(labels, "labels")
        if len(found) != len(images):
            raise ValueError(
                f"labels: {len(found)} files for {len(images)} images; they must pair up"
            )
        return found
    by_stem: dict[str, Path] = {}
    for p in list_files(labels, "labels"):
        stem = stem_of(p)
        if stem in by_stem:
            raise ValueError(
                f"labels: {by_stem[stem].name!r} and {p.name!r} share the name {stem!r}"
            )
        by_stem[stem] = p
    missing = [p.name for p in images if stem_of(p) not in by_stem]
    if missing:
        raise ValueError(
            f"labels={str(labels)!r} has no file named like {missing[:5]} ({len(missing)} images); "
            "label files share the image's name (any supported suffix)"
        )
    return [by_stem[stem_of(p)] for p in images]


def scan(
    images: list[Path],
    labels: list[Path] | None,
    *,
    spatial_dims: int | None,
    channel_axis: int | None,
    label_channel_axis: int | None,
    image_key: str | None,
    label_key: str | None,
) -> list[VolumeFile]:
    """Headers and layouts of every file; all images must agree on spatial_dims and channels,
    and each label must cover its image's spatial shape."""
    out: list[VolumeFile] = []
    for i, path in enumerate(images):
        h = read_header(path, image_key)
        layout = resolve_layout(h, spatial_dims, channel_axis, str(path))
        if out and (layout.spatial_dims, layout.in_channels) != (
            out[0].layout.spatial_dims,
            out[0].layout.in_channels,
        ):
            first = out[0]
            raise ValueError(
                f"{str(path)!r} reads as {layout.in_channels} channel(s) x {layout.spatial_dims}-D "
                f"but {str(first.path)!r} as {first.layout.in_channels} x "
                f"{first.layout.spatial_dims}-D; all images must agree"
            )
        if labels is None and label_key is None:
            out.append(VolumeFile(path, h, layout))
            continue
        label_path = path if labels is None else labels[i]
        lh = read_header(label_path, label_key)
        ll = resolve_layout(
            lh, layout.spatial_dims, label_channel_axis, f"label {str(label_path)!r}"
        )
        if ll.spatial_shape != layout.spatial_shape:
            raise ValueError(
                f"label {str(label_path)!r} has spatial shape {ll.spatial_shape} but image "
                f"{str(path)!r} has {layout.spatial_shape}; they must match"
            )
        out.append(VolumeFile(path, h, layout, label_path, lh, ll))
    return out


def chunks(
    path: Path, key: str | None, layout: Layout, max_bytes: int = 1 << 26
) -> Iterator[np.ndarray]:
    """The file as ``(C, *spatial)`` slabs along the first spatial axis, each under about
    ``max_bytes`` of float64, so statistics over volumes larger than RAM stay in memory."""
    shape = layout.spatial_shape
    row = 8 * layout.in_channels * math.prod(shape[1:])  # float64 bytes per index of axis 0
    step = max(1, max_bytes // max(row, 1))
    with read(path, key) as volume:
        for start in range(0, shape[0], step):
            region = (slice(start, start + step),) + (slice(None),) * (len(shape) - 1)
            yield layout.apply(volume.array, region)


def mtime(path: Path | None) -> int:
    """The modification time of ``path`` in ns (0 for None): part of a cache key."""
    return 0 if path is None else os.stat(path).st_mtime_ns


def as_class_map(y: np.ndarray, f: VolumeFile) -> np.ndarray:
    """Integer labels as int64, refusing negative or fractional values."""
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError(
            f"label {str(f.label_path)!r} holds non-integer values; a class map needs integers"
        )
    out = y.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(
            f"label {str(f.label_path)!r} holds negative values; classes are 0, 1, ..."
        )
    return out

"""A training set's fingerprint: shapes and spacings from the headers, intensities, foreground
share and classes from a bounded read (nnU-Net's dataset fingerprint, for any spatial_dims).

Each file is read at most ``max_read_bytes`` (every k-th slab along its first spatial axis when
it is larger), so fingerprinting a large set costs a bounded read per file. Intensity
percentiles come from up to ``samples_per_case`` voxels per file, drawn with a seeded generator:
foreground voxels (label > 0) when labels exist, as nnU-Net's CT scheme does, else all voxels.
Spacings are the files' own, on every spatial axis alike: a time axis read as spatial brings
its file's time step (e.g. a repetition time in seconds) into the pooling rule as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ndunet._checks import check_int, invalid
from ndunet.data.volume_files import (
    PathInput,
    VolumeFile,
    as_class_map,
    list_files,
    match_labels,
    scan,
)
from ndunet.io import read

__all__ = ["Fingerprint", "fingerprint"]

PERCENTILES = (0.5, 50.0, 99.5)
Percentiles = tuple[tuple[float, float, float], ...]  # per channel: 0.5, 50, 99.5


@dataclass(frozen=True)
class Fingerprint:
    """What the planner needs to know about a training set.

    ``shapes`` and ``spacings`` have one entry per volume (spacing 1.0 on axes whose file does
    not say: ``spacing_known`` is then False). ``percentiles`` are per channel (0.5, 50, 99.5)
    over foreground voxels when labels exist, ``all_percentiles`` over every sampled voxel.
    """

    shapes: tuple[tuple[int, ...], ...]
    spacings: tuple[tuple[float, ...], ...] | None = None  # None: 1.0 on every axis
    in_channels: int = 1
    num_classes: int | None = None  # 1 + the largest label read (None: no labels)
    foreground_share: float | None = None  # mean share of voxels with label > 0
    percentiles: Percentiles | None = None
    all_percentiles: Percentiles | None = None
    spacing_known: bool = True
    images: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    read_options: dict[str, Any] = field(default_factory=dict)  # spatial_dims, channel_axis given

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ValueError(invalid("shapes", self.shapes, "one spatial shape per volume"))
        n = len(self.shapes[0])
        for shape in self.shapes:
            if len(shape) != n or min(shape, default=0) < 1:
                raise ValueError(invalid("shapes", shape, f"{n} positive lengths, as the first"))
        spacings = self.spacings or ((1.0,) * n,) * len(self.shapes)
        if len(spacings) != len(self.shapes) or any(len(s) != n for s in spacings):
            raise ValueError(invalid("spacings", self.spacings, f"{n} values per volume"))
        if not all(math.isfinite(v) and v > 0 for s in spacings for v in s):
            raise ValueError(invalid("spacings", self.spacings, "finite values > 0"))
        object.__setattr__(self, "spacings", tuple(tuple(map(float, s)) for s in spacings))
        check_int("in_channels", self.in_channels, 1)

    @property
    def spatial_dims(self) -> int:
        return len(self.shapes[0])

    @property
    def median_shape(self) -> tuple[int, ...]:
        return tuple(round(float(v)) for v in np.median(np.array(self.shapes), axis=0))

    @property
    def median_spacing(self) -> tuple[float, ...]:
        """The target spacing (nnU-Net: the median per axis)."""
        return tuple(float(v) for v in np.median(np.array(self.spacings), axis=0))

    @property
    def total_voxels(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def ct_like(self) -> bool:
        """One channel whose values look like Hounsfield units: air near -1000 among the
        darkest voxels, and nothing past the bone and metal range."""
        p = self.all_percentiles
        return p is not None and len(p) == 1 and -1100 <= p[0][0] <= -500 and p[0][2] <= 4100

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": len(self.shapes),
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "median_shape": list(self.median_shape),
            "median_spacing": list(self.median_spacing),
            "spacing_known": self.spacing_known,
            "num_classes": self.num_classes,
            "foreground_share": self.foreground_share,
            "percentiles": None
            if self.percentiles is None
            else [list(p) for p in self.percentiles],
        }


def fingerprint(
    path: PathInput,
    *,
    labels: PathInput | None = None,
    spatial_dims: int | None = None,
    channel_axis: int | None = None,
    max_read_bytes: int = 1 << 27,
    samples_per_case: int = 10_000,
    seed: int = 0,
) -> Fingerprint:
    """The fingerprint of the volumes in ``path`` (a folder, a file or a list; any format of
    ``ndunet.io``), labels matched as in ``ndunet.data.volumes``; see the module doc."""
    check_int("max_read_bytes", max_read_bytes, 1)
    check_int("samples_per_case", samples_per_case, 1)
    check_int("seed", seed, 0)
    images = list_files(path, "path")
    label_files = None if labels is None else match_labels(images, labels)
    records = scan(
        images, label_files, spatial_dims=spatial_dims, channel_axis=channel_axis,
        label_channel_axis=None, image_key=None, label_key=None,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    channels = records[0].layout.in_channels
    fg: list[np.ndarray] = []
    every: list[np.ndarray] = []
    shares, largest = [], 0
    for f in records:
        x, y = _bounded_read(f, max_read_bytes)  # (C, *spatial), (*spatial) or None
        values = x.reshape(channels, -1)  # (C, voxels)
        every.append(_sample(values, None, samples_per_case, rng))
        if y is not None:
            mask = y.reshape(-1) > 0
            shares.append(float(mask.mean()) if mask.size else 0.0)
            largest = max(largest, int(y.max(initial=0)))
            fg.append(_sample(values, mask, samples_per_case, rng))
    spacings, known = [], True
    for f in records:
        s = f.layout.spacing(f.header.spacing) or (None,) * f.layout.spatial_dims
        known = known and all(v is not None and v > 0 for v in s)
        spacings.append(tuple(float(v) if v and v > 0 else 1.0 for v in s))
    stated = {"spatial_dims": spatial_dims, "channel_axis": channel_axis}
    labelled = label_files is not None
    return Fingerprint(
        shapes=tuple(f.layout.spatial_shape for f in records),
        spacings=tuple(spacings),
        in_channels=channels,
        num_classes=max(largest + 1, 2) if labelled else None,
        foreground_share=float(np.mean(shares)) if labelled else None,
        percentiles=_percentiles(fg if labelled and sum(a.shape[1] for a in fg) else every),
        all_percentiles=_percentiles(every),
        spacing_known=known,
        images=tuple(str(p) for p in images),
        labels=None if label_files is None else tuple(str(p) for p in label_files),
        read_options={k: v for k, v in stated.items() if v is not None},
    )


def _bounded_read(f: VolumeFile, max_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (and its class map) at every k-th index of the first spatial axis, k chosen
    so that at most about ``max_bytes`` of the image are read."""
    shape = f.layout.spatial_shape
    size = f.layout.in_channels * math.prod(shape) * f.header.dtype.itemsize
    step = max(1, math.ceil(size / max_bytes))
    region = (slice(None, None, step),) + (slice(None),) * (len(shape) - 1)
    with read(f.path, None) as volume:
        x = np.asarray(f.layout.apply(volume.array, region), dtype=np.float64)
    if f.label_path is None or f.label_layout is None:
        return x, None
    if f.label_layout.in_channels != 1:
        raise ValueError(
            f"label {str(f.label_path)!r} has {f.label_layout.in_channels} channels; a "
            "segmentation plan needs class maps (one integer class per voxel)"
        )
    with read(f.label_path, None) as volume:
        y = as_class_map(f.label_layout.apply(volume.array, region), f)
    return x, y[0]  # (*spatial)


def _sample(
    values: np.ndarray, mask: np.ndarray | None, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` voxels (columns of ``values``), among ``mask`` when given."""
    index = np.flatnonzero(mask) if mask is not None else np.arange(values.shape[1])
    if len(index) > n:
        index = rng.choice(index, n, replace=False)
    return values[:, index]


def _percentiles(samples: Sequence[np.ndarray]) -> Percentiles | None:
    values = np.concatenate(list(samples), axis=1) if samples else None
    if values is None or values.shape[1] == 0:
        return None
    table = np.percentile(values, PERCENTILES, axis=1).T  # (C, 3)
    return tuple(tuple(float(v) for v in row) for row in table)  # type: ignore[misc]

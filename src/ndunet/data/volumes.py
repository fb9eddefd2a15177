"""A lazy dataset over a folder (or list) of volume files of any format and any spatial_dims."""

from __future__ import annotations

import copy
import operator
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ndunet._checks import check_choice, check_float, check_int, invalid
from ndunet.io import read

from .normalize import (
    NORMALIZE_KINDS,
    Normalization,
    NormalizeKind,
    check_window,
    fit_normalization,
)
from .splits import Split, check_splits, split_indices, take_splits
from .volume_files import (
    PathInput,
    VolumeFile,
    as_class_map,
    chunks,
    list_files,
    match_labels,
    mtime,
    scan,
)

LabelTask = Literal["segmentation", "denoising", "regression"]
_FITTED: dict[tuple[Any, ...], Any] = {}  # statistics per training set, shared by the splits


def volumes(
    path: PathInput,
    *,
    spatial_dims: int | None = None,
    channel_axis: int | None = None,
    labels: PathInput | None = None,
    label_channel_axis: int | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    task: LabelTask | None = None,
    num_classes: int | None = None,
    normalize: NormalizeKind | Mapping[str, Any] = "none",
    window: tuple[float, float] | None = None,
    split: Split | Sequence[Split] = "all",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    cache_bytes: int = 0,
) -> VolumeDataset | dict[str, VolumeDataset]:
    """Volumes from ``path`` (a folder, one file or a list of files) as ``(x, y)`` samples,
    x float32 ``(C, *spatial)``, read file by file when an item is asked for.

    Any format of ``ndunet.io`` (.npy, .npz, .nii(.gz), .tif(f), .zarr, .h5, .png); a folder is
    listed once, in name order. Layouts follow ``ndunet.io.resolve_layout``: the files' own axes
    where they say, else ``spatial_dims`` and ``channel_axis`` must state them. Labels come from
    ``labels`` (a folder of files named like the images, any suffix, or a list in image order) or,
    with ``label_key`` alone, from the same container file (npz/h5/zarr); ``image_key`` picks
    the image array in containers. Integer labels without a channel axis are class maps (y int64
    ``(*spatial)``, task "segmentation"); others are float32 ``(C', *spatial)`` targets ("denoising"
    for float labels). ``num_classes`` defaults to 1 + the largest label of the training files.

    ``normalize`` is fitted on the training split only (``ndunet.data.normalize``; ``window`` =
    (level, width) for "ct"), or is a record from ``Normalization.to_dict()`` of an earlier run.
    Splits are seeded and shared by every call with the same arguments; "all" keeps every file
    (statistics still come from the "train" part). Volumes may differ in shape: then batch with
    ``batch_size=1`` (``VolumeDataset.collate`` says so) or sample patches. ``cache_bytes`` > 0
    keeps recently read samples in memory (least recently used dropped first), per process.
    A list of splits (``split=["train", "val"]``) gives ``{split: dataset}`` from one scan.
    """
    splits = check_splits(split)
    check_int("seed", seed, 0)
    check_float("val_fraction", val_fraction, 0.0, 1.0)
    check_float("test_fraction", test_fraction, 0.0, 1.0)
    check_int("cache_bytes", cache_bytes, 0)
    for name, value in (("channel_axis", channel_axis), ("label_channel_axis", label_channel_axis)):
        if value is not None:
            check_int(name, value)
    if spatial_dims is not None:
        check_int("spatial_dims", spatial_dims, 1)
    if num_classes is not None:
        check_int("num_classes", num_classes, 1)
    recorded = None
    if isinstance(normalize, Mapping):
        recorded = Normalization.from_dict(normalize)
    else:
        check_choice("normalize", normalize, NORMALIZE_KINDS)
        if normalize == "ct":
            window = check_window(window)
        elif window is not None:
            raise ValueError(invalid("window", window, "None unless normalize='ct'"))
    if labels is None and label_key is None and task is not None:
        raise ValueError(f"task={task!r} needs labels (labels=... or label_key=...)")
    if task is not None:
        check_choice("task", task, ("segmentation", "denoising", "regression"))

    images = list_files(path, "path")
    label_files = None if labels is None else match_labels(images, labels)
    records = scan(
        images,
        label_files,
        spatial_dims=spatial_dims,
        channel_axis=channel_axis,
        label_channel_axis=label_channel_axis,
        image_key=image_key,
        label_key=label_key,
    )
    fractions = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    try:
        train = [records[int(i)] for i in split_indices(len(records), **fractions)["train"]]
    except ValueError:  # split="all" on too few files for the fractions: fit on every file
        train = records
    where = os.fspath(path) if isinstance(path, (str, os.PathLike)) else "files"
    out = {}
    for part, chosen in take_splits(len(records), splits, **fractions).items():
        data = VolumeDataset(
            [records[int(i)] for i in chosen],
            train,
            task=task,
            num_classes=num_classes,
            image_key=image_key,
            label_key=label_key,
            cache_bytes=cache_bytes,
            name=f"{where}[{part}]",
        )
        if recorded is not None and recorded.channels not in (1, data.in_channels):
            raise ValueError(
                f"normalize has {recorded.channels} channels, but the images have "
                f"{data.in_channels}"
            )
        data.normalization = recorded or data.fit(normalize, window)  # type: ignore[arg-type]
        out[part] = data
    return out[split] if isinstance(split, str) else out


class VolumeDataset(Dataset):
    """Samples ``(x, y)`` (``(x,)`` without labels) read from files per item; see ``volumes``.

    ``spatial_dims``, ``in_channels``, ``out_channels``, ``num_classes``, ``task`` and
    ``class_names`` as on ``NDDataset``; ``spatial_shape`` is None when the volumes differ.
    ``meta(i)`` gives file paths, affine and spacing of a sample; ``normalization`` the record
    to store with a run (``to_dict``) and to undo on outputs (``invert``).
    """

    def __init__(
        self,
        files: list[VolumeFile],
        train: list[VolumeFile],
        *,
        task: str | None,
        num_classes: int | None,
        image_key: str | None,
        label_key: str | None,
        cache_bytes: int,
        name: str,
    ) -> None:
        first = (files or train)[0]
        self.files, self._train = files, train
        self.image_key, self.label_key = image_key, label_key
        self.spatial_dims = first.layout.spatial_dims
        self.in_channels = first.layout.in_channels
        self.class_names: list[str] | None = None
        self.name = name
        self.normalization = Normalization()
        self._class_map = False
        if first.label_layout is None:
            self.task = "unlabeled"
        else:
            integral = all(f.label_header.dtype.kind in "biu" for f in train if f.label_header)
            self.task = task or ("segmentation" if integral else "denoising")
            self._class_map = self.task == "segmentation" and not first.label_layout.channel_axes
        bool_map = self._class_map and first.label_header.dtype == bool  # type: ignore[union-attr]
        self._num_classes = 2 if num_classes is None and bool_map else num_classes
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, tuple[torch.Tensor, ...]] = OrderedDict()
        self._cached = 0

    # ----- what a run needs to build a model ---------------------------------------------------

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-map segmentation (1 + the largest training label), else None."""
        if self._num_classes is None and self._class_map:
            self._num_classes = self._fitted(("classes",), self._largest_label) + 1
        return self._num_classes

    @property
    def out_channels(self) -> int | None:
        if self.task == "unlabeled":
            return None
        if self._class_map:
            return self.num_classes
        return (self.files or self._train)[0].label_layout.in_channels  # type: ignore[union-attr]

    @property
    def spatial_shape(self) -> tuple[int, ...] | None:
        shapes = {f.layout.spatial_shape for f in self.files}
        return shapes.pop() if len(shapes) == 1 else None

    def fit(self, kind: str, window: tuple[float, float] | None = None) -> Normalization:
        """The normalisation ``kind`` fitted on the training files (cached per process)."""
        if kind in ("none", "ct"):
            return fit_normalization(
                kind, [], channels=self.in_channels, total_voxels=0, files=0, window=window
            )

        def run() -> Normalization:
            pieces = (c for f in self._train for c in chunks(f.path, self.image_key, f.layout))
            voxels = sum(int(np.prod(f.layout.spatial_shape)) for f in self._train)
            return fit_normalization(
                kind, pieces, channels=self.in_channels, total_voxels=voxels, files=len(self._train)
            )

        return self._fitted(("normalize", kind), run)

    def _fitted(self, what: tuple[Any, ...], compute: Any) -> Any:
        stamp = tuple(
            (str(f.path), mtime(f.path), str(f.label_path), mtime(f.label_path))
            for f in self._train
        )
        key = (*what, stamp, self.image_key, self.label_key, self._train[0].layout)
        if key not in _FITTED:
            _FITTED[key] = compute()
        return _FITTED[key]

    def _largest_label(self) -> int:
        largest = 0
        for f in self._train:
            for piece in chunks(f.label_path, self.label_key, f.label_layout):  # type: ignore[arg-type]
                largest = max(largest, int(as_class_map(piece, f).max(initial=0)))
        return largest

    # ----- samples -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} volumes")
        i %= len(self)
        if i in self._cache:
            self._cache.move_to_end(i)
            return tuple(t.clone() for t in self._cache[i])
        f = self.files[i]
        with read(f.path, self.image_key) as volume:
            x = np.array(f.layout.apply(volume.array), dtype=np.float32)  # (C, *spatial), a copy
        sample: tuple[torch.Tensor, ...] = (self.normalization.apply(torch.from_numpy(x)),)
        if f.label_layout is not None:
            with read(f.label_path, self.label_key) as volume:  # type: ignore[arg-type]
                y = f.label_layout.apply(volume.array)  # (C', *spatial)
            if self._class_map:
                sample += (torch.from_numpy(as_class_map(y, f)[0]),)  # (*spatial) int64
            else:
                sample += (torch.from_numpy(np.array(y, dtype=np.float32)),)
        self._remember(i, sample)
        return sample

    def _remember(self, i: int, sample: tuple[torch.Tensor, ...]) -> None:
        size = sum(t.numel() * t.element_size() for t in sample)
        if size > self.cache_bytes:
            return
        while self._cached + size > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._cached -= sum(t.numel() * t.element_size() for t in old)
        self._cache[i] = tuple(t.clone() for t in sample)
        self._cached += size

    def meta(self, index: int) -> dict[str, Any]:
        """Where sample ``index`` comes from and where it lies: paths, axes, affine, spacing."""
        f = self.files[operator.index(index)]
        return {
            "path": str(f.path),
            "label_path": None if f.label_path is None else str(f.label_path),
            "shape": f.header.shape,
            "dtype": str(f.header.dtype),
            "axes": f.header.axes,
            "spatial_shape": f.layout.spatial_shape,
            "spacing": f.layout.spacing(f.header.spacing),
            "affine": f.header.affine,
        }

    def subset(self, indices: Sequence[int] | torch.Tensor) -> VolumeDataset:
        """The same dataset restricted to ``indices`` (no file is read)."""
        out = copy.copy(self)
        out.files = [self.files[int(i)] for i in indices]
        out._cache, out._cached = OrderedDict(), 0
        return out

    @staticmethod
    def collate(batch: list[tuple[torch.Tensor, ...]]) -> Any:
        """``default_collate``, refusing volumes of different shapes with what to do instead."""
        shapes = {tuple(sample[0].shape) for sample in batch}
        if len(shapes) > 1:
            raise ValueError(
                f"a batch holds volumes of different shapes {sorted(shapes)[:3]}; use "
                "batch_size=1, or crop/sample patches of one size"
            )
        return default_collate(batch)

    def __repr__(self) -> str:
        shape = self.spatial_shape or "varying"
        return (
            f"VolumeDataset({self.name}: {len(self)} volumes, x ({self.in_channels}, {shape}), "
            f"task={self.task!r}, spatial_dims={self.spatial_dims}, "
            f"normalize={self.normalization.kind!r})"
        )

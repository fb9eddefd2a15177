"""The user's own arrays: one .npz/.npy file or a folder of per-sample .npy files, any N."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ndunet._checks import check_choice, check_int

from .base import TASKS, NDDataset, Task
from .preprocess import NORMALIZE, Normalize, rescale, rescale_record
from .splits import Split, check_splits, take_splits

LABELS_FILE = "labels.csv"
MASKS_DIR = "masks"


def arrays(
    path: str | os.PathLike[str],
    *,
    x_key: str = "x",
    y_key: str | None = "y",
    y_path: str | os.PathLike[str] | None = None,
    spatial_dims: int | None = None,
    task: Task | None = None,
    normalize: Normalize = "none",
    split: Split | Sequence[Split] = "all",
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> NDDataset | dict[str, NDDataset]:
    """Load arrays from ``path`` (never unpickling: ``allow_pickle=False``). Accepted layouts:

    - ``data.npz``: ``x`` under ``x_key`` (N, C, *spatial); labels/targets under ``y_key`` if that
      key exists (a missing default ``"y"`` means unlabeled; ``y_key=None`` ignores labels).
    - ``x.npy``: x (N, C, *spatial); labels/targets from another .npy given as ``y_path``.
    - a folder of ``*.npy`` files, one sample (C, *spatial) or (*spatial) each, read in name
      order; labels from ``labels.csv`` (header ``file,label``, one row per sample file) or
      masks/targets from ``masks/<same file name>.npy`` (not both); neither means unlabeled.
      Such files carry no axis names, so a folder needs ``spatial_dims`` (a (D, H, W) file is
      never read as D channels of an H x W image by guess).

    With ``spatial_dims`` given, samples without a channel axis (``*spatial``) get C=1. y may be
    integer class labels (N,) -> classification; floats (N,) -> regression; a per-voxel array
    (N, [C'], *spatial) whose spatial shape matches x -> segmentation when integer/bool (an
    integer map without channel axis stays int64 class indices; bool masks and integer masks
    with a channel axis become float32 (N, C', *spatial)) and denoising when float. ``task`` overrides that guess. ``normalize`` min-max scales x over the
    whole file (before splitting, so all splits share one mapping) to [-1, 1] or [0, 1]; the
    dataset's ``normalization`` records that mapping (to undo on outputs). A list of splits
    (``split=["train", "val"]``) gives ``{split: dataset}`` from one read of the files.
    """
    check_choice("normalize", normalize, NORMALIZE)
    splits = check_splits(split)
    if task is not None:
        check_choice("task", task, TASKS)
    if spatial_dims is not None:
        check_int("spatial_dims", spatial_dims, 1)
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"path={str(path)!r} does not exist")
    if root.is_dir():
        if spatial_dims is None:
            raise ValueError(
                f"path={str(path)!r} is a folder of .npy files, which carry no axis names: pass "
                "spatial_dims=... (the number of spatial axes; each file is (*spatial) or "
                "(C, *spatial)), in a run config data.spatial_dims or model.spatial_dims"
            )
        x_np, y_np = _load_folder(root)
    elif root.suffix == ".npz":
        x_np, y_np = _load_npz(root, x_key, y_key)
    elif root.suffix == ".npy":
        x_np = _load_npy(root)
        y_np = None
    else:
        raise ValueError(f"path={str(path)!r} must be a .npz file, a .npy file or a folder")
    if y_path is not None:
        if y_np is not None:
            raise ValueError(
                f"y_path={str(y_path)!r} given, but {str(path)!r} already holds labels"
            )
        if not Path(y_path).is_file():
            raise FileNotFoundError(f"y_path={str(y_path)!r} does not exist")
        y_np = _load_npy(Path(y_path))

    x = torch.from_numpy(_as_float(x_np, "x"))
    x = _with_channel_axis(x, spatial_dims, "x")  # (N, C, *spatial)
    y, guessed, num_classes = _targets(x, y_np)
    task = task or guessed
    if (y is None) != (task == "unlabeled"):
        raise ValueError(f"task={task!r} does not match the data (labels found: {y is not None})")
    low, high = (x.min().item(), x.max().item()) if normalize != "none" else (0.0, 1.0)
    x = rescale(x, low, high, normalize)
    stratify = y if task == "classification" and not y.is_floating_point() else None
    fractions = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    parts = take_splits(len(x), splits, labels=stratify, **fractions)
    out = {
        part: NDDataset(
            x[idx].contiguous(),
            None if y is None else y[idx].contiguous(),
            task=task,
            num_classes=num_classes,
            name=f"{root.name}[{part}]",
            normalization=rescale_record(low, high, normalize),
        )
        for part, idx in parts.items()
    }
    return out[split] if isinstance(split, str) else out


def _load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except ValueError as err:  # object arrays need pickle, which we never run
        raise ValueError(f"cannot read {str(file)!r} without unpickling: {err}") from None


def _load_npz(file: Path, x_key: str, y_key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    with np.load(file, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if x_key not in keys:
            raise ValueError(f"x_key={x_key!r} is not in {str(file)!r}; its keys are {keys}")
        if y_key is not None and y_key not in keys and y_key != "y":
            raise ValueError(f"y_key={y_key!r} is not in {str(file)!r}; its keys are {keys}")
        x = archive[x_key]
        y = archive[y_key] if y_key is not None and y_key in keys else None
    return x, y


def _load_folder(root: Path) -> tuple[np.ndarray, np.ndarray | None]:
    files = sorted(p for p in root.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise ValueError(f"path={str(root)!r} holds no .npy sample files")
    samples = [_load_npy(f) for f in files]
    _check_same_shape(samples, files, "sample")
    labels_file, masks_dir = root / LABELS_FILE, root / MASKS_DIR
    if labels_file.exists() and masks_dir.exists():
        raise ValueError(f"{str(root)!r} holds both {LABELS_FILE} and {MASKS_DIR}/; keep one")
    y = None
    if labels_file.exists():
        y = _read_labels(labels_file, [f.name for f in files])
    elif masks_dir.exists():
        missing = [f.name for f in files if not (masks_dir / f.name).is_file()]
        if missing:
            raise ValueError(f"{str(masks_dir)!r} lacks masks for {missing[:5]} ({len(missing)})")
        masks = [_load_npy(masks_dir / f.name) for f in files]
        _check_same_shape(masks, files, "mask")
        y = np.stack(masks)
    return np.stack(samples), y


def _read_labels(file: Path, names: list[str]) -> np.ndarray:
    with open(file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise ValueError(f"{str(file)!r} must have the header 'file,label' and one row per sample")
    table = {row["file"]: row["label"] for row in rows}
    missing = [n for n in names if n not in table]
    if missing:
        raise ValueError(f"{str(file)!r} has no label for {missing[:5]} ({len(missing)} files)")
    try:
        return np.array([int(table[n]) for n in names], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{str(file)!r}: labels must be integers") from None


def _check_same_shape(items: list[np.ndarray], files: list[Path], what: str) -> None:
    for item, file in zip(items, files):
        if item.shape != items[0].shape:
            raise ValueError(
                f"{what} {str(file)!r} has shape {item.shape}, but {files[0].name!r} has "
                f"{items[0].shape}; all {what}s must have one shape"
            )


def _as_float(a: np.ndarray, name: str) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"{name} has dtype {a.dtype}; expected numbers")
    return np.ascontiguousarray(a, dtype=np.float32)


def _with_channel_axis(t: torch.Tensor, spatial_dims: int | None, name: str) -> torch.Tensor:
    if spatial_dims is None:
        if t.ndim < 3:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}; expected (N, C, *spatial) with at least one "
                "spatial axis (pass spatial_dims=... for data without a channel axis)"
            )
        return t
    if t.ndim == spatial_dims + 2:
        return t
    if t.ndim == spatial_dims + 1:
        return t.unsqueeze(1)  # (N, *spatial) -> (N, 1, *spatial)
    raise ValueError(
        f"{name} has shape {tuple(t.shape)}, which fits neither (N, C, *spatial) nor (N, *spatial) "
        f"with spatial_dims={spatial_dims}"
    )


def _targets(
    x: torch.Tensor, y_np: np.ndarray | None
) -> tuple[torch.Tensor | None, Task, int | None]:
    """y as a tensor, the task it suggests and its number of classes (None where not defined)."""
    if y_np is None:
        return None, "unlabeled", None
    if len(y_np) != len(x):
        raise ValueError(f"x has {len(x)} samples but y has {len(y_np)}; they must match")
    integral = np.issubdtype(y_np.dtype, np.integer) or y_np.dtype == bool
    if y_np.ndim == 1:
        if not integral:
            return torch.from_numpy(_as_float(y_np, "y")), "regression", None
        if y_np.min() < 0:
            raise ValueError(f"class labels must be >= 0, got min {int(y_np.min())}")
        return torch.from_numpy(y_np.astype(np.int64)), "classification", int(y_np.max()) + 1
    spatial = tuple(x.shape[2:])
    if tuple(y_np.shape[-len(spatial) :]) != spatial or y_np.ndim not in (x.ndim - 1, x.ndim):
        raise ValueError(
            f"y has shape {y_np.shape}; per-sample targets must be (N, *spatial) or "
            f"(N, C', *spatial) with spatial={spatial} as in x {tuple(x.shape)}"
        )
    if np.issubdtype(y_np.dtype, np.integer) and y_np.ndim == x.ndim - 1:
        # (N, *spatial) integer class-index map, for cross-entropy
        if y_np.min() < 0:
            raise ValueError(f"mask labels must be >= 0, got min {int(y_np.min())}")
        return torch.from_numpy(y_np.astype(np.int64)), "segmentation", int(y_np.max()) + 1
    y = torch.from_numpy(_as_float(y_np, "y"))
    if y.ndim == x.ndim - 1:
        y = y.unsqueeze(1)  # (N, *spatial) -> (N, 1, *spatial)
    if integral:
        binary = bool(((y == 0) | (y == 1)).all())
        return y, "segmentation", 2 if binary and y.shape[1] == 1 else None
    return y, "denoising", None

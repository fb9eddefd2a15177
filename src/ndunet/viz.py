"""Pictures: sample grids for any spatial_dims, denoising strips and loss curves, as PNG.

Images (2-D and more) are drawn with Pillow, pixel for pixel; 1-D signals and loss curves with
matplotlib's object API (``Figure`` + Agg canvas), which leaves pyplot's global state alone.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray
PANEL_INCHES = (2.0, 1.5)  # one 1-D panel; at DPI 100 it is 200 x 150 pixels
DPI = 100
TILE_PIXELS = 64  # automatic integer zoom makes small tiles about this big


def save_samples(
    x: ArrayLike,
    path: str | os.PathLike[str],
    nrow: int | None = None,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    *,
    scale: int | None = None,
    padding: int = 2,
) -> Path:
    """Write a batch ``(N, C, *spatial)`` as one PNG, ``nrow`` samples per row (default ~sqrt N).

    2-D: C=1 (gray) or C=3 (RGB) image tiles; other C are drawn one gray tile per channel, side
    by side. 1-D: one line plot per sample, a line per channel. 3-D and more: each sample becomes
    the central 2-D slices through every pair of axes (3 for 3-D: the orthogonal views; 6 for
    4-D), side by side. Values are clipped to ``value_range``
    (None: the batch's min and max); NaN is drawn as the low end. Tiles are zoomed by the integer
    ``scale`` (default: up to about 64 pixels).
    """
    batch = _batch(x, "x")
    path = _png_path(path)
    ncol = _ncol(nrow, len(batch))
    low, high = _range(batch, value_range)
    if batch.ndim == 3:  # (N, C, L)
        _line_grid(list(batch), ncol, path, (low, high))
        return path
    tiles = [_to_image(sample, low, high) for sample in batch]
    _write_grid(tiles, ncol, path, scale, padding)
    return path


def save_strip(
    trajectory: ArrayLike | Sequence[ArrayLike],
    path: str | os.PathLike[str],
    *,
    columns: int | None = 10,
    value_range: tuple[float, float] | None = (-1.0, 1.0),
    scale: int | None = None,
    padding: int = 2,
) -> Path:
    """Write a denoising trajectory ``(T, N, C, *spatial)`` (or a list of T batches) as a strip:
    one row per sample, one column per step, noise on the left and the sample on the right.

    ``columns`` keeps that many evenly spaced steps, first and last included (None keeps all).
    Drawing otherwise follows ``save_samples``.
    """
    if isinstance(trajectory, (list, tuple)):
        if not trajectory:
            raise ValueError("trajectory is empty; expected T >= 1 batches (N, C, *spatial)")
        trajectory = np.stack([_numpy(t, "trajectory") for t in trajectory])
    steps = _numpy(trajectory, "trajectory")
    if steps.ndim < 4:
        raise ValueError(
            f"trajectory has shape {steps.shape}; expected (T, N, C, *spatial) with at least one "
            "spatial axis"
        )
    if columns is not None:
        if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
            raise ValueError(f"columns={columns!r} must be None or an int >= 1")
        keep = np.unique(np.linspace(0, len(steps) - 1, min(columns, len(steps))).round())
        steps = steps[keep.astype(int)]
    path = _png_path(path)
    n_steps, n = steps.shape[:2]
    low, high = _range(steps, value_range)
    by_row = steps.swapaxes(0, 1).reshape(n * n_steps, *steps.shape[2:])  # (N*T, C, *spatial)
    if by_row.ndim == 3:
        _line_grid(list(by_row), n_steps, path, (low, high))
        return path
    tiles = [_to_image(sample, low, high) for sample in by_row]
    _write_grid(tiles, n_steps, path, scale, padding)
    return path


def plot_loss(
    log: str | os.PathLike[str] | Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    smoothing: float = 0.9,
) -> Path:
    """Plot a training log (a ``log.csv`` path or rows of dicts) to a PNG.

    Uses the columns ``loss`` (required; drawn raw and smoothed by a debiased exponential moving
    average with factor ``smoothing``), ``step`` (the x axis; else the row number), ``val_*``
    (drawn where present: ``val_loss`` beside the loss, other metrics in their own panel) and
    ``lr`` (its own panel). Empty or non-numeric cells are skipped.
    """
    if not (isinstance(smoothing, (int, float)) and 0.0 <= smoothing < 1.0):
        raise ValueError(f"smoothing={smoothing!r} must be a number in [0, 1)")
    rows = _read_rows(log)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if "loss" not in columns:
        raise ValueError(f"log has no 'loss' column; its columns are {columns}")
    has_step = "step" in columns

    def series(name: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i, row in enumerate(rows):
            y, s = _number(row.get(name)), _number(row.get("step")) if has_step else float(i)
            if y is not None and s is not None:
                xs.append(s)
                ys.append(y)
        return np.array(xs), np.array(ys)

    metrics = [c for c in columns if c.startswith("val_") and c != "val_loss"]
    metrics = [m for m in metrics if len(series(m)[0])]
    show_lr = "lr" in columns and len(series("lr")[0]) > 0
    panels = 1 + bool(metrics) + show_lr
    fig, canvas = _figure((4.5 * panels, 3.5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    steps, loss = series("loss")
    ax = axes[0]
    if len(loss):
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (raw)")
        ax.plot(steps, _ema(loss, smoothing), color="tab:blue", label="train (smoothed)")
    val_steps, val_loss = series("val_loss")
    if len(val_loss):
        ax.plot(val_steps, val_loss, "o-", color="tab:orange", markersize=3, label="val")
    positive = np.concatenate([loss, val_loss])
    if len(positive) and (positive > 0).all():
        ax.set_yscale("log")
    ax.set(title="loss", xlabel="step" if has_step else "row")
    if ax.get_legend_handles_labels()[0]:  # rows may hold no number yet (a run just started)
        ax.legend(fontsize=8)
    next_panel = 1
    if metrics:
        ax = axes[next_panel]
        next_panel += 1
        for m in metrics:
            ax.plot(*series(m), "o-", markersize=3, label=m[4:])
        ax.set(title="validation", xlabel="step" if has_step else "row")
        ax.legend(fontsize=8)
    if show_lr:
        ax = axes[next_panel]
        ax.plot(*series("lr"), color="tab:green")
        ax.set(title="learning rate", xlabel="step" if has_step else "row")
    fig.tight_layout()
    out = _png_path(path)
    canvas.print_png(str(out))
    return out


# --- helpers -------------------------------------------------------------------------------


def _numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} has dtype {x.dtype}; expected numbers")
    return x.astype(np.float32, copy=False)


def _batch(x: Any, name: str) -> np.ndarray:
    batch = _numpy(x, name)
    if batch.ndim < 3 or len(batch) == 0:
        raise ValueError(
            f"{name} has shape {batch.shape}; expected (N, C, *spatial) with N >= 1 and at least "
            "one spatial axis"
        )
    return batch


def _png_path(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"path={str(path)!r} must end in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _ncol(nrow: int | None, n: int) -> int:
    if nrow is None:
        return math.ceil(math.sqrt(n))
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow={nrow!r} must be None or an int >= 1 (samples per row)")
    return min(nrow, n)


def _range(x: np.ndarray, value_range: tuple[float, float] | None) -> tuple[float, float]:
    if value_range is None:
        finite = x[np.isfinite(x)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        return (low, high) if high > low else (low - 0.5, low + 0.5)
    if len(value_range) != 2 or not value_range[1] > value_range[0]:
        raise ValueError(f"value_range={value_range!r} must be None or (low, high) with low < high")
    return float(value_range[0]), float(value_range[1])


def _to_image(sample: np.ndarray, low: float, high: float) -> np.ndarray:
    """One sample (C, *spatial) as an (H, W, C) image in [0, 1]; spatial_dims >= 3 gives the
    central slices through every pair of axes, side by side with gray gaps."""
    channels, spatial = sample.shape[0], sample.shape[1:]
    unit = np.clip((np.nan_to_num(sample, nan=low) - low) / (high - low), 0.0, 1.0)
    # 1 channel is gray and 3 are RGB; any other count is drawn channel by channel in gray.
    groups = [unit] if channels in (1, 3) else [unit[c : c + 1] for c in range(channels)]
    planes = []
    for group, (a, b) in itertools.product(groups, itertools.combinations(range(len(spatial)), 2)):
        index = tuple(
            slice(None) if axis in (a, b) else size // 2 for axis, size in enumerate(spatial)
        )
        planes.append(group[(slice(None), *index)].transpose(1, 2, 0))  # (Da, Db, C)
    if len(planes) == 1:
        return planes[0]
    channels = planes[0].shape[-1]
    height, gap = max(p.shape[0] for p in planes), 1
    width = sum(p.shape[1] for p in planes) + gap * (len(planes) - 1)
    montage = np.full((height, width, channels), 0.5, dtype=np.float32)  # gray gaps
    left = 0
    for p in planes:
        montage[: p.shape[0], left : left + p.shape[1]] = p
        left += p.shape[1] + gap
    return montage


def _write_grid(
    tiles: list[np.ndarray], ncol: int, path: Path, scale: int | None, padding: int
) -> None:
    from PIL import Image

    h, w, c = tiles[0].shape
    if scale is None:  # zoom small tiles, keeping wide montages (3-D and more) within bounds
        scale = max(1, min(TILE_PIXELS // min(h, w), 4 * TILE_PIXELS // max(h, w)))
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale={scale!r} must be None or an int >= 1")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding={padding!r} must be an int >= 0")
    th, tw = h * scale, w * scale
    nrows = math.ceil(len(tiles) / ncol)
    grid = np.ones((nrows * (th + padding) + padding, ncol * (tw + padding) + padding, c))
    for i, tile in enumerate(tiles):
        top, left = padding + (i // ncol) * (th + padding), padding + (i % ncol) * (tw + padding)
        grid[top : top + th, left : left + tw] = np.kron(tile, np.ones((scale, scale, 1)))
    pixels = (grid * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if c == 1 else pixels, "L" if c == 1 else "RGB").save(path)


def _figure(inches: tuple[float, float]) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=inches, dpi=DPI)
    return fig, FigureCanvasAgg(fig)


def _line_grid(
    signals: list[np.ndarray], ncol: int, path: Path, value_range: tuple[float, float]
) -> None:
    """Signals (C, L) as line plots, ``ncol`` panels per row, each 200 x 150 pixels."""
    nrows = math.ceil(len(signals) / ncol)
    fig, canvas = _figure((PANEL_INCHES[0] * ncol, PANEL_INCHES[1] * nrows))
    axes = fig.subplots(nrows, ncol, squeeze=False).ravel()
    margin = 0.05 * (value_range[1] - value_range[0])
    for ax, signal in zip(axes, signals):
        for channel in signal:
            ax.plot(channel, linewidth=0.8)
        ax.set_ylim(value_range[0] - margin, value_range[1] + margin)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(signals) :]:
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.99, wspace=0.05, hspace=0.05)
    canvas.print_png(str(path))


def _read_rows(log: Any) -> list[Mapping[str, Any]]:
    if isinstance(log, (str, os.PathLike)):
        file = Path(log)
        if not file.is_file():
            raise FileNotFoundError(f"log={str(log)!r} is not a file")
        with open(file, newline="") as handle:
            rows: list[Mapping[str, Any]] = list(csv.DictReader(handle))
    else:
        rows = list(log)
        if not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("log must be a CSV path or an iterable of dicts (column -> value)")
    if not rows:
        raise ValueError("log has no rows to plot")
    return rows


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    # Debiased like Adam's moments, so the start is not dragged toward 0.
    out, average = np.empty_like(values), 0.0
    for i, v in enumerate(values):
        average = smoothing * average + (1.0 - smoothing) * v
        out[i] = average / (1.0 - smoothing ** (i + 1))
    return out

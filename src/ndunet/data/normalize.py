"""Intensity normalisation fitted on the training files, recorded, applied and undone.

Every scheme is ``y = (clip(x, low, high) - shift) / scale`` per channel, so one small record
(``Normalization``, ``to_dict``/``from_dict``) describes it and ``invert`` undoes it (exactly
for values inside the clip range):

- ``"zscore"``: mean and standard deviation of the training voxels.
- ``"percentile"``: clip to the 0.5 and 99.5 percentiles, then z-score with the mean and std
  of the training voxels: nnU-Net's CT scheme (Isensee et al. 2021,
  https://doi.org/10.1038/s41592-020-01008-z), here over all voxels, not only foreground.
- ``"ct"``: a fixed window ``(level, width)`` in the file's units (Hounsfield for CT), mapped to
  [-1, 1]; nothing is fitted.
- ``"minmax"``: the training range mapped to [-1, 1] (not clipped, so invert stays exact).
- ``"unit"``: the training range mapped to [0, 1] (not clipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch

from ndunet._checks import check_choice, check_float, check_keys, invalid

NormalizeKind = Literal["none", "zscore", "percentile", "ct", "minmax", "unit"]
NORMALIZE_KINDS: tuple[str, ...] = ("none", "zscore", "percentile", "ct", "minmax", "unit")
PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class Normalization:
    """``(clip(x, low, high) - shift) / scale`` with one value per channel (or one for all)."""

    kind: str = "none"
    shift: tuple[float, ...] = (0.0,)
    scale: tuple[float, ...] = (1.0,)
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    fitted_on: int = 0  # how many files the statistics came from (0: nothing fitted)

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, NORMALIZE_KINDS)
        n = len(self.shift)
        for name in ("shift", "scale", "low", "high"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != n or not all(isinstance(v, (int, float)) for v in values):
                raise ValueError(invalid(name, values, f"{n} numbers, one per channel"))
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if not all(math.isfinite(s) and s > 0 for s in self.scale):
            raise ValueError(invalid("scale", self.scale, "finite numbers > 0"))
        if (self.low is None) != (self.high is None):
            raise ValueError("low and high clip bounds go together; give both or neither")

    @property
    def channels(self) -> int:
        return len(self.shift)

    def _params(self, x: torch.Tensor, channel_dim: int) -> list[torch.Tensor | None]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(invalid("x", type(x).__name__, "a floating-point torch tensor"))
        if self.channels > 1 and x.shape[channel_dim] != self.channels:
            raise ValueError(
                f"x has {x.shape[channel_dim]} channels on dim {channel_dim} (shape "
                f"{tuple(x.shape)}); this normalisation has {self.channels}"
            )
        view = [1] * x.ndim
        view[channel_dim] = -1  # (1, ..., C, ..., 1): one value per channel, broadcast
        out: list[torch.Tensor | None] = []
        for values in (self.shift, self.scale, self.low, self.high):
            t = None if values is None else torch.tensor(values, dtype=torch.float64)
            out.append(None if t is None else t.view(view).to(x.device))
        return out

    def apply(self, x: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
        """Normalise ``x`` (channels on ``channel_dim``: 0 for a sample, 1 for a batch)."""
        shift, scale, low, high = self._params(x, channel_dim)
        if self.kind == "none":
            return x
        y = x.double()
        if low is not None:
            y = torch.maximum(torch.minimum(y, high), low)
        return ((y - shift) / scale).to(x.dtype)

    def invert(self, y: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
        """Back to the file's units (model outputs of a denoising or diffusion run)."""
        shift, scale, _, _ = self._params(y, channel_dim)
        return (y.double() * scale + shift).to(y.dtype)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("shift", "scale", "low", "high"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normalization:
        if not isinstance(data, Mapping):
            raise TypeError(invalid("normalization", data, "a mapping from to_dict()"))
        check_keys("normalization", data, [f for f in cls.__dataclass_fields__])
        values = dict(data)
        for key in ("shift", "scale", "low", "high"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def check_window(window: Any) -> tuple[float, float]:
    """A CT window ``(level, width)`` with width > 0."""
    if not isinstance(window, (tuple, list)) or len(window) != 2:
        raise ValueError(
            invalid("window", window, "(level, width), e.g. (40, 400) for soft tissue")
        )
    level = check_float("window level", window[0])
    width = check_float("window width", window[1], 0.0, low_open=True)
    return level, width


def fit_normalization(
    kind: str,
    chunks: Iterable[np.ndarray],
    *,
    channels: int,
    total_voxels: int,
    files: int,
    window: tuple[float, float] | None = None,
    max_samples: int = 1_000_000,
    seed: int = 0,
) -> Normalization:
    """Fit ``kind`` on ``chunks`` of the training data, each a ``(C, ...)`` array.

    Mean and std are exact (streamed in float64). Percentiles are exact when the training data
    has at most ``max_samples`` voxels per channel, else computed on a seeded uniform sample of
    about that many voxels.
    """
    check_choice("normalize", kind, NORMALIZE_KINDS)
    if kind == "none":
        return Normalization()
    if kind == "ct":
        level, width = check_window(window)
        return Normalization(
            "ct", (level,), (width / 2,), (level - width / 2,), (level + width / 2,)
        )
    count = np.zeros(channels)
    mean, m2 = np.zeros(channels), np.zeros(channels)
    low, high = np.full(channels, np.inf), np.full(channels, -np.inf)
    keep = min(1.0, max_samples / max(total_voxels, 1))
    rng = np.random.default_rng(seed)
    samples: list[np.ndarray] = []
    for chunk in chunks:
        values = chunk.reshape(channels, -1).astype(np.float64)  # (C, voxels)
        if values.shape[1] == 0:
            continue
        if not np.isfinite(values).all():
            raise ValueError("the training data holds NaN or infinite values; cannot normalise")
        n = values.shape[1]
        c_mean, c_m2 = values.mean(axis=1), values.var(axis=1) * n
        total = count + n  # Chan et al.: merge running (count, mean, M2) with this chunk's
        delta = c_mean - mean
        mean = mean + delta * n / total
        m2 = m2 + c_m2 + delta**2 * count * n / total
        count = total
        low, high = np.minimum(low, values.min(axis=1)), np.maximum(high, values.max(axis=1))
        if kind == "percentile":
            samples.append(values if keep >= 1 else values[:, rng.random(n) < keep])
    if not count.any():
        raise ValueError("the training files hold no voxels to fit the normalisation on")
    std = np.sqrt(m2 / count)
    std = np.where(std > 0, std, 1.0)  # a constant channel: shift only
    if kind == "zscore":
        return Normalization("zscore", tuple(mean), tuple(std), fitted_on=files)
    if kind == "minmax":
        half = np.where(high > low, (high - low) / 2, 1.0)
        return Normalization("minmax", tuple((high + low) / 2), tuple(half), fitted_on=files)
    if kind == "unit":
        width = np.where(high > low, high - low, 1.0)
        return Normalization("unit", tuple(low), tuple(width), fitted_on=files)
    sample = np.concatenate(samples, axis=1)
    lo, hi = np.percentile(sample, PERCENTILES, axis=1)
    return Normalization("percentile", tuple(mean), tuple(std), tuple(lo), tuple(hi), files)

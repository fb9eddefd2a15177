"""The plan of a segmentation run for a memory budget: nnU-Net v2's planner for any spatial_dims.

From a :class:`Fingerprint`: the target spacing is the median spacing; the first patch is a box
of equal physical extent on every axis holding as many voxels as the median volume, clipped to
the median shape; pooling and kernels follow :func:`pooling_plan`; widths start at
``base_channels`` and double per level up to ``max_channels`` (nnU-Net: 32 -> 320 for 3-D,
512 for 2-D). While the estimated step (:func:`estimate_bytes`, batch ``min_batch_size``) is over
the budget, the largest patch axis (in physical extent: in voxels when the spacing is
isotropic) shrinks by its pooling product, the topology re-planned each time (nnU-Net shrinks
the axis largest relative to the median shape; the two agree until the box is clipped). The batch then grows while the estimate allows, up to ``batch_fraction`` (5%) of
the dataset's voxels. With ``verify``, the model is built and one training step measured; a
plan over the budget re-fits the estimate's factor to the measurement and plans again, and the
largest measured plan that fits is kept.

Normalisation: CT-like data (Hounsfield values) gets nnU-Net's CT scheme, the foreground 0.5 and
99.5 percentiles as a fixed window (``normalize = "ct"``; "percentile" without labels); anything
else is z-scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ndunet._checks import check_float, check_int
from ndunet.config import Config, config
from ndunet.models import UNetConfig

from .fingerprint import Fingerprint
from .memory import (
    default_factor,
    estimate_bytes,
    format_bytes,
    measure_step_bytes,
    parameter_count,
    parse_bytes,
)
from .topology import Topology, pooling_plan

__all__ = ["Plan", "PlannerConfig", "plan"]


@config
class PlannerConfig(Config):
    """How the planner builds networks and batches (defaults: nnU-Net v2's)."""

    base_channels: int = 32
    max_channels: int | None = None  # None: 512 for spatial_dims <= 2, else 320
    num_res_blocks: int = 1  # residual blocks (two convs each) per level and side
    norm: Literal["instance", "group", "batch"] = "instance"
    activation: Literal["leaky_relu", "relu", "silu", "gelu"] = "leaky_relu"
    min_feature_map: int = 4  # the smallest feature map a pooled axis may reach
    min_batch_size: int = 2
    batch_fraction: float = 0.05  # a batch covers at most this share of the dataset's voxels
    factor: float | None = None  # the estimate's maps per block channel (None: per spatial_dims)
    verify: bool = True  # build the model and measure one training step
    device: str = "cpu"  # where the step is measured ("cuda": the GPU the budget is for)
    max_measurements: int = 4

    def check_values(self) -> None:
        check_int("base_channels", self.base_channels, 1)
        if self.max_channels is not None:
            check_int("max_channels", self.max_channels, self.base_channels)
        for name in ("num_res_blocks", "min_feature_map", "min_batch_size", "max_measurements"):
            check_int(name, getattr(self, name), 1)
        check_float("batch_fraction", self.batch_fraction, 0.0, 1.0, low_open=True)
        if self.factor is not None:
            check_float("factor", self.factor, 0.0, low_open=True)


@dataclass(frozen=True)
class Plan:
    """A planned run: the network (``model``), patch and batch, normalisation, memory."""

    fingerprint: Fingerprint
    memory: int  # the budget, bytes
    topology: Topology
    model: UNetConfig
    batch_size: int
    normalize: str
    window: tuple[float, float] | None
    estimated_bytes: int
    measured_bytes: int | None  # None: not verified
    device: str | None
    factor: float  # the estimate's factor, as fitted to the last measurement

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.topology.patch_size

    @property
    def target_spacing(self) -> tuple[float, ...]:
        return self.fingerprint.median_spacing


@dataclass(frozen=True)
class _Candidate:
    topology: Topology
    model: UNetConfig
    batch_size: int
    estimate: int


def plan(
    fingerprint: Fingerprint,
    memory: int | str,
    options: PlannerConfig | None = None,
    *,
    log: Callable[[str], object] | None = None,
) -> Plan:
    """Plan a supervised segmentation run of ``fingerprint``'s data within ``memory`` (bytes,
    or a size such as "8GiB"); ``log`` receives a line per measurement."""
    options = options or PlannerConfig()
    memory = parse_bytes(memory)
    fp = fingerprint
    factor = options.factor or default_factor(fp.spatial_dims)
    best: tuple[_Candidate, int] | None = None
    measured: dict[tuple[object, ...], int] = {}
    planner = _Planner(fp, memory, options)
    for _ in range(options.max_measurements if options.verify else 1):
        cand = planner.fit(factor)
        key = (cand.topology.patch_size, cand.batch_size)
        if not options.verify or key in measured:
            break
        patch, batch = cand.topology.patch_size, cand.batch_size
        peak = measure_step_bytes(cand.model, patch, batch, device=options.device)
        measured[key] = peak
        if log is not None:
            fits = "fits" if peak <= memory else "over the budget"
            log(f"patch {patch} batch {batch}: measured {format_bytes(peak)} ({fits})")
        if peak <= memory and (best is None or _size(cand) > _size(best[0])):
            best = (cand, peak)
        factor = planner.refit(cand, peak, factor)
    if options.verify:
        if best is None:
            tried = ", ".join(f"patch {p} batch {b}: {v} B" for (p, b), v in measured.items())
            raise ValueError(
                f"memory={memory} is not valid: no plan measured within it after "
                f"{len(measured)} tries ({tried}); give a larger budget"
            )
        cand, peak = best
    normalize, window = choose_normalization(fp)
    return Plan(
        fp, memory, cand.topology, cand.model, cand.batch_size, normalize, window,
        cand.estimate, peak if options.verify else None,
        options.device if options.verify else None, factor,
    )  # fmt: skip


def _size(c: _Candidate) -> tuple[int, int]:
    """Plans compare by patch voxels first (nnU-Net favours context over batch), then batch."""
    return math.prod(c.topology.patch_size), c.batch_size


class _Planner:
    """The estimate-driven search for one factor (patch first, then batch)."""

    def __init__(self, fp: Fingerprint, memory: int, options: PlannerConfig) -> None:
        self.fp, self.memory, self.options = fp, memory, options
        self.params: dict[tuple[object, ...], int] = {}

    def model(self, topology: Topology) -> UNetConfig:
        o, n = self.options, self.fp.spatial_dims
        top = o.max_channels or (512 if n <= 2 else 320)
        channels = tuple(min(o.base_channels * 2**i, top) for i in range(topology.num_levels))
        return UNetConfig(
            spatial_dims=n, in_channels=self.fp.in_channels,
            out_channels=self.fp.num_classes or 2, channels=channels,
            num_res_blocks=o.num_res_blocks, strides=topology.strides,
            kernel_sizes=topology.kernel_sizes, norm=o.norm, activation=o.activation,
            skip_connections="level", downsample="conv", upsample="transpose",
        )  # fmt: skip

    def estimate(self, model: UNetConfig, patch: tuple[int, ...], batch: int, factor: float) -> int:
        key = (model.channels, model.strides, model.kernel_sizes)
        if key not in self.params:
            self.params[key] = parameter_count(model)
        return estimate_bytes(model, patch, batch, factor=factor, params=self.params[key])

    def fit(self, factor: float) -> _Candidate:
        """The largest patch whose step fits with the smallest batch, then the largest batch."""
        fp, o = self.fp, self.options
        median, spacing = fp.median_shape, fp.median_spacing
        patch = list(initial_patch(spacing, median))
        floor = [min(m, 2 * o.min_feature_map) for m in median]
        while True:
            topo = pooling_plan(spacing, patch, o.min_feature_map)
            if not topo.strides:
                raise ValueError(
                    f"the volumes (median shape {median}) are too small for a U-Net: no axis "
                    f"reaches 2 x min_feature_map = {2 * o.min_feature_map} voxels"
                )
            model = self.model(topo)
            need = self.estimate(model, topo.patch_size, o.min_batch_size, factor)
            if need <= self.memory:
                break
            shrinkable = [i for i in range(len(patch)) if patch[i] > floor[i]]
            if not shrinkable:
                raise ValueError(
                    f"memory={self.memory} is not valid: the smallest plan (patch "
                    f"{topo.patch_size}, batch {o.min_batch_size}) needs about {need} bytes"
                )
            # the physically longest axis (ties: the last) loses its pooling product, so the
            # patch stays near the box of equal extent; requests only shrink
            axis = max(shrinkable, key=lambda i: (patch[i] * spacing[i], i))
            patch[axis] = max(
                floor[axis], min(patch[axis], topo.patch_size[axis]) - topo.divisors[axis]
            )
        fixed = self.estimate(model, topo.patch_size, 0, factor)
        per_sample = max(1, (need - fixed) // o.min_batch_size)
        cap = round(o.batch_fraction * fp.total_voxels / math.prod(topo.patch_size))
        batch = max(o.min_batch_size, min((self.memory - fixed) // per_sample, cap))
        return _Candidate(topo, model, batch, self.estimate(model, topo.patch_size, batch, factor))

    def refit(self, cand: _Candidate, peak: int, factor: float) -> float:
        """The factor that makes the estimate of ``cand`` its measured ``peak`` + 3%."""
        patch, batch = cand.topology.patch_size, cand.batch_size
        fixed = self.estimate(cand.model, patch, batch, 0.0)
        activations = cand.estimate - fixed
        fitted = factor * max(peak * 1.03 - fixed, 1) / max(activations, 1)
        return min(max(fitted, factor / 4), factor * 4)  # one odd measurement moves it <= 4x


def initial_patch(spacing: tuple[float, ...], median: tuple[int, ...]) -> tuple[int, ...]:
    """A box of equal physical extent per axis holding as many voxels as the median volume,
    clipped to the median shape (nnU-Net's start, with the median volume as its size)."""
    inverse = [1 / s for s in spacing]
    scale = (math.prod(median) / math.prod(inverse)) ** (1 / len(spacing))
    return tuple(max(1, min(m, round(v * scale))) for v, m in zip(inverse, median))


def choose_normalization(fp: Fingerprint) -> tuple[str, tuple[float, float] | None]:
    """("ct", (level, width)) from the foreground percentiles of CT-like labelled data,
    ("percentile", None) for CT-like data without labels, else ("zscore", None)."""
    if not fp.ct_like:
        return "zscore", None
    if fp.num_classes is None or fp.percentiles is None:  # no labels: no foreground
        return "percentile", None
    low, _, high = fp.percentiles[0]
    if high <= low:
        return "percentile", None
    return "ct", ((low + high) / 2, high - low)

"""Sampling options of a Diffusion: their names, their defaults from the config, and every check,
made before any work (:func:`prepare`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypedDict

import torch
from torch import Tensor

from ndunet._checks import check_choice, did_you_mean
from ndunet.inference.amp import AMP_MODES, Amp
from ndunet.inference.compiled import CompileMode, check_compile

from .conditioning import check_cond
from .config import DiffusionConfig
from .denoise import Model
from .processes import Grid, Process
from .samplers import ETA_DEFAULTS, SamplerName, get_sampler
from .stepping import Callback
from .validation import check_data_shape, check_labels

# Heun's coordinates per process: EDM's own sigma for EDM; rectified-flow time for flow
# matching and for discrete schedules, whose first level can be (almost) pure noise.
HEUN_SPACE = {"edm": "sigma", "flow": "flow", "gaussian": "flow"}


class SampleOptions(TypedDict, total=False):
    """Keyword options of :meth:`Diffusion.sample` and :meth:`Diffusion.inpaint`."""

    steps: int | None
    sampler: SamplerName | None
    eta: float | None
    guidance_scale: float | None
    y: Tensor | None
    cond: Tensor | None
    generator: torch.Generator | None
    progress: bool
    return_intermediates: bool
    clip_denoised: bool | None
    model: Model | None
    callback: Callback | None
    amp: Amp
    compile: CompileMode | bool | None


class Plan(NamedTuple):
    """Resolved, validated sampling options."""

    fn: Callable[..., Tensor]
    model: Model
    grid: Grid
    eta: float
    guidance_scale: float
    y: Tensor | None
    cond: Tensor | None
    generator: torch.Generator | None
    progress: bool
    return_intermediates: bool
    clip_denoised: bool
    callback: Callback | None
    amp: Amp = "none"  # the network's forward under autocast (ndunet.inference.with_autocast)
    compile: str | None = None  # torch.compile mode of the network (ndunet.inference.with_compile)


def prepare(
    config: DiffusionConfig,
    process: Process,
    default_model: Model,
    shape: Sequence[int],
    batch_size: int,
    options: dict[str, Any],
    extra_channels: int,
) -> Plan:
    """Resolve the defaults (from the config) and validate every sampling option."""
    unknown = sorted(set(options) - set(SampleOptions.__annotations__))
    if unknown:
        names = sorted(SampleOptions.__annotations__)
        raise TypeError(
            f"unknown sampling option {unknown[0]!r}{did_you_mean(unknown[0], names)}; "
            f"valid: {names}"
        )
    cfg = config
    model = options.get("model")
    model = default_model if model is None else model
    if not callable(model):
        raise TypeError(f"model must be callable, got {model!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    check_data_shape(model, shape, "shape", extra_channels)
    sampler = options.get("sampler")
    sampler = cfg.sampler if sampler is None else sampler
    fn = get_sampler(sampler)
    if sampler == "heun":
        fn = functools.partial(fn, space=HEUN_SPACE[cfg.process])
    steps = options.get("steps")
    steps = cfg.sample_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    grid = process.grid(steps, tuple(shape[1:]))
    eta = options.get("eta")
    if eta is not None and sampler not in ETA_DEFAULTS and eta != 0.0:
        raise ValueError(
            f"eta={eta} is only used by samplers {sorted(ETA_DEFAULTS)}, got sampler={sampler!r}"
        )
    eta = ETA_DEFAULTS.get(sampler, 0.0) if eta is None else eta
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0.0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    y, cond = options.get("y"), options.get("cond")
    check_labels(y, batch_size, cfg.num_classes, allow_null=True)
    check_cond(cond, batch_size, tuple(shape[1:]), cfg.cond_channels, cfg.condition)
    guidance = _guidance(cfg, options.get("guidance_scale"), y, cond)
    clip = options.get("clip_denoised")
    amp = check_choice("amp", options.get("amp", "none"), AMP_MODES)  # device: Diffusion._on
    mode = check_compile(options.get("compile"))
    return Plan(
        fn, model, grid, float(eta), guidance, y, cond, options.get("generator"),
        bool(options.get("progress", False)), bool(options.get("return_intermediates", False)),
        cfg.clip_denoised if clip is None else bool(clip), options.get("callback"), amp, mode,
    )  # fmt: skip


def _guidance(
    cfg: DiffusionConfig, given: float | None, y: Tensor | None, cond: Tensor | None
) -> float:
    guidance = cfg.guidance_scale if given is None else given
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise ValueError(f"guidance_scale must be finite, got {guidance!r}")
    if guidance == 1.0 or y is not None or cond is not None or cfg.condition == "mask":
        return float(guidance)
    if cfg.num_classes is None and given is None:
        return 1.0  # the config's default guidance only applies to conditioned sampling
    if cfg.num_classes is None:
        raise ValueError(
            f"guidance_scale={guidance} needs a conditioned model (class labels or a tensor "
            "condition); use guidance_scale=1.0"
        )
    raise ValueError(f"guidance_scale={guidance} needs class labels y")

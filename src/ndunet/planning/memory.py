"""Training memory of a U-Net: an activation-footprint estimate, and one step measured.

The estimate (nnU-Net's idea, https://doi.org/10.1038/s41592-020-01008-z: the sum of the
feature maps a step keeps for the backward pass) is

    batch x bytes x factor x sum over levels of (channels x blocks) x voxels
    + 4 x parameter bytes (weights, gradients, AdamW's two moments) + the batch itself

where ``factor`` counts the maps a residual block keeps per output channel (norms, activations,
convolutions, the decoder's concatenated skips); :func:`default_factor` was measured on
ndunet's blocks (the planner re-fits it to each measurement).

The measurement builds the model and runs two AdamW training steps on random data (the first
creates the optimizer's state); the peak of the second is reported: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the torch profiler's allocation events (every
torch tensor, freed ones included; Python's tracemalloc does not see torch's allocator).
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from ndunet._checks import invalid
from ndunet.models import UNet, UNetConfig

__all__ = [
    "default_factor",
    "estimate_bytes",
    "format_bytes",
    "measure_step_bytes",
    "parameter_count",
    "parse_bytes",
    "peak_bytes",
]

# Maps kept per block output channel and voxel, measured on the CPU with planned U-Nets
# (instance norm, residual blocks): about 4.5 at 2-D, 9-12 at 3-D, 13.5 at 4-D; with headroom.
FACTORS = {1: 6.0, 2: 6.0, 3: 13.0}
FACTOR = 16.0  # spatial_dims >= 4
UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
UNITS.update({f"{k}B": v for k, v in UNITS.items() if k not in ("", "B")})
UNITS.update({f"{k}IB": 2 ** (10 * i) for i, k in enumerate("KMGT", 1)})


def parse_bytes(text: str | int) -> int:
    """``"8GiB"``, ``"512MiB"``, ``"8GB"``, ``"1.5e9"`` or an int -> bytes."""
    if isinstance(text, int) and not isinstance(text, bool):
        value: float = text
    else:
        match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        unit = match.group(2).upper() if match else None
        if not match or unit not in UNITS:
            raise ValueError(invalid("memory", text, "a size such as 8GiB, 512MiB, 8GB or 1e9"))
        value = float(match.group(1)) * UNITS[unit]
    if not math.isfinite(value) or value < 1:
        raise ValueError(invalid("memory", text, "a positive size"))
    return int(value)


def format_bytes(n: float) -> str:
    """``1536 * 2**20`` -> ``"1.50 GiB"``."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def default_factor(spatial_dims: int) -> float:
    """The estimate's factor before any measurement (see :data:`FACTORS`)."""
    return FACTORS.get(spatial_dims, FACTOR)


def parameter_count(config: UNetConfig) -> int:
    """The exact number of parameters (the model built on the meta device: nothing allocated)."""
    with torch.device("meta"):
        model = UNet(config)
    return sum(p.numel() for p in model.parameters())


def level_channels(config: UNetConfig) -> list[int]:
    """Per level, the output channels of the blocks there (encoder, decoder, bottleneck)."""
    per_block = config.skip_connections == "block"
    out = []
    for i, (c, n) in enumerate(zip(config.channels, config.res_blocks())):
        blocks = n + (n + 1 if per_block else n) + (2 if i == config.num_levels - 1 else 0)
        out.append(c * blocks)
    return out


def estimate_bytes(
    config: UNetConfig,
    patch_size: Sequence[int],
    batch_size: int,
    *,
    factor: float | None = None,
    bytes_per_value: int = 4,
    params: int | None = None,
) -> int:
    """The estimated peak bytes of one training step (see the module doc); ``factor`` defaults
    to :func:`default_factor`, ``params`` saves rebuilding the model when the count is known."""
    factor = default_factor(config.spatial_dims) if factor is None else factor
    voxels, per_sample = math.prod(patch_size), 0
    size = list(patch_size)
    for i, channels in enumerate(level_channels(config)):
        per_sample += channels * math.prod(size)
        if i < config.num_levels - 1:
            size = [math.ceil(s / f) for s, f in zip(size, config.down_factors()[i])]
    params = parameter_count(config) if params is None else params
    inputs = batch_size * voxels * (config.in_channels * bytes_per_value + 8)  # x, int64 labels
    return int(batch_size * bytes_per_value * factor * per_sample + 4 * params * 4 + inputs)


# ----- measuring ---------------------------------------------------------------------------------


def _allocation_events(prof: Any) -> list[Any]:
    """The allocator events the profiler recorded, in time order."""
    found: list[Any] = []

    def walk(nodes: list[Any]) -> None:
        for node in nodes:
            found.extend([node] if hasattr(node.extra_fields, "alloc_size") else [])
            walk(node.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    return sorted(found, key=lambda e: e.start_time_ns)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines); other lines come back."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(True) if b"profiler_st" not in line]
            if kept:
                os.write(fd, b"".join(kept))


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Most bytes of torch tensors allocated at once while ``fn`` runs, above the level at its
    start (CUDA: the allocator's peak; CPU: the profiler's allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    if device.type != "cpu":
        raise ValueError(invalid("device", str(device), "'cpu' or a CUDA device"))
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = _allocation_events(prof)
    if not events:
        return 0
    first = events[0].extra_fields
    start = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in events) - start


def _tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measure_step_bytes(
    config: UNetConfig,
    patch_size: Sequence[int],
    batch_size: int,
    *,
    device: str | torch.device = "cpu",
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> int:
    """Peak bytes of one AdamW training step of ``UNet(config)`` on ``batch_size`` random patches
    (labels of ``config.out_channels`` classes; ``loss`` defaults to Dice + cross-entropy):
    weights, optimizer state and batch included."""
    from ndunet.training.losses import dice_ce

    device = torch.device(device)
    loss = loss or dice_ce
    gc.collect()
    generator = torch.Generator().manual_seed(0)
    model = UNet(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, config.in_channels, *patch_size, generator=generator)
    y = torch.randint(0, config.out_channels, (batch_size, *patch_size), generator=generator)
    x, y = x.to(device), y.to(device)  # (B, C, *patch), (B, *patch)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    step()  # creates AdamW's moments: the second step is every later step
    opt.zero_grad(set_to_none=True)
    gc.collect()
    state = (t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor))
    held = _tensor_bytes(iter([*model.parameters(), *model.buffers(), *state, x, y]))
    return held + peak_bytes(step, device)

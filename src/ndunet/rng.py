"""RNG states of torch (CPU, CUDA), numpy and Python as tensors and plain lists, so they can sit
in a weights_only checkpoint."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng() -> dict[str, Any]:
    """Every global RNG state, checkpoint-safe."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            name,
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of capture_rng."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU of the machine that saved it; a machine with fewer GPUs restores
        # those it has (set_rng_state_all would index a device that does not exist)
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def randn(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard normal noise on ``device``, drawn by ``generator`` on the generator's own device:
    a CPU generator seeds a CUDA model's sampling, and gives the same noise on every device."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Uniform [0, 1) values on ``device``, drawn as :func:`randn` draws."""
    return _draw(torch.rand, shape, generator, device, dtype)


def _draw(fn: Any, shape: Any, generator: Any, device: Any, dtype: Any) -> torch.Tensor:
    if generator is None or torch.device(device or "cpu") == generator.device:
        return fn(shape, generator=generator, device=device, dtype=dtype)
    return fn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)

"""Mixed precision at inference: the network's forward under ``torch.autocast``, everything
around it (sliding-window blending, flip averaging, the samplers' updates) in float32.

``amp`` takes the trainer's values: ``"none"`` (no autocast; results as before), ``"bf16"`` or
``"fp16"``. :func:`with_autocast` wraps a network once; the wrapper's output is cast back to the
dtype of its input, so callers never see a 16-bit tensor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from ndunet._checks import check_choice, invalid

__all__ = ["AMP_DTYPES", "AMP_MODES", "Amp", "resolve_amp", "with_autocast"]

Amp = Literal["none", "bf16", "fp16"]
AMP_MODES = ("none", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # "none": no autocast


def resolve_amp(amp: str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (None for ``"none"``).

    Raises ValueError, naming ``amp``, for a value other than ``"none"``, ``"bf16"``, ``"fp16"``,
    or for a dtype this build of torch cannot autocast to on ``device`` (e.g. bf16 on a GPU
    without bfloat16, or a device without autocast)."""
    check_choice("amp", amp, AMP_MODES)
    dtype = AMP_DTYPES.get(amp)
    if dtype is None:
        return None
    where = torch.device(device)
    reason = _unsupported(where.type, dtype)
    if reason:
        what = f"'none' or a dtype torch.autocast runs in on {where}"
        raise ValueError(invalid("amp", amp, what) + f" ({reason.rstrip('.')})")
    return dtype


def _unsupported(device_type: str, dtype: torch.dtype) -> str:
    """Why ``torch.autocast(device_type, dtype)`` would not run (torch disables it with a
    warning, or raises), or "" when it does."""
    from ndunet.layers.norm import autocast_dtype

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with torch.autocast(device_type, dtype=dtype):
                active = autocast_dtype(device_type)
    except (RuntimeError, ValueError) as e:
        return str(e).splitlines()[0]
    if active == dtype:
        return ""
    said = [str(w.message).splitlines()[0] for w in caught]
    return said[0] if said else f"torch's {device_type} autocast does not run in {dtype}"


def with_autocast(
    fn: Callable[..., Tensor], amp: str, device: torch.device | str = "cpu"
) -> Callable[..., Tensor]:
    """``fn`` run under ``torch.autocast(device.type, dtype)`` for ``amp``, its floating output
    cast back to the dtype of its first argument (float32 for float32 inputs). ``amp="none"``
    returns ``fn`` itself. ``amp`` is checked (:func:`resolve_amp`) here, before any work."""
    dtype = resolve_amp(amp, device)
    if dtype is None:
        return fn
    device_type = torch.device(device).type

    def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(device_type, dtype=dtype):
            out = fn(x, *args, **kwargs)
        floats = isinstance(out, Tensor) and out.is_floating_point() and x.is_floating_point()
        return out.to(x.dtype) if floats and out.dtype != x.dtype else out

    return forward

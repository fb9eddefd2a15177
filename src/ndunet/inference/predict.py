"""One whole volume through a model: sliding windows on the model's device, stitched on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .amp import Amp, with_autocast
from .compiled import CompileMode, with_compile
from .sliding_window import sliding_window_inference
from .tta import flip_tta

__all__ = ["predict_volume"]


def predict_volume(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    roi_size: Sequence[int],
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    mode: str = "gaussian",
    tta_axes: Sequence[int] = (),
    device: torch.device | str = "cpu",
    progress: bool = False,
    amp: Amp = "none",
    compile: CompileMode | bool | None = None,
) -> Tensor:
    """``model``'s output (1, C_out, *spatial) for one volume ``x`` (C, *spatial): windows of
    ``roi_size`` run on ``device`` (averaged over flips of ``tta_axes`` when given) and stitched
    on the CPU, so a volume larger than the GPU's memory fits. Arguments as
    :func:`sliding_window_inference` (MONAI's). ``amp`` (``"none"``, ``"bf16"``, ``"fp16"``) runs
    each forward of ``model`` under ``torch.autocast`` on ``device``; flip averaging, blending
    and the float32 result stay in full precision. ``compile`` (a torch.compile mode, True for
    "default"; see :func:`ndunet.inference.with_compile`) compiles ``model`` for the window
    shape, the last batch of windows padded to ``sw_batch_size``; to reuse one compiled model
    over many volumes, wrap it once with ``with_compile`` and leave ``compile`` out here."""
    model = with_autocast(with_compile(model, compile, device, sw_batch_size), amp, device)
    predictor = flip_tta(model, tta_axes) if tta_axes else model
    with torch.inference_mode():
        return sliding_window_inference(
            x[None], tuple(roi_size), sw_batch_size, predictor, overlap, mode,
            sw_device=device, device="cpu", progress=progress,
        )  # fmt: skip

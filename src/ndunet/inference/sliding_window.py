"""Sliding-window inference with MONAI's arguments and semantics, for any number of spatial axes.

Same meaning as ``monai.inferers.sliding_window_inference`` (MONAI 1.4) for a predictor that
returns one tensor at the window's spatial size: windows placed by MONAI's rule, inputs smaller
than the window padded symmetrically and the output cropped back, windows weighted by a constant
or Gaussian importance map and the overlaps averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from ndunet._checks import check_choice, check_float, check_int, invalid
from ndunet.functional import pad_nd

from .amp import Amp, with_autocast
from .compiled import CompileMode, with_compile
from .windows import importance_map, window_slices

__all__ = ["sliding_window_inference"]

BlendMode = Literal["constant", "gaussian"]
PaddingMode = Literal["constant", "reflect", "replicate", "circular"]
BLEND_MODES = ("constant", "gaussian")
PADDING_MODES = ("constant", "reflect", "replicate", "circular")


def _roi(roi_size: Any, image_size: Sequence[int]) -> tuple[int, ...]:
    """MONAI's ``fall_back_tuple``: None or a non-positive entry means the whole axis."""
    n = len(image_size)
    what = f"an int or a sequence of spatial_dims={n} ints (None or <= 0: the whole axis)"
    values = (roi_size,) * n if roi_size is None or isinstance(roi_size, int) else roi_size
    if not isinstance(values, Sequence) or len(values) != n:
        raise ValueError(invalid("roi_size", roi_size, what))
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise TypeError(invalid("roi_size", roi_size, what))
    return tuple(s if v is None or v <= 0 else v for v, s in zip(values, image_size))


def _per_axis(name: str, value: Any, n: int, low: float, high: float, **kw: bool) -> tuple:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * n
    if len(values) != n:
        raise ValueError(invalid(name, value, f"a number or a sequence of spatial_dims={n}"))
    return tuple(check_float(name, v, low, high, **kw) for v in values)


def sliding_window_inference(
    inputs: Tensor,
    roi_size: Sequence[int | None] | int,
    sw_batch_size: int,
    predictor: Callable[..., Tensor],
    overlap: Sequence[float] | float = 0.25,
    mode: BlendMode = "constant",
    sigma_scale: Sequence[float] | float = 0.125,
    padding_mode: PaddingMode = "constant",
    cval: float = 0.0,
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    *args: Any,
    amp: Amp = "none",
    compile: CompileMode | bool | None = None,
    **kwargs: Any,
) -> Tensor:
    """Run ``predictor`` on windows of ``roi_size`` over ``inputs`` (B, C, *spatial) and blend.

    Args:
        inputs: floating tensor (B, C, *spatial), any number of spatial axes.
        roi_size: window size per axis (an int for all axes); None or <= 0 means the whole axis.
            Axes shorter than the window are padded symmetrically (``padding_mode``, ``cval``)
            and cropped back from the output.
        sw_batch_size: windows per predictor call (windows of all batch items are pooled).
        predictor: ``predictor(windows, *args, **kwargs)`` -> (n, C_out, *roi_size); C_out may
            differ from C, the spatial size may not.
        overlap: fraction of overlap per axis in [0, 1); the step is ``int(roi * (1 - overlap))``
            (at least 1) and the last window ends flush with the axis.
        mode: ``"constant"`` (plain average) or ``"gaussian"`` (centre voxels weigh more).
        sigma_scale: Gaussian sigma as a fraction of ``roi_size``, per axis or one for all.
        padding_mode: constant, reflect, replicate or circular (only for inputs smaller than roi).
        cval: the value of constant padding.
        sw_device: where windows and the predictor run (default: the device of ``inputs``).
        device: where the output is accumulated and returned (default: the device of ``inputs``).
        progress: show a tqdm bar over predictor calls.
        amp: keyword only; ``"bf16"`` or ``"fp16"`` run the predictor under ``torch.autocast``
            on ``sw_device`` with that dtype (its output cast back to the dtype of ``inputs``,
            so weighting and blending keep full precision); ``"none"`` (default) runs it as is.
        compile: keyword only; a torch.compile mode (True for "default") compiles ``predictor``
            for the window shape with static shapes, the last batch of windows padded to
            ``sw_batch_size`` (see :func:`ndunet.inference.with_compile`); None (default): eager.

    Returns:
        (B, C_out, *spatial) on ``device``, with the dtype of ``inputs``.
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(invalid("inputs", type(inputs).__name__, "a torch.Tensor"))
    if inputs.dim() < 3 or not inputs.is_floating_point():
        raise ValueError(
            invalid(
                "inputs",
                f"{inputs.dtype} tensor of shape {tuple(inputs.shape)}",
                "a floating tensor (B, C, *spatial) with at least one spatial axis",
            )
        )
    n = inputs.dim() - 2
    batch_size, input_size = inputs.shape[0], tuple(inputs.shape[2:])
    roi = _roi(roi_size, input_size)
    check_int("sw_batch_size", sw_batch_size, 1)
    if not callable(predictor):
        raise TypeError(invalid("predictor", predictor, "a callable (windows) -> tensor"))
    overlaps = _per_axis("overlap", overlap, n, 0.0, 1.0, high_open=True)
    check_choice("mode", mode, BLEND_MODES)
    sigmas = _per_axis("sigma_scale", sigma_scale, n, 0.0, math.inf, low_open=True)
    check_choice("padding_mode", padding_mode, PADDING_MODES)
    check_float("cval", cval)
    sw_device = torch.device(sw_device) if sw_device is not None else inputs.device
    device = torch.device(device) if device is not None else inputs.device
    predictor = with_compile(predictor, compile, sw_device, sw_batch_size)
    predictor = with_autocast(predictor, amp, sw_device)

    # MONAI's padding: the missing length split in halves, the odd voxel after
    pad = [(d // 2, d - d // 2) for d in (max(r - s, 0) for r, s in zip(roi, input_size))]
    for axis, ((before, after), size) in enumerate(zip(pad, input_size)):
        limit = {"reflect": size - 1, "circular": size}.get(padding_mode)
        if limit is not None and max(before, after) > limit:
            raise ValueError(
                invalid("padding_mode", padding_mode, "'constant' or 'replicate'")
                + f": axis {axis} of length {size} needs padding {(before, after)} to "
                f"roi_size={roi[axis]}, more than {padding_mode} padding can give ({limit})"
            )
    if any(b or a for b, a in pad):
        inputs = pad_nd(inputs, pad, mode=padding_mode, value=cval)
    image_size = tuple(inputs.shape[2:])
    slices = window_slices(image_size, roi, overlaps)
    weight = importance_map(roi, mode, sigmas, device=sw_device, dtype=inputs.dtype)
    weight = weight[None, None]  # (1, 1, *roi)

    # window k of the run is window k % len(slices) of batch item k // len(slices)
    total = batch_size * len(slices)
    starts = range(0, total, sw_batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts)
    output: Tensor | None = None
    for first in starts:
        ks = range(first, min(first + sw_batch_size, total))
        where = [(k // len(slices), slices[k % len(slices)]) for k in ks]
        windows = torch.cat([inputs[(slice(b, b + 1), slice(None), *sl)] for b, sl in where]).to(
            sw_device
        )
        out = predictor(windows, *args, **kwargs)
        _check_output(out, len(where), roi)
        if output is None:
            shape = (batch_size, out.shape[1], *image_size)
            output = torch.zeros(shape, dtype=inputs.dtype, device=device)
        out = (out * weight).to(device)  # (n_windows, C_out, *roi)
        for j, (b, sl) in enumerate(where):
            output[(slice(b, b + 1), slice(None), *sl)] += out[j : j + 1]
    assert output is not None  # at least one window always runs

    count = torch.zeros((1, 1, *image_size), dtype=inputs.dtype, device=device)
    weight = weight.to(device)
    for sl in slices:
        count[(slice(None), slice(None), *sl)] += weight
    output /= count
    if any(b or a for b, a in pad):
        crop = tuple(slice(b, b + s) for (b, _), s in zip(pad, input_size))
        output = output[(slice(None), slice(None), *crop)]
    return output


def _check_output(out: Any, count: int, roi: tuple[int, ...]) -> None:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"predictor returned {type(out).__name__}; sliding_window_inference needs one tensor "
            f"(windows, C_out, *roi_size={roi})"
        )
    if out.dim() != len(roi) + 2 or out.shape[0] != count or tuple(out.shape[2:]) != roi:
        raise ValueError(
            f"predictor returned shape {tuple(out.shape)} for {count} windows of roi_size={roi}; "
            f"expected ({count}, C_out, *{roi}): the output must keep the window's spatial size "
            "(outputs at another resolution are not supported)"
        )

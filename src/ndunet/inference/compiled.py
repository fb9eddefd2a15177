"""torch.compile at inference: the network compiled once for the fixed shapes of sampling steps
and sliding windows.

Sampling calls the network tens to thousands of times with one input shape, and sliding-window
inference calls it once per batch of windows, all of one size: the case torch.compile's static
shapes and CUDA graphs are made for. On a GPU, a small input (a batch-1 volume) leaves the
device waiting for the host to launch hundreds of kernels a step; the CUDA-graph modes
("reduce-overhead", "max-autotune") replay a whole forward as one launch.

``compile`` takes the trainer's modes (:data:`COMPILE_MODES`), ``True`` for ``"default"``, or
``None``/``False``/``"none"`` for the eager network. :func:`with_compile` wraps a network once:

* every call runs one static shape (``dynamic=False``). With ``batch_size``, a call with fewer
  samples (the last batch of windows) is padded to ``batch_size`` by repeating its last sample,
  and the extra outputs are dropped, so one compiled graph serves every call; the network must
  treat samples independently (any network in eval mode does, BatchNorm included);
* in a CUDA-graph mode on CUDA, each call starts a new graph iteration and its output is cloned
  out of the graph's memory, so samplers that keep earlier outputs (DPM-Solver++, UniPC) see
  them unchanged after the next replay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from ndunet._checks import did_you_mean, invalid

__all__ = ["COMPILE_MODES", "CUDA_GRAPH_MODES", "CompileMode", "check_compile", "with_compile"]

CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
# the modes inductor runs as CUDA graphs (on a CUDA device)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile(compile: bool | str | None) -> str | None:
    """The torch.compile mode ``compile`` asks for: None for ``None``/``False``/``"none"``,
    ``"default"`` for ``True``, else one of :data:`COMPILE_MODES`. Raises ValueError naming
    ``compile`` for anything else."""
    if compile is None or compile is False or compile == "none":
        return None
    if compile is True:
        return "default"
    if isinstance(compile, str) and compile in COMPILE_MODES:
        return compile
    allowed = ["none", *COMPILE_MODES]
    hint = did_you_mean(compile, allowed) if isinstance(compile, str) else ""
    raise ValueError(invalid("compile", compile, f"True, False, None or one of {allowed}", hint))


def with_compile(
    fn: Callable[..., Tensor],
    compile: bool | str | None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> Callable[..., Tensor]:
    """``fn`` under ``torch.compile(fn, mode=..., dynamic=False)`` for ``compile`` (see
    :func:`check_compile`, checked here before any work); ``fn`` itself when it asks for none.

    ``device`` is where ``fn`` runs (CUDA graphs only exist on CUDA). ``batch_size``: calls with
    fewer samples are padded to it (see the module's docstring), tensors among the arguments
    with the same leading size as the first are padded alike."""
    mode = check_compile(compile)
    if mode is None:
        return fn
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(invalid("batch_size", batch_size, "None or an int >= 1"))
    compiled = torch.compile(fn, mode=mode, dynamic=False)
    graphs = mode in CUDA_GRAPH_MODES and torch.device(device).type == "cuda"
    return _Static(compiled, graphs, batch_size)


class _Static:
    """A compiled network called at one batch size (padded up to ``batch_size``), and, with CUDA
    graphs, one graph iteration per call with its output copied out."""

    def __init__(self, compiled: Callable[..., Tensor], graphs: bool, batch_size: int | None):
        self.compiled, self.graphs, self.batch_size = compiled, graphs, batch_size

    def __call__(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        n = x.shape[0]
        pad = self.batch_size - n if self.batch_size is not None and x.dim() > 0 else 0
        if pad > 0:
            x, args, kwargs = _pad(x, pad), _pad_all(args, n, pad), _pad_all(kwargs, n, pad)
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        out = self.compiled(x, *args, **kwargs)
        if pad > 0:
            out = out[:n]
        return out.clone() if self.graphs else out


def _pad(t: Tensor, pad: int) -> Tensor:
    """``t`` with its last sample repeated ``pad`` times."""
    return torch.cat([t, t[-1:].expand(pad, *t.shape[1:])])


def _pad_all(values: Any, n: int, pad: int) -> Any:
    """The tensors among ``values`` (a tuple or dict) whose leading size is ``n``, padded."""

    def one(v: Any) -> Any:
        return _pad(v, pad) if isinstance(v, Tensor) and v.dim() > 0 and len(v) == n else v

    if isinstance(values, dict):
        return {k: one(v) for k, v in values.items()}
    return tuple(one(v) for v in values)

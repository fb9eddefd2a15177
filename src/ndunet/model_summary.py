"""``summary(model, input_shape)``: a per-layer table of output shapes and parameter counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LayerRow", "ModelSummary", "summary"]


@dataclass
class LayerRow:
    """One module: qualified name, depth, class, first output shape, parameter counts."""

    name: str
    depth: int
    kind: str
    output_shape: tuple[int, ...] | None
    params: int  # parameters of this module and its children (each counted once)
    own_params: int  # parameters registered directly on this module
    calls: int = 0


@dataclass
class ModelSummary:
    """Rows in call order plus totals; ``str()`` renders the table."""

    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    param_bytes: int
    depth: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = [r for r in self.rows if self.depth is None or r.depth <= self.depth]
        name_w = max([len("Layer")] + [2 * r.depth + len(r.name.rsplit(".", 1)[-1]) for r in shown])
        kind_w = max([len("Type")] + [len(r.kind) for r in shown])
        shape_w = max([len("Output shape")] + [len(_fmt_shape(r.output_shape)) for r in shown])
        line = "-" * (name_w + kind_w + shape_w + 20)
        out = [
            line,
            f"{'Layer':<{name_w}}  {'Type':<{kind_w}}  {'Output shape':<{shape_w}}  {'Params':>14}",
            line,
        ]
        for r in shown:
            label = "  " * r.depth + (r.name.rsplit(".", 1)[-1] or "(root)")
            out.append(
                f"{label:<{name_w}}  {r.kind:<{kind_w}}  "
                f"{_fmt_shape(r.output_shape):<{shape_w}}  {r.params:>14,}"
            )
        out += [
            line,
            f"Input shape: {_fmt_shape(self.input_shape)}   Output shape: "
            f"{_fmt_shape(self.output_shape)}",
            f"Total params: {self.total_params:,}   Trainable: {self.trainable_params:,}   "
            f"Non-trainable: {self.total_params - self.trainable_params:,}",
            f"Params size: {self.param_bytes / 2**20:.2f} MiB",
            line,
        ]
        return "\n".join(out)

    __repr__ = __str__


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "--" if shape is None else "(" + ", ".join(map(str, shape)) + ")"


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for v in value:
            found = _first_tensor(v)
            if found is not None:
                return found
    if isinstance(value, dict):
        return _first_tensor(list(value.values()))
    return None


def _count(params: Sequence[nn.Parameter]) -> int:
    return sum(p.numel() for p in {id(p): p for p in params}.values())


def summary(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    depth: int | None = 3,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    verbose: bool = True,
    **forward_kwargs: Any,
) -> ModelSummary:
    """Run one no-grad forward pass on zeros of ``input_shape`` and tabulate every module.

    ``input_shape`` includes the batch axis; for a model with ``spatial_dims`` a shape without it
    (``(C, *spatial)``) gets batch 1. A model with ``time_embedding`` gets ``t = 0`` unless
    ``t=`` is passed; other forward arguments go in ``forward_kwargs``. Rows deeper than ``depth``
    are hidden from the printed table (None: all). Prints the table when ``verbose``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if not shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive ints, got {input_shape!r}"
        )
    if depth is not None and depth < 0:
        raise ValueError(f"depth must be None or >= 0, got {depth}")
    sd = getattr(model, "spatial_dims", None)
    if isinstance(sd, int) and len(shape) == sd + 1:
        shape = (1, *shape)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    x = torch.zeros(shape, dtype=dtype, device=device)
    if getattr(model, "time_embedding", False) is True and "t" not in forward_kwargs:
        forward_kwargs["t"] = torch.zeros(shape[0], dtype=torch.long, device=device)

    rows: dict[str, LayerRow] = {}
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        rows[name] = LayerRow(
            name=name,
            depth=0 if name == "" else name.count(".") + 1,
            kind=type(module).__name__,
            output_shape=None,
            params=_count(list(module.parameters())),
            own_params=_count(list(module.parameters(recurse=False))),
        )

        def hook(mod: nn.Module, args: Any, output: Any, _name: str = name) -> None:
            row = rows[_name]
            if row.calls == 0:
                out = _first_tensor(output)
                row.output_shape = tuple(out.shape) if out is not None else None
                order.append(_name)
            row.calls += 1

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(x, **forward_kwargs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    # Modules in definition order (parents before children); ones never called keep "--".
    ordered = [rows[n] for n in rows if n != ""]
    params = list(model.parameters())
    out_t = _first_tensor(output)
    result = ModelSummary(
        rows=ordered,
        total_params=_count(params),
        trainable_params=_count([p for p in params if p.requires_grad]),
        input_shape=shape,
        output_shape=tuple(out_t.shape) if out_t is not None else None,
        param_bytes=sum(p.numel() * p.element_size() for p in {id(p): p for p in params}.values()),
        depth=depth,
        extra={"call_order": [n for n in order if n != ""]},
    )
    if verbose:
        print(result)
    return result

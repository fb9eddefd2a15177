"""A plan as a run file that ``ndunet train`` takes unchanged, and as a table to read."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ndunet.data.volume_files import list_files

from .memory import format_bytes
from .planner import Plan
from .topology import ANISOTROPY

__all__ = ["plan_summary", "run_config", "to_toml"]

EPOCHS = 100  # nnU-Net trains 1000 epochs of 250 batches; a first run on a CPU gets this many


def run_config(plan: Plan, base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The run file's sections. Data paths are written relative to ``base_dir`` (the folder the
    run file goes to: a run file's paths are read relative to it), else absolute."""
    fp, model = plan.fingerprint, plan.model
    if not fp.images:
        raise ValueError("the plan's fingerprint names no image files (fingerprint(path, ...))")
    data: dict[str, Any] = {"name": "volumes", "path": _where(fp.images, base_dir)}
    if fp.labels is not None:
        data["labels"] = _where(fp.labels, base_dir)
    data["spatial_dims"] = fp.spatial_dims
    data.update({k: v for k, v in fp.read_options.items() if k != "spatial_dims"})
    data["normalize"] = plan.normalize
    if plan.window is not None:
        data["window"] = [_round(v) for v in plan.window]
    patch = list(plan.patch_size)
    return {
        "task": {"type": "supervised"},
        "data": data,
        "patches": {"patch_size": patch},
        "augment": augmentations(plan),
        "model": {
            "channels": list(model.channels),
            "num_res_blocks": model.num_res_blocks,
            "strides": [list(s) for s in plan.topology.strides],
            "kernel_sizes": [list(k) for k in plan.topology.kernel_sizes],
            "norm": model.norm,
            "activation": model.activation,
            "skip_connections": model.skip_connections,
            "downsample": model.downsample,
            "upsample": model.upsample,
        },
        "trainer": {
            "epochs": EPOCHS,
            "batch_size": plan.batch_size,
            "optimizer": "adamw",
            "lr": 1e-3,
            "weight_decay": 3e-5,
            "scheduler": "cosine",
            "loss": "dice_ce",
            "metrics": ["dice", "iou"],
            "best_metric": "val_dice",
            "val_roi_size": patch,
            "val_sw_batch_size": plan.batch_size,
        },
    }


def augmentations(plan: Plan) -> dict[str, dict[str, Any]]:
    """nnU-Net's kinds: mirroring on every axis; 90-degree rotations in the planes whose two
    axes have the same patch length and spacings within 2x (a rotation must keep the patch's
    shape); gamma, noise and contrast."""
    n, patch, spacing = plan.fingerprint.spatial_dims, plan.patch_size, plan.target_spacing
    planes = [
        [a, b]
        for a in range(n)
        for b in range(a + 1, n)
        if patch[a] == patch[b]
        and max(spacing[a], spacing[b]) < ANISOTROPY * min(spacing[a], spacing[b])
    ]
    out: dict[str, dict[str, Any]] = {"flip": {"axes": list(range(n))}}
    if planes:
        out["rot90"] = {"planes": planes}
    return {**out, "gamma": {}, "noise": {}, "contrast": {}}


def _where(paths: tuple[str, ...], base_dir: str | os.PathLike[str] | None) -> Any:
    """Their folder when it lists as exactly these files (as ``volumes`` lists it), else the list."""
    parents = {Path(p).parent for p in paths}
    if len(parents) == 1:
        folder = parents.pop()
        if {p.resolve() for p in list_files(folder, "path")} == {Path(p).resolve() for p in paths}:
            return _relative(str(folder), base_dir)
    return [_relative(p, base_dir) for p in paths]


def _relative(path: str, base_dir: str | os.PathLike[str] | None) -> str:
    absolute = Path(path).resolve()
    if base_dir is None:
        return str(absolute)
    try:
        return os.path.relpath(absolute, Path(base_dir).resolve())
    except ValueError:  # another drive (Windows)
        return str(absolute)


def _round(v: float) -> float:
    return float(f"{v:.6g}")


# ----- TOML --------------------------------------------------------------------------------------


def to_toml(sections: Mapping[str, Mapping[str, Any]], header: str = "") -> str:
    """TOML text of ``{section: {key: value}}`` (strings, numbers, booleans, lists, inline
    tables); ``header`` becomes comment lines at the top."""
    blocks = ["\n".join(f"# {line}".rstrip() for line in header.splitlines())] if header else []
    for name, table in sections.items():
        rows = [f"{key} = {_value(value)}" for key, value in table.items()]
        blocks.append("\n".join([f"[{name}]", *rows]))
    return "\n\n".join(blocks) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v!r} has no TOML form")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"{type(v).__name__} {v!r} has no TOML form")


# ----- the table ---------------------------------------------------------------------------------


def _axes(values: Any, fmt: str = "{}") -> str:
    return " x ".join(fmt.format(v) for v in values)


def plan_summary(plan: Plan) -> str:
    """A readable account of the fingerprint and the plan, one table row per level."""
    fp = plan.fingerprint
    classes = "" if fp.num_classes is None else f", {fp.num_classes} classes"
    share = "" if fp.foreground_share is None else f", foreground {100 * fp.foreground_share:.2f}%"
    spacing = _axes(plan.target_spacing, "{:.4g}") + ("" if fp.spacing_known else " (unknown: 1)")
    lines = [
        f"data        {len(fp.shapes)} volumes, {fp.spatial_dims}-D, {fp.in_channels} channel(s)"
        f"{classes}{share}",
        f"median      shape {_axes(fp.median_shape)}, spacing {spacing} (the target spacing)",
    ]
    if fp.percentiles is not None:
        where = "foreground" if fp.num_classes is not None else "all voxels"
        values = "; ".join(" / ".join(f"{v:.4g}" for v in p) for p in fp.percentiles)
        lines.append(f"intensity   {where} p0.5 / p50 / p99.5: {values}")
    window = "" if plan.window is None else f", window {[_round(v) for v in plan.window]}"
    lines.append(f"normalize   {plan.normalize}{window}")
    rows = [("level", "feature map", "spacing", "stride", "kernel", "channels")]
    topo, strides = plan.topology, plan.topology.strides
    for i, (size, sp, kernel) in enumerate(
        zip(topo.level_sizes(), topo.spacings, topo.kernel_sizes)
    ):
        stride = _axes(strides[i]) if i < len(strides) else "-"
        row = (str(i), _axes(size), _axes(sp, "{:.3g}"), stride, _axes(kernel))
        rows.append((*row, str(plan.model.channels[i])))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines += [""] + ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    measured = (
        "not measured"
        if plan.measured_bytes is None
        else f"measured {format_bytes(plan.measured_bytes)} ({plan.device})"
    )
    lines += [
        "",
        f"patch       {_axes(plan.patch_size)} (multiples of {_axes(plan.topology.divisors)})",
        f"batch       {plan.batch_size}",
        f"memory      estimated {format_bytes(plan.estimated_bytes)}, {measured}, budget "
        f"{format_bytes(plan.memory)}",
    ]
    return "\n".join(lines)

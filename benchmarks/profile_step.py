"""Profile one training step of the unet_step.py anchor UNet: where the time goes, how many
kernels run, and how many bytes are cast between dtypes or copied between layouts per step.

Variants of the same model run in the same process, one after the other (fresh model, same
seed), so a single GPU run shows the effect of a layer change:

* ``old``: ``nn.GroupNorm`` and the two-pass FiLM ``h * (1 + scale) + shift``, the layers before
  issue 12 (under CUDA autocast GroupNorm runs in float32, see ndunet.layers.norm.GroupNorm);
* ``new``: ndunet's GroupNorm (keeps the autocast dtype) and the fused FiLM (addcmul);
* ``new-cl``: ``new`` with ``GroupNorm.channels_last_kernel`` (GroupNorm on the channels-last
  layout itself, no NCHW round trip; only differs from ``new`` for channels-last inputs).

Per variant: the median step time (unprofiled), then ``--profile-steps`` steps under
torch.profiler: the top ops by self device time (self CPU time on the CPU), aten ops and device
kernels per step, and every ``aten::copy_`` of a tensor (0-dim scalars left out) split into dtype
casts (source and destination dtype differ: autocast casts, ``.float()``) and same-dtype copies
(layout changes such as ``contiguous()``, and other materializations), with their bytes moved
(read + write). On the CPU,
``--simulate-cuda-autocast`` gives group_norm/layer_norm CUDA's float32 autocast policy, so the
casts a GPU would see show on a CPU too.

    PYTHONPATH=src python benchmarks/profile_step.py --device cuda --amp bf16 --channels-last \\
        --batch 64 [--variants old,new,new-cl] [--compile] [--trace-dir DIR]
    PYTHONPATH=src python benchmarks/profile_step.py --device cpu --amp bf16 --batch 4 \\
        --simulate-cuda-autocast --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import unet_step  # the anchor models and the training step, shared with unet_step.py

import ndunet.blocks as blocks
from ndunet.layers.norm import GroupNorm

VARIANTS = ("old", "new", "new-cl")
AMPS = {"none": "fp32", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
BYTES = {"float": 4, "double": 8, "c10::Half": 2, "c10::BFloat16": 2, "long int": 8, "int": 4,
         "bool": 1, "unsigned char": 1, "signed char": 1, "short int": 2}  # fmt: skip


def legacy_conditioning(
    h: Tensor, proj: nn.Module | None, emb: Tensor | None, mode: str = "scale_shift"
) -> Tensor:
    """blocks._conditioning before issue 12: no cast of the projection, two passes over h."""
    if proj is None or emb is None:
        return h
    e = proj(emb)
    shape = (e.shape[0], -1) + (1,) * (h.dim() - 2)
    if mode == "add":
        return h + e.reshape(shape)
    scale, shift = e.chunk(2, dim=1)
    return h * (1 + scale.reshape(shape)) + shift.reshape(shape)


@contextlib.contextmanager
def variant(model: nn.Module, name: str) -> Iterator[None]:
    """Switch ``model``'s norm layers (and the FiLM function) to ``name`` while the block runs."""
    norms = [m for m in model.modules() if isinstance(m, GroupNorm)]
    film = blocks._conditioning
    if name == "old":
        for m in norms:
            m.__class__ = nn.GroupNorm  # same parameters and buffers: only forward changes
        blocks._conditioning = legacy_conditioning
    elif name == "new-cl":
        for m in norms:
            m.channels_last_kernel = True
    try:
        yield
    finally:
        blocks._conditioning = film
        for m in norms:
            m.__class__ = GroupNorm
            m.__dict__.pop("channels_last_kernel", None)


@contextlib.contextmanager
def cuda_autocast_policy(enabled: bool) -> Iterator[None]:
    """CPU autocast with CUDA's float32 policy for group_norm and layer_norm (aten's
    autocast_mode.cpp: ``KERNEL_CUDA(group_norm, fp32)``, ``KERNEL_CUDA(layer_norm, fp32)``)."""
    if not enabled:
        yield
        return
    lib = torch.library.Library("aten", "IMPL")
    below = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def fp32(t: Tensor | None) -> Tensor | None:
        return t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t

    def group_norm(x, groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):  # type: ignore[no-untyped-def]
        with torch._C._ExcludeDispatchKeyGuard(below):
            return torch.ops.aten.group_norm(
                fp32(x), groups, fp32(weight), fp32(bias), eps, cudnn_enabled
            )

    def layer_norm(x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):  # type: ignore[no-untyped-def]
        with torch._C._ExcludeDispatchKeyGuard(below):
            return torch.ops.aten.layer_norm(
                fp32(x), shape, fp32(weight), fp32(bias), eps, cudnn_enable
            )

    lib.impl("group_norm", group_norm, "AutocastCPU")
    lib.impl("layer_norm", layer_norm, "AutocastCPU")
    norm_module = sys.modules["ndunet.layers.norm"]
    mixed = norm_module._MIXED_PARAM_DEVICES
    norm_module._MIXED_PARAM_DEVICES = frozenset()  # and ndunet's CUDA path: 16-bit weights
    try:
        yield
    finally:
        norm_module._MIXED_PARAM_DEVICES = mixed
        lib._destroy()


@dataclass
class Profile:
    variant: str
    ms: float
    ops: float = 0.0
    kernels: float = 0.0
    casts: float = 0.0  # all dtype casts (weights too: autocast casts each weight per step)
    cast_mib: float = 0.0
    act_casts: float = 0.0  # those of activations (rank >= 3, batch first, >= 1024 a sample)
    act_cast_mib: float = 0.0
    copies: float = 0.0  # same-dtype copies (layout changes, materializations)
    copy_mib: float = 0.0
    act_copies: float = 0.0
    act_copy_mib: float = 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_copies(
    events: list, steps: int, batch: int, prof: Profile
) -> list[tuple[str, str, str, int]]:
    """Fill ``prof``'s copy figures (per step) from the profiler's ``aten::copy_`` events."""
    found = []
    for e in events:
        parent = e.cpu_parent
        if e.name != "aten::copy_" or (parent is not None and parent.name == "aten::copy_"):
            continue
        dst, src = [*e.input_dtypes, "?", "?"][:2]
        shape = list(e.input_shapes[0]) if e.input_shapes else []
        if not shape:
            continue  # 0-dim: Python scalars wrapped for arithmetic (the optimizer's), no data
        numel = 1
        for size in shape:
            numel *= size
        mib = numel * (BYTES.get(dst, 4) + BYTES.get(src, 4)) / 2**20 / steps
        act = len(shape) >= 3 and shape[0] == batch and numel >= 1024 * batch
        if dst != src:
            prof.casts += 1 / steps
            prof.cast_mib += mib
            prof.act_casts += act / steps
            prof.act_cast_mib += mib * act
        else:
            prof.copies += 1 / steps
            prof.copy_mib += mib
            prof.act_copies += act / steps
            prof.act_copy_mib += mib * act
        caller = parent.name if parent is not None else "-"
        if parent is not None and parent.cpu_parent is not None:
            caller = f"{parent.cpu_parent.name} > {caller}"
        found.append((f"{src}->{dst}", str(shape), caller, mib * steps))
    return found


def run_variant(name: str, args: argparse.Namespace) -> Profile:
    device = torch.device(args.device)
    title, factories, shape = unet_step.ROWS[f"{args.spatial_dims}d"]
    factory = next(f for f, model_name in factories if model_name == "ndunet.UNet")
    if args.batch:
        shape = (args.batch, *shape[1:])
    torch.manual_seed(0)
    entry = factory()
    x = torch.randn(shape, device=device)
    t = torch.randint(0, 1000, (shape[0],), device=device)
    entry.model.to(device).train()
    if args.channels_last:
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
        entry.model.to(memory_format=fmt)
    with variant(entry.model, name), cuda_autocast_policy(args.simulate_cuda_autocast):
        module = torch.compile(entry.model) if args.compile else entry.model
        step: Callable[[], None] = unet_step.step_fn(entry, module, x, t, AMPS[args.amp])
        for _ in range(args.warmup + (2 if args.compile else 0)):
            step()
        times = []
        for _ in range(args.steps):
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)
        result = Profile(name, 1e3 * statistics.median(times))
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        with profile(activities=activities, record_shapes=True) as prof:
            for _ in range(args.profile_steps):
                step()
            sync(device)
    events = list(prof.events())
    n = args.profile_steps
    result.ops = sum(e.name.startswith("aten::") for e in events) / n
    if device.type == "cuda":
        result.kernels = sum(e.device_type == torch.autograd.DeviceType.CUDA for e in events) / n
    found = count_copies(events, n, shape[0], result)
    how = (
        f"{title} {tuple(shape)} {args.device} amp={args.amp}"
        + (" channels_last" if args.channels_last else "")
        + (" compiled" if args.compile else "")
        + (" simulated-CUDA-autocast" if args.simulate_cuda_autocast else "")
    )
    print(f"\n=== variant {name}: {how}: {result.ms:.1f} ms/step (median of {args.steps}) ===")
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=args.top, max_name_column_width=40))
    if args.copies:
        print(f"largest copies of {n} profiled steps (src->dst dtype, shape, called from, bytes):")
        for kind, shp, parent, moved in sorted(found, key=lambda f: -f[3])[: args.copies]:
            print(f"  {kind:<32}{shp:<22}{parent[:60]:<62}{moved:8.2f} MiB")
    if args.trace_dir:
        Path(args.trace_dir).mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(Path(args.trace_dir) / f"step_{name}.json"))
    entry.model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="bf16", choices=sorted(AMPS), help="autocast dtype or none")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--spatial-dims", type=int, default=2, choices=[2, 3, 4])
    p.add_argument("--batch", type=int, default=None, help="default: unet_step.py's row")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    p.add_argument("--variants", default="old,new", help=f"comma-separated: {','.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=5, help="timed (unprofiled) steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--top", type=int, default=15, help="rows of the op table")
    p.add_argument("--copies", type=int, default=0, help="list the N largest copies")
    p.add_argument("--simulate-cuda-autocast", action="store_true",
                   help="CPU: group_norm/layer_norm autocast to float32 as on CUDA")  # fmt: skip
    p.add_argument("--trace-dir", default=None, help="write a chrome trace per variant here")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="torch.backends.cudnn.benchmark = True (autotuned conv algorithms)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    names = args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            p.error(f"--variants: {name!r} is not one of {', '.join(VARIANTS)}")
    if args.simulate_cuda_autocast and args.device != "cpu":
        p.error("--simulate-cuda-autocast is for --device cpu (CUDA has the real policy)")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (", cudnn.benchmark" if args.cudnn_benchmark else ""))  # fmt: skip
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    results = [run_variant(name, args) for name in names]
    print("\nper training step: aten::copy_ calls between dtypes (casts) and within one dtype"
          " (layout changes, materializations);\n'act': those of activations (rank >= 3, batch"
          " first, >= 1024 values a sample); MiB read + written")  # fmt: skip
    head = (f"{'variant':<9}{'ms/step':>9}{'aten ops':>10}{'kernels':>9}{'casts':>7}{'MiB':>8}"
            f"{'act casts':>11}{'MiB':>8}{'copies':>8}{'MiB':>8}{'act copies':>12}{'MiB':>8}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in results:
        kernels = f"{r.kernels:.0f}" if r.kernels else "-"
        print(f"{r.variant:<9}{r.ms:>9.1f}{r.ops:>10.0f}{kernels:>9}{r.casts:>7.0f}{r.cast_mib:>8.1f}"
              f"{r.act_casts:>11.0f}{r.act_cast_mib:>8.1f}{r.copies:>8.0f}{r.copy_mib:>8.1f}"
              f"{r.act_copies:>12.0f}{r.act_copy_mib:>8.1f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()

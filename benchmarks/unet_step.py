"""One training step (forward, backward, Adam) of ndunet.UNet vs diffusers' UNet2DModel and
MONAI's DiffusionModelUNet on the same workload, timed in the same run.

Anchor (2-D): batch 16, 3x32x32, channels (64, 128, 256, 256), 2 residual blocks per level,
self-attention (32-channel heads) at the third level and in the bottleneck, sinusoidal time
embedding + MLP, GroupNorm(32) + SiLU, strided-conv down, nearest+conv up. Extra rows: 3-D
(1x32^3, vs MONAI) and 4-D (ours only). The peers are optional (install them in a separate
environment, e.g. /work/main/.bench-env); missing ones are reported, not fatal.

``ops/step`` counts the aten ops of one eager forward + backward that reach a kernel (views
left out): on a GPU about one launch each, which is what bounds a step too small for the card
(the 3-D row at batch 1). Counted on the CPU, 2026-11-30: 2-D anchor ours 818 / diffusers 1017 /
MONAI 902 in fp32 and 1230 / 1477 / 1362 under bf16 autocast (its weight casts included); 3-D
645 / 707 (MONAI) and 973 / 1083.

Steps of all models are interleaved (one step of each per round), so load from other processes
on a shared machine hits them alike; the table reports the median step time. On a loaded
shared CPU, ``--threads 1`` gives steadier (and often faster) numbers: spinning OpenMP threads
of an oversubscribed pool cost more than they add.

    PYTHONPATH=src python benchmarks/unet_step.py [--rounds 6] [--device cuda --amp fp32,bf16]

On a GPU, ``--amp fp32,bf16`` runs every row in both precisions and ends with the issue's
summary: our bf16 speed-up over our fp32, ours against the faster peer in each precision, and
(``--compile``) the share of the card's bf16 matrix rate, measured in the same run with one
8192^3 bf16 matrix product.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ndunet.models.unet import UNet


@dataclass
class Entry:
    name: str
    model: nn.Module
    forward: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    times: list[float] = field(default_factory=list)
    flops: int = 0
    ops: int = 0  # aten ops reaching a kernel per eager forward + backward (count_ops)
    error: str = ""


def ours(spatial_dims: int, channels: tuple[int, ...], attn: tuple[bool, ...]) -> Entry:
    model = UNet(spatial_dims, 3 if spatial_dims == 2 else 1, 3 if spatial_dims == 2 else 1,
                 channels=channels, num_res_blocks=2, attention_levels=attn, time_embedding=True,
                 attention_head_dim=32)  # fmt: skip
    return Entry("ndunet.UNet", model, lambda m, x, t: m(x, t))


def diffusers_2d() -> Entry:
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 256, 256),
        layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift",  # the same FiLM conditioning as ours
    )  # fmt: skip
    return Entry("diffusers.UNet2DModel", model, lambda m, x, t: m(x, t).sample)


def monai(spatial_dims: int, channels: tuple[int, ...], attn: tuple[bool, ...]) -> Entry:
    from monai.networks.nets import DiffusionModelUNet

    c = 3 if spatial_dims == 2 else 1
    model = DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=c, out_channels=c, num_res_blocks=2,
        channels=channels, attention_levels=attn, norm_num_groups=32, num_head_channels=32,
    )  # fmt: skip
    return Entry("monai.DiffusionModelUNet", model, lambda m, x, t: m(x, t))


def build(factory: Callable[[], Entry], name: str) -> Entry:
    try:
        return factory()
    except Exception as exc:  # a peer that is not installed is reported, not fatal
        return Entry(
            name, nn.Identity(), lambda m, x, t: x, error=f"{type(exc).__name__}: {exc}"[:70]
        )


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def step_fn(
    entry: Entry,
    module: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    amp: str,
    cuda_graphs: bool = False,
) -> Callable[[], None]:
    """One training step of ``module``; ``cuda_graphs``: a compiled module in a CUDA-graph mode,
    each step marked as a new iteration (as the trainer does)."""
    opt = torch.optim.Adam(entry.model.parameters(), lr=1e-4)
    target = torch.randn_like(x)
    dtype = DTYPES[amp]

    def step() -> None:
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(x.device.type, dtype) if dtype else contextlib.nullcontext()
        with ctx:
            out = entry.forward(module, x, t)
        loss = nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    return step


_VIEWS = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze",
          "squeeze", "slice", "select", "as_strided", "alias", "detach", "split", "chunk",
          "unbind", "narrow", "split_with_sizes", "_reshape_alias", "unflatten", "flatten",
          "_record_function_enter_new", "_record_function_exit"}  # fmt: skip


class _OpCount(TorchDispatchMode):
    """Counts the aten ops that reach a kernel (views and profiler markers left out): in eager
    CUDA about one launch each, so the host-side cost of a step that is too small for the GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops += func.overloadpacket.__name__ not in _VIEWS
        return func(*args, **(kwargs or {}))


def count_ops(entry: Entry, x: torch.Tensor, t: torch.Tensor, amp: str) -> int:
    """Ops of one eager forward + backward in precision ``amp`` (no optimizer: the peers' and
    ours are the same torch.optim.Adam)."""
    dtype = DTYPES[amp]
    ctx = torch.autocast(x.device.type, dtype) if dtype else contextlib.nullcontext()
    with _OpCount() as counter:
        with ctx:
            out = entry.forward(entry.model, x, t)
        out.float().square().mean().backward()
    entry.model.zero_grad(set_to_none=True)
    return counter.ops


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matrix_rate(device: torch.device) -> float:
    """Measured bf16 matrix-product rate (FLOP/s) of the device: one 8192^3 product, the mean of
    ten after three warm-ups (the figure the issue's '% of the matrix rate' target is against)."""
    if device.type != "cuda":
        return float("nan")
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * 8192**3 / (time.perf_counter() - start)


@dataclass
class Result:
    row: str
    amp: str
    name: str
    sec: float
    flops: int


def run_row(
    title: str,
    factories: list[tuple[Callable[[], Entry], str]],
    shape: tuple[int, ...],
    amp: str,
    args: argparse.Namespace,
) -> list[Result]:
    device = torch.device(args.device)
    wanted = args.models.split(",")
    entries = [build(f, name) for f, name in factories if name.split(".")[0] in wanted]
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    t = torch.randint(0, 1000, (shape[0],), device=device)
    fmt = None
    if args.channels_last and len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    live = [e for e in entries if not e.error]
    steps = {}
    for e in live:
        e.model.to(device).train()
        if fmt is not None:
            e.model.to(memory_format=fmt)
        with FlopCounterMode(display=False) as counter:  # forward + backward, no optimizer
            out = e.forward(e.model, x, t)
            out.float().square().mean().backward()
        e.flops = counter.get_total_flops()
        e.model.zero_grad(set_to_none=True)
        e.ops = count_ops(e, x, t, amp)
        module = torch.compile(e.model, mode=args.compile_mode) if args.compile else e.model
        graphs = args.compile and args.compile_mode in ("reduce-overhead", "max-autotune")
        steps[e.name] = step_fn(e, module, x, t, amp, graphs and device.type == "cuda")
        for _ in range(args.warmup + (2 if args.compile else 0)):
            steps[e.name]()
    for _ in range(args.rounds):  # interleave: shared-CPU load hits every model alike
        for e in live:
            sync(device)
            start = time.perf_counter()
            steps[e.name]()
            sync(device)
            e.times.append(time.perf_counter() - start)
    how = f"autocast {amp}" if DTYPES[amp] else amp
    how += (" channels_last" if fmt is not None else "") + (" compiled" if args.compile else "")
    print(f"\n{title}   input {tuple(shape)}   device {args.device}   {how}"
          f"   median of {args.rounds} steps")  # fmt: skip
    head = f"{'model':<26}{'params':>9}{'GFLOP/step':>12}{'ops/step':>9}{'ms/step':>10}{'img/s':>9}"
    head += f"{'GFLOP/s':>9}"
    print(head + f"{'ours/theirs':>13}")
    print("-" * (len(head) + 13))
    ref = next((e for e in live if e.name == "ndunet.UNet"), None)
    results = []
    for e in entries:
        if e.error:
            print(f"{e.name:<26}  unavailable: {e.error}")
            continue
        sec = statistics.median(e.times)
        results.append(Result(title, amp, e.name, sec, e.flops))
        params = sum(p.numel() for p in e.model.parameters()) / 1e6
        ratio = ""
        if ref is not None and e is not ref:
            ratio = f"{sec / statistics.median(ref.times):.2f}x"
        print(f"{e.name:<26}{params:>8.2f}M{e.flops / 1e9:>12.1f}{e.ops:>9}{sec * 1e3:>10.1f}"
              f"{shape[0] / sec:>9.2f}{e.flops / sec / 1e9:>9.1f}{ratio:>13}")  # fmt: skip
    for e in live:
        e.model.to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def summary(results: list[Result], amps: list[str], rate: float, device: str) -> None:
    """Per row: our low-precision speed-up over our fp32, ours against the faster peer in each
    precision, and the share of the measured bf16 matrix rate."""
    print(f"\nsummary on {device}"
          + (f", measured bf16 matrix rate {rate / 1e12:.0f} TFLOP/s" if rate == rate else ""))  # fmt: skip
    print(f"{'row':<28}{'precision':>10}{'ours ms':>9}{'vs own fp32':>12}"
          f"{'faster peer ms':>16}{'peer/ours':>10}{'% matrix rate':>15}")  # fmt: skip
    for row in dict.fromkeys(r.row for r in results):
        fp32 = next((r for r in results if (r.row, r.amp, r.name) == (row, "fp32", "ndunet.UNet")), None)  # fmt: skip
        for amp in amps:
            mine = [r for r in results if (r.row, r.amp, r.name) == (row, amp, "ndunet.UNet")]
            if not mine:
                continue
            ours_r = mine[0]
            peers = [r for r in results if r.row == row and r.amp == amp and r is not ours_r]
            peer = min(peers, key=lambda r: r.sec, default=None)
            speed = f"{fp32.sec / ours_r.sec:.2f}x" if fp32 is not None and amp != "fp32" else ""
            pms = f"{peer.sec * 1e3:.1f}" if peer else "-"
            pr = f"{peer.sec / ours_r.sec:.2f}x" if peer else "-"
            share = f"{100 * ours_r.flops / ours_r.sec / rate:.1f}%" if rate == rate else "-"
            print(f"{row[:27]:<28}{amp:>10}{ours_r.sec * 1e3:>9.1f}{speed:>12}{pms:>16}{pr:>10}{share:>15}")  # fmt: skip


_C2, _A2 = (64, 128, 256, 256), (False, False, True, False)
_C3, _A3 = (32, 64, 64), (False, False, True)
_C4, _A4 = (16, 32, 32), (False, False, True)
ROWS = {  # key: (title, [(factory, name)], input shape; --batch and --batch-3d set the batch)
    "2d": (
        "2-D anchor",
        [
            (partial(ours, 2, _C2, _A2), "ndunet.UNet"),
            (diffusers_2d, "diffusers.UNet2DModel"),
            (partial(monai, 2, _C2, _A2), "monai.DiffusionModelUNet"),
        ],
        (16, 3, 32, 32),
    ),
    "3d": (
        "3-D, channels (32, 64, 64)",
        [
            (partial(ours, 3, _C3, _A3), "ndunet.UNet"),
            (partial(monai, 3, _C3, _A3), "monai.DiffusionModelUNet"),
        ],
        (1, 1, 32, 32, 32),
    ),
    "4d": (
        "4-D, channels (16, 32, 32)",
        [(partial(ours, 4, _C4, _A4), "ndunet.UNet")],
        (1, 1, 12, 12, 12, 12),
    ),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="2d,3d,4d", help="comma-separated subset of 2d,3d,4d")
    p.add_argument("--rounds", type=int, default=6, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="2-D batch size")
    p.add_argument("--batch-3d", type=int, default=1, help="3-D batch size (the issue's row: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="fp32", help="comma-separated precisions: fp32, bf16, fp16")
    p.add_argument("--channels-last", action="store_true", help="channels_last for 2-D/3-D")
    p.add_argument("--cudnn-benchmark", action="store_true",
                   help="let cuDNN autotune its algorithms (every model alike; the trainer's "
                   "default on CUDA)")  # fmt: skip
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (max-autotune, ...)")
    p.add_argument(
        "--models", default="ndunet,diffusers,monai", help="which of ndunet,diffusers,monai"
    )
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    amps = args.amp.split(",")
    for amp in amps:
        if amp not in DTYPES:
            p.error(
                f"--amp={amp!r} is not valid; expected a comma-separated subset of {list(DTYPES)}"
            )
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cudnn.benchmark={args.cudnn_benchmark}; ratio = their ms/step "
          "over ours (> 1: ours is faster; same workload and FLOPs within a few %)")  # fmt: skip
    if args.device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    rate = matrix_rate(torch.device(args.device))
    rows = set(args.rows.split(","))
    results: list[Result] = []
    for amp in amps:
        for key, (title, factories, shape) in ROWS.items():
            if key in rows:
                batch = {"2d": args.batch, "3d": args.batch_3d}.get(key, shape[0])
                shape = (batch, *shape[1:])
                results += run_row(title, factories, shape, amp, args)
    summary(results, amps, rate, args.device)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

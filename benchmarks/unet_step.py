"""One training step (forward, backward, Adam) of ndunet.UNet vs diffusers' UNet2DModel and
MONAI's DiffusionModelUNet on the same workload, timed in the same run.

Anchor (2-D): batch 16, 3x32x32, channels (64, 128, 256, 256), 2 residual blocks per level,
self-attention (32-channel heads) at the third level and in the bottleneck, sinusoidal time
embedding + MLP, GroupNorm(32) + SiLU, strided-conv down, nearest+conv up. Extra rows: 3-D
(1x32^3, vs MONAI) and 4-D (ours only). The peers are optional (install them in a separate
environment, e.g. /work/main/.bench-env); missing ones are reported, not fatal.

Steps of all models are interleaved (one step of each per round), so load from other processes
on a shared machine hits them alike; the table reports the median step time. On a loaded
shared CPU, ``--threads 1`` gives steadier (and often faster) numbers: spinning OpenMP threads
of an oversubscribed pool cost more than they add.

    PYTHONPATH=src python benchmarks/unet_step.py [--rounds 6] [--device cuda --amp bf16]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ndunet.models.unet import UNet


@dataclass
class Entry:
    name: str
    model: nn.Module
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    times: list[float] = field(default_factory=list)
    flops: int = 0
    error: str = ""


def ours(spatial_dims: int, channels: tuple[int, ...], attn: tuple[bool, ...]) -> Entry:
    model = UNet(spatial_dims, 3 if spatial_dims == 2 else 1, 3 if spatial_dims == 2 else 1,
                 channels=channels, num_res_blocks=2, attention_levels=attn, time_embedding=True,
                 attention_head_dim=32)  # fmt: skip
    return Entry("ndunet.UNet", model, lambda x, t: model(x, t))


def diffusers_2d() -> Entry:
    from diffusers import UNet2DModel

    model = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(64, 128, 256, 256),
        layers_per_block=2, attention_head_dim=32, norm_num_groups=32,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        resnet_time_scale_shift="scale_shift",  # the same FiLM conditioning as ours
    )  # fmt: skip
    return Entry("diffusers.UNet2DModel", model, lambda x, t: model(x, t).sample)


def monai(spatial_dims: int, channels: tuple[int, ...], attn: tuple[bool, ...]) -> Entry:
    from monai.networks.nets import DiffusionModelUNet

    c = 3 if spatial_dims == 2 else 1
    model = DiffusionModelUNet(
        spatial_dims=spatial_dims, in_channels=c, out_channels=c, num_res_blocks=2,
        channels=channels, attention_levels=attn, norm_num_groups=32, num_head_channels=32,
    )  # fmt: skip
    return Entry("monai.DiffusionModelUNet", model, lambda x, t: model(x, t))


def build(factory: Callable[[], Entry], name: str) -> Entry:
    try:
        return factory()
    except Exception as exc:  # a peer that is not installed is reported, not fatal
        return Entry(name, nn.Identity(), lambda x, t: x, error=f"{type(exc).__name__}: {exc}"[:70])


def step_fn(entry: Entry, x: torch.Tensor, t: torch.Tensor, amp: str | None) -> Callable[[], None]:
    opt = torch.optim.Adam(entry.model.parameters(), lr=1e-4)
    target = torch.randn_like(x)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(x.device.type, dtype) if dtype else contextlib.nullcontext()
        with ctx:
            out = entry.call(x, t)
        loss = nn.functional.mse_loss(out.float(), target)
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_row(
    title: str, entries: list[Entry], shape: tuple[int, ...], args: argparse.Namespace
) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    t = torch.randint(0, 1000, (shape[0],), device=device)
    if args.channels_last and len(shape) in (4, 5):
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        x = x.contiguous(memory_format=fmt)
    live = [e for e in entries if not e.error]
    steps = {}
    for e in live:
        e.model.to(device).train()
        if args.channels_last and len(shape) in (4, 5):
            e.model.to(memory_format=fmt)
        steps[e.name] = step_fn(e, x, t, args.amp)
        with FlopCounterMode(display=False) as counter:  # forward + backward, no optimizer
            out = e.call(x, t)
            out.float().square().mean().backward()
        e.flops = counter.get_total_flops()
        e.model.zero_grad(set_to_none=True)
        for _ in range(args.warmup):
            steps[e.name]()
    for _ in range(args.rounds):  # interleave: shared-CPU load hits every model alike
        for e in live:
            sync(device)
            start = time.perf_counter()
            steps[e.name]()
            sync(device)
            e.times.append(time.perf_counter() - start)
    print(f"\n{title}   input {tuple(shape)}   device {args.device}"
          f"{'  autocast ' + args.amp if args.amp else ''}   median of {args.rounds} steps")  # fmt: skip
    head = f"{'model':<26}{'params':>9}{'GFLOP/step':>12}{'ms/step':>10}{'img/s':>9}{'GFLOP/s':>9}"
    print(head + f"{'ours/theirs':>13}")
    print("-" * (len(head) + 13))
    ref = next((e for e in live if e.name == "ndunet.UNet"), None)
    for e in entries:
        if e.error:
            print(f"{e.name:<26}  unavailable: {e.error}")
            continue
        sec = statistics.median(e.times)
        params = sum(p.numel() for p in e.model.parameters()) / 1e6
        ratio = ""
        if ref is not None and e is not ref:
            ratio = f"{statistics.median(e.times) / statistics.median(ref.times):.2f}x"
        print(f"{e.name:<26}{params:>8.2f}M{e.flops / 1e9:>12.1f}{sec * 1e3:>10.0f}"
              f"{shape[0] / sec:>9.2f}{e.flops / sec / 1e9:>9.1f}{ratio:>13}")  # fmt: skip
    for e in live:
        e.model.to("cpu")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="2d,3d,4d", help="comma-separated subset of 2d,3d,4d")
    p.add_argument("--rounds", type=int, default=6, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="2-D batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="channels_last for 2-D/3-D")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratio = their ms/step "
          "over ours (> 1: ours is faster; same workload and FLOPs within a few %)")  # fmt: skip
    rows = set(args.rows.split(","))
    if "2d" in rows:
        ch, attn = (64, 128, 256, 256), (False, False, True, False)
        entries = [
            build(lambda: ours(2, ch, attn), "ndunet.UNet"),
            build(diffusers_2d, "diffusers.UNet2DModel"),
            build(lambda: monai(2, ch, attn), "monai.DiffusionModelUNet"),
        ]
        run_row("2-D anchor", entries, (args.batch, 3, 32, 32), args)
    if "3d" in rows:
        ch, attn = (32, 64, 64), (False, False, True)
        entries = [
            build(lambda: ours(3, ch, attn), "ndunet.UNet"),
            build(lambda: monai(3, ch, attn), "monai.DiffusionModelUNet"),
        ]
        run_row("3-D, channels (32, 64, 64)", entries, (1, 1, 32, 32, 32), args)
    if "4d" in rows:
        ch, attn = (16, 32, 32), (False, False, True)
        run_row("4-D, channels (16, 32, 32)", [ours(4, ch, attn)], (1, 1, 12, 12, 12, 12), args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

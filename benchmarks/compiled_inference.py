"""Inference with ``compile=``: Diffusion.sample and predict_volume, eager against torch.compile
modes, in the same run.

Rows (each in every ``--amp`` precision):

* ``sample 2-D``: the demo's class-conditional U-Net on (1, 8, 8) digits, batch 64, dpm++2m;
* ``sample 3-D``: the 3-D row of unet_step.py (channels 32/64/64, attention at the third level),
  batch 1, (1, 32, 32, 32): on a GPU, eager sampling there waits on the host's kernel launches,
  which CUDA graphs ("reduce-overhead") replay as one;
* ``predict 3-D``: a segmentation U-Net (16/32/64, 3 classes) over a whole volume by sliding
  windows (``--volume`` voxels a side, windows of ``--roi``, ``--sw-batch-size`` per call; the
  last batch of windows is padded, so one graph serves every call).

Per mode: the first call (compiling, where the mode compiles) and then the median of
``--rounds`` calls, the modes interleaved round by round so that load from other processes hits
them alike; ``eager/mode`` above 1 means the compiled network is faster. Every mode's output is
compared with eager's once (max abs difference).

    PYTHONPATH=src python benchmarks/compiled_inference.py [--device cuda] \\
        [--modes eager,default,reduce-overhead] [--amp fp32,bf16] [--rows sample2d,sample3d,predict3d]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from ndunet.app.demo import build_diffusion
from ndunet.diffusion import Diffusion
from ndunet.inference import predict_volume
from ndunet.models.unet import UNet

AMPS = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}


def sample_row(diffusion: Diffusion, batch: int, shape: tuple, steps: int, labels: bool, args):
    device = torch.device(args.device)
    diffusion.to(device).eval()
    y = torch.arange(batch, device=device) % 10 if labels else None

    def run(mode: str, amp: str) -> torch.Tensor:
        gen = torch.Generator(device).manual_seed(0)
        compile = None if mode == "eager" else mode
        return diffusion.sample(
            batch, shape, steps=steps, sampler="dpm++2m", y=y, generator=gen, amp=AMPS[amp],
            compile=compile,
        )  # fmt: skip

    return run, steps


def predict_row(args):
    device = torch.device(args.device)
    net = UNet(3, 1, 3, channels=(16, 32, 64), num_res_blocks=2).to(device).eval()
    x = torch.randn(1, *(args.volume,) * 3, generator=torch.Generator().manual_seed(0))
    roi = (args.roi,) * 3

    def run(mode: str, amp: str) -> torch.Tensor:
        compile = None if mode == "eager" else mode
        return predict_volume(
            net, x, roi, sw_batch_size=args.sw_batch_size, overlap=0.5, device=device,
            amp=AMPS[amp], compile=compile,
        )  # fmt: skip

    step = max(int(args.roi * 0.5), 1)
    windows = (len(range(0, args.volume - args.roi, step)) + 1) ** 3
    calls = -(-windows // args.sw_batch_size)
    return run, calls


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(title: str, run: Callable, per: int, unit: str, args) -> None:
    device = torch.device(args.device)
    modes = args.modes.split(",")
    for amp in args.amp.split(","):
        torch._dynamo.reset()
        first, times, outs = {}, {m: [] for m in modes}, {}
        for m in modes:
            sync(device)
            start = time.perf_counter()
            outs[m] = run(m, amp)
            sync(device)
            first[m] = time.perf_counter() - start
        for _ in range(args.rounds):
            for m in modes:
                sync(device)
                start = time.perf_counter()
                run(m, amp)
                sync(device)
                times[m].append(time.perf_counter() - start)
        print(f"\n{title}   device {args.device}   {amp}   median of {args.rounds} calls")
        head = (
            f"{'mode':<30}{'first call s':>13}{'ms/call':>10}{f'ms/{unit}':>12}{'eager/mode':>12}"
        )
        print(head + f"{'max |diff|':>12}")
        print("-" * (len(head) + 12))
        eager = statistics.median(times["eager"]) if "eager" in times else None
        for m in modes:
            sec = statistics.median(times[m])
            ratio = f"{eager / sec:.2f}x" if eager is not None else "-"
            diff = (outs[m].float() - outs["eager"].float()).abs().max().item() if eager else 0.0
            print(f"{m:<30}{first[m]:>13.1f}{sec * 1e3:>10.1f}{sec * 1e3 / per:>12.2f}"
                  f"{ratio:>12}{diff:>12.2g}")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default="eager,default", help="eager and torch.compile modes")
    p.add_argument("--amp", default="fp32", help="comma-separated: fp32, bf16, fp16")
    p.add_argument("--rows", default="sample2d,sample3d,predict3d")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="sampling steps per call")
    p.add_argument("--volume", type=int, default=64, help="predict 3-D: voxels a side")
    p.add_argument("--roi", type=int, default=32, help="predict 3-D: window a side")
    p.add_argument("--sw-batch-size", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.device.startswith("cuda")
    rows = set(args.rows.split(","))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, modes {args.modes}")
    if "sample2d" in rows:
        run, per = sample_row(build_diffusion(), 64, (1, 8, 8), args.steps, True, args)
        measure("sample 2-D: the demo's U-Net, batch 64 of (1, 8, 8)", run, per, "step", args)
    if "sample3d" in rows:
        net = UNet(
            3, 1, 1, channels=(32, 64, 64), num_res_blocks=2,
            attention_levels=(False, False, True), time_embedding=True, attention_head_dim=32,
        )  # fmt: skip
        run, per = sample_row(Diffusion(net), 1, (1, 32, 32, 32), args.steps, False, args)
        measure("sample 3-D: unet_step's 3-D U-Net, batch 1 of (1, 32^3)", run, per, "step", args)
    if "predict3d" in rows:
        run, per = predict_row(args)
        title = (
            f"predict 3-D: a {args.volume}^3 volume, windows {args.roi}^3, "
            f"sw_batch_size {args.sw_batch_size}"
        )
        measure(title, run, per, "call", args)


if __name__ == "__main__":
    main()

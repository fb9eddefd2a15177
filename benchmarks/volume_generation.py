"""3-D generation and restoration at equal CPU time: flow matching vs v-diffusion on 16^3
volumes (slice-wise Frechet distance, benchmarks/slice_fid.py), and 2x super-resolution with a
conditional flow (condition='image') vs a supervised U-Net (PSNR / SSIM against the truth).

The volumes are smoothed N-D blobs (ndunet.data.blobs, clean, blurred once so edges are not
single-voxel steps) in [-1, 1]. Every model trains for ``--minutes`` of process CPU time on one
thread; the held-out set is drawn with another seed.

    PYTHONPATH=src python benchmarks/volume_generation.py --minutes 3
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slice_fid import SliceFID

from ndunet.data import blobs
from ndunet.diffusion import Diffusion
from ndunet.models import UNet


def volumes(n: int, length: int, seed: int) -> torch.Tensor:
    clean = blobs(3, length, n, task="denoising", noise=0.0, seed=seed).y  # (n, 1, L, L, L)
    return F.avg_pool3d(clean, 3, 1, 1, count_include_pad=False).clamp(-1, 1)


def low_res(x: torch.Tensor) -> torch.Tensor:
    """2x down (mean) then nearest up: the super-resolution input, same shape as x."""
    return F.interpolate(F.avg_pool3d(x, 2), scale_factor=2, mode="nearest")


def unet(in_channels: int, time_embedding: bool = True) -> UNet:
    return UNet(
        3, in_channels, 1, channels=(16, 32), num_res_blocks=1, time_embedding=time_embedding
    )


def train(loss_fn, params, cpu_seconds: float, lr: float = 2e-3) -> int:
    opt = torch.optim.AdamW(params, lr=lr)
    start, steps = time.process_time(), 0
    while (used := time.process_time() - start) < cpu_seconds:
        for group in opt.param_groups:
            group["lr"] = (
                lr * min(1.0, (steps + 1) / 50) * 0.5 * (1 + math.cos(math.pi * used / cpu_seconds))
            )
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return steps


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(4.0 / mse)  # peak-to-peak 2 in [-1, 1]


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    from skimage.metrics import structural_similarity

    return float(
        np.mean(
            [
                structural_similarity(x[0].numpy(), y[0].numpy(), data_range=2.0, win_size=5)
                for x, y in zip(a, b)
            ]
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0, help="CPU minutes per model")
    p.add_argument("--length", type=int, default=16)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--parts", default="generation,restoration")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(1)
    budget = args.minutes * 60
    train_x = volumes(args.n_train, args.length, seed=0)
    held = volumes(args.n_eval, args.length, seed=1)
    gen = torch.Generator().manual_seed(0)

    def batch(x):
        return x[torch.randint(0, len(x), (args.batch_size,), generator=gen)]

    if "generation" in args.parts:
        metric = SliceFID(train_x, steps=300)
        print(f"{'generation (16^3)':<30} {'NFE':>4} {'slice FD':>9} {'train steps':>11}")
        print(f"{'real held-out volumes':<30} {0:>4} {metric.score(held)['mean']:>9.3f}")
        for process, samplers in [("gaussian", [("ddim", 50), ("unipc", 10)]),
                                  ("flow", [("euler", 50), ("heun", 5), ("unipc", 10)])]:  # fmt: skip
            torch.manual_seed(0)
            d = Diffusion(unet(1), process=process)
            steps = train(lambda d=d: d(batch(train_x)), d.parameters(), budget)
            for sampler, n in samplers:
                out = d.sample(
                    args.n_eval, (1,) + (args.length,) * 3, n, sampler,
                    generator=torch.Generator().manual_seed(0),
                )  # fmt: skip
                nfe = 2 * n - 1 if sampler == "heun" else n
                name = f"{process} {sampler}"
                print(f"{name:<30} {nfe:>4} {metric.score(out)['mean']:>9.3f} {steps:>11}")
    if "restoration" in args.parts:
        print(f"{'2x super-resolution (16^3)':<30} {'NFE':>4} {'PSNR':>7} {'SSIM':>6} {'steps':>6}")
        lo = low_res(held)
        print(f"{'nearest upsampling':<30} {0:>4} {psnr(lo, held):>7.2f} {ssim(lo, held):>6.3f}")
        torch.manual_seed(0)
        net = unet(1, time_embedding=False)

        def sup_loss():
            x = batch(train_x)
            return F.mse_loss(net(low_res(x)), x)

        steps = train(sup_loss, net.parameters(), budget)
        with torch.no_grad():
            pred = net.eval()(lo).clamp(-1, 1)
        print(
            f"{'supervised U-Net (MSE)':<30} {1:>4} {psnr(pred, held):>7.2f} {ssim(pred, held):>6.3f} {steps:>6}"
        )
        torch.manual_seed(0)
        d = Diffusion(unet(2), process="flow", condition="image", cond_channels=1)

        def cond_loss():
            x = batch(train_x)
            return d(x, cond=low_res(x))

        steps = train(cond_loss, d.parameters(), budget)
        for sampler, n in [("euler", 10), ("heun", 5), ("unipc", 10)]:
            out = d.sample(
                len(held), (1,) + (args.length,) * 3, n, sampler, cond=lo,
                generator=torch.Generator().manual_seed(0),
            )  # fmt: skip
            nfe = 2 * n - 1 if sampler == "heun" else n
            name = f"conditional flow {sampler}"
            print(f"{name:<30} {nfe:>4} {psnr(out, held):>7.2f} {ssim(out, held):>6.3f} {steps:>6}")


if __name__ == "__main__":
    main()

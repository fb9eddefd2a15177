"""Diffusion quality on scikit-learn's 8x8 digits within a fixed CPU wall-clock budget.

Trains ndunet's UNet inside ndunet.Diffusion for ``--minutes`` (default 4) on the 1,437 training
digits, samples with the EMA weights, and judges the samples with an independent check built from
the real digits only (benchmarks/digits_eval.py). Prints the step/quality curve (ddpm 1000 vs
ddim 50/20 vs dpm++2m 20/10) and, with ``--peer``, the same budget for diffusers' UNet2DModel +
DDPMScheduler sampled with DDIM 50 (install diffusers only in .bench-env).

    PYTHONPATH=src python benchmarks/digits_quality.py --minutes 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_eval import DigitsJudge, digits_split, format_row, header
from digits_train import save_grid, to_unit, train

from ndunet.app.demo import build_unet
from ndunet.diffusion import Diffusion


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="training wall-clock budget")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=0, help="stop earlier after this many steps")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--schedule", default="cosine")
    p.add_argument("--prediction", default="v")
    p.add_argument("--loss-weighting", default="min_snr")
    p.add_argument("--timesteps", type=int, default=1000)
    p.add_argument("--unconditional", action="store_true", help="no class labels, no guidance")
    p.add_argument("--cond-drop-prob", type=float, default=0.1)
    p.add_argument("--guidance-scale", type=float, default=1.5)
    p.add_argument(
        "--extra-guidance", default="", help="comma list of more guidance scales (DDIM 50 rows)"
    )
    p.add_argument("--n-samples", type=int, default=400)
    p.add_argument(
        "--samplers",
        default="ddpm:1000:200,ddim:50,ddim:20,dpm++2m:20,dpm++2m:10",
        help="name:steps[:n_samples] list (ddpm 1000 gets fewer samples to bound the run time)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="1 is fastest when other jobs share the cores"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=Path, default=Path("digits_samples.png"))
    p.add_argument("--peer", action="store_true", help="also train diffusers' UNet2DModel")
    p.add_argument("--peer-only", action="store_true", help="skip ndunet (e.g. with --max-steps)")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xt, xh, yt, yh = digits_split(args.seed)
    judge = DigitsJudge(xt, yt, xh, yh)
    x = torch.from_numpy(xt).unsqueeze(1) * 2 - 1  # (N, 1, 8, 8) in [-1, 1]
    y = None if args.unconditional else torch.from_numpy(yt).long()
    num_classes = None if args.unconditional else 10

    if args.peer_only:
        from digits_peer import run_peer

        print(header() + f"  {'sample s':>8}")
        run_peer(
            judge,
            x,
            args.minutes * 60,
            args.n_samples,
            args.seed,
            args.grid,
            args.width,
            args.max_steps,
        )
        return
    network = build_unet(args.width, num_classes)
    n_params = sum(p.numel() for p in network.parameters())
    diffusion = Diffusion(
        network,
        timesteps=args.timesteps,
        schedule=args.schedule,
        prediction=args.prediction,
        loss_weighting=args.loss_weighting,
        cond_drop_prob=0.0 if args.unconditional else args.cond_drop_prob,
    )
    t_start = time.perf_counter()
    ema, steps = train(
        diffusion,
        network,
        x,
        y,
        args.minutes * 60,
        args.batch_size,
        args.lr,
        args.ema_decay,
        args.max_steps,
    )
    print(
        f"ndunet UNet width {args.width} ({n_params / 1e6:.2f}M params), {args.schedule}/"
        f"{args.prediction}/{args.loss_weighting}, {steps} steps x {args.batch_size} in "
        f"{time.perf_counter() - t_start:.0f} s, EMA {args.ema_decay}, "
        + ("unconditional" if args.unconditional else f"CFG scale {args.guidance_scale}")
    )
    print(f"judge: SVM held-out accuracy {judge.heldout_accuracy:.3f}")
    print(header() + f"  {'sample s':>8}")
    print(format_row("real held-out digits", judge.score(xh, yh)))
    print(format_row("real training digits", judge.score(xt[:400], yt[:400])))

    scale = 1.0 if args.unconditional else args.guidance_scale
    for spec in args.samplers.split(","):
        name, steps_s, *count = spec.split(":")
        spec = f"{name}:{steps_s}"
        n = int(count[0]) if count else args.n_samples
        labels = None if args.unconditional else torch.arange(n) % 10
        for tag, model in [("ema", ema.module), ("raw", network)]:
            if tag == "raw" and spec != "ddim:50":
                continue
            t0 = time.perf_counter()
            out = diffusion.sample(
                n,
                (1, 8, 8),
                steps=int(steps_s),
                sampler=name,
                guidance_scale=scale,
                y=labels,
                generator=torch.Generator().manual_seed(args.seed),
                model=model,
            )
            secs = time.perf_counter() - t0
            imgs = to_unit(out)
            row = judge.score(imgs, None if labels is None else labels.numpy())
            print(format_row(f"ndunet {tag} {spec}", row, f"{secs:8.1f}"))
            if tag == "ema" and spec == "ddim:50":  # labels cycle 0..9: one class per column
                save_grid(imgs, args.grid, f"ndunet, {args.minutes:g} min CPU, DDIM 50")
    for w in [float(v) for v in args.extra_guidance.split(",") if v]:
        labels = torch.arange(args.n_samples) % 10
        out = diffusion.sample(
            args.n_samples,
            (1, 8, 8),
            steps=50,
            sampler="ddim",
            guidance_scale=w,
            y=labels,
            generator=torch.Generator().manual_seed(args.seed),
            model=ema.module,
        )
        print(format_row(f"ndunet ema ddim:50 w={w:g}", judge.score(to_unit(out), labels.numpy())))
    if args.peer:
        from digits_peer import run_peer

        run_peer(judge, x, args.minutes * 60, args.n_samples, args.seed, args.grid, args.width)


if __name__ == "__main__":
    main()

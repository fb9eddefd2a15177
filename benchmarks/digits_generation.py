"""Flow matching vs v-diffusion (and EDM) on scikit-learn's 8x8 digits at equal CPU time, and the
step/quality curve of every sampler at 5, 10, 20 and 50 network evaluations.

Each process trains the demo's U-Net (benchmarks/digits_quality.py's) for ``--minutes`` of
process CPU time (one thread, so other jobs on the machine do not change the budget), then every
sampler draws ``--n-samples`` class-conditional digits from the EMA weights at each evaluation
count; benchmarks/digits_eval.py judges them (confidence and label accuracy for recognisability;
class entropy, nearest-neighbour ratio and the PCA Frechet distance for diversity and fidelity).
Heun spends two evaluations per step (one for the last), so it runs ``(nfe + 1) // 2`` steps.

    PYTHONPATH=src python benchmarks/digits_generation.py --minutes 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_eval import DigitsJudge, digits_split
from digits_train import to_unit, train

from ndunet.app.demo import build_unet
from ndunet.diffusion import Diffusion, evaluations

SAMPLERS = ("ddim", "ddpm", "euler", "euler_a", "heun", "dpm++2m", "dpm++2m_sde", "unipc")
COLUMNS = ("confidence", "label_acc", "entropy", "nn_ratio", "fd_pca")


def steps_for(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def row(name: str, nfe: int, metrics: dict[str, float], secs: float) -> str:
    cells = " ".join(f"{metrics[c]:>10.3f}" for c in COLUMNS)
    return f"{name:<28} {nfe:>4d} {cells} {secs:>7.1f}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=4.0, help="CPU minutes of training each")
    p.add_argument("--processes", default="gaussian,flow")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--nfe", default="5,10,20,50")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--n-samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    xt, xh, yt, yh = digits_split(args.seed)
    judge = DigitsJudge(xt, yt, xh, yh)
    x = torch.from_numpy(xt).unsqueeze(1) * 2 - 1  # (N, 1, 8, 8) in [-1, 1]
    y = torch.from_numpy(yt).long()
    nfes = [int(v) for v in args.nfe.split(",")]
    head = f"{'process / sampler':<28} {'NFE':>4} " + " ".join(f"{c:>10}" for c in COLUMNS)
    print(f"{head} {'sample s':>7}")
    real = judge.score(xh[: args.n_samples], yh[: args.n_samples])
    print(row("real held-out digits", 0, real, 0.0))
    for process in args.processes.split(","):
        torch.manual_seed(args.seed)
        network = build_unet(args.width, 10)
        d = Diffusion(network, process=process, cond_drop_prob=0.1)
        ema, steps = train(
            d, network, x, y, args.minutes * 60, args.batch_size, args.lr, args.ema_decay,
            clock=time.process_time, seed=args.seed,
        )  # fmt: skip
        print(f"# {process}: {steps} steps x {args.batch_size} in {args.minutes:g} CPU min")
        labels = torch.arange(args.n_samples) % 10
        for sampler in args.samplers.split(","):
            for nfe in nfes:
                n_steps = steps_for(sampler, nfe)
                t0 = time.perf_counter()
                out = d.sample(
                    args.n_samples, (1, 8, 8), n_steps, sampler, guidance_scale=args.guidance,
                    y=labels, generator=torch.Generator().manual_seed(args.seed), model=ema.module,
                )  # fmt: skip
                imgs = to_unit(out)
                m = judge.score(imgs, labels.numpy())
                used = evaluations(sampler, n_steps)
                print(row(f"{process} {sampler}", used, m, time.perf_counter() - t0))
        for w in (1.0,):  # diversity without guidance at 10 evaluations
            out = d.sample(
                args.n_samples, (1, 8, 8), 10, "unipc", guidance_scale=w, y=labels,
                generator=torch.Generator().manual_seed(args.seed), model=ema.module,
            )  # fmt: skip
            imgs = to_unit(out)
            print(row(f"{process} unipc w={w:g}", 10, judge.score(imgs, labels.numpy()), 0.0))


if __name__ == "__main__":
    main()

"""How close `ndunet plan` gets to its memory budget: per fingerprint and budget, the plan (patch,
batch, levels), the activation-footprint estimate, the measured peak of one training step (the
torch profiler's allocation events on the CPU, torch.cuda.max_memory_allocated on a GPU), the
measured share of the budget, the estimate's error, and the planning time.

Fingerprints (no data is read): thick-slice CT-like 3-D (40 x 256 x 256 at 5 x 0.8 x 0.8 mm),
isotropic 3-D (128^3 at 1 mm), 2-D (512^2) and 4-D (3-D + time: 64 x 64 x 40 x 30 at 3 x 3 x 3 x
2). Widths start at --base-channels (nnU-Net: 32).

    PYTHONPATH=src python benchmarks/plan_memory.py [--budgets 256MiB 1GiB] [--device cpu]
        [--threads 2] [--base-channels 32] [--tiny]
"""

from __future__ import annotations

import argparse
import time

import torch

from ndunet.planning import Fingerprint, PlannerConfig, format_bytes, parse_bytes, plan

CASES = {
    "3-D thick-slice": ((40, 256, 256), (5.0, 0.8, 0.8)),
    "3-D isotropic": ((128, 128, 128), (1.0, 1.0, 1.0)),
    "2-D": ((512, 512), (1.0, 1.0)),
    "4-D": ((64, 64, 40, 30), (3.0, 3.0, 3.0, 2.0)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", nargs="+", default=["256MiB", "1GiB"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--base-channels", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help="seconds: 32/64 MiB budgets, width 4")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    budgets = ["32MiB", "64MiB"] if args.tiny else args.budgets
    base = 4 if args.tiny else args.base_channels
    options = PlannerConfig(base_channels=base, device=args.device)
    head = ("case", "budget", "patch", "batch", "levels", "estimate", "measured", "of budget")
    rows = [(*head, "estimate/measured", "seconds")]
    for name, (shape, spacing) in CASES.items():
        fp = Fingerprint(shapes=(shape,) * 20, spacings=(spacing,) * 20, num_classes=3)
        for budget in budgets:
            t0 = time.perf_counter()
            planned = plan(fp, budget, options)
            seconds = time.perf_counter() - t0
            measured = planned.measured_bytes or 0
            share = measured / parse_bytes(budget)
            error = planned.estimated_bytes / max(measured, 1)
            patch = " x ".join(map(str, planned.patch_size))
            rows.append((name, budget, patch, str(planned.batch_size)))
            rows[-1] += (str(planned.topology.num_levels), format_bytes(planned.estimated_bytes))
            rows[-1] += (format_bytes(measured), f"{share:.0%}", f"{error:.2f}", f"{seconds:.1f}")
            print(f"{name} {budget}: done in {seconds:.1f} s", flush=True)
    print(f"\nwidths from {base}, device {args.device}, {args.threads} threads")
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

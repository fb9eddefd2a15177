"""Sliding-window inference time: ndunet vs MONAI (when importable), and ndunet alone at N=4.

Rows, all in one run:

* 3-D, a small conv predictor (1 -> 8 -> 2 channels, 3^3 kernels): MONAI's
  ``sliding_window_inference`` and ndunet's with the same arguments (default: a 1x1x128x128x64
  volume, roi 64^3, sw_batch_size 4, overlap 0.5, gaussian), same predictor, same windows;
* 3-D, an identity predictor: the cost of the sliding-window machinery alone (cutting windows,
  weighting, accumulating, normalising);
* 4-D, the conv predictor through ``ndunet.functional.conv_nd`` (ndunet only).

Calls of the implementations are interleaved round by round (one call of each per round, after a
warm-up), so load from other processes hits them alike; the median over rounds is reported with
the fastest round beside it, and ratios are ndunet / MONAI (below 1: ndunet is faster). Both
outputs are compared once (max abs difference).

    PYTHONPATH=src python benchmarks/sliding_window.py [--rounds 5] [--threads 2] [--tiny]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ndunet.functional import conv_nd
from ndunet.inference import sliding_window_inference


def conv_predictor(spatial_dims: int) -> Callable[[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w1 = torch.randn(8, 1, *(3,) * spatial_dims, generator=g) * 0.2
    w2 = torch.randn(2, 8, *(3,) * spatial_dims, generator=g) * 0.2

    def predict(x: torch.Tensor) -> torch.Tensor:
        return conv_nd(F.relu(conv_nd(x, w1, padding=1)), w2, padding=1)

    return predict


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def timed(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def run(
    title: str, calls: dict[str, Callable[[], torch.Tensor]], rounds: int
) -> dict[str, list[float]]:
    with torch.inference_mode():
        outs = {name: fn() for name, fn in calls.items()}  # warm-up, and the outputs to compare
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(timed(fn))
    names = list(calls)
    diff = ""
    if len(names) == 2:
        diff = f"{(outs[names[0]] - outs[names[1]]).abs().max().item():.2e}"
    for name in names:
        med, best = statistics.median(times[name]), min(times[name])
        ratio = ""
        if name != names[-1] and len(names) == 2:
            ref_med = statistics.median(times[names[-1]])
            ratio = f"{med / ref_med:.2f}"
        print(
            f"| {title:<48} | {name:<7} | {med * 1e3:9.1f} | {best * 1e3:9.1f} | {ratio:>5} | {diff:>8} |"
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tiny", action="store_true", help="small volumes, for a quick check")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        from monai.inferers import sliding_window_inference as monai_swi
    except ImportError:
        monai_swi = None

    shape3, roi3 = ((1, 1, 32, 32, 16), 16) if args.tiny else ((1, 1, 128, 128, 64), 64)
    shape4, roi4 = ((1, 1, 8, 8, 8, 4), 4) if args.tiny else ((1, 1, 24, 24, 24, 12), 12)
    kw = dict(overlap=0.5, mode="gaussian")
    torch.manual_seed(0)
    x3, x4 = torch.randn(shape3), torch.randn(shape4)
    print(f"threads={torch.get_num_threads()} rounds={args.rounds} sw_batch_size=4 {kw}")
    print(
        f"| {'workload':<48} | {'impl':<7} | {'median ms':>9} | {'best ms':>9} | {'ratio':>5} | {'max diff':>8} |"
    )
    print(f"|{'-' * 50}|{'-' * 9}|{'-' * 11}|{'-' * 11}|{'-' * 7}|{'-' * 10}|")
    for label, predictor in (("conv 1-8-2", conv_predictor(3)), ("identity (overhead)", identity)):
        calls = {"ndunet": lambda p=predictor: sliding_window_inference(x3, roi3, 4, p, **kw)}
        if monai_swi is not None:
            calls["monai"] = lambda p=predictor: monai_swi(x3, roi3, 4, p, **kw)
        title = f"3-D {tuple(shape3[2:])} roi {roi3}^3, {label}"
        run(title, calls, args.rounds)
    if monai_swi is None:
        print("(MONAI is not importable: ndunet rows only)")
    p4 = conv_predictor(4)
    title = f"4-D {tuple(shape4[2:])} roi {roi4}^4, conv 1-8-2"
    run(title, {"ndunet": lambda: sliding_window_inference(x4, roi4, 4, p4, **kw)}, args.rounds)


if __name__ == "__main__":
    main()

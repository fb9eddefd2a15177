"""Engine overhead per step vs a bare PyTorch loop, on a small digits classifier.

Both loops see the same pre-made batches (data loading excluded), model, optimizer (AdamW) and
batch size, on CPU with one thread. The engine runs `fit()` with its defaults (NaN check, LR
scheduler, CSV logging every 10 steps, accumulation/AMP/clip machinery off, quiet), timed over its
epoch loop (the one-off set-up before it is not a per-step cost); checkpoint writing, which happens once per epoch rather than per step, is switched off
for the timing and reported on its own line. Times are process CPU time (less disturbed than wall
time by other jobs on a shared machine; the wall-clock ratio is shown too); rounds alternate
bare/engine; the table keeps each one's fastest round, the headline overhead is the median of
the per-round engine/bare ratios. A second, 650-parameter model has next
to no compute, so the engine-minus-bare difference there is the engine's fixed cost per step.

    PYTHONPATH=src python benchmarks/trainer_overhead.py [--rounds 5] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ndunet.training import SupervisedTrainer


class Batches(Dataset):
    """A list of ready batches: iterating it costs nothing, so data loading is out of the timing."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[i]


def digits_batches(batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    d = load_digits()
    x = (
        torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    )  # (N, 1, 8, 8) in [-1, 1]
    y = torch.tensor(d.target)
    n = len(x) // batch_size * batch_size
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def make_model(tiny: bool = False) -> nn.Module:
    torch.manual_seed(0)
    if tiny:  # next to no compute: what is left is the fixed cost of a step
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def bare(batches, epochs: int, tiny: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the plain loop."""
    model = make_model(tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    n = epochs * len(batches)
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


def engine(
    batches, epochs: int, root: Path, name: str, tiny: bool = False, save: bool = False
) -> tuple[float, float, float]:
    """(wall, CPU) seconds per step of SupervisedTrainer.fit(), and checkpoint seconds per epoch."""
    loader = DataLoader(Batches(batches), batch_size=None, shuffle=False)
    tr = SupervisedTrainer(
        make_model(tiny),
        loader,
        out_dir=str(root / name),
        epochs=epochs,
        lr=1e-3,
        progress=False,
        device="cpu",
        keep_last=0,
        plot=False,
        save_checkpoints=save,  # off: timing the loop, not the disk
    )
    tr.fit()
    n, t = tr.step, tr.timings
    return t["loop"] / n, t["loop_cpu"] / n, t["checkpoint"] / epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    batches = digits_batches(a.batch_size)
    results: dict[str, list[tuple[float, float]]] = {
        k: [] for k in ("bare", "engine", "bare_tiny", "engine_tiny")
    }
    with tempfile.TemporaryDirectory() as root:
        bare(batches[:5], 1)  # warm-up: first-call costs (optimizer import, allocator)
        engine(batches[:5], 1, Path(root), "warm")
        _, _, ckpt = engine(batches, 1, Path(root), "ckpt", save=True)
        for i in range(a.rounds):
            results["bare"].append(bare(batches, a.epochs))
            results["engine"].append(engine(batches, a.epochs, Path(root), f"e{i}")[:2])
            results["bare_tiny"].append(bare(batches, a.epochs, True))
            results["engine_tiny"].append(engine(batches, a.epochs, Path(root), f"t{i}", True)[:2])
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in results.items()}
    params = sum(p.numel() for p in make_model().parameters())
    print(
        f"digits classifier ({params} parameters), batch {a.batch_size}, {len(batches)} steps/epoch, {a.epochs} epochs x {a.rounds} rounds, 1 thread"
    )
    print(f"{'loop':<32}{'wall ms/step':>14}{'CPU ms/step':>13}{'CPU ratio':>11}{'wall ratio':>12}")
    for label, key, ref in [
        ("bare PyTorch loop", "bare", "bare"),
        ("ndunet engine", "engine", "bare"),
        ("bare loop, 650-param model", "bare_tiny", "bare_tiny"),
        ("engine, 650-param model", "engine_tiny", "bare_tiny"),
    ]:
        (w, c), (rw, rc) = best[key], best[ref]
        print(f"{label:<32}{w * 1e3:>14.3f}{c * 1e3:>13.3f}{c / rc:>11.3f}{w / rw:>12.3f}")
    # per-round ratios cancel slow drifts in machine load; their median is the headline number
    ratios = sorted(e[1] / b[1] for e, b in zip(results["engine"], results["bare"]))
    overhead = statistics.median(ratios) - 1
    fixed = best["engine_tiny"][1] - best["bare_tiny"][1]
    print(
        f"engine overhead per step (CPU, median of per-round ratios): {100 * overhead:+.1f}% of the "
        f"digits model's step (target < 5%); rounds ranged {100 * (ratios[0] - 1):+.1f}% .. "
        f"{100 * (ratios[-1] - 1):+.1f}%"
    )
    print(
        f"fixed engine cost: {fixed * 1e6:.0f} us/step = {100 * fixed / best['bare'][1]:.1f}% of the digits model's step"
    )
    print(
        f"checkpoint (last + best, fsync'ed) once per epoch: {ckpt * 1e3:.1f} ms = {ckpt / (best['bare'][0] * len(batches)) * 100:.1f}% of an epoch"
    )


if __name__ == "__main__":
    main()

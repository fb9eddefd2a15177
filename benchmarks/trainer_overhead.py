"""Engine overhead per step vs a bare PyTorch loop, on a small digits classifier.

Both loops see the same pre-made batches (data loading excluded), model, optimizer (AdamW) and
batch size, on CPU with one thread. The engine runs with its defaults (NaN check, LR scheduler,
CSV logging every 10 steps, accumulation/AMP/clip machinery off, quiet); its checkpoint and
evaluation time is reported separately, since it happens once per epoch, not per step.
Rounds alternate bare/engine; the table shows the fastest round of each (the one least
disturbed by other processes: the machine is shared).

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


def bare(batches, epochs: int, tiny: bool = False) -> float:
    """Seconds per step of the plain loop."""
    model = make_model(tiny)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t = time.perf_counter()
    for _ in range(epochs):
        for x, y in batches:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    return (time.perf_counter() - t) / (epochs * len(batches))


def engine(batches, epochs: int, root: Path, i: int, tiny: bool = False) -> tuple[float, float]:
    """(seconds per step without checkpoint/eval time, checkpoint+eval seconds per step)."""
    loader = DataLoader(Batches(batches), batch_size=None, shuffle=False)
    tr = SupervisedTrainer(
        make_model(tiny),
        loader,
        out_dir=str(root / f"run{i}-{tiny}"),
        epochs=epochs,
        lr=1e-3,
        progress=False,
        device="cpu",
        keep_last=0,
    )
    tr.fit()
    t = tr.timings
    steps = tr.step
    once = t["checkpoint"] + t["eval"] + t["plot"]
    return (t["loop"] - once - t["data"]) / steps, once / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    a = p.parse_args()
    torch.set_num_threads(1)
    batches = digits_batches(a.batch_size)
    bare(batches[:5], 1)  # warm-up
    rows, tiny = [], []
    with tempfile.TemporaryDirectory() as root:
        engine(batches[:5], 1, Path(root), -1)  # warm-up (imports, first checkpoint)
        for i in range(a.rounds):
            b = bare(batches, a.epochs)
            e, once = engine(batches, a.epochs, Path(root), i)
            rows.append((b, e, once))
            tiny.append(
                (bare(batches, a.epochs, True), engine(batches, a.epochs, Path(root), i, True)[0])
            )
    b = min(r[0] for r in rows)
    e = min(r[1] for r in rows)
    once = statistics.median(r[2] for r in rows)
    params = sum(p.numel() for p in make_model().parameters())
    print(
        f"digits classifier: {params} parameters, batch {a.batch_size}, {len(batches)} steps/epoch, {a.epochs} epochs, {a.rounds} rounds, 1 thread"
    )
    print(f"{'loop':<34}{'ms/step':>10}{'ratio':>10}")
    print(f"{'bare PyTorch loop':<34}{b * 1e3:>10.3f}{1.0:>10.3f}")
    print(f"{'ndunet engine (per step)':<34}{e * 1e3:>10.3f}{e / b:>10.3f}")
    print(f"{'  + checkpoint/eval, amortized':<34}{(e + once) * 1e3:>10.3f}{(e + once) / b:>10.3f}")
    tb, te = min(r[0] for r in tiny), min(r[1] for r in tiny)
    print(f"{'bare loop, 650-parameter model':<34}{tb * 1e3:>10.3f}{1.0:>10.3f}")
    print(f"{'engine, 650-parameter model':<34}{te * 1e3:>10.3f}{te / tb:>10.3f}")
    print(
        f"engine overhead per step: {100 * (e / b - 1):+.1f}% (target < 5%); fixed cost "
        f"{(te - tb) * 1e6:.0f} us/step = {100 * (te - tb) / b:.1f}% of the digits model's step"
    )


if __name__ == "__main__":
    main()

"""Engine overhead per step vs a bare PyTorch loop, on a small digits classifier (or a 3-D U-Net).

Both loops see the same pre-made batches (data loading excluded), model, optimizer (AdamW, in
the engine's implementation: fused on the CPU) and batch size, on CPU with one thread. The engine
runs `fit()` with its defaults (NaN check, LR scheduler, CSV logging every 10 steps,
accumulation/AMP/clip machinery off, quiet), timed over its epoch loop (the one-off set-up before
it is not a per-step cost); checkpoint writing, which happens once per epoch rather than per
step, is switched off for the timing and reported on its own line. Times are process CPU time
(less disturbed than wall time by other jobs on a shared machine; the wall-clock ratio is shown
too); rounds alternate bare/engine; the table keeps each one's fastest round, the headline
overhead is the median of the per-round engine/bare ratios. A second, 650-parameter model has
next to no compute, so the engine-minus-bare difference there is the engine's fixed cost per
step.

On a GPU (``--device cuda``, wall time; the batches made on the device) the question is what
the engine's one read of the loss per step (the NaN policy, logging and callbacks take a float)
costs: a bare loop lets the host run ahead of the GPU, the engine waits for each step's loss. A
third loop, the bare one with ``float(loss)`` each step, shows the cost of that wait alone.
``--model unet3d`` trains the 3-D U-Net of unet_step.py (batch 1 of 32^3, MSE), the row whose
eager step is host-bound on a GPU; ``--compile-mode`` compiles both the bare loop's model and the
engine's (``reduce-overhead``: CUDA graphs, where the host's share of a step is what is left).

    PYTHONPATH=src python benchmarks/trainer_overhead.py [--rounds 5] [--epochs 2]
    PYTHONPATH=src python benchmarks/trainer_overhead.py --device cuda --model unet3d \
        [--compile-mode reduce-overhead] [--amp bf16]
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

from ndunet.inference.amp import AMP_DTYPES
from ndunet.models.unet import UNet
from ndunet.training import SupervisedTrainer
from ndunet.training.callbacks import Callback
from ndunet.training.optim import fused_supported


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


def unet3d_batches(n: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(1, 1, 32, 32, 32, generator=g).to(device),
         torch.randn(1, 1, 32, 32, 32, generator=g).to(device))
        for _ in range(n)
    ]  # fmt: skip


def make_model(tiny: bool = False, kind: str = "digits") -> nn.Module:
    torch.manual_seed(0)
    if kind == "unet3d":  # unet_step.py's 3-D row, without the time embedding (supervised)
        return UNet(3, 1, 1, channels=(32, 64, 64), num_res_blocks=2,
                    attention_levels=(False, False, True), attention_head_dim=32)  # fmt: skip
    if tiny:  # next to no compute: what is left is the fixed cost of a step
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.SiLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.GroupNorm(8, 64), nn.SiLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare(
    batches,
    epochs: int,
    tiny: bool = False,
    opts: argparse.Namespace | None = None,
    read_loss: bool = False,
) -> tuple[float, float]:
    """(wall, CPU) seconds per step of the plain loop (``read_loss``: float(loss) every step)."""
    o = opts or argparse.Namespace(device="cpu", model="digits", compile_mode="none", amp="none")
    model = make_model(tiny, o.model).to(o.device)
    params = list(model.parameters())  # the engine's AdamW implementation: fused on the CPU
    opt = torch.optim.AdamW(params, lr=1e-3, fused=fused_supported(params) or None)
    lossf = F.mse_loss if o.model == "unet3d" else F.cross_entropy
    graphs = o.compile_mode in ("reduce-overhead", "max-autotune") and o.device.startswith("cuda")
    net = model if o.compile_mode == "none" else torch.compile(model, mode=o.compile_mode)
    dtype = AMP_DTYPES.get(o.amp)

    def run(batches) -> None:
        for x, y in batches:
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            opt.zero_grad(set_to_none=True)
            with torch.autocast(o.device.split(":")[0], dtype, enabled=dtype is not None):
                out = net(x)
            loss = lossf(out.float(), y)
            loss.backward()
            opt.step()
            if read_loss:
                float(loss.detach())

    run(batches[:3])  # compiles, when compiled
    _sync(o.device)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        run(batches)
    _sync(o.device)
    n = epochs * len(batches)
    return (time.perf_counter() - t) / n, (time.process_time() - c) / n


class StepClock(Callback):
    """The wall clock at the end of every step (after its loss is read: the device is done)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step_end(self, trainer, loss: float) -> None:
        self.stamps.append(time.perf_counter())

    def per_step(self, skip: int = 3) -> float:
        """Seconds per step after the first ``skip`` steps (which compile, when compiled)."""
        return (self.stamps[-1] - self.stamps[skip - 1]) / (len(self.stamps) - skip)


def engine(
    batches,
    epochs: int,
    root: Path,
    name: str,
    tiny: bool = False,
    save: bool = False,
    opts: argparse.Namespace | None = None,
) -> tuple[float, float, float]:
    """(wall, CPU) seconds per step of SupervisedTrainer.fit(), and checkpoint seconds per epoch;
    with ``opts`` (the device table) the wall time is the steady state after three steps."""
    o = opts or argparse.Namespace(device="cpu", model="digits", compile_mode="none", amp="none")
    loader = DataLoader(Batches(batches), batch_size=None, shuffle=False)
    extra = {} if o.model == "digits" else {"loss": "mse", "metrics": ()}
    if o.compile_mode != "none":
        extra.update(compile=True, compile_mode=o.compile_mode)
    clock = StepClock()
    tr = SupervisedTrainer(
        make_model(tiny, o.model),
        loader,
        out_dir=str(root / name),
        epochs=epochs,
        lr=1e-3,
        progress=False,
        device=o.device,
        amp=o.amp,
        keep_last=0,
        plot=False,
        save_checkpoints=save,  # off: timing the loop, not the disk
        callbacks=[clock] if opts is not None else None,
        **extra,
    )
    tr.fit()
    n, t = tr.step, tr.timings
    wall = clock.per_step() if opts is not None else t["loop"] / n
    return wall, t["loop_cpu"] / n, t["checkpoint"] / epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=["digits", "unet3d"], default="digits")
    p.add_argument("--compile-mode", default="none", help="none or a torch.compile mode")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    a = p.parse_args()
    if a.device == "cpu" and a.model == "digits" and a.compile_mode == "none" and a.amp == "none":
        return cpu_table(a)
    device_table(a)


def device_table(a: argparse.Namespace) -> None:
    """Wall ms per step: bare loop, bare loop reading the loss each step, engine (same batches
    on the device, rounds alternating, the fastest round of each)."""
    if a.device == "cpu":
        torch.set_num_threads(1)
    batches = (
        unet3d_batches(20, a.device) if a.model == "unet3d"
        else [(x.to(a.device), y.to(a.device)) for x, y in digits_batches(a.batch_size)]
    )  # fmt: skip
    rows: dict[str, list[float]] = {"bare": [], "bare, float(loss) per step": [], "engine": []}
    with tempfile.TemporaryDirectory() as root:
        engine(batches[:5], 1, Path(root), "warm", opts=a)
        for i in range(a.rounds):
            rows["bare"].append(bare(batches, a.epochs, opts=a)[0])
            rows["bare, float(loss) per step"].append(
                bare(batches, a.epochs, opts=a, read_loss=True)[0]
            )
            rows["engine"].append(engine(batches, a.epochs, Path(root), f"e{i}", opts=a)[0])
    print(
        f"{a.model} on {a.device}, amp {a.amp}, compile {a.compile_mode}: {len(batches)} steps/"
        f"epoch, {a.epochs} epochs x {a.rounds} rounds (the fastest round of each; the engine's"
        " first steps compile)"
    )
    base = min(rows["bare"])
    print(f"{'loop':<32}{'wall ms/step':>14}{'/ bare':>9}")
    for label, times in rows.items():
        print(f"{label:<32}{min(times) * 1e3:>14.3f}{min(times) / base:>9.3f}")


def cpu_table(a: argparse.Namespace) -> None:
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

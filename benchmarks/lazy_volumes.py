"""Peak memory of training on a folder of volumes larger than a RAM budget: the lazy ``volumes``
loader (file by file; optionally with an LRU cache of ``--budget-mib``) next to the eager
``arrays`` loader (everything in RAM), on the same files, in the same run.

The folder holds ``--volumes`` float32 volumes of ``--size``^3 (.npy) with uint8 masks, whose
float32 total is several times the budget. Each row is one ``ndunet train`` child process
(supervised segmentation on random ``--patch``^3 patches, a tiny 3-D U-Net, ``--steps`` steps,
no checkpoints); its peak resident memory comes from ``os.wait4`` (the kernel's ru_maxrss for
that child alone). "baseline" trains the same way on a folder of two such volumes, so
"above baseline" is what the data costs: a volume or two for the lazy loader, the whole folder
(x as float32, masks as int64, plus stacking copies) for the eager one.

    PYTHONPATH=src python benchmarks/lazy_volumes.py [--volumes 48] [--size 128] [--budget-mib 64]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = """
[task]
type = "supervised"
validate = false
test = false

[data]
{data}
spatial_dims = 3
val_fraction = 0.0
test_fraction = 0.0

[patches]
patch_size = [{patch}, {patch}, {patch}]
patches_per_volume = {per_volume}

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2

[trainer]
max_steps = {steps}
batch_size = 2
save_checkpoints = false
plot = false
log_every_steps = 1000
device = "cpu"
"""


def make_folder(root: Path, volumes: int, size: int) -> Path:
    """``volumes`` float32 volumes and their uint8 masks (masks/<same name>), written one by one."""
    (root / "masks").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(volumes):
        x = rng.standard_normal((size,) * 3, dtype=np.float32)
        np.save(root / f"v{i:03d}.npy", x)
        np.save(root / "masks" / f"v{i:03d}.npy", (x > 1).astype(np.uint8))
    return root


def peak_rss_mib(config: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one ``ndunet train`` child."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ndunet", "train", str(config), "--out", str(out), "--quiet"]
    log = out.with_suffix(".stderr")
    start = time.perf_counter()
    with open(log, "wb") as errors:  # a file, not a pipe: a chatty child never blocks
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{log.read_text()}")
    return usage.ru_maxrss / 1024, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--volumes", type=int, default=48)
    p.add_argument("--size", type=int, default=128, help="edge of the cubic volumes")
    p.add_argument("--budget-mib", type=float, default=64.0, help="the RAM budget for data")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    volume_mib = args.size**3 * 4 / 2**20
    total = volume_mib * args.volumes
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        big = make_folder(tmp_path / "big", args.volumes, args.size)
        small = make_folder(tmp_path / "small", 2, args.size)
        budget = int(args.budget_mib * 2**20)
        rows = {
            "baseline (2 volumes, lazy)": f'name = "volumes"\npath = "{small}"\nlabels = '
            f'"{small / "masks"}"',
            "volumes (lazy)": f'name = "volumes"\npath = "{big}"\nlabels = "{big / "masks"}"',
            f"volumes + cache {args.budget_mib:g} MiB": f'name = "volumes"\npath = "{big}"\n'
            f'labels = "{big / "masks"}"\ncache_bytes = {budget}',
            "arrays (eager)": f'name = "arrays"\npath = "{big}"',
        }
        results = {}
        for i, (name, data) in enumerate(rows.items()):
            config = tmp_path / f"run{i}.toml"
            # the baseline draws as many patches per epoch from its two volumes
            per_volume = max(1, args.volumes // 2) if name.startswith("baseline") else 1
            text = CONFIG.format(
                data=data, patch=args.patch, steps=args.steps, per_volume=per_volume
            )
            config.write_text(text)
            results[name] = peak_rss_mib(config, tmp_path / f"out{i}")
    print(
        f"{args.volumes} volumes of {args.size}^3 float32 ({volume_mib:.1f} MiB each, "
        f"{total:.0f} MiB in all = {total / args.budget_mib:.1f} x a {args.budget_mib:g} MiB "
        f"budget), {args.steps} steps on {args.patch}^3 patches, batch 2, CPU\n"
    )
    base = results["baseline (2 volumes, lazy)"][0]
    lazy_peak = results["volumes (lazy)"][0]
    header = f"| {'loader':<28} | peak RSS MiB | above baseline | / data total | / lazy | wall s |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, (peak, wall) in results.items():
        above = peak - base
        ratio = f"{peak / lazy_peak:.2f}x"
        print(
            f"| {name:<28} | {peak:12.0f} | {above:14.0f} | {above / total:12.2f} | "
            f"{ratio:>6} | {wall:6.1f} |"
        )
    lazy = lazy_peak - base
    print(
        f"\nlazy loader above baseline: {lazy:.0f} MiB (budget {args.budget_mib:g} MiB: "
        f"{'within' if lazy <= args.budget_mib else 'OVER'}); the cache bounds what it keeps, "
        "not the sample being read"
    )


if __name__ == "__main__":
    main()

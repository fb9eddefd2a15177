"""Digits classification: ResNet-18 vs the pooled U-Net head, accuracy and time in one run.

The embedded 8x8 digits (1,437 train / 180 val / 180 test after the standard split), the same
trainer (AdamW, cosine schedule, batch 64, equal epochs) and seeds for every row:

* ``unet_pooled``: ``UNetClassifier`` (channels 32, 64; one block per level; batch norm), the
  ``digits_classify`` run file's network;
* ``resnet18_small_stem``: ResNet-18 (torchvision's widths) with the CIFAR stem (3x3, stride 1,
  no max pool), as the ``digits_resnet`` run file;
* ``resnet18_imagenet_stem``: ResNet-18 exactly as torchvision (7x7 stride-2 stem + max pool:
  the digits are 2x2 when the first stage sees them).

Prints test accuracy (mean and min over seeds), parameters, training seconds (the fastest of the
seeds' runs, the least disturbed on a shared machine) and the time ratio to the U-Net row.
``--epochs``/``--seeds`` scale the run (defaults: 10 epochs, seeds 0 1 2; about 3 minutes on
an idle 2-core CPU, 5-20x longer while other jobs share it).

    python benchmarks/resnet_vs_unet_digits.py [--epochs 10] [--seeds 0 1 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from ndunet import SupervisedTrainer
from ndunet.data import digits
from ndunet.models import UNetClassifier, UNetConfig, resnet18

SMALL_STEM = {"stem_kernel_size": 3, "stem_stride": 1, "stem_pool": False}
MODELS: dict[str, Callable[[], nn.Module]] = {
    "unet_pooled": lambda: UNetClassifier(
        UNetConfig(2, 1, 10, channels=(32, 64), num_res_blocks=1, norm="batch")
    ),
    "resnet18_small_stem": lambda: resnet18(2, in_channels=1, num_classes=10, **SMALL_STEM),
    "resnet18_imagenet_stem": lambda: resnet18(2, in_channels=1, num_classes=10),
}


def run(name: str, seed: int, epochs: int, data: tuple) -> dict[str, float]:
    train, val, test = data
    torch.manual_seed(seed)
    model = MODELS[name]()
    with tempfile.TemporaryDirectory() as out:
        trainer = SupervisedTrainer(
            model, train, val, loss="cross_entropy", metrics=["accuracy"], out_dir=out,
            epochs=epochs, batch_size=64, lr=2e-3, scheduler="cosine", seed=seed,
            best_metric="val_accuracy", progress=False, plot=False, save_checkpoints=False,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
        result = trainer.evaluate(test)
    params = sum(p.numel() for p in model.parameters())
    return {"accuracy": result["accuracy"], "seconds": seconds, "parameters": params}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = tuple(digits(split, normalize="unit") for split in ("train", "val", "test"))
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in MODELS}
    for seed in args.seeds:  # models interleaved, so a change in machine load hits every row
        for name in MODELS:
            rows[name].append(run(name, seed, args.epochs, data))
    base = min(r["seconds"] for r in rows["unet_pooled"])
    print(f"digits, {args.epochs} epochs, seeds {args.seeds}, {args.threads} threads, "
          f"torch {torch.__version__}")  # fmt: skip
    print(
        "| model                    | test acc (mean) |   min |     params | s (best) | time vs U-Net |"
    )
    print(
        "|--------------------------|-----------------|-------|------------|----------|---------------|"
    )
    for name, runs in rows.items():
        acc = [r["accuracy"] for r in runs]
        sec = min(r["seconds"] for r in runs)  # the least disturbed run: the machine is shared
        print(
            f"| {name:<24} | {statistics.mean(acc):>15.3f} | {min(acc):>5.3f} | "
            f"{runs[0]['parameters']:>10,} | {sec:>8.1f} | {sec / base:>12.2f}x |"
        )


if __name__ == "__main__":
    main()

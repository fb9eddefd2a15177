"""Example 7: digit classification with a U-Net and a ResNet side by side.

The seed project's classification example with both of its networks: a U-Net whose ten output
maps are averaged into logits (``UNetClassifier``) and a ResNet-18 (basic blocks 2-2-2-2) with
the CIFAR ResNets' stem (3x3, stride 1, no max pool: the ImageNet stem would shrink the 8x8
digits to 2x2 first). Same data, trainer and budget; prints accuracy, parameters and time.

    python examples/classify_digits_resnet_unet.py           # a few minutes on 2 CPU cores
    python examples/classify_digits_resnet_unet.py --tiny    # seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from torch import nn

from ndunet import SupervisedTrainer
from ndunet.data import digits
from ndunet.models import UNetClassifier, UNetConfig, resnet18


def models(tiny: bool) -> dict[str, nn.Module]:
    unet = UNetConfig(2, 1, 10, channels=(8, 16) if tiny else (32, 64), num_res_blocks=1,
                      norm="batch")  # fmt: skip
    widths = (4, 8, 8, 16) if tiny else (64, 128, 256, 512)
    small_stem = {"stem_kernel_size": 3, "stem_stride": 1, "stem_pool": False}
    return {
        "unet_pooled": UNetClassifier(unet),
        "resnet18": resnet18(
            2, in_channels=1, num_classes=10, widths=widths, stem_channels=widths[0], **small_stem
        ),
    }


def main(tiny: bool = False, out: str | None = None) -> dict[str, dict[str, float]]:
    train, val, test = (digits(split, normalize="unit") for split in ("train", "val", "test"))
    root = Path(out or f"runs/classify_digits_resnet_unet-{time.strftime('%Y%m%d-%H%M%S')}")
    results = {}
    for name, model in models(tiny).items():
        start = time.perf_counter()
        trainer = SupervisedTrainer(
            model, train, val, loss="cross_entropy", metrics=["accuracy"], out_dir=root / name,
            epochs=1 if tiny else 10, max_steps=3 if tiny else 0, batch_size=64, lr=2e-3,
            scheduler="cosine", best_metric="val_accuracy", progress=not tiny,
        )  # fmt: skip
        trainer.fit()
        result = trainer.evaluate(test)
        result["seconds"] = time.perf_counter() - start
        result["parameters"] = sum(p.numel() for p in model.parameters())
        results[name] = result
    print(f"{'model':<12} {'test accuracy':>13} {'parameters':>11} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['accuracy']:>13.3f} {r['parameters']:>11,} {r['seconds']:>8.1f}")
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="folder for both runs (default: runs/...-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

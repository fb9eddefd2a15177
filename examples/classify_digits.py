"""Example 1: digit classification with a U-Net and a pooled classification head.

The seed project's MNIST example, on scikit-learn's embedded 8x8 digits (no download): the U-Net
maps (B, 1, 8, 8) to ten output maps and the head averages each map to one logit.

    python examples/classify_digits.py           # a few minutes on 2 CPU cores
    python examples/classify_digits.py --tiny    # seconds (what the test suite runs)
"""

from __future__ import annotations

import argparse
import time

from torch import Tensor, nn

from ndunet import SupervisedTrainer, UNet
from ndunet.data import digits


class GlobalMean(nn.Module):
    """(B, K, *spatial) -> (B, K): the mean over every spatial axis, for any spatial_dims."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(2).mean(-1)  # (B, K, prod(spatial)) -> (B, K)


def main(tiny: bool = False, out: str | None = None) -> dict[str, float]:
    train, val, test = (digits(split, normalize="unit") for split in ("train", "val", "test"))
    unet = UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=10,  # one map per class
        channels=(8, 16) if tiny else (32, 64),
        num_res_blocks=1,
        norm="batch",
    )
    model = nn.Sequential(unet, GlobalMean())
    trainer = SupervisedTrainer(
        model,
        train,
        val,
        loss="cross_entropy",
        metrics=["accuracy"],
        out_dir=out or f"runs/classify_digits-{time.strftime('%Y%m%d-%H%M%S')}",
        epochs=1 if tiny else 10,
        max_steps=3 if tiny else 0,
        batch_size=64,
        lr=2e-3,
        scheduler="cosine",
        best_metric="val_accuracy",
        progress=not tiny,
    )
    trainer.fit()
    result = trainer.evaluate(test)
    print(f"test accuracy {result['accuracy']:.3f} on {len(test)} held-out digits")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="run folder (default: runs/classify_digits-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

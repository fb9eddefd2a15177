"""Example 3: 3-D segmentation of noisy binary blobs, scored with the Dice coefficient.

Volumes come from scikit-image's binary_blobs (generated, no download): the input is the mask in
{-1, 1} plus Gaussian noise, the target the mask. A 3-level U-Net with one logit channel trains
with Dice + BCE.

    python examples/segment_blobs_3d.py          # a few minutes on 2 CPU cores
    python examples/segment_blobs_3d.py --tiny   # seconds
"""

from __future__ import annotations

import argparse
import time

from ndunet import SupervisedTrainer, UNet
from ndunet.data import blobs


def main(tiny: bool = False, out: str | None = None) -> dict[str, float]:
    size = {"spatial_dims": 3, "length": 8 if tiny else 24, "n": 12 if tiny else 96, "noise": 0.8}
    train, val, test = (blobs(**size, split=split) for split in ("train", "val", "test"))
    model = UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,  # one logit: blob or background
        channels=(4, 8) if tiny else (16, 32, 64),
        num_res_blocks=1,
        num_groups=4,
    )
    trainer = SupervisedTrainer(
        model,
        train,
        val,
        loss="dice_ce",
        metrics=["dice", "iou"],
        out_dir=out or f"runs/segment_blobs_3d-{time.strftime('%Y%m%d-%H%M%S')}",
        epochs=1 if tiny else 12,
        max_steps=2 if tiny else 0,
        batch_size=4 if tiny else 8,
        lr=2e-3,
        scheduler="cosine",
        best_metric="val_dice",
        progress=not tiny,
    )
    trainer.fit()
    result = trainer.evaluate(test)
    print(f"test Dice {result['dice']:.3f}, IoU {result['iou']:.3f} on {len(test)} volumes")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="run folder (default: runs/segment_blobs_3d-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

"""Example 4: segmentation in four spatial dimensions (e.g. 3-D + time), the case other
libraries do not run.

ndunet's 4-D convolutions, pooling and interpolation are exact N-D operations (checked against
scipy in the tests), not a factorised approximation. Noisy 4-D binary blobs -> masks, Dice score.

    python examples/segment_blobs_4d.py          # a few minutes on 2 CPU cores
    python examples/segment_blobs_4d.py --tiny   # seconds
"""

from __future__ import annotations

import argparse
import time

from ndunet import SupervisedTrainer, UNet
from ndunet.data import blobs


def main(tiny: bool = False, out: str | None = None) -> dict[str, float]:
    size = {"spatial_dims": 4, "length": 4 if tiny else 8, "n": 10 if tiny else 64, "noise": 0.8}
    train, val, test = (blobs(**size, split=split) for split in ("train", "val", "test"))
    print(f"4-D volumes: {tuple(train.x.shape[1:])} (C, D0, D1, D2, D3), {len(train)} to train on")
    model = UNet(
        spatial_dims=4,
        in_channels=1,
        out_channels=1,
        channels=(4, 8) if tiny else (8, 16),
        num_res_blocks=1,
        num_groups=4,
    )
    trainer = SupervisedTrainer(
        model,
        train,
        val,
        loss="dice_ce",
        metrics=["dice"],
        out_dir=out or f"runs/segment_blobs_4d-{time.strftime('%Y%m%d-%H%M%S')}",
        epochs=1 if tiny else 10,
        max_steps=2 if tiny else 0,
        batch_size=4,
        lr=3e-3,
        scheduler="cosine",
        best_metric="val_dice",
        progress=not tiny,
    )
    trainer.fit()
    result = trainer.evaluate(test)
    print(f"test Dice {result['dice']:.3f} on {len(test)} 4-D volumes")
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="run folder (default: runs/segment_blobs_4d-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

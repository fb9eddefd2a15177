"""Example 8: a 4-D U-Net with every attention kind, its summary, and a short training run.

The seed project's "version two" test, on ndunet's exact 4-D layers: channel attention, the
spatial attention gate and QKV self-attention stacked in the blocks of the deeper level, CBAM and
self-attention at the bottleneck, and on the skips Attention U-Net gates, QKV cross-attention
(queries from the decoder, keys and values from the skip) and channel attention. Task: noisy
4-D blobs -> masks (e.g. 3-D + time), Dice score.

    python examples/unet_4d_attention.py          # a few minutes on 2 CPU cores
    python examples/unet_4d_attention.py --tiny   # seconds
"""

from __future__ import annotations

import argparse
import time

from ndunet import SupervisedTrainer, UNet
from ndunet.data import blobs

ATTENTION = ("ChannelAttention", "SpatialAttention", "SelfAttention", "CBAM", "AttentionGate",
             "CrossAttention")  # fmt: skip


def build(tiny: bool) -> UNet:
    return UNet(
        spatial_dims=4, in_channels=1, out_channels=1, channels=(4, 8) if tiny else (8, 16),
        num_res_blocks=1, num_groups=4, attention_head_dim=4,
        attention_levels=([], ["channel", "spatial", "qkv"]),  # in the blocks, in this order
        bottleneck_attention=["cbam", "qkv"],
        attention_gates=True,  # Attention U-Net gates on every skip
        skip_attention=(["cross", "channel"], "spatial"),  # then these, per level
        attention_reduction=4,  # channel MLP width C / 4 (default 8, the seed project's)
    )  # fmt: skip


def main(tiny: bool = False, out: str | None = None) -> dict[str, float]:
    size = {"spatial_dims": 4, "length": 4 if tiny else 8, "n": 10 if tiny else 64, "noise": 0.8}
    train, val, test = (blobs(**size, split=split) for split in ("train", "val", "test"))
    model = build(tiny)
    print(model.summary((1, *train.x.shape[1:]), depth=2, verbose=False))
    for name, module in model.named_modules():  # where each attention module sits
        if type(module).__name__ in ATTENTION:
            print(f"  {name:<34} {type(module).__name__}")
    trainer = SupervisedTrainer(
        model, train, val, loss="dice_ce", metrics=["dice"],
        out_dir=out or f"runs/unet_4d_attention-{time.strftime('%Y%m%d-%H%M%S')}",
        epochs=1 if tiny else 10, max_steps=2 if tiny else 0, batch_size=4, lr=3e-3,
        scheduler="cosine", best_metric="val_dice", progress=not tiny,
    )  # fmt: skip
    trainer.fit()
    result = trainer.evaluate(test)
    print(f"test Dice {result['dice']:.3f} on {len(test)} 4-D volumes")
    return {**result, "parameters": float(sum(p.numel() for p in model.parameters()))}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="run folder (default: runs/unet_4d_attention-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

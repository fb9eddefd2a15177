"""Example 2: image generation with diffusion on embedded digits and faces.

The seed project's CIFAR example, on data that needs no download: scikit-learn's 8x8 digits and
scikit-image's 200 LFW faces (resized to 24x24). One unconditional diffusion U-Net per dataset;
each writes a sample grid next to a grid of real images.

    python examples/generate_digits_faces.py             # 10-20 minutes on 2 CPU cores
    python examples/generate_digits_faces.py --tiny      # seconds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ndunet import Diffusion, DiffusionTrainer, UNet
from ndunet.data import digits, faces
from ndunet.viz import save_samples


def train_and_sample(name: str, data, channels, attention, steps: int, out: Path, tiny: bool):
    """Train an unconditional diffusion U-Net on ``data`` for ``steps`` steps; write grids."""
    unet = UNet(
        spatial_dims=2,
        in_channels=data.in_channels,
        out_channels=data.in_channels,
        channels=channels,
        num_res_blocks=1 if tiny else 2,
        attention_levels=attention,
        time_embedding=True,
    )
    diffusion = Diffusion(unet, schedule="cosine", prediction="v", loss_weighting="min_snr")
    trainer = DiffusionTrainer(
        diffusion,
        data,
        out_dir=str(out / name),
        max_steps=steps,
        batch_size=32,
        lr=2e-3,
        scheduler="cosine",
        warmup_steps=min(100, steps // 10),
        grad_clip=1.0,
        ema_decay=0.995,
        keep_last=0,
        progress=not tiny,
    )
    trainer.fit()
    samples = trainer.sample(4 if tiny else 36, steps=5 if tiny else 50)
    save_samples(samples, out / f"{name}_samples.png", nrow=6)
    save_samples(data.x[: len(samples)], out / f"{name}_real.png", nrow=6)
    print(f"{name}: {trainer.step} steps, samples in {out / f'{name}_samples.png'}")
    return samples


def main(tiny: bool = False, out: str | None = None) -> dict[str, object]:
    folder = Path(out or f"runs/generate_digits_faces-{time.strftime('%Y%m%d-%H%M%S')}")
    results = {
        "digits": train_and_sample(
            "digits",
            digits("train"),  # (N, 1, 8, 8) in [-1, 1]
            (8, 16) if tiny else (32, 64),
            (False, True),
            2 if tiny else 1000,
            folder,
            tiny,
        ),
        "faces": train_and_sample(
            "faces",
            faces("all", size=8 if tiny else 24),  # (200, 1, 24, 24) in [-1, 1]
            (8, 16) if tiny else (32, 64, 128),
            (False, True) if tiny else (False, False, True),
            2 if tiny else 1000,
            folder,
            tiny,
        ),
    }
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="output folder (default: runs/generate_digits_faces-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

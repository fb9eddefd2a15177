"""Example 5: diffusion on 1-D signals: synthetic waveforms, generated and plotted.

Training signals are sine waves of 2, 3, 4 or 5 periods per window with random phase and
amplitude, plus a little noise. The same UNet class as for images runs with spatial_dims=1. The
check: the dominant frequency of each generated signal should be one of the four trained ones.

    python examples/denoise_signals_1d.py           # a few minutes on 2 CPU cores
    python examples/denoise_signals_1d.py --tiny    # seconds
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ndunet import Diffusion, DiffusionTrainer, UNet
from ndunet.viz import save_samples, save_strip

FREQUENCIES = (2, 3, 4, 5)  # periods per window


def waveforms(n: int, length: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, length) sine waves of the FREQUENCIES, random phase/amplitude, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    f = torch.tensor(FREQUENCIES)[torch.randint(0, len(FREQUENCIES), (n, 1), generator=g)]
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    amp = 0.5 + 0.4 * torch.rand(n, 1, generator=g)
    t = torch.arange(length) / length
    x = amp * torch.sin(2 * math.pi * f * t + phase) + 0.03 * torch.randn(n, length, generator=g)
    return x.clamp(-1, 1).unsqueeze(1)  # (n, 1, length)


def dominant_frequency(x: torch.Tensor) -> torch.Tensor:
    """Periods per window of the strongest non-constant Fourier component, per signal (N,)."""
    power = torch.fft.rfft(x.squeeze(1), dim=-1).abs()  # (N, length // 2 + 1)
    return power[:, 1:].argmax(-1) + 1


def main(tiny: bool = False, out: str | None = None) -> dict[str, object]:
    folder = Path(out or f"runs/denoise_signals_1d-{time.strftime('%Y%m%d-%H%M%S')}")
    data = waveforms(64 if tiny else 2048, length=32 if tiny else 64)
    unet = UNet(
        spatial_dims=1,
        in_channels=1,
        out_channels=1,
        channels=(8, 16) if tiny else (32, 64),
        num_res_blocks=1 if tiny else 2,
        time_embedding=True,
    )
    diffusion = Diffusion(unet, prediction="v", loss_weighting="min_snr")
    steps = 2 if tiny else 800
    trainer = DiffusionTrainer(
        diffusion,
        data,
        out_dir=str(folder),
        max_steps=steps,
        batch_size=64,
        lr=2e-3,
        scheduler="cosine",
        warmup_steps=min(100, steps // 10),
        grad_clip=1.0,
        ema_decay=0.999,
        keep_last=0,
        progress=not tiny,
    )
    trainer.fit()
    n = 8 if tiny else 64
    samples, trajectory = diffusion.sample(
        n,
        tuple(data.shape[1:]),
        steps=5 if tiny else 50,
        model=trainer.ema.module,
        return_intermediates=True,
        generator=torch.Generator().manual_seed(0),
    )
    save_samples(samples[:16], folder / "generated_signals.png", nrow=4)
    save_samples(data[:16], folder / "training_signals.png", nrow=4)
    save_strip(trajectory[:, :4], folder / "denoising_signals.png", columns=6)
    freq = dominant_frequency(samples)
    share = float(sum((freq == f).float().mean() for f in FREQUENCIES))
    print(
        f"{share:.1%} of {n} generated signals have their dominant frequency among "
        f"{FREQUENCIES} (plots in {folder})"
    )
    return {"samples": samples, "in_trained_frequencies": share}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (for tests)")
    p.add_argument("--out", help="output folder (default: runs/denoise_signals_1d-<time>)")
    args = p.parse_args()
    main(args.tiny, args.out)

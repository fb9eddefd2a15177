"""The peer for digits_quality.py: diffusers' UNet2DModel + DDPMScheduler (its defaults: linear
betas, eps prediction, plain MSE), trained with the same loop, budget and EMA, sampled with
DDIMScheduler for 50 steps. Needs diffusers (install it only in .bench-env, see the brief)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class PeerLoss(nn.Module):
    """diffusers' standard training objective, as one module: forward(x0, y) -> loss."""

    def __init__(self, unet: nn.Module, scheduler) -> None:
        super().__init__()
        self.unet, self.scheduler = unet, scheduler

    def forward(self, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],))
        noisy = self.scheduler.add_noise(x0, noise, t)
        return F.mse_loss(self.unet(noisy, t, class_labels=y).sample, noise)


def build_peer(width: int = 32):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(width, 2 * width),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=8,
        num_class_embeds=10,
    )
    return unet, DDPMScheduler(num_train_timesteps=1000)


@torch.no_grad()
def ddim_sample(unet: nn.Module, scheduler, labels: torch.Tensor, steps: int, seed: int):
    from diffusers import DDIMScheduler

    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), 1, 8, 8), generator=g)
    for t in ddim.timesteps:
        eps = unet(x, t, class_labels=labels).sample
        x = ddim.step(eps, t, x, generator=g).prev_sample
    return x


def run_peer(
    judge, x, seconds: float, n: int, seed: int, grid: Path, width: int = 32, max_steps: int = 0
) -> None:
    from digits_eval import format_row
    from digits_train import save_grid, to_unit, train

    from ndunet.diffusion.denoise import eval_mode

    y = torch.from_numpy(judge.y_train).long()
    unet, scheduler = build_peer(width)
    n_params = sum(p.numel() for p in unet.parameters())
    ema, steps = train(PeerLoss(unet, scheduler), unet, x, y, seconds, 64, 2e-3, 0.999, max_steps)
    labels = torch.arange(n) % 10
    t0 = time.perf_counter()
    with eval_mode(ema.module):
        out = ddim_sample(ema.module, scheduler, labels, 50, seed)
    secs = time.perf_counter() - t0
    imgs = to_unit(out)
    print(
        format_row("diffusers ema ddim:50", judge.score(imgs, labels.numpy()), f"{secs:8.1f}"),
        f"  (UNet2DModel {n_params / 1e6:.2f}M params, {steps} steps)",
    )
    save_grid(imgs, grid.with_name(grid.stem + "_diffusers.png"), "diffusers, DDIM 50")

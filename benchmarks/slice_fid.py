"""A slice-wise Frechet distance for generated data of any N >= 2 (MAISI's 2.5-D FID, generalised).

Every pair of spatial axes (i, j) spans 2-D slices: the other axes (and the batch) are folded
into the batch, ``(B, C, *spatial) -> (B * prod(other sizes), C, S_i, S_j)``. A small 2-D
convolutional autoencoder is trained on the real data's slices (so it needs no download and
sees the data's own statistics); its globally pooled encoder activations are the features. The
score of a plane is the Frechet distance between the feature Gaussians of real and generated
slices; the summary is the mean over the N (N - 1) / 2 planes.

    from slice_fid import SliceFID
    metric = SliceFID(real_volumes)          # (B, C, *spatial), N >= 2
    scores = metric.score(generated)         # {"mean": ..., "0-1": ..., "0-2": ..., ...}
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from scipy import linalg
from torch import Tensor, nn


def slices(x: Tensor, axes: tuple[int, int]) -> Tensor:
    """2-D slices of ``x`` (B, C, *spatial) spanning spatial ``axes`` (i, j):
    ``(B * prod(other sizes), C, S_i, S_j)``."""
    n = x.dim() - 2
    i, j = axes
    others = [2 + k for k in range(n) if k not in (i, j)]
    moved = x.permute(0, *others, 1, 2 + i, 2 + j)  # (B, *others, C, S_i, S_j)
    return moved.reshape(-1, x.shape[1], x.shape[2 + i], x.shape[2 + j])


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature rows ``a`` and ``b``."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


class SliceEncoder(nn.Module):
    """conv-conv-pool encoder and a matching decoder; features: pooled encoder activations."""

    def __init__(self, channels: int, width: int = 32) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.SiLU())
        self.enc2 = nn.Sequential(nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU())
        self.dec = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        h1 = self.enc1(x)
        h2 = self.enc2(h1)
        up = torch.cat([nn.functional.avg_pool2d(h1, 2, ceil_mode=True), h2], 1)
        return self.dec(up)[..., : x.shape[-2], : x.shape[-1]]

    def features(self, x: Tensor) -> Tensor:
        h1 = self.enc1(x)
        h2 = self.enc2(h1)
        return torch.cat([h1.mean((2, 3)), h2.mean((2, 3)), h2.amax((2, 3))], 1)  # (B, 3 width)


class SliceFID:
    """Fit the slice encoder on ``real`` (B, C, *spatial), N >= 2, then :meth:`score` samples."""

    def __init__(
        self, real: Tensor, steps: int = 300, width: int = 32, max_slices: int = 4096, seed: int = 0
    ) -> None:
        if real.dim() < 4:
            raise ValueError(f"real must be (B, C, *spatial) with N >= 2, got {tuple(real.shape)}")
        self.planes = list(itertools.combinations(range(real.dim() - 2), 2))
        self.max_slices, self.seed = max_slices, seed
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.encoder = SliceEncoder(real.shape[1], width)
        pool = [slices(real.float(), p) for p in self.planes]
        opt = torch.optim.Adam(self.encoder.parameters(), lr=2e-3)
        for step in range(steps):  # denoising autoencoder on slices of every plane
            plane = pool[step % len(pool)]
            batch = plane[torch.randint(0, len(plane), (64,), generator=g)]
            noisy = batch + 0.1 * torch.randn(batch.shape, generator=g)
            loss = nn.functional.mse_loss(self.encoder(noisy), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.encoder.eval()
        self.real_features = [self._features(s) for s in pool]

    @torch.no_grad()
    def _features(self, s: Tensor) -> np.ndarray:
        if len(s) > self.max_slices:
            g = torch.Generator().manual_seed(self.seed + 1)
            s = s[torch.randperm(len(s), generator=g)[: self.max_slices]]
        return torch.cat([self.encoder.features(c) for c in s.split(512)]).double().numpy()

    def score(self, samples: Tensor) -> dict[str, float]:
        """Frechet distance per plane ("i-j") and their mean ("mean")."""
        out = {}
        for p, real in zip(self.planes, self.real_features):
            out[f"{p[0]}-{p[1]}"] = frechet(self._features(slices(samples.float(), p)), real)
        out["mean"] = float(np.mean(list(out.values()))) if out else math.nan
        return out

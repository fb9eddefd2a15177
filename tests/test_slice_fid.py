"""benchmarks/slice_fid.py: slices against explicit indexing for N = 3 and 4, the Frechet
distance against the closed form for Gaussians, and the metric ranking real above noise."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from slice_fid import SliceFID, frechet, slices

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (2, 1, 3, 4, 5, 2)], ids=["3d", "4d"])
def test_slices_are_the_planes_of_each_axis_pair(shape):
    x = torch.randn(shape)
    n = len(shape) - 2
    for i, j in itertools.combinations(range(n), 2):
        got = slices(x, (i, j))
        others = [k for k in range(n) if k not in (i, j)]
        want = []
        for b in range(shape[0]):
            for idx in itertools.product(*(range(shape[2 + k]) for k in others)):
                index = [b, slice(None)] + [slice(None)] * n
                for k, v in zip(others, idx):
                    index[2 + k] = v
                want.append(x[tuple(index)])
        torch.testing.assert_close(got, torch.stack(want))


def test_frechet_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, (200_000, 2))
    b = rng.normal(0.5, 2.0, (200_000, 2))
    # ||mu_a - mu_b||^2 + tr(I + 4I - 2 * 2I) = 2 * 0.25 + 2 * (1 + 4 - 4)
    assert frechet(a, b) == pytest.approx(0.5 + 2.0, rel=0.02)


def test_metric_ranks_real_above_noise_and_blur():
    g = torch.Generator().manual_seed(0)
    base = (torch.rand(64, 1, 6, 6, 6, generator=g) > 0.5).float()
    real = torch.nn.functional.avg_pool3d(base, 3, 1, 1) * 2 - 1
    held = (
        torch.nn.functional.avg_pool3d(
            (torch.rand(64, 1, 6, 6, 6, generator=g) > 0.5).float(), 3, 1, 1
        )
        * 2
        - 1
    )
    metric = SliceFID(real, steps=30, width=8)
    same = metric.score(held)
    noise = metric.score(torch.randn_like(real).clamp(-1, 1))
    assert set(same) == {"0-1", "0-2", "1-2", "mean"}
    assert same["mean"] < 0.2 * noise["mean"]

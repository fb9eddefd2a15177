"""Power-function EMA and post-hoc reconstruction (EDM2) against independent oracles: the width
of the averaging profile measured on a weight that records the step, numerical quadrature of
profile inner products, and a reconstruction matching an EMA run with that width directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from ndunet.posthoc_ema import (
    PowerEMA,
    gamma_to_sigma_rel,
    list_snapshots,
    profile_dot,
    reconstruct,
    save_snapshot,
    sigma_rel_to_gamma,
    solve_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Weights(torch.nn.Module):
    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))


@pytest.mark.parametrize("sigma_rel", [0.02, 0.05, 0.1, 0.2])
def test_gamma_round_trip_and_measured_width(sigma_rel):
    gamma = sigma_rel_to_gamma(sigma_rel)
    assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma_rel, rel=1e-10)
    # the average of w_t = (t, t^2) is the profile's first two moments: its std / T is sigma_rel
    net, steps = Weights(2), 4000
    ema = PowerEMA(net, [sigma_rel])
    for t in range(1, steps + 1):
        net.w.data = torch.tensor([t, t * t], dtype=torch.float64)
        ema.update(net)
    m1, m2 = ema.module.w.tolist()
    assert math.sqrt(m2 - m1**2) / steps == pytest.approx(sigma_rel, rel=0.02)
    assert int(ema.num_updates) == steps


def test_profile_inner_products_against_quadrature():
    def p(tau, t, g):
        return (g + 1) * tau**g / t ** (g + 1) if tau <= t else 0.0

    for t_a, g_a, t_b, g_b in [(100, 6.9, 250, 16.9), (300, 3.0, 120, 6.9), (50, 1.0, 50, 2.0)]:
        args = (t_a, g_a, t_b, g_b)
        want = quad(lambda x, a=args: p(x, *a[:2]) * p(x, *a[2:]), 0, min(t_a, t_b), limit=200)[0]
        assert float(profile_dot(t_a, g_a, t_b, g_b)) == pytest.approx(want, rel=1e-8)
    # exact reconstruction when the target is one of the snapshots
    w = solve_weights([100, 200, 200], [6.9, 6.9, 16.9], 200, 16.9)
    np.testing.assert_allclose(w, [0, 0, 1], atol=1e-8)


def test_reconstruction_matches_a_directly_trained_ema(tmp_path):
    rng = np.random.default_rng(0)
    path = torch.from_numpy(np.cumsum(rng.standard_normal((1200, 4)), axis=0))  # a random walk
    net = Weights(4)
    kept, direct = PowerEMA(net, [0.05, 0.10]), PowerEMA(net, [0.075])
    for t in range(1, 1201):
        net.w.data = path[t - 1].clone()
        kept.update(net)
        direct.update(net)
        if t % 50 == 0:
            save_snapshot(tmp_path, kept)
    assert [s.step for s in list_snapshots(tmp_path)] == list(range(50, 1201, 50))
    state, weights = reconstruct(tmp_path, 0.075)
    assert weights.sum() == pytest.approx(1.0)
    got, want = state["w"], direct.module.w.detach()
    spread = (kept.averages[0].w - kept.averages[1].w).abs().max()
    assert float((got - want).abs().max()) < 0.1 * float(spread)
    # at an earlier step too
    state_600, _ = reconstruct(tmp_path, 0.10, step=600)
    assert state_600["w"].shape == (4,)
    with pytest.raises(ValueError, match="step=5000 is not valid"):
        reconstruct(tmp_path, 0.1, step=5000)


def test_errors():
    with pytest.raises(ValueError, match=r"sigma_rel=0\.5 is not valid"):
        sigma_rel_to_gamma(0.5)
    with pytest.raises(FileNotFoundError, match="no EMA snapshots"):
        list_snapshots("/nonexistent-run")

"""Flow matching: the interpolant, target, time sampling and shift against their definitions;
every sampler with the exact velocity of a Gaussian mixture reproduces the mixture, in 1-D, 2-D
and 4-D shapes, and converges at its order against scipy's ODE solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import expit

import _mixture as M
from ndunet.diffusion import Diffusion, DiffusionConfig, flow

SHAPES = {"1d": (1, 16), "2d": (1, 4, 4), "4d": (1, 2, 2, 2, 2)}
pytestmark = pytest.mark.usefixtures("one_thread")


class Net(torch.nn.Module):
    """An analytic model as an nn.Module (float64, so orders are measured, not rounding)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, t):
        return self.fn(x, t)


def test_interpolant_target_and_inverse():
    x0, eps = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t = torch.tensor([0.0, 0.25, 1.0])
    x_t = flow.interpolate(x0, eps, t)
    torch.testing.assert_close(x_t[0], x0[0])
    torch.testing.assert_close(x_t[2], eps[2])
    torch.testing.assert_close(x_t[1], 0.75 * x0[1] + 0.25 * eps[1])
    v = flow.velocity(x0, eps)
    # v is the time derivative of the interpolant (finite difference, exact for a line)
    dt = 1e-3
    fd = (flow.interpolate(x0, eps, t + dt) - flow.interpolate(x0, eps, t)) / dt
    torch.testing.assert_close(fd, v, atol=1e-3, rtol=1e-3)
    back_x0, back_eps = flow.velocity_to_x0_eps(v[1], x_t[1], 0.25)
    torch.testing.assert_close(back_x0, x0[1])
    torch.testing.assert_close(back_eps, eps[1])


def test_logit_normal_and_uniform_times():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_time(200_000, "logit_normal", 0.5, 0.8, generator=g).double().numpy()
    assert t.min() > 0 and t.max() < 1
    # quantiles of sigmoid(N(0.5, 0.8^2)) are sigmoid of the normal quantiles
    for q, z in [(0.1, -1.2815515655), (0.5, 0.0), (0.9, 1.2815515655)]:
        assert np.quantile(t, q) == pytest.approx(expit(0.5 + 0.8 * z), abs=3e-3)
    u = flow.sample_time(100_000, "uniform", generator=g).numpy()
    assert np.quantile(u, 0.25) == pytest.approx(0.25, abs=5e-3)
    with pytest.raises(ValueError, match="time_sampling='lognormal' is not valid"):
        flow.sample_time(3, "lognormal")


def test_shift_is_a_log_snr_offset_and_depends_on_voxels_only():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    s = 3.0
    ts = flow.shift_time(t, s)
    lam = torch.log((1 - t) / t)
    lam_s = torch.log((1 - ts) / ts)
    torch.testing.assert_close(lam_s, lam - math.log(s))  # SD3: log-SNR moved by -2 log s
    assert flow.shift_time(torch.tensor([0.0, 1.0]), s).tolist() == [0.0, 1.0]
    # the same number of voxels shifts alike whatever N: 64^2 = 16^3 = 8^4
    shifts = {flow.resolution_shift(v, 256, 1.0) for v in (64**2, 16**3, 8**4)}
    assert shifts == {4.0}
    assert flow.resolution_shift(12345, None, 2.0) == 2.0
    d = Diffusion(Net(M.flow_model()), process="flow", shift_base_voxels=16)
    assert d.grid(4, (8, 8)).times[-1] == pytest.approx(1.0)
    visited = [d.grid(4, (8, 8)).times[i] for i in d.grid(4, (8, 8)).timesteps]
    want = flow.shift_time(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64), 2.0)
    np.testing.assert_allclose(visited, want.numpy())


def test_training_loss_is_the_velocity_regression():
    torch.manual_seed(0)
    calls = {}

    def net(x, t):
        calls["t"] = t
        return torch.zeros_like(x)

    d = Diffusion(net, process="flow")
    x0, eps = torch.randn(4, 1, 6), torch.randn(4, 1, 6)
    t = torch.tensor([0.1, 0.4, 0.6, 0.9])
    loss = d(x0, t=t, noise=eps)
    assert float(loss) == pytest.approx(float(((eps - x0) ** 2).mean()), rel=1e-6)
    torch.testing.assert_close(calls["t"], 1000 * t)
    # the exact velocity of the mixture has the smallest expected loss: below a wrong model
    exact = Diffusion(M.flow_model(), process="flow")
    x0 = torch.from_numpy(M.exact_samples(4096, 1)).float().view(256, 1, 16)
    assert float(exact(x0)) < float(d(x0))


SAMPLER_STEPS = {
    "euler": 50, "heun": 25, "dpm++2m": 25, "unipc": 20, "ddim": 50,
    "euler_a": 150, "dpm++2m_sde": 60, "ddpm": 150,
}  # fmt: skip


@pytest.mark.parametrize("sampler", list(SAMPLER_STEPS))
@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_every_sampler_reproduces_the_mixture(sampler, shape_id):
    if shape_id != "2d" and sampler in ("ddim", "ddpm"):
        pytest.skip("ddim/ddpm are euler/euler_a on this grid; one shape is enough")
    d = Diffusion(M.flow_model(), process="flow")
    x = d.sample(
        1024, SHAPES[shape_id], SAMPLER_STEPS[sampler], sampler,
        generator=torch.Generator().manual_seed(0), clip_denoised=False,
    )  # fmt: skip
    w1, mass = M.mixture_errors(x)
    assert w1 < 0.02 and mass < 0.015, (w1, mass)


def observed_orders(diffusion, sampler, steps=(16, 32, 64)) -> list[float]:
    """log2 error ratios against scipy's ODE solution, from the same initial noise."""
    shape = (1, 64)
    z = torch.randn((2, *shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = diffusion.grid(steps[0], shape[1:])
    abar0 = float(grid.alphas_cumprod[grid.timesteps[0]])
    a, s = math.sqrt(abar0), math.sqrt(1 - abar0)
    ref = M.reference_ode((z / (a + s)).flatten().numpy(), s / (a + s))
    errors = []
    for n in steps:
        x = diffusion.sample(
            2, shape, n, sampler, clip_denoised=False, generator=torch.Generator().manual_seed(3)
        )  # its first draw, the initial noise, is z
        errors.append(float(np.sqrt(((x.flatten().numpy() - ref) ** 2).mean())))
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


@pytest.fixture
def smooth_mixture(monkeypatch):
    monkeypatch.setattr(M, "PARAMS", M.SMOOTH)


@pytest.mark.parametrize(("sampler", "low", "high"), [("euler", 0.85, 1.15), ("heun", 1.8, 2.3)])
def test_flow_order_of_convergence(smooth_mixture, sampler, low, high):
    d = Diffusion(Net(M.flow_model()), process="flow")
    orders = observed_orders(d, sampler)
    assert all(low <= p <= high for p in orders), orders


def test_flow_config_round_trip_and_wrong_process_options():
    cfg = DiffusionConfig(process="flow", time_sampling="uniform", time_shift=3.0)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"time_shift=2\.0 is not valid with process='gaussian'"):
        DiffusionConfig(time_shift=2.0)
    with pytest.raises(ValueError, match="prediction='eps' is not valid with process='flow'"):
        DiffusionConfig(process="flow", prediction="eps")
    with pytest.raises(ValueError, match="t must be a float tensor"):
        Diffusion(M.flow_model(), process="flow")(torch.randn(2, 1, 4), t=torch.tensor([0, 1]))

"""Schedules against their published formulas (computed here independently with numpy), and the
forward process against Gaussian identities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ndunet.diffusion import Schedule, get_betas, q_posterior, q_sample, sample_timesteps


def np_linear(T, b0=1e-4, b1=0.02):
    return np.minimum(np.linspace(b0 * 1000 / T, b1 * 1000 / T, T), 0.999)


def np_linear_unscaled(T, b0=1e-4, b1=0.02):
    return np.linspace(b0, b1, T)  # the seed project's schedule: no 1000/T rescaling


def np_scaled_linear(T, b0=0.00085, b1=0.012):
    return np.minimum(
        np.linspace(math.sqrt(b0 * 1000 / T), math.sqrt(b1 * 1000 / T), T) ** 2, 0.999
    )


def np_cosine(T, s=0.008):
    f = np.array([math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)])
    return np.array([min(1 - f[t + 1] / f[t], 0.999) for t in range(T)])


def np_sigmoid(T, start=-3.0, end=3.0, tau=1.0):
    def sig(z):
        return 1 / (1 + math.exp(-z))

    g = [
        (sig(end / tau) - sig(((t / T) * (end - start) + start) / tau))
        / (sig(end / tau) - sig(start / tau))
        for t in range(T + 1)
    ]
    return np.array([min(1 - g[t + 1] / g[t], 0.999) for t in range(T)])


REFERENCE = {
    "linear": np_linear,
    "linear_unscaled": np_linear_unscaled,
    "scaled_linear": np_scaled_linear,
    "cosine": np_cosine,
    "sigmoid": np_sigmoid,
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("T", [1000, 50, 7])
def test_betas_and_alphas_cumprod_match_closed_form(name, T):
    sched = Schedule.from_name(name, T)
    ref = REFERENCE[name](T)
    assert sched.betas.dtype == torch.float64 and sched.alphas_cumprod.dtype == torch.float64
    np.testing.assert_allclose(sched.betas.numpy(), ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), np.cumprod(1 - ref), rtol=1e-11)
    ac = sched.alphas_cumprod
    assert bool((ac[1:] < ac[:-1]).all()) and 0 < float(ac[-1]) < float(ac[0]) < 1


def test_cosine_alphas_cumprod_is_the_squared_cosine():
    # Nichol & Dhariwal eq. 17 directly: abar_t = f(t + 1) / f(0) wherever beta was not clipped.
    T, s = 1000, 0.008
    ac = Schedule.from_name("cosine", T).alphas_cumprod.numpy()
    t = np.arange(1, T + 1)
    f = np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    np.testing.assert_allclose(ac[:900], f[:900], rtol=1e-10)


def test_linear_unscaled_is_the_seed_projects_schedule():
    # "linear" rescales the 1000-step endpoints by 1000/T; "linear_unscaled" keeps them as given
    from ndunet import Diffusion, UNet

    short = Diffusion(
        UNet(1, 1, 1, channels=(4, 8), time_embedding=True),
        timesteps=300,
        schedule="linear_unscaled",
    )
    np.testing.assert_allclose(short.schedule.betas[[0, -1]].numpy(), [1e-4, 0.02], rtol=1e-12)
    assert short.config.to_dict()["schedule"] == "linear_unscaled"
    scaled = get_betas("linear", 300)
    np.testing.assert_allclose(scaled[[0, -1]].numpy(), [1e-4 / 0.3, 0.02 / 0.3], rtol=1e-12)
    torch.testing.assert_close(get_betas("linear", 1000), get_betas("linear_unscaled", 1000))


def test_linear_unscaled_round_trips_through_a_run_folder(tmp_path):
    from ndunet import Diffusion, UNet
    from ndunet.training import DiffusionTrainer, load_run

    net = UNet(2, 1, 1, channels=(4, 8), num_groups=2, time_embedding=True)
    DiffusionTrainer(
        Diffusion(net, timesteps=30, schedule="linear_unscaled"), torch.rand(8, 1, 8, 8) * 2 - 1,
        out_dir=tmp_path / "run", max_steps=1, batch_size=4, progress=False, plot=False,
    ).fit()  # fmt: skip
    loaded = load_run(tmp_path / "run").diffusion
    assert loaded.config.schedule == "linear_unscaled"
    torch.testing.assert_close(loaded.schedule.betas, get_betas("linear_unscaled", 30))


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ValueError, match=r"got 'cosin'") as err:
        get_betas("cosin", 10)
    for name in REFERENCE:
        assert name in str(err.value)


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_bad_timesteps(T):
    with pytest.raises(ValueError, match="timesteps"):
        get_betas("linear", T)


def test_q_sample_statistics():
    sched = Schedule.from_name("cosine", 1000)
    n = 40000
    x0 = (
        torch.tensor([[0.7, -1.2, 0.1]], dtype=torch.float64).expand(n, 3).unsqueeze(1)
    )  # (n, 1, 3)
    for step in [0, 250, 600, 999]:
        t = torch.full((n,), step, dtype=torch.long)
        xt = q_sample(sched, x0, t, torch.randn(n, 1, 3, dtype=torch.float64))
        abar = float(sched.alphas_cumprod[step])
        se = math.sqrt((1 - abar) / n)
        np.testing.assert_allclose(
            xt.mean(0)[0].numpy(), math.sqrt(abar) * x0[0, 0].numpy(), atol=5 * se
        )
        np.testing.assert_allclose(xt.var(0)[0].numpy(), 1 - abar, rtol=0.04, atol=1e-12)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_matches_gaussian_conditioning(name):
    # Independent oracle: condition the joint Gaussian of (x_{t-1}, x_t) given x0.
    sched = Schedule.from_name(name, 200)
    ac = sched.alphas_cumprod.numpy()
    betas = sched.betas.numpy()
    steps = torch.tensor([1, 5, 77, 199])
    x0 = torch.randn(4, 2, 3, dtype=torch.float64)
    xt = torch.randn(4, 2, 3, dtype=torch.float64)
    mean, var = q_posterior(sched, x0, xt, steps)
    for i, t in enumerate(steps.tolist()):
        m1, v1 = math.sqrt(ac[t - 1]) * x0[i], 1 - ac[t - 1]
        a = 1 - betas[t]
        m2, v2, c12 = math.sqrt(a) * m1, a * v1 + betas[t], math.sqrt(a) * v1
        np.testing.assert_allclose(
            mean[i].numpy(), (m1 + c12 / v2 * (xt[i] - m2)).numpy(), rtol=1e-10
        )
        np.testing.assert_allclose(float(var[i].flatten()[0]), v1 - c12**2 / v2, rtol=1e-10)
    # t = 0: the posterior is the point mass at x0
    mean0, var0 = q_posterior(sched, x0, xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert float(var0.abs().max()) == 0.0


@pytest.mark.parametrize("spacing", ["trailing", "linspace", "leading"])
@pytest.mark.parametrize(("T", "steps"), [(1000, 1000), (1000, 50), (1000, 7), (10, 3), (5, 1)])
def test_sample_timesteps(spacing, T, steps):
    ts = sample_timesteps(T, steps, spacing)
    assert len(ts) == steps and all(isinstance(t, int) for t in ts)
    assert all(0 <= t < T for t in ts)
    assert all(a > b for a, b in itertools.pairwise(ts))
    if spacing != "leading":
        assert ts[0] == T - 1
    if steps == T:
        assert ts == list(range(T - 1, -1, -1))


@pytest.mark.parametrize("steps", [0, 1001, -1, 2.0])
def test_sample_timesteps_rejects_bad_steps(steps):
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1000\]"):
        sample_timesteps(1000, steps)


def test_sample_timesteps_rejects_bad_spacing():
    with pytest.raises(ValueError, match="trailing"):
        sample_timesteps(1000, 10, "uniform")


def test_gather_keeps_the_steps_on_their_device():
    """The table goes to t's device; t is never read on the host (on a GPU that read would stall
    every training step). A meta t cannot be copied to the host, so this fails on the old way."""
    s = Schedule.from_name("linear", 1000)
    t = torch.tensor([1, 5], device="meta")
    out = s.gather(s.snr, t, torch.empty(2, 1, 4, 4, device="meta"))
    assert out.shape == (2, 1, 1, 1) and out.device.type == "meta"
    cpu = s.gather(s.snr, torch.tensor([1, 5]), torch.empty(2, 1, 4, 4))
    assert torch.equal(cpu.flatten(), s.snr[[1, 5]].float())

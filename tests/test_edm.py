"""EDM (Karras et al. 2022): the preconditioning, loss weight, noise distribution and rho grid
against the paper's formulas (table 1, eq. 5); its Heun sampler and the other samplers with the
exact denoiser of a Gaussian mixture (samples, order of convergence, churn)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import _mixture as M
from ndunet.diffusion import Diffusion, DiffusionConfig, edm
from test_flow import Net, observed_orders

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_preconditioning_is_table_1(sigma_data):
    sigmas = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0])
    c_skip, c_out, c_in, c_noise = (
        c.numpy() for c in edm.precondition(torch.tensor(sigmas), sigma_data)
    )
    sd = sigma_data
    np.testing.assert_allclose(c_skip, sd**2 / (sigmas**2 + sd**2), rtol=1e-12)
    np.testing.assert_allclose(c_out, sigmas * sd / np.sqrt(sd**2 + sigmas**2), rtol=1e-12)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigmas**2 + sd**2), rtol=1e-12)
    np.testing.assert_allclose(c_noise, np.log(sigmas) / 4, rtol=1e-12)
    # the training target has unit variance for data of std sigma_data (the design principle)
    np.testing.assert_allclose(c_in**2 * (sd**2 + sigmas**2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        edm.loss_weight(torch.tensor(sigmas), sd).numpy(),
        (sigmas**2 + sd**2) / (sigmas * sd) ** 2,
        rtol=1e-12,
    )
    np.testing.assert_allclose(edm.loss_weight(torch.tensor(sigmas), sd).numpy(), 1 / c_out**2)


def test_rho_grid_is_eq_5():
    n, lo, hi, rho = 18, 0.002, 80.0, 7.0
    i = np.arange(n)
    want = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    got = np.array(edm.karras_sigmas(n, lo, hi, rho))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(hi) and got[-1] == pytest.approx(lo)
    assert np.all(np.diff(got) < 0)
    np.testing.assert_allclose(edm.karras_sigmas(5, 1.0, 5.0, 1.0), [5, 4, 3, 2, 1])
    assert edm.karras_sigmas(1) == [80.0]
    with pytest.raises(ValueError, match=r"sigma_max=0\.001 is not valid"):
        edm.karras_sigmas(4, 0.002, 0.001)


def test_training_noise_is_lognormal():
    s = edm.sample_sigma(200_000, -1.2, 1.2, generator=torch.Generator().manual_seed(0))
    logs = s.log().double().numpy()
    assert logs.mean() == pytest.approx(-1.2, abs=0.01) and logs.std() == pytest.approx(
        1.2, abs=0.01
    )


def test_loss_is_lambda_weighted_denoising_error():
    """The loss on F with unit weight equals lambda(sigma) |D - x0|^2 (EDM eq. 8 and sec. 5)."""
    out = torch.randn(3, 1, 5, dtype=torch.float64)
    d = Diffusion(lambda x, t: out, process="edm")
    x0, n = torch.randn(3, 1, 5, dtype=torch.float64), torch.randn(3, 1, 5, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    loss = d(x0, t=sigma, noise=n)
    sd = 0.5
    x = x0 + sigma.view(-1, 1, 1) * n
    s = sigma.view(-1, 1, 1)
    c_skip, c_out = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt()
    denoised = c_skip * x + c_out * out
    lam = (s**2 + sd**2) / (s * sd) ** 2
    want = (lam * (denoised - x0) ** 2).mean()
    assert float(loss) == pytest.approx(float(want), rel=1e-6)


@pytest.mark.parametrize(
    ("sampler", "steps", "eta"),
    [("heun", 32, None), ("heun", 40, 0.3), ("euler", 60, None), ("dpm++2m", 30, None),
     ("unipc", 25, None), ("dpm++2m_sde", 60, None), ("euler_a", 300, None)],
)  # fmt: skip
@pytest.mark.parametrize("shape", [(1, 16), (1, 2, 2, 2, 2)], ids=["1d", "4d"])
def test_samplers_reproduce_the_mixture(sampler, steps, eta, shape):
    d = Diffusion(M.edm_model(), process="edm")
    x = d.sample(
        1024, shape, steps, sampler, eta=eta,
        generator=torch.Generator().manual_seed(0), clip_denoised=False,
    )  # fmt: skip
    w1, mass = M.mixture_errors(x)
    assert w1 < 0.02 and mass < 0.015, (w1, mass)


@pytest.fixture
def smooth_mixture(monkeypatch):
    monkeypatch.setattr(M, "PARAMS", M.SMOOTH)


@pytest.mark.parametrize(
    ("sampler", "low", "high"),
    [("euler", 0.85, 1.15), ("heun", 1.8, 2.6), ("dpm++2m", 1.8, 2.6), ("unipc", 1.9, 3.6)],
)
def test_edm_order_of_convergence(smooth_mixture, sampler, low, high):
    d = Diffusion(Net(M.edm_model()), process="edm")
    orders = observed_orders(d, sampler)
    assert all(low <= p <= high for p in orders), orders


def test_heun_churn_adds_noise_only_when_asked():
    d = Diffusion(M.edm_model(), process="edm")

    def run(eta, seed):
        return d.sample(
            8, (1, 4), 10, "heun", eta=eta, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(None, 0)[0], run(0.0, 0)[0])
    a, b = run(0.2, 0), run(0.2, 0)
    assert torch.equal(a, b)  # seeded
    assert not torch.allclose(run(0.0, 0), a)


def test_edm_config_checks():
    cfg = DiffusionConfig(process="edm", sigma_data=1.0, rho=5.0)
    assert DiffusionConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"sigma_max=0\.001 is not valid"):
        DiffusionConfig(process="edm", sigma_max=0.001)
    with pytest.raises(ValueError, match=r"rho=7\.5 is not valid with process='flow'"):
        DiffusionConfig(process="flow", rho=7.5)
    assert math.isclose(edm.abar_of_sigma(1.0), 0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_draws_take_a_cpu_generator_for_a_cuda_device():
    """A CPU generator seeds CUDA training draws, with the values it gives on the CPU."""
    from ndunet.diffusion import flow

    def draw(device: str) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        return [
            edm.sample_sigma(4, generator=g, device=device).cpu(),
            flow.sample_time(4, generator=g, device=device).cpu(),
            flow.sample_time(4, "uniform", generator=g, device=device).cpu(),
        ]

    for a, b in zip(draw("cpu"), draw("cuda")):
        torch.testing.assert_close(a, b)

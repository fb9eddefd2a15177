"""eps/x0/v conversions, targets, losses and min-SNR weights against their definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ndunet.diffusion import (
    dynamic_threshold,
    eps_to_x0,
    min_snr_weight,
    per_sample_loss,
    target,
    to_v,
    to_x0_eps,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)


def _setup(shape=(6, 2, 5, 3)):
    x0 = torch.randn(shape, dtype=torch.float64)
    eps = torch.randn(shape, dtype=torch.float64)
    abar = torch.rand(shape[0], dtype=torch.float64) * 0.98 + 0.01
    alpha = abar.sqrt().view(-1, *([1] * (len(shape) - 1)))
    sigma = (1 - abar).sqrt().view_as(alpha)
    return x0, eps, alpha, sigma, alpha * x0 + sigma * eps


def test_round_trips():
    x0, eps, alpha, sigma, xt = _setup()
    torch.testing.assert_close(eps_to_x0(xt, eps, alpha, sigma), x0)
    torch.testing.assert_close(x0_to_eps(xt, x0, alpha, sigma), eps)
    v = to_v(x0, eps, alpha, sigma)
    torch.testing.assert_close(v, alpha * eps - sigma * x0)  # Salimans & Ho's definition
    torch.testing.assert_close(v_to_x0(xt, v, alpha, sigma), x0)
    torch.testing.assert_close(v_to_eps(xt, v, alpha, sigma), eps)
    # scalar coefficients work too
    a, s = 0.6, 0.8
    torch.testing.assert_close(v_to_x0(a * x0 + s * eps, to_v(x0, eps, a, s), a, s), x0)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_exact_prediction_recovers_x0_and_eps(prediction):
    x0, eps, alpha, sigma, xt = _setup((4, 1, 7))
    out = target(prediction, x0, eps, alpha, sigma)
    x0_hat, eps_hat = to_x0_eps(prediction, out, xt, alpha, sigma)
    torch.testing.assert_close(x0_hat, x0)
    torch.testing.assert_close(eps_hat, eps)


def test_bad_prediction_name():
    x0, eps, alpha, sigma, xt = _setup((2, 1, 3))
    for fn in (
        lambda: target("score", x0, eps, alpha, sigma),
        lambda: to_x0_eps("score", x0, xt, 1, 1),
    ):
        with pytest.raises(ValueError, match=r"\['eps', 'x0', 'v'\], got 'score'"):
            fn()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weight_is_min_snr_gamma_in_x0_space(prediction):
    # A prediction error d in `prediction` space is an x0 error e; the weighted loss w * d^2 must
    # equal min(snr, gamma) * e^2 (Hang et al. 2023).
    x0, eps, alpha, sigma, xt = _setup((64, 1, 1))
    snr = (alpha**2 / sigma**2).flatten()
    gamma = 5.0
    d = torch.randn_like(x0)
    out = target(prediction, x0, eps, alpha, sigma)
    x0_err = to_x0_eps(prediction, out + d, xt, alpha, sigma)[0] - x0
    w = min_snr_weight(snr, prediction, gamma)
    torch.testing.assert_close(
        w * d.flatten() ** 2, torch.minimum(snr, torch.tensor(gamma)) * x0_err.flatten() ** 2
    )


@pytest.mark.parametrize("loss", ["l2", "l1", "huber"])
def test_per_sample_loss(loss):
    a, b = torch.randn(3, 2, 4, 5) * 2, torch.randn(3, 2, 4, 5)
    got = per_sample_loss(a, b, loss, huber_delta=0.5)
    diff = a - b
    if loss == "l2":
        elem = diff**2
    elif loss == "l1":
        elem = diff.abs()
    else:
        elem = torch.where(diff.abs() < 0.5, 0.5 * diff**2, 0.5 * (diff.abs() - 0.25))
    torch.testing.assert_close(got, elem.flatten(1).mean(1))
    assert got.shape == (3,)
    if loss == "l2":
        torch.testing.assert_close(got.mean(), F.mse_loss(a, b))


def test_unknown_loss():
    with pytest.raises(ValueError, match="l2"):
        per_sample_loss(torch.zeros(1, 1), torch.zeros(1, 1), "l3")


def test_dynamic_threshold():
    x = torch.randn(5, 3, 8, 8) * torch.tensor([0.3, 1, 2, 4, 8]).view(-1, 1, 1, 1)
    out = dynamic_threshold(x, 0.9)
    assert float(out.abs().max()) <= 1.0 + 1e-6
    for i in range(5):
        s = max(float(torch.quantile(x[i].abs().flatten(), 0.9)), 1.0)
        torch.testing.assert_close(out[i], x[i].clamp(-s, s) / s)
    # samples whose quantile is below 1 are plainly clipped
    torch.testing.assert_close(out[0], x[0].clamp(-1, 1))
    with pytest.raises(ValueError, match="percentile"):
        dynamic_threshold(x, 1.5)

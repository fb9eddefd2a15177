"""An analytic "perfect network" for every process: data whose values are i.i.d. draws from a 1-D
Gaussian mixture, whose posterior mean E[x0 | a x0 + s eps] is closed form.

For x_t = a x0 + s eps and mixture component k (weight w_k, mean m_k, std d_k):
x_t | k ~ N(a m_k, a^2 d_k^2 + s^2) and E[x0 | x_t, k] = m_k + a d_k^2 (x_t - a m_k) / (a^2 d_k^2
+ s^2); the responsibilities follow from Bayes' rule. Everything here is written from those
formulas and the papers' definitions of each process (not from ndunet's code), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.stats import wasserstein_distance

WEIGHTS = (0.3, 0.7)
MEANS = (-0.6, 0.5)
STDS = (0.1, 0.15)
THRESHOLD = -0.125  # between the modes: mode 0 below, mode 1 above (> 4 std from both)


SMOOTH = ((0.4, 0.6), (-0.5, 0.3), (0.3, 0.4))  # wide modes: a smooth flow, for order tests
PARAMS = (WEIGHTS, MEANS, STDS)


def posterior_mean(x: torch.Tensor, a: torch.Tensor | float, s: torch.Tensor | float):
    """E[x0 | x_t = x] for x_t = a x0 + s eps, elementwise (float64 inside)."""
    x64 = x.double()
    a = torch.as_tensor(a, dtype=torch.float64)
    s = torch.as_tensor(s, dtype=torch.float64)
    logs, means = [], []
    for w, m, d in zip(*PARAMS):
        var = a**2 * d**2 + s**2
        logs.append(
            math.log(w) - 0.5 * torch.log(2 * math.pi * var) - (x64 - a * m) ** 2 / (2 * var)
        )
        means.append(m + a * d**2 / var * (x64 - a * m))
    resp = torch.softmax(torch.stack(logs), dim=0)
    return (resp * torch.stack(means)).sum(0).to(x.dtype)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.double().view(-1, *([1] * (x.dim() - 1)))


def cosine_abar(T: int = 1000, s: float = 0.008) -> np.ndarray:
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(T)]
    return np.cumprod(1 - np.array(betas))


def gaussian_model(prediction: str = "v", abar: np.ndarray | None = None):
    """The exact network of a discrete VP diffusion (integer steps t, eps/x0/v output)."""
    table = torch.tensor(cosine_abar() if abar is None else abar)

    def model(x, t):
        a2 = _col(table[t], x)
        a, s = a2.sqrt(), (1 - a2).sqrt()
        x0 = posterior_mean(x, a, s).double()
        eps = (x.double() - a * x0) / s
        out = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[prediction]
        return out.to(x.dtype)

    return model


def flow_model():
    """The exact velocity E[eps - x0 | x_t] of x_t = (1 - t) x0 + t eps, the network seeing 1000 t."""

    def model(x, label):
        t = _col(label / 1000.0, x)
        x0 = posterior_mean(x, 1 - t, t).double()
        eps = (x.double() - (1 - t) * x0) / t
        return (eps - x0).to(x.dtype)

    return model


def edm_model(sigma_data: float = 0.5):
    """The exact F of EDM's D = c_skip x + c_out F(c_in x, ln(sigma)/4) for x = x0 + sigma n."""

    def model(x_in, c_noise):
        sigma = _col(torch.exp(4 * c_noise.double()), x_in)
        x = x_in.double() * torch.sqrt(sigma**2 + sigma_data**2)  # undo c_in
        d = posterior_mean(x, 1.0, sigma).double()
        c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
        c_out = sigma * sigma_data / torch.sqrt(sigma**2 + sigma_data**2)
        return ((d - c_skip * x) / c_out).to(x_in.dtype)

    return model


def exact_samples(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    return np.asarray(MEANS)[k] + np.asarray(STDS)[k] * rng.standard_normal(n)


def mixture_errors(x: torch.Tensor) -> tuple[float, float]:
    """(Wasserstein-1 distance to the mixture, largest error of the mass per mode)."""
    values = x.detach().double().flatten().numpy()
    w1 = wasserstein_distance(values, exact_samples(200_000))
    low = float((values < THRESHOLD).mean())
    return w1, abs(low - WEIGHTS[0])


def reference_ode(z0: np.ndarray, tau0: float) -> np.ndarray:
    """The probability-flow ODE solved by scipy (RK45, rtol 1e-10) in rectified-flow coordinates:
    dz/dtau = E[eps - x0 | z] for z = (1 - tau) x0 + tau eps, from tau0 down to clean data."""

    def velocity(tau, z):
        zt = torch.from_numpy(z)
        x0 = posterior_mean(zt, 1 - tau, tau).numpy()
        return (z - (1 - tau) * x0) / tau - x0

    end = 1e-7
    sol = solve_ivp(velocity, (tau0, end), z0, rtol=1e-11, atol=1e-12, method="DOP853")
    z = sol.y[:, -1]
    x0 = posterior_mean(torch.from_numpy(z), 1 - end, end).numpy()
    return z - end * ((z - (1 - end) * x0) / end - x0)

"""Every sampler against the analytic optimal denoiser for Gaussian data x0 ~ N(mu, s^2 I).

For such data E[x0 | x_t] = mu + a s^2 / (a^2 s^2 + sigma^2) (x_t - a mu) exactly, so a sampler
fed this "perfect network" must return the data mean, and the standard deviation that its own
update rule predicts (a scalar recursion derived here independently); with 1000 steps that is the
data standard deviation itself. Off-by-one timesteps and variance bugs show up at once.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ndunet.diffusion import SAMPLERS, Diffusion, sample_timesteps

S = 0.3  # data standard deviation
T = 1000
SHAPES = {"1d": (1, 16), "2d": (2, 4, 4), "4d": (1, 2, 2, 2, 2)}
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: threads only spin


def cosine_abar(T: int, s: float = 0.008) -> np.ndarray:
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(T)]
    return np.cumprod(1 - np.array(betas))


def linear_abar(T: int) -> np.ndarray:
    return np.cumprod(1 - np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T))


ABAR = {"cosine": cosine_abar(T), "linear": linear_abar(T)}


def data_mean(shape):
    return torch.linspace(-0.5, 0.5, math.prod(shape)).view(shape)


def optimal_model(mu: torch.Tensor, abar: np.ndarray, prediction: str):
    table = torch.tensor(abar)

    def model(x, t):
        a2 = table[t].view(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # (B, 1, ..., 1)
        a, sig = a2.sqrt(), (1 - a2).sqrt()
        x0 = mu + a * S**2 / (a2 * S**2 + 1 - a2) * (x - a * mu)
        eps = (x - a * x0) / sig
        return {"eps": eps, "x0": x0, "v": a * eps - sig * x0}[prediction]

    return model


def expected_std(sampler: str, steps: int, abar: np.ndarray, eta: float = 0.0) -> float:
    """Std of the sampler output: the deviation d = x_t - a_t mu maps linearly step to step."""
    ts = sample_timesteps(len(abar), steps)
    ab = [float(abar[t]) for t in ts] + [1.0]
    var = 1.0  # x_T ~ N(0, I)
    k, k_prev, g_prev, h_prev = 1.0, 0.0, 0.0, 0.0  # deterministic coefficient (dpm++2m)
    for i in range(steps):
        at, ap = ab[i], ab[i + 1]
        a, sig = math.sqrt(at), math.sqrt(1 - at)
        g = a * S**2 / (at * S**2 + 1 - at)  # x0_hat - mu = g d
        if sampler == "ddpm":  # Gaussian conditioning of (x_prev, x_t) given x0
            alpha = at / ap
            v1, c12 = 1 - ap, math.sqrt(alpha) * (1 - ap)
            v2 = alpha * v1 + 1 - alpha
            coef_xt = c12 / v2
            coef_x0 = math.sqrt(ap) * (1 - math.sqrt(alpha) * coef_xt)
            var = (coef_x0 * g + coef_xt) ** 2 * var + (v1 - c12**2 / v2)
        elif sampler == "ddim":  # eps_hat = (1 - a g) d / sigma_t
            noise = eta**2 * (1 - ap) / (1 - at) * (1 - at / ap)
            lin = math.sqrt(ap) * g + math.sqrt(max(1 - ap - noise, 0)) * (1 - a * g) / sig
            var = lin**2 * var + noise
        else:  # dpm++2m
            if ap == 1.0:
                k_new = g * k
            else:
                h = 0.5 * math.log(ap / (1 - ap)) - 0.5 * math.log(at / (1 - at))
                dk = (
                    g * k
                    if i == 0
                    else (1 + 0.5 * h / h_prev) * g * k - 0.5 * h / h_prev * g_prev * k_prev
                )
                k_new = math.sqrt((1 - ap) / (1 - at)) * k - math.sqrt(ap) * math.expm1(-h) * dk
                h_prev = h
            k_prev, g_prev, k = k, g, k_new
            var = k**2
    return math.sqrt(var)


CASES = [
    ("ddpm", 1000, 0.0),
    ("ddpm", 100, 0.0),
    ("ddpm", 50, 0.0),
    ("ddpm", 20, 0.0),
    ("ddim", 1000, 0.0),
    ("ddim", 100, 0.0),
    ("ddim", 50, 0.0),
    ("ddim", 20, 0.0),
    ("ddim", 50, 1.0),
    ("dpm++2m", 100, 0.0),
    ("dpm++2m", 50, 0.0),
    ("dpm++2m", 20, 0.0),
    ("dpm++2m", 10, 0.0),
]


def _check(diffusion, shape, sampler, steps, eta, abar, batch=2048):
    mu = data_mean(shape)
    g = torch.Generator().manual_seed(1234)
    x = diffusion.sample(
        batch, shape, steps=steps, sampler=sampler, eta=eta, generator=g, clip_denoised=False
    )
    assert x.shape == (batch, *shape) and x.dtype == torch.float32
    mean = x.mean(0)
    std = float((x - mean).pow(2).mean().sqrt())
    assert float((mean - mu).abs().max()) < 0.03, "sample mean differs from the data mean"
    want = expected_std(sampler, steps, abar, eta)
    assert std == pytest.approx(want, rel=0.02)
    if steps >= 1000:
        assert std == pytest.approx(S, rel=0.02)
        assert want == pytest.approx(S, rel=0.015)
    else:  # fewer steps only ever lose a little variance
        assert 0.7 * S < want <= S * 1.001


# 1000-step runs are the slow ones: they run on the 4-D shape only (the hardest for N-D code).
GRID = [(shape, case) for shape in SHAPES for case in CASES if case[1] < 1000 or shape == "4d"]


@pytest.mark.parametrize(
    ("shape_id", "sampler", "steps", "eta"),
    [(shape, *case) for shape, case in GRID],
    ids=[f"{shape}-{s}-{n}-eta{e}" for shape, (s, n, e) in GRID],
)
def test_optimal_eps_denoiser(shape_id, sampler, steps, eta):
    shape = SHAPES[shape_id]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "eps"), prediction="eps")
    _check(d, shape, sampler, steps, eta, ABAR["cosine"])


@pytest.mark.parametrize("prediction", ["x0", "v"])
@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 100), ("ddim", 50), ("dpm++2m", 20)])
def test_optimal_x0_and_v_predictors(prediction, sampler, steps):
    shape = SHAPES["2d"]
    d = Diffusion(
        optimal_model(data_mean(shape), ABAR["cosine"], prediction), prediction=prediction
    )
    _check(d, shape, sampler, steps, 0.0, ABAR["cosine"])


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 1000), ("ddim", 50), ("dpm++2m", 20)])
def test_linear_schedule(sampler, steps):
    shape = SHAPES["1d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["linear"], "v"), schedule="linear")
    _check(d, shape, sampler, steps, 0.0, ABAR["linear"])


def _denoise(x, t):
    return 0.5 * x, 0.8 * x


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_shared_signature_hooks(name):
    ts = [9, 6, 3, 0]
    seen, posts = [], []

    def post(x, t_next):
        posts.append(t_next)
        return x

    out = SAMPLERS[name](
        _denoise,
        torch.randn(3, 1, 5),
        ts,
        torch.tensor(cosine_abar(10)),
        generator=torch.Generator().manual_seed(0),
        post_step=post,
        callback=lambda i, t, x, x0: seen.append((i, t)),
    )
    assert out.shape == (3, 1, 5)
    assert seen == [(0, 9), (1, 6), (2, 3), (3, 0)]
    assert posts == [6, 3, 0, -1]


def test_ddpm_equals_ddim_eta_one():
    # DDIM with eta=1 is the DDPM posterior (Song et al. 2021); same noise draws, same numbers.
    shape = SHAPES["2d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "eps"), prediction="eps")
    a = d.sample(
        64, shape, 30, "ddpm", generator=torch.Generator().manual_seed(5), clip_denoised=False
    )
    b = d.sample(
        64,
        shape,
        30,
        "ddim",
        eta=1.0,
        generator=torch.Generator().manual_seed(5),
        clip_denoised=False,
    )
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", 0.0), ("ddim", 0.5), ("dpm++2m", 0.0)])
def test_seeded_sampling_is_bitwise_reproducible(sampler, eta):
    shape = SHAPES["4d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "v"))

    def run(seed):
        return d.sample(
            8, shape, 20, sampler, eta=eta, generator=torch.Generator().manual_seed(seed)
        )

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_intermediates_trajectory():
    shape = SHAPES["1d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "v"))
    calls = []
    x, traj = d.sample(
        4,
        shape,
        10,
        "dpm++2m",
        generator=torch.Generator().manual_seed(0),
        return_intermediates=True,
        callback=lambda i, t, xn, x0: calls.append(t),
    )
    assert traj.shape == (11, 4, *shape)
    torch.testing.assert_close(
        traj[0], torch.randn((4, *shape), generator=torch.Generator().manual_seed(0))
    )
    assert torch.equal(traj[-1], x)
    assert calls == sample_timesteps(T, 10)


# ---- the samplers added for few-step generation -------------------------------------------------


def _std_of(sampler: str, steps: int, abar: np.ndarray) -> float:
    """Std of UniPC-2 (bh2) and SDE-DPM-Solver++(2M) outputs on N(mu, S^2) data, from the papers'
    update rules applied to the deviation d = x_t - alpha_t mu (x0_hat - mu = g d exactly)."""
    ts = sample_timesteps(len(abar), steps)
    ab = [float(abar[t]) for t in ts] + [1.0]
    lam = [0.5 * math.log(a / (1 - a)) if a < 1 else math.inf for a in ab]
    gain = [math.sqrt(a) * S**2 / (a * S**2 + 1 - a) for a in ab[:-1]]

    def phi2(z):
        return (math.expm1(z) - z) / z**2

    def phi3(z):
        return (math.expm1(z) - z - z**2 / 2) / z**3

    if sampler == "unipc":  # deviations are deterministic multiples of the initial noise
        d, m_hist, d_prev = 1.0, [], None  # m_hist: (lambda, g * d) of evaluated points
        for i in range(steps):
            m = gain[i] * d  # evaluation at the (predicted) point of level i
            if d_prev is not None:  # UniC with p = len(history) + 1 (Zhao et al. 2023, eq. 8)
                (l_s, m_s), h = m_hist[-1], lam[i] - m_hist[-1][0]
                hh, sig = -h, math.sqrt((1 - ab[i]) / (1 - ab[i - 1]))
                base = sig * d_prev - math.sqrt(ab[i]) * math.expm1(hh) * m_s
                if len(m_hist) == 1:
                    coef, extra = 0.5, 0.0
                else:
                    l_p, m_p = m_hist[-2]
                    r1 = (l_p - l_s) / h
                    b1, b2 = hh * phi2(hh) / math.expm1(hh), 2 * hh * phi3(hh) / math.expm1(hh)
                    a1 = (b1 - b2) / (1 - r1)  # solves a1 + a2 = b1, r1 a1 + a2 = b2
                    coef, extra = b1 - a1, a1 * (m_p - m_s) / r1
                d = base - math.sqrt(ab[i]) * math.expm1(hh) * (extra + coef * (m - m_s))
            m_hist = [*m_hist[-1:], (lam[i], m)]
            d_prev = d
            if ab[i + 1] == 1.0:
                d = m
            else:  # UniP-2 with bh2 is DPM-Solver++(2M)
                h = lam[i + 1] - lam[i]
                dd = m
                if len(m_hist) == 2:
                    r = (lam[i] - m_hist[0][0]) / h
                    dd = (1 + 0.5 / r) * m - 0.5 / r * m_hist[0][1]
                sig = math.sqrt((1 - ab[i + 1]) / (1 - ab[i]))
                d = sig * d - math.sqrt(ab[i + 1]) * math.expm1(-h) * dd
        return abs(d)
    # SDE-DPM-Solver++(2M), eta = 1 (Lu et al. 2022, appendix): covariance of (d, d_prev)
    cov = np.array([[1.0, 0.0], [0.0, 0.0]])
    h_prev = None
    for i in range(steps):
        if ab[i + 1] == 1.0:
            lin = np.array([gain[i], 0.0])
            return math.sqrt(lin @ cov @ lin)
        h = lam[i + 1] - lam[i]
        sig = math.sqrt((1 - ab[i + 1]) / (1 - ab[i]))
        c = math.sqrt(ab[i + 1]) * (1 - math.exp(-2 * h))
        w = 0.0 if h_prev is None else 0.5 * h / h_prev
        lin = np.array([sig * math.exp(-h) + c * (1 + w) * gain[i], -c * w * gain[i - 1]])
        noise = (1 - ab[i + 1]) * (1 - math.exp(-2 * h))
        var = lin @ cov @ lin + noise
        cross = lin @ cov[:, 0]
        cov = np.array([[var, cross], [cross, cov[0, 0]]])
        h_prev = h
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("sampler", "steps"), [("unipc", 10), ("unipc", 25), ("dpm++2m_sde", 20), ("dpm++2m_sde", 50)]
)
def test_unipc_and_sde_solver_against_their_update_rules(sampler, steps):
    shape = SHAPES["2d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "eps"), prediction="eps")
    mu = data_mean(shape)
    x = d.sample(
        4096, shape, steps, sampler, generator=torch.Generator().manual_seed(1), clip_denoised=False
    )
    assert float((x.mean(0) - mu).abs().max()) < 0.03
    std = float((x - x.mean(0)).pow(2).mean().sqrt())
    want = _std_of(sampler, steps, ABAR["cosine"])
    assert 0.7 * S < want < 1.1 * S
    assert std == pytest.approx(want, rel=0.02)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_euler_ancestral_is_ddim_with_the_same_eta(eta):
    shape = SHAPES["1d"]
    d = Diffusion(optimal_model(data_mean(shape), ABAR["cosine"], "v"))

    def run(sampler):
        g = torch.Generator().manual_seed(2)
        return d.sample(32, shape, 20, sampler, eta=eta, generator=g, clip_denoised=False)

    torch.testing.assert_close(run("euler_a"), run("ddim"), rtol=1e-4, atol=1e-5)
    if eta == 0.0:
        g = torch.Generator().manual_seed(2)
        euler = d.sample(32, shape, 20, "euler", generator=g, clip_denoised=False)
        torch.testing.assert_close(euler, run("ddim"), rtol=1e-5, atol=1e-6)


def test_sampler_eta_rules():
    d = Diffusion(optimal_model(data_mean((1, 4)), ABAR["cosine"], "v"))
    with pytest.raises(ValueError, match=r"eta=0\.5 is only used by samplers"):
        d.sample(2, (1, 4), 5, "unipc", eta=0.5)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        d.sample(2, (1, 4), 5, "euler_a", eta=-1.0)
    from ndunet.diffusion import evaluations

    assert evaluations("heun", 10) == 19 and evaluations("unipc", 10) == 10


NEW_SAMPLERS = {"euler": 50, "euler_a": 150, "heun": 25, "dpm++2m_sde": 60, "unipc": 30}


@pytest.mark.parametrize("sampler", list(NEW_SAMPLERS))
@pytest.mark.parametrize("shape_id", list(SHAPES))
def test_new_samplers_reproduce_a_gaussian_mixture(sampler, shape_id):
    import _mixture as M

    d = Diffusion(M.gaussian_model("v"))
    x = d.sample(
        1024, SHAPES[shape_id], NEW_SAMPLERS[sampler], sampler,
        generator=torch.Generator().manual_seed(0), clip_denoised=False,
    )  # fmt: skip
    w1, mass = M.mixture_errors(x)
    assert w1 < 0.02 and mass < 0.015, (w1, mass)


@pytest.mark.parametrize(("sampler", "low"), [("euler", 0.85), ("dpm++2m", 1.8), ("unipc", 1.9)])
def test_order_of_convergence_on_the_discrete_schedule(sampler, low, monkeypatch):
    import _mixture as M
    from test_flow import Net, observed_orders

    monkeypatch.setattr(M, "PARAMS", M.SMOOTH)
    d = Diffusion(Net(M.gaussian_model("v")))
    orders = observed_orders(d, sampler, steps=(8, 16, 32))
    assert all(low <= p <= low + 1.6 for p in orders), orders


def test_noise_follows_the_generator_device_then_moves():
    from ndunet.rng import randn

    a = randn((2, 3), generator=torch.Generator().manual_seed(4), device="meta")
    assert a.device.type == "meta" and a.shape == (2, 3)
    b = randn((2, 3), generator=torch.Generator().manual_seed(4), device="cpu")
    assert torch.equal(b, torch.randn(2, 3, generator=torch.Generator().manual_seed(4)))


@pytest.mark.gpu
def test_a_cpu_generator_samples_a_cuda_model_as_on_the_cpu():
    from ndunet import UNet
    from ndunet.diffusion import Diffusion

    torch.manual_seed(0)
    d = Diffusion(UNet(1, 1, 1, channels=(4, 8), num_groups=2, time_embedding=True), timesteps=20)
    cpu = d.sample(2, (1, 8), steps=3, generator=torch.Generator().manual_seed(1))
    gpu = d.cuda().sample(2, (1, 8), steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)

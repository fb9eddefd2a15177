"""Tensor conditioning: with the exact network of a conditional Gaussian, every process samples
the exact conditional distribution; imputation (condition='mask') samples the conditional
Gaussian of the unknown values given the known ones; guidance and dropout use zeroed conditions;
bad conditions fail before work with short messages."""

from __future__ import annotations

import math

import pytest
import torch

from ndunet.diffusion import Diffusion

pytestmark = pytest.mark.usefixtures("one_thread")

A, B, S = 0.8, 0.1, 0.2  # x0 | c ~ N(A c + B, S^2) elementwise


def _col(v, x):
    return v.double().view(-1, *([1] * (x.dim() - 1)))


def _eps_model(posterior, abar_table):
    """eps network of a discrete VP diffusion from ``posterior(x_t, a, s, extra) -> E[x0|...]``."""

    def model(inp, t):
        a2 = _col(abar_table[t], inp)
        a, s = a2.sqrt(), (1 - a2).sqrt()
        x = inp[:, :1].double()
        x0 = posterior(x, a, s, inp[:, 1:].double())
        return ((x - a * x0) / s).to(inp.dtype)

    return model


def _flow_model(posterior):
    def model(inp, label):
        t = _col(label / 1000, inp)
        x = inp[:, :1].double()
        x0 = posterior(x, 1 - t, t, inp[:, 1:].double())
        return ((x - (1 - t) * x0) / t - x0).to(inp.dtype)

    return model


def _edm_model(posterior, sd=0.5):
    def model(inp, c_noise):
        sigma = _col(torch.exp(4 * c_noise.double()), inp)
        x = inp[:, :1].double() * (sigma**2 + sd**2).sqrt()
        d = posterior(x, 1.0, sigma, inp[:, 1:].double())
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
        return ((d - c_skip * x) / c_out).to(inp.dtype)

    return model


def conditional_posterior(x, a, s, c):
    m = A * c + B
    return m + a * S**2 / (a**2 * S**2 + s**2) * (x - a * m)


def cosine_abar(T=1000, s=0.008):
    f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
    return torch.cumprod(1 - (1 - f[1:] / f[:-1]).clamp(max=0.999), 0)


@pytest.mark.parametrize(
    ("process", "sampler", "steps"),
    [("gaussian", "euler", 100), ("flow", "heun", 20), ("edm", "heun", 40), ("flow", "unipc", 20)],
)
@pytest.mark.parametrize("shape", [(1, 12), (1, 2, 2, 3)], ids=["1d", "3d"])
def test_samples_follow_the_exact_conditional(process, sampler, steps, shape):
    model = {
        "gaussian": lambda: _eps_model(conditional_posterior, cosine_abar()),
        "flow": lambda: _flow_model(conditional_posterior),
        "edm": lambda: _edm_model(conditional_posterior),
    }[process]()
    options = {"prediction": "eps"} if process == "gaussian" else {}
    d = Diffusion(model, process=process, condition="image", cond_channels=1, **options)
    g = torch.Generator().manual_seed(0)
    c = torch.rand((2048, *shape), generator=g) * 2 - 1
    x = d.sample(2048, shape, steps, sampler, cond=c, generator=g, clip_denoised=False)
    z = (x - (A * c + B)) / S  # standard normal exactly when x ~ N(A c + B, S^2)
    assert abs(float(z.mean())) < 0.03 and float(z.std()) == pytest.approx(1.0, abs=0.04)


def ar1_covariance(n=8, rho=0.8):
    i = torch.arange(n, dtype=torch.float64)
    return 0.3**2 * rho ** (i[:, None] - i[None, :]).abs()


def masked_posterior(cov):
    """E[x0 | x_t on the unknown part, x0 on the known part] for x0 ~ N(0, cov) (1-D, 1 channel)."""

    def posterior(x, a, s, extra):
        mask, known = extra[:, :1], extra[:, 1:]
        k = mask[0, 0].bool()
        assert bool((mask == mask[:1]).all()), "one mask for the batch in this oracle"
        u = ~k
        gain = cov[u][:, k] @ torch.linalg.inv(cov[k][:, k])
        m_c = known[:, 0][:, k] @ gain.T  # (B, n_u)
        c_c = cov[u][:, u] - gain @ cov[k][:, u]
        aa, ss = float(a.flatten()[0]), float(s.flatten()[0])
        kal = (
            aa
            * c_c
            @ torch.linalg.inv(aa**2 * c_c + ss**2 * torch.eye(int(u.sum()), dtype=cov.dtype))
        )
        out = known[:, 0].clone()
        out[:, u] = m_c + (x[:, 0][:, u] - aa * m_c) @ kal.T
        return out[:, None]

    return posterior


def test_imputation_samples_the_conditional_gaussian():
    cov = ar1_covariance()
    abar = cosine_abar()

    def model(inp, t):  # inp: [(1 - m) x_t, m, m * known]
        return _eps_model(masked_posterior(cov), abar)(inp, t)

    d = Diffusion(model, prediction="eps", condition="mask")
    mask = torch.zeros(1, 1, 8)
    mask[..., [0, 3, 7]] = 1
    known = torch.zeros(4096, 1, 8)
    known[..., [0, 3, 7]] = torch.tensor([0.4, -0.2, 0.3])
    x = d.inpaint(
        known, mask, 100, "euler", generator=torch.Generator().manual_seed(1), clip_denoised=False
    )
    assert torch.equal(x[..., [0, 3, 7]], known[..., [0, 3, 7]])
    k = mask[0, 0].bool()
    gain = cov[~k][:, k] @ torch.linalg.inv(cov[k][:, k])
    want_mean = gain @ torch.tensor([0.4, -0.2, 0.3], dtype=torch.float64)
    want_cov = cov[~k][:, ~k] - gain @ cov[k][:, ~k]
    u = x[:, 0][:, ~k].double()
    assert float((u.mean(0) - want_mean).abs().max()) < 0.01
    assert float((torch.cov(u.T) - want_cov).abs().max()) < 0.006


def test_mask_training_loss_covers_the_unknown_part_only():
    d = Diffusion(lambda inp, t: torch.zeros_like(inp[:, :1]), process="flow", condition="mask")
    x0, eps = torch.randn(3, 1, 10), torch.randn(3, 1, 10)
    mask = (torch.rand(3, 1, 10) < 0.4).float()
    loss = d(x0, mask=mask, noise=eps, t=torch.full((3,), 0.5))
    per = ((1 - mask) * (eps - x0) ** 2).sum((1, 2)) / (1 - mask).sum((1, 2))
    assert float(loss) == pytest.approx(float(per.mean()), rel=1e-6)


def test_guidance_and_dropout_zero_the_condition():
    seen = []

    def model(inp, t):
        seen.append(inp)
        return inp[:, 1:2]  # the condition channel

    d = Diffusion(model, process="flow", condition="image", cond_channels=1, cond_drop_prob=0.5)
    c = torch.randn(4, 1, 6)
    out = d.model_output(torch.randn(4, 1, 6), torch.zeros(4), guidance_scale=3.0, cond=c)
    torch.testing.assert_close(out, 3.0 * c)  # uncond (zeros) + 3 (c - 0)
    seen.clear()
    torch.manual_seed(0)
    d(torch.randn(64, 1, 6), cond=torch.ones(64, 1, 6))
    given = seen[0][:, 1]
    kept = (given == 1).all(1)
    assert bool(((given == 0).all(1) | kept).all()) and 10 < int(kept.sum()) < 54


def test_bad_conditions_fail_before_work_with_short_messages():
    calls = []
    d = Diffusion(lambda x, t: calls.append(1) or x[:, :1], condition="image", cond_channels=2)
    image = torch.randn(4, 1, 8)
    with pytest.raises(TypeError, match="y must be an integer tensor") as err:
        Diffusion(lambda x, t: x)(torch.randn(4, 1, 8), image)
    assert "tensor([" not in str(err.value) and len(str(err.value)) < 200
    assert "cond=" in str(err.value)
    with pytest.raises(ValueError, match=r"cond has shape \(4, 1, 8\); expected \(4, 2, 8\)"):
        d(torch.randn(4, 1, 8), cond=image)
    with pytest.raises(ValueError, match="cond is required"):
        d.sample(4, (1, 8))
    with pytest.raises(ValueError, match="needs a diffusion built with condition='image'"):
        Diffusion(lambda x, t: x).sample(4, (1, 8), cond=image)
    with pytest.raises(ValueError, match="cond_channels=0 is not valid"):
        Diffusion(lambda x, t: x, condition="image")
    assert not calls

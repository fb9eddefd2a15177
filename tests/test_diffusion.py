"""The Diffusion wrapper: training loss, guidance, config, model override, inpainting, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from ndunet.diffusion import Diffusion, DiffusionConfig, Schedule


class TinyNet(nn.Module):
    """A small conv denoiser with the attributes ndunet.UNet exposes."""

    def __init__(self, spatial_dims=1, channels=2, num_classes=None):
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, channels, channels
        self.num_classes = num_classes
        if spatial_dims <= 3:
            conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
            self.conv = conv(channels, channels, 3, padding=1)
        else:  # pointwise channel mixing for N >= 4
            self.conv = nn.Conv1d(channels, channels, 1)
        self.temb = nn.Embedding(1000, channels)
        self.cemb = nn.Embedding(num_classes + 1, channels) if num_classes else None
        self.drop = nn.Dropout(0.5)
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        h = self.temb(t)
        if y is not None:
            h = h + self.cemb(y)
        if self.spatial_dims <= 3:
            mixed = self.conv(x)
        else:
            mixed = self.conv(x.flatten(2)).view_as(x)  # (B, C, prod(spatial))
        return self.drop(mixed) + h.view(*h.shape, *([1] * self.spatial_dims))


class Recorder:
    """A plain callable; records what it was called with; returns a fixed function of inputs."""

    def __init__(self, fn=None):
        self.calls = []
        self.fn = fn or (lambda x, t, y: 0.1 * x)

    def __call__(self, x, t, y=None):
        self.calls.append((x.shape, t.clone(), None if y is None else y.clone()))
        return self.fn(x, t, y)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_loss_against_independent_formula(prediction, weighting):
    d = Diffusion(
        Recorder(lambda x, t, y: torch.zeros_like(x)),
        prediction=prediction,
        loss_weighting=weighting,
    )
    x0 = torch.randn(6, 1, 5, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 10, 200, 500, 900, 999])
    abar = Schedule.from_name("cosine", 1000).alphas_cumprod[t].view(-1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    tgt = {"eps": noise, "x0": x0, "v": a * noise - s * x0}[prediction]
    per = (tgt**2).mean(dim=(1, 2))
    if weighting == "min_snr":
        snr = (abar / (1 - abar)).flatten()
        # Hang et al. 2023, table 1 / eq. 9
        w = {
            "eps": snr.clamp(max=5) / snr,
            "x0": snr.clamp(max=5),
            "v": snr.clamp(max=5) / (snr + 1),
        }
        per = per * w[prediction]
    got = d(x0, t=t, noise=noise)
    assert got.dim() == 0
    torch.testing.assert_close(got.double(), per.mean(), rtol=1e-5, atol=1e-7)
    # the network saw x_t = a x0 + s noise at the requested steps
    _, seen_t, _ = d.model.calls[0]
    assert torch.equal(seen_t, t)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_loss_is_zero_for_a_perfect_oracle(prediction):
    x0 = torch.randn(4, 2, 3, 3)
    noise = torch.randn_like(x0)
    abar = Schedule.from_name("cosine", 1000).alphas_cumprod

    def oracle(x, t, y=None):
        ab = abar[t].float().view(-1, 1, 1, 1)
        return {"eps": noise, "x0": x0, "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0}[prediction]

    d = Diffusion(oracle, prediction=prediction, loss="l1")
    assert float(d(x0, noise=noise)) < 1e-5


def test_training_backward_any_spatial_dims(spatial_dims):
    net = TinyNet(spatial_dims, 2)
    d = Diffusion(net, loss="huber")
    assert "model.conv.weight" in d.state_dict()
    loss = d(torch.randn(3, 2, *[4] * spatial_dims))
    loss.backward()
    assert net.conv.weight.grad is not None and torch.isfinite(loss)
    net.train()
    x = d.sample(2, (2, *[4] * spatial_dims), steps=3)
    assert x.shape == (2, 2, *[4] * spatial_dims) and torch.isfinite(x).all()
    assert net.training, "sampling must restore the training mode"


def test_sample_uses_eval_mode_and_no_grad():
    net = TinyNet(1, 2)
    d = Diffusion(net)
    g = torch.Generator().manual_seed(0)
    a = d.sample(2, (2, 8), steps=4, generator=g)  # dropout off: reproducible
    b = d.sample(2, (2, 8), steps=4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not a.requires_grad


def test_cond_drop_replaces_labels_with_null_id():
    rec = Recorder()
    d = Diffusion(rec, cond_drop_prob=0.5, num_classes=10)
    y = torch.arange(10).repeat(40)  # (400,)
    d(torch.randn(400, 1, 4), y)
    seen = rec.calls[0][2]
    dropped = seen == 10
    assert 0.4 < dropped.float().mean() < 0.6
    assert torch.equal(seen[~dropped], y[~dropped])


def test_guidance_scale_identities():
    # cond output depends on y, null id (10) gives the unconditional one
    def fn(x, t, y):
        return 0.2 * x + 0.01 * y.view(-1, 1, 1).float()

    shape, y = (1, 6), torch.arange(8) % 10
    d = Diffusion(Recorder(fn), num_classes=10, prediction="eps")

    def run(model, scale, labels):
        return d.sample(
            8,
            shape,
            10,
            "ddim",
            guidance_scale=scale,
            y=labels,
            generator=torch.Generator().manual_seed(1),
            model=model,
        )

    cond = run(lambda x, t, y: fn(x, t, y), 1.0, y)
    uncond = run(lambda x, t, y: fn(x, t, torch.full_like(y, 10)), 1.0, y)
    torch.testing.assert_close(run(None, 1.0, y), cond)
    torch.testing.assert_close(run(None, 0.0, y), uncond)
    # scale 3 = uncond + 3 (cond - uncond) at every step, in one batched forward pass
    rec = Recorder(fn)
    guided = d.sample(
        8,
        shape,
        10,
        "ddim",
        guidance_scale=3.0,
        y=y,
        generator=torch.Generator().manual_seed(1),
        model=rec,
    )
    assert len(rec.calls) == 10 and rec.calls[0][0][0] == 16
    assert torch.equal(rec.calls[0][2], torch.cat([y, torch.full_like(y, 10)]))

    def manual(x, t, y):
        labels = y
        c, u = fn(x, t, labels), fn(x, t, torch.full_like(labels, 10))
        return u + 3.0 * (c - u)

    torch.testing.assert_close(guided, run(manual, 1.0, y))


def test_model_override_is_used():
    base, other = Recorder(), Recorder(lambda x, t, y: -x)
    d = Diffusion(base)
    d.sample(2, (1, 4), steps=5, model=other)
    assert len(base.calls) == 0 and len(other.calls) == 5


def test_plain_callable_never_gets_y_keyword():
    d = Diffusion(lambda x, t: 0 * x)  # no y parameter at all
    assert d(torch.randn(2, 1, 4)).dim() == 0
    assert d.sample(2, (1, 4), steps=2).shape == (2, 1, 4)


def test_config_round_trip_json():
    cfg = DiffusionConfig(
        timesteps=50,
        schedule="sigmoid",
        prediction="x0",
        loss="huber",
        num_classes=3,
        cond_drop_prob=0.1,
        dynamic_threshold=0.99,
    )
    back = DiffusionConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg
    d = Diffusion.from_config(TinyNet(1, 2, num_classes=3), back)
    assert d.config == cfg and d.schedule.betas.shape == (50,)
    with pytest.raises(ValueError, match="unknown DiffusionConfig option"):
        DiffusionConfig.from_dict({"timestep": 10})


def test_num_classes_defaults_to_model():
    assert Diffusion(TinyNet(1, 2, num_classes=4)).num_classes == 4
    with pytest.raises(ValueError, match="disagrees"):
        Diffusion(TinyNet(1, 2, num_classes=4), num_classes=5)


def test_inpaint_keeps_known_region_and_fills_the_rest():
    # i.i.d. Gaussian data: the unknown region must follow N(mu, s^2) regardless of the known one
    s, mu = 0.3, 0.2
    abar = Schedule.from_name("cosine", 1000).alphas_cumprod

    def model(x, t):
        a2 = abar[t].view(-1, 1, 1, 1, 1).float()
        x0 = mu + a2.sqrt() * s**2 / (a2 * s**2 + 1 - a2) * (x - a2.sqrt() * mu)
        return (x - a2.sqrt() * x0) / (1 - a2).sqrt()

    d = Diffusion(model, prediction="eps")
    known = torch.full((2000, 1, 2, 2, 2), -0.7)
    mask = torch.zeros(1, 1, 2, 2, 2)
    mask[..., 0] = 1
    for sampler in ["ddpm", "ddim"]:
        out = d.inpaint(
            known,
            mask,
            steps=50,
            sampler=sampler,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(0),
        )
        assert torch.equal(out[..., 0], known[..., 0])
        free = out[..., 1]
        assert abs(float(free.mean()) - mu) < 0.02
        assert 0.85 * s < float(free.std()) < 1.02 * s


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "eular"}, r"sampler='eular' is not valid; expected one of .*'euler'"),
        ({"steps": 1001}, r"steps must be an int in \[1, 1000\]"),
        ({"steps": 0}, "steps"),
        ({"shape": (3, 8)}, "3 channels but model.in_channels=2"),
        ({"shape": (2, 8, 8)}, "2 spatial axes but model.spatial_dims=1"),
        ({"shape": (2,)}, r"shape must be \(C, \*spatial\)"),
        ({"guidance_scale": 3.0}, "needs a conditioned model"),
        ({"batch_size": 0}, "batch_size"),
        ({"eta": 0.5, "sampler": "dpm++2m"}, "only used by samplers"),
    ],
)
def test_bad_sampling_input_fails_before_work(kwargs, match):
    net = TinyNet(1, 2)
    d = Diffusion(net)
    args = {"batch_size": 2, "shape": (2, 8), **kwargs}
    with pytest.raises(ValueError, match=match):
        d.sample(**args)
    assert net.calls == 0


def test_bad_labels_fail_before_work():
    net = TinyNet(1, 2, num_classes=3)
    d = Diffusion(net)
    with pytest.raises(ValueError, match="needs class labels"):
        d.sample(2, (2, 8), guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        d.sample(2, (2, 8), y=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"class ids in \[0, 4\)"):
        d.sample(2, (2, 8), y=torch.tensor([0, 7]))
    with pytest.raises(TypeError, match="integer tensor"):
        d(torch.randn(2, 2, 8), torch.tensor([0.0, 1.0]))
    assert net.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "cosin"}, "schedule='cosin' is not valid"),
        (
            {"prediction": "score"},
            r"prediction='score' is not valid; expected one of 'eps', 'x0', 'v'",
        ),
        ({"loss": "l3"}, r"loss='l3' is not valid"),
        ({"loss_weighting": "snr"}, "loss_weighting='snr' is not valid"),
        ({"cond_drop_prob": 0.1}, "class-conditioned"),
        ({"timesteps": 0}, "timesteps"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Diffusion(lambda x, t: x, **kwargs)


def test_bad_training_input():
    d = Diffusion(TinyNet(2, 2))
    with pytest.raises(ValueError, match=r"3 channels but model\.in_channels=2"):
        d(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="x0 must be a floating tensor"):
        d(torch.ones(2, 2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="callable"):
        Diffusion(42)


def test_schedule_is_float64_and_exposed():
    d = Diffusion(lambda x, t: x, timesteps=64, schedule="linear")
    assert d.schedule.betas.dtype == torch.float64 and d.schedule.alphas_cumprod.shape == (64,)
    assert math.isclose(float(d.schedule.alphas_cumprod[0]), 1 - float(d.schedule.betas[0]))
    d.double()  # casting the module must not touch the schedule
    assert d.schedule.alphas_cumprod.dtype == torch.float64


def test_a_unet_without_time_embedding_is_refused_at_construction():
    from ndunet import UNet

    net = UNet(2, 1, 1, channels=(4, 8), num_res_blocks=1, num_groups=2)
    with pytest.raises(ValueError, match=r"time_embedding=False.*time_embedding=True"):
        Diffusion(net)
    Diffusion(UNet(2, 1, 1, channels=(4, 8), num_res_blocks=1, num_groups=2, time_embedding=True))

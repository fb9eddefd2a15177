"""Mixed precision at inference (issue 12): ``amp`` of predict_volume, sliding_window_inference,
Diffusion.sample / inpaint, DiffusionTrainer.sample and ``ndunet predict|sample --amp``.

What is checked: "none" is bit-identical to the path without amp; "bf16" really runs the network
under autocast (a forward hook sees bf16 activations) and gives float32 results close to fp32;
blending, flip averaging and every sampler's arithmetic stay float32 (a network whose output is
exactly representable in bf16 gives the same result with and without amp); bad values are
refused, naming ``amp``, before the network runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from _runs import SEG_3D, TINY
from ndunet.app.cli import main
from ndunet.diffusion import Diffusion
from ndunet.inference import (
    AMP_MODES,
    predict_volume,
    resolve_amp,
    sliding_window_inference,
    with_autocast,
)
from ndunet.models.unet import UNet
from ndunet.training import DiffusionTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

BF16 = torch.bfloat16
SAMPLERS = ["ddim", "ddpm", "dpm++2m", "euler", "euler_a", "heun", "dpm++2m_sde", "unipc"]


def seg_unet() -> UNet:
    return UNet(3, 2, 3, channels=(4, 8), num_res_blocks=1, num_groups=2).eval()


def diffusion_unet(num_classes: int | None = None) -> UNet:
    return UNet(
        2, 1, 1, channels=(4, 8), num_res_blocks=1, num_groups=2, time_embedding=True,
        num_classes=num_classes,
    )  # fmt: skip


def record_dtypes(module: nn.Module) -> list[torch.dtype]:
    """The dtypes of the activations every Conv of ``module`` writes (a forward hook)."""
    seen: list[torch.dtype] = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    return seen


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


def bf16_exact(fn):
    """A network whose output is rounded to bf16 and handed back as bf16: with amp its float32
    cast is exact, so any difference downstream is precision lost outside the network."""
    return lambda x, *args, **kwargs: fn(x, *args, **kwargs).to(BF16)


def bf16_exact_as_fp32(fn):
    return lambda x, *args, **kwargs: fn(x, *args, **kwargs).to(BF16).float()


# ---- the helper -----------------------------------------------------------------------------
def test_resolve_amp_values():
    assert AMP_MODES == ("none", "bf16", "fp16")
    assert resolve_amp("none") is None and resolve_amp("none", "meta") is None
    assert resolve_amp("bf16", "cpu") is BF16
    f = lambda x: x  # noqa: E731
    assert with_autocast(f, "none") is f  # no wrapper at all: today's path


@pytest.mark.parametrize("bad", ["bfloat16", "BF16", "half", "", None, 16, True])
def test_bad_amp_values_are_refused_naming_amp(bad):
    with pytest.raises(ValueError, match=r"amp=.* is not valid; expected one of \['none'"):
        resolve_amp(bad)


def test_a_device_without_that_autocast_is_refused():
    with pytest.raises(ValueError, match="amp='bf16' is not valid; expected 'none' or a dtype"):
        resolve_amp("bf16", "meta")  # no autocast on the meta device
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"amp='fp16'.*on cuda"):
            resolve_amp("fp16", "cuda")


def test_fp16_on_the_cpu_runs_where_torch_supports_it():
    """torch >= 2.3's CPU autocast takes float16; older ones disable it, which is refused."""
    try:
        dtype = resolve_amp("fp16", "cpu")
    except ValueError as e:
        assert "amp='fp16'" in str(e) and "cpu" in str(e)
        return
    assert dtype is torch.float16
    net = seg_unet()
    seen = record_dtypes(net)
    x = torch.randn(2, 9, 8, 7)
    with torch.no_grad():
        want = predict_volume(net, x, (8, 8, 4))
        got = predict_volume(net, x, (8, 8, 4), amp="fp16")
    assert got.dtype == torch.float32 and torch.float16 in seen
    assert rel_err(got, want) < 1e-2


# ---- sliding windows and predict_volume -------------------------------------------------------
@pytest.mark.parametrize("tta", [(), (0, 2)], ids=["plain", "tta"])
def test_predict_volume_none_is_bit_identical_and_bf16_close(tta):
    net = seg_unet()
    x = torch.randn(2, 13, 10, 7)
    with torch.no_grad():
        old = predict_volume(net, x, (8, 8, 4), tta_axes=tta)  # the path without amp
        none = predict_volume(net, x, (8, 8, 4), tta_axes=tta, amp="none")
        seen = record_dtypes(net)
        bf16 = predict_volume(net, x, (8, 8, 4), tta_axes=tta, amp="bf16")
    assert torch.equal(none, old)
    assert seen and set(seen) == {BF16}  # every conv ran in bf16: autocast was on
    assert bf16.dtype == torch.float32 and bf16.shape == old.shape
    assert not torch.equal(bf16, old)
    assert rel_err(bf16, old) < 3e-2


def test_sliding_window_blending_stays_float32():
    x = torch.randn(2, 3, 21, 17)
    calls = []

    def net(w: Tensor) -> Tensor:
        calls.append(torch.is_autocast_enabled("cpu"))
        return torch.tanh(w[:, :2] * 3.1)

    args = (x, (8, 6), 3)
    got = sliding_window_inference(*args, bf16_exact(net), 0.6, "gaussian", amp="bf16")
    want = sliding_window_inference(*args, bf16_exact_as_fp32(net), 0.6, "gaussian")
    assert calls and all(calls[: len(calls) // 2]) and not any(calls[len(calls) // 2 :])
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_flip_averaging_stays_float32():
    x = torch.randn(2, 9, 11, 6)
    ramp = torch.linspace(0.5, 2.0, 8).view(8, 1, 1)  # not flip-symmetric; no autocast op

    def net(w: Tensor) -> Tensor:
        return torch.tanh(w * ramp)

    with torch.no_grad():
        got = predict_volume(bf16_exact(net), x, (8, 8, 4), tta_axes=(0, 1), amp="bf16")
        want = predict_volume(bf16_exact_as_fp32(net), x, (8, 8, 4), tta_axes=(0, 1))
    assert torch.equal(got, want)


def test_bad_amp_is_refused_before_the_network_runs():
    calls = []

    def net(w: Tensor) -> Tensor:
        calls.append(1)
        return w

    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"amp='bfloat16' is not valid.*did you mean 'bf16'"):
        sliding_window_inference(x, 4, 1, net, amp="bfloat16")
    with pytest.raises(ValueError, match=r"amp='fp32' is not valid"):
        predict_volume(net, x[0], (4, 4), amp="fp32")
    with pytest.raises(ValueError, match=r"amp='bf16'.*meta"):
        predict_volume(net, x[0], (4, 4), amp="bf16", device="meta")
    assert not calls


# ---- diffusion sampling -----------------------------------------------------------------------
def _sample(d: Diffusion, amp: str | None, **kw) -> Tensor:
    amp_kw = {} if amp is None else {"amp": amp}
    gen = torch.Generator().manual_seed(3)
    return d.sample(3, (1, 8, 8), generator=gen, **amp_kw, **kw)


@pytest.mark.parametrize("guided", [False, True], ids=["plain", "guided"])
def test_diffusion_sample_none_is_bit_identical_and_bf16_close(guided):
    torch.manual_seed(0)
    d = Diffusion(diffusion_unet(3 if guided else None), timesteps=50, sample_steps=4)
    kw = {"y": torch.tensor([0, 1, 2]), "guidance_scale": 2.0} if guided else {}
    old = _sample(d, None, **kw)
    assert torch.equal(_sample(d, "none", **kw), old)
    seen = record_dtypes(d.model)
    bf16 = _sample(d, "bf16", **kw)
    assert seen and set(seen) == {BF16}
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, old)
    assert rel_err(bf16, old) < 3e-2
    assert d.model.training  # eval_mode restored the flag around the wrapped network


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_keeps_x_in_float32(sampler):
    """Only the network is in bf16: an output exactly representable in bf16 samples the same
    with amp as without, and every state the sampler passes on is float32."""

    def net(x: Tensor, t: Tensor) -> Tensor:
        return torch.tanh(0.7 * x + 0.01 * t.float().view(-1, 1, 1, 1))

    dtypes = []

    def seen(i: int, t: int, x_next: Tensor, x0: Tensor) -> None:
        dtypes.extend([x_next.dtype, x0.dtype])

    d = Diffusion(bf16_exact(net), timesteps=50, sample_steps=4, sampler=sampler)
    got = _sample(d, "bf16", callback=seen)
    want = _sample(Diffusion(bf16_exact_as_fp32(net), timesteps=50, sample_steps=4), None,
                   sampler=sampler)  # fmt: skip
    assert got.dtype == torch.float32 and set(dtypes) == {torch.float32}
    assert torch.equal(got, want)


def test_inpaint_takes_amp():
    torch.manual_seed(0)
    d = Diffusion(diffusion_unet(), timesteps=50, sample_steps=3)
    known = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    seen = record_dtypes(d.model)
    out = d.inpaint(known, mask, amp="bf16", generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and set(seen) == {BF16}
    assert torch.equal(out[mask.bool()], known[mask.bool()])


def test_diffusion_refuses_a_bad_amp_before_sampling():
    calls = []

    def net(x: Tensor, t: Tensor) -> Tensor:
        calls.append(1)
        return x

    d = Diffusion(net, timesteps=10, sample_steps=2)
    with pytest.raises(ValueError, match=r"amp='half' is not valid; expected one of"):
        d.sample(1, (1, 4, 4), amp="half")
    with pytest.raises(ValueError, match=r"amp='bf16'.*meta"):
        d.sample(1, (1, 4, 4), amp="bf16", device="meta")
    assert not calls


def test_diffusion_trainer_samples_under_the_runs_amp(tmp_path):
    data = torch.rand(8, 1, 8, 8) * 2 - 1
    d = Diffusion(diffusion_unet(), timesteps=20, sample_steps=2)
    common = {"progress": False, "device": "cpu", "plot": False, "batch_size": 4}
    seen = record_dtypes(d.model)
    tr = DiffusionTrainer(d, data, out_dir=str(tmp_path / "bf16"), amp="bf16", **common)
    x = tr.sample(2, seed=0)
    assert x.dtype == torch.float32 and seen and set(seen) == {BF16}
    seen.clear()
    plain = DiffusionTrainer(d, data, out_dir=str(tmp_path / "none"), **common)
    y = plain.sample(2, seed=0)
    assert set(seen) == {torch.float32} and rel_err(x, y) < 3e-2


# ---- the CLI ----------------------------------------------------------------------------------
# the shared tiny runs, trained for one step on the CPU; the 3-D one regresses values
RUNS = {
    "seg": (SEG_3D, ["data.task=denoising"]),
    "diffusion": (TINY, []),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A regression run (float outputs) and a diffusion run, each trained for one step."""
    folder = tmp_path_factory.mktemp("amp")
    out = {}
    for name, (text, sets) in RUNS.items():
        (folder / f"{name}.toml").write_text(text)
        args = ["train", str(folder / f"{name}.toml"), "--out", str(folder / name), "--quiet"]
        sets = [*sets, "trainer.max_steps=1", "trainer.device=cpu"]
        assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
        out[name] = folder / name
    x = torch.randn(1, 10, 9, 5).numpy()
    np.save(folder / "vol.npy", x)
    out["volume"] = folder / "vol.npy"
    return out


def test_predict_amp_flag(runs, tmp_path, capsys, monkeypatch):
    base = ["predict", str(runs["seg"]), str(runs["volume"]), "--channel-axis", "0", "--quiet"]
    got = {}
    for amp in (None, "none", "bf16"):
        out = tmp_path / str(amp)
        flag = [] if amp is None else ["--amp", amp]
        assert main([*base, "--device", "cpu", "--out", str(out), *flag]) == 0
        got[amp] = np.load(out / "vol.npy")
    assert np.array_equal(got["none"], got[None])  # the default is today's float32 path
    assert got["bf16"].dtype == np.float32 and not np.array_equal(got["bf16"], got[None])
    assert rel_err(torch.from_numpy(got["bf16"]), torch.from_numpy(got[None])) < 3e-2
    capsys.readouterr()
    # a precision autocast cannot run on the device: exit 2 naming --amp, nothing written
    monkeypatch.setattr("ndunet.inference.amp._unsupported", lambda *a: "not here")
    assert main([*base, "--out", str(tmp_path / "x"), "--amp", "fp16"]) == 2
    err = capsys.readouterr().err
    assert "--amp 'fp16' is not valid" in err and "not here" in err
    assert not (tmp_path / "x").exists()


def test_sample_amp_flag(runs, tmp_path, capsys, monkeypatch):
    base = ["sample", str(runs["diffusion"]), "--n", "3", "--device", "cpu", "--seed", "1"]
    got = {}
    for amp in (None, "none", "bf16"):
        out = tmp_path / f"{amp}.npy"
        flag = [] if amp is None else ["--amp", amp]
        assert main([*base, "--out", str(out), *flag]) == 0
        got[amp] = np.load(out)
    assert np.array_equal(got["none"], got[None])
    assert got["bf16"].dtype == np.float32 and not np.array_equal(got["bf16"], got[None])
    assert rel_err(torch.from_numpy(got["bf16"]), torch.from_numpy(got[None])) < 5e-2
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # argparse: one of the choices
        main([*base, "--amp", "bfloat16"])
    assert info.value.code == 2 and "--amp" in capsys.readouterr().err
    monkeypatch.setattr("ndunet.inference.amp._unsupported", lambda *a: "not here")
    assert main([*base, "--out", str(tmp_path / "x.npy"), "--amp", "bf16"]) == 2
    assert "--amp 'bf16' is not valid" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", ["predict", "sample"])
def test_help_names_amp(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "--amp {none,bf16,fp16}" in capsys.readouterr().out


# ---- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(amp):
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        with pytest.raises(ValueError, match="amp='bf16'"):
            resolve_amp("bf16", "cuda")
        return
    dtype = resolve_amp(amp, "cuda")
    net = seg_unet().cuda()  # predict_volume runs the model where it is; windows go to `device`
    x = torch.randn(2, 30, 26, 12)
    with torch.no_grad():
        want = predict_volume(net, x, (16, 16, 8), device="cuda")
        seen = record_dtypes(net)
        got = predict_volume(net, x, (16, 16, 8), device="cuda", amp=amp)
    assert got.device.type == "cpu" and got.dtype == torch.float32
    assert dtype in seen and rel_err(got, want) < 3e-2
    d = Diffusion(diffusion_unet(3), timesteps=50, sample_steps=4).cuda()
    y = torch.tensor([0, 1, 2], device="cuda")
    old = _sample(d, "none", y=y, guidance_scale=2.0)
    seen = record_dtypes(d.model)
    new = _sample(d, amp, y=y, guidance_scale=2.0)
    assert new.device.type == "cuda" and new.dtype == torch.float32 and dtype in seen
    assert rel_err(new, old) < 3e-2

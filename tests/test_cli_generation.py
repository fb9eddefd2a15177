"""The CLI with the new generation options: a run file with [diffusion] process = "flow" and
condition = "image" over (input, target) pairs, power EMA profiles in [trainer], ``ndunet sample
--condition``, and post-hoc EMA from the command line."""

from __future__ import annotations

import numpy as np
import pytest

from ndunet import posthoc_ema
from ndunet.app.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = """
[task]
type = "diffusion"
validate = false

[data]
name = "arrays"
path = "pairs.npz"

[model]
channels = [8, 16]
num_res_blocks = 1

[diffusion]
process = "flow"
condition = "image"
sampler = "heun"
sample_steps = 2

[trainer]
max_steps = 2
batch_size = 8
ema_profiles = [0.05, 0.1]
plot = false
sample_n = 2
"""


def test_conditional_flow_run_trains_and_samples_from_the_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, (16, 1, 8)).astype(np.float32)
    inputs = np.clip(target + 0.2 * rng.standard_normal(target.shape), -1, 1).astype(np.float32)
    np.savez(tmp_path / "pairs.npz", x=inputs, y=target)
    (tmp_path / "run.toml").write_text(CONFIG)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "run.toml"), "--out", str(run), "--quiet"]) == 0
    assert (run / "ema").is_dir()
    np.save(tmp_path / "cond.npy", inputs[:3])
    out = tmp_path / "s.npy"
    args = ["sample", str(run), "--n", "3", "--out", str(out), "--sampler", "unipc"]
    assert main([*args, "--condition", str(tmp_path / "cond.npy")]) == 0
    assert np.load(out).shape == (3, 1, 8)
    assert main([*args[:-4], "--out", str(tmp_path / "t.npy")]) == 2
    assert "pass --condition FILE.npy" in capsys.readouterr().err
    ema_folder = tmp_path / "ema07"
    assert posthoc_ema.main([str(run), "--sigma-rel", "0.07", "--out", str(ema_folder)]) == 0
    out2 = tmp_path / "s2.npy"
    cond = ["--condition", str(tmp_path / "cond.npy")]
    assert main(["sample", str(ema_folder), "--n", "2", "--out", str(out2), *cond]) == 0
    assert np.load(out2).shape == (2, 1, 8)


def test_image_condition_needs_pairs(tmp_path, capsys):
    np.savez(tmp_path / "pairs.npz", x=np.zeros((8, 1, 8), np.float32))
    (tmp_path / "run.toml").write_text(CONFIG)
    code = main(["train", str(tmp_path / "run.toml"), "--out", str(tmp_path / "r"), "--quiet"])
    assert code == 2
    assert "needs (input, target) image pairs" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_sample_tunes_cudnn_on_cuda_and_gives_the_setting_back(tmp_path, device, monkeypatch):
    import torch

    from _runs import TINY
    from ndunet.diffusion import Diffusion

    (tmp_path / "tiny.toml").write_text(TINY)
    run = tmp_path / "run"
    args = ["--set", "trainer.max_steps=1", "--quiet"]
    assert main(["train", str(tmp_path / "tiny.toml"), "--out", str(run), *args]) == 0
    seen: list[bool] = []
    real = Diffusion.sample

    def recording(self, *args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Diffusion, "sample", recording)
    before = torch.backends.cudnn.benchmark
    out = str(tmp_path / "s.npy")
    assert main(["sample", str(run), "--n", "2", "--out", out, "--device", device]) == 0
    assert seen == [device == "cuda"]  # one shape for every step: cuDNN tunes once
    assert torch.backends.cudnn.benchmark is before

"""Flow matching, EDM, image conditioning and power-function EMA through DiffusionTrainer: runs
train, checkpoint, resume and rebuild from their folders (load_run), and post-hoc EMA writes a
checkpoint that loads."""

from __future__ import annotations

import pytest
import torch

from ndunet.data import NDDataset
from ndunet.diffusion import Diffusion
from ndunet.models import UNet
from ndunet.posthoc_ema import list_snapshots, reconstruct, write_reconstruction
from ndunet.training import DiffusionTrainer, load_run

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = {"progress": False, "device": "cpu", "plot": False, "batch_size": 8, "lr": 1e-3}


def unet(in_channels: int = 1) -> UNet:
    return UNet(1, in_channels, 1, channels=(8, 16), num_res_blocks=1, time_embedding=True)


@pytest.mark.parametrize("process", ["flow", "edm"])
def test_process_runs_rebuild_from_their_folder(tmp_path, process, device):
    data = torch.rand(16, 1, 8) * 2 - 1
    d = Diffusion(unet(), process=process, sampler="heun", sample_steps=3)
    tr = DiffusionTrainer(
        d, data, out_dir=str(tmp_path / "r"), max_steps=2, **{**QUIET, "device": device}
    )
    tr.fit()
    run = load_run(tmp_path / "r")
    assert run.diffusion.config == d.config and run.diffusion.config.process == process
    x = run.diffusion.sample(2, (1, 8), model=run.sampling_model)
    assert x.shape == (2, 1, 8) and torch.isfinite(x).all()


def test_image_condition_trains_on_input_target_pairs(tmp_path, device):
    g = torch.Generator().manual_seed(0)
    target = torch.rand(16, 1, 8, generator=g) * 2 - 1
    inputs = target + 0.3 * torch.randn(16, 1, 8, generator=g)
    pairs = NDDataset(inputs, target, task="denoising")
    d = Diffusion(unet(2), process="flow", condition="image", cond_channels=1, sample_steps=2)
    tr = DiffusionTrainer(
        d, pairs, out_dir=str(tmp_path / "c"), max_steps=2, **{**QUIET, "device": device}
    )
    tr.fit()
    x = tr.sample(3)
    assert x.shape == (3, 1, 8) and x.device.type == device
    run = load_run(tmp_path / "c")
    assert run.diffusion.config.condition == "image"
    y = run.diffusion.sample(3, (1, 8), cond=inputs[:3], model=run.sampling_model)
    assert y.shape == (3, 1, 8)
    with pytest.raises(ValueError, match="floating target"):
        DiffusionTrainer(
            d, NDDataset(inputs, torch.zeros(16, dtype=torch.long), task="classification"),
            out_dir=str(tmp_path / "bad"), max_steps=1, **QUIET,
        ).fit()  # fmt: skip


def test_power_ema_snapshots_resume_and_posthoc_checkpoint(tmp_path, device):
    data = torch.rand(16, 1, 8) * 2 - 1
    options = {"ema_profiles": (0.05, 0.1), "ema_snapshot_every": 1, **QUIET, "device": device}
    out = str(tmp_path / "p")
    tr = DiffusionTrainer(
        Diffusion(unet(), process="flow"), data, out_dir=out, max_steps=3, **options
    )
    tr.fit()
    assert [s.step for s in list_snapshots(out)] == [1, 2, 3]
    resumed = DiffusionTrainer(
        Diffusion(unet(), process="flow"), data, out_dir=out, max_steps=5, resume=True, **options
    )
    resumed.fit()
    assert int(resumed.power_ema.num_updates) == 5
    assert [s.step for s in list_snapshots(out)] == [1, 2, 3, 4, 5]
    state, _ = reconstruct(out, 0.1)
    for k, v in resumed.power_ema.averages[1].state_dict().items():  # on the training device
        torch.testing.assert_close(state[k], v.cpu(), rtol=1e-4, atol=1e-5)  # an exact profile
    folder = write_reconstruction(out, 0.07, tmp_path / "ema07")
    run = load_run(folder)
    want, _ = reconstruct(out, 0.07)
    for k, v in run.ema_model.state_dict().items():
        torch.testing.assert_close(v, want[k])
    assert run.diffusion.config.process == "flow"

"""The trainers, checkpoints and sampling on every device (the CPU, and CUDA where there is one),
and the CUDA glue that a CPU machine can check by stand-ins: per-rank devices, RNG states of
another machine, pinned memory."""

from __future__ import annotations

import pytest
import torch

from ndunet import Diffusion, UNet
from ndunet.training import DiffusionTrainer, SupervisedTrainer, load_checkpoint, load_run

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"progress": False, "plot": False}
# SGD, not Adam: Adam scales near-zero gradients (conv biases before GroupNorm) up to steps of
# ~lr, so float noise between devices or CUDA's unordered sums would become visible weights
SGD = {"optimizer": "sgd", "lr": 0.05, "batch_size": 8}


def _pairs(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return x, (x > 0.5).float()


def _unet() -> UNet:
    torch.manual_seed(3)
    return UNet(2, 1, 1, channels=(4, 8), num_groups=2)


def test_supervised_run_resumes_on_the_device(tmp_path, device):
    data, common = _pairs(), dict(loss="bce", metrics=["dice"], device=device, **SGD)
    whole = SupervisedTrainer(_unet(), data, data, out_dir=str(tmp_path / "a"), epochs=2,
                              **common, **QUIET)  # fmt: skip
    whole.fit()
    assert whole.device.type == device
    SupervisedTrainer(_unet(), data, data, out_dir=str(tmp_path / "b"), epochs=1, **common,
                      **QUIET).fit()  # fmt: skip
    cut = SupervisedTrainer(_unet(), data, data, out_dir=str(tmp_path / "b"), epochs=2,
                            resume=True, **common, **QUIET)  # fmt: skip
    cut.fit()
    a, b = (load_checkpoint(tmp_path / r) for r in ("a", "b"))
    # CUDA: cuDNN's weight gradients sum with atomics in varying order and cudnn.benchmark may
    # pick other algorithms in the second process-local run; SGD keeps that noise at its size
    tol = {"rtol": 1e-5, "atol": 1e-6} if device == "cpu" else {"rtol": 1e-4, "atol": 1e-5}
    for k, v in a.model_state.items():  # saved on the CPU, whatever the training device
        assert v.device.type == "cpu"
        torch.testing.assert_close(b.model_state[k], v, **tol, msg=k)
    result = cut.evaluate(data)
    assert set(result) == {"loss", "dice"} and all(isinstance(v, float) for v in result.values())


@pytest.mark.gpu
def test_a_cuda_run_resumes_on_the_cpu_and_back(tmp_path):
    data, common = _pairs(), dict(loss="bce", metrics=(), **SGD, **QUIET)
    out = str(tmp_path / "moved")
    for epochs, device in ((1, "cuda"), (2, "cpu"), (3, "cuda")):  # optimizer state and RNGs
        SupervisedTrainer(_unet(), data, out_dir=out, epochs=epochs, resume=epochs > 1,
                          device=device, **common).fit()  # fmt: skip
    SupervisedTrainer(_unet(), data, out_dir=str(tmp_path / "cpu"), epochs=3, device="cpu",
                      **common).fit()  # fmt: skip
    a, b = (load_checkpoint(tmp_path / r).model_state for r in ("moved", "cpu"))
    for k, v in b.items():
        torch.testing.assert_close(a[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_device_tensors_as_training_data(tmp_path, device):
    x, y = (t.to(device) for t in _pairs(16))  # pinned memory takes CPU tensors only
    tr = SupervisedTrainer(_unet(), (x, y), (x, y), loss="mse", metrics=["psnr"], batch_size=8,
                           out_dir=str(tmp_path / "r"), epochs=1, device=device, **QUIET)  # fmt: skip
    tr.fit()
    assert tr.step == 2


def test_diffusion_samples_on_the_device_and_reloads_on_the_cpu(tmp_path, device):
    net = UNet(2, 1, 1, channels=(4, 8), num_groups=2, time_embedding=True, num_classes=3)
    data = (torch.rand(16, 1, 8, 8) * 2 - 1, torch.arange(16) % 3)
    tr = DiffusionTrainer(
        Diffusion(net, timesteps=20, sample_steps=3), data, data, out_dir=str(tmp_path / "r"),
        epochs=1, batch_size=8, sample_every=1, sample_n=3, device=device, **QUIET,
    )  # fmt: skip
    tr.fit()
    x = tr.sample(3, seed=1)
    assert x.shape == (3, 1, 8, 8) and x.device.type == device and torch.isfinite(x).all()
    torch.testing.assert_close(tr.sample(3, seed=1), x)  # its own generator: reproducible
    assert (tmp_path / "r" / "samples" / "epoch-0001.png").is_file()
    run = load_run(tmp_path / "r")  # on the CPU
    y = torch.tensor([0, 1, 2])
    cpu = run.diffusion.sample(2, (1, 8, 8), y=y[:2], generator=torch.Generator().manual_seed(0))
    moved = run.diffusion.to(device).sample(
        2, (1, 8, 8), y=y[:2].to(device), generator=torch.Generator().manual_seed(0)
    )  # a CPU generator drives sampling on any device, with the same noise
    torch.testing.assert_close(moved.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_ddp_makes_each_ranks_gpu_current(monkeypatch):
    from ndunet.training import distributed as D

    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    D.use_device(torch.device("cuda", 1), D.DistInfo(rank=1, local_rank=1, world_size=2))
    assert chosen == [torch.device("cuda", 1)]  # NCCL's barrier and object gathers use it
    D.use_device(torch.device("cuda", 0), D.DistInfo())  # one process: left alone
    D.use_device(torch.device("cpu"), D.DistInfo(rank=0, local_rank=0, world_size=2))
    assert len(chosen) == 1


def test_rng_of_a_machine_with_more_gpus_restores(monkeypatch):
    from ndunet.rng import capture_rng, restore_rng

    state = capture_rng()
    state["cuda"] = [torch.get_rng_state(), torch.get_rng_state()]  # two GPUs saved it
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i=0: restored.append(i))
    restore_rng(state)
    assert restored == [0]  # the GPU this machine has; device 1 does not exist here


def test_tensors_on_a_device_are_not_pinned():
    from ndunet.data.loader import build_loader

    options = dict(batch_size=2, shuffle=False, drop_last=False, seed=0, num_workers=0, rank=0,
                   world_size=1, pin_memory=True, name="train_data")  # fmt: skip
    on_device = build_loader(torch.empty(4, 1, 2, device="meta"), **options)
    assert on_device.pin_memory is False
    assert build_loader(torch.zeros(4, 1, 2), **options).pin_memory is True


def test_a_cpu_generator_draws_the_same_imputation_mask_on_any_device(device):
    from ndunet.diffusion.conditioning import random_mask

    x0 = torch.zeros(3, 2, 8)
    want = random_mask(x0, torch.Generator().manual_seed(5))
    got = random_mask(x0.to(device), torch.Generator().manual_seed(5))  # CUDA x0: CPU draws
    assert got.device.type == device and torch.equal(got.cpu(), want)
    assert 0 < want.mean() < 1


def test_the_loss_takes_cpu_labels_times_and_noise_for_a_device_x0(device):
    net = UNet(1, 1, 1, channels=(4, 8), num_groups=2, time_embedding=True, num_classes=3)
    d = Diffusion(net, timesteps=10).to(device)
    x0, noise = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    y, t = torch.tensor([0, 2]), torch.tensor([1, 7])
    loss = d(x0.to(device), y, t=t, noise=noise)  # the labels, times and noise on the CPU
    want = d.cpu()(x0, y, t=t, noise=noise)
    torch.testing.assert_close(loss.cpu(), want, rtol=1e-4, atol=1e-5)

"""Runs under bad luck and hostile input: NaN batches with BatchNorm, reproducible CLI runs,
resuming with a changed config, hostile configs refused before allocation, clear errors."""

from __future__ import annotations

import json
import logging
import shutil
import time

import pytest
import torch
from torch import nn

from _runs import TINY
from ndunet import UNet
from ndunet.app.cli import main
from ndunet.config import ConfigError
from ndunet.pretrained import CheckpointError, load_checkpoint, sha256_file
from ndunet.training import SupervisedTrainer

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"progress": False, "device": "cpu", "plot": False}


class NaNAt(torch.utils.data.Dataset):
    """Regression samples; the samples listed in `bad` are NaN."""

    def __init__(self, n: int, bad: set[int]) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.bad = torch.randn(n, 3, generator=g), bad

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.full((3,), float("nan")) if i in self.bad else self.x[i]
        return x, x.sum(0, keepdim=True)


def bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def test_nan_skip_leaves_batchnorm_statistics_untouched(tmp_path):
    model = bn_model()
    data = NaNAt(32, bad={5})  # one NaN sample poisons one batch of 8
    tr = SupervisedTrainer(
        model, data, loss="mse", metrics=(), out_dir=str(tmp_path / "r"), epochs=2,
        batch_size=8, shuffle=False, nan_policy="skip", **QUIET,
    )  # fmt: skip
    tr.fit()
    assert tr.skipped_steps == 2  # the batch holding sample 5, in each epoch
    bn = model[1]
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
    assert int(bn.num_batches_tracked) == 6  # 3 good batches per epoch
    saved = load_checkpoint(tmp_path / "r").model_state
    assert torch.isfinite(saved["1.running_var"]).all()
    model.eval()
    assert torch.isfinite(model(torch.randn(4, 3))).all()


def test_an_epoch_of_skipped_steps_is_no_loss_and_never_best(tmp_path, caplog):
    data = NaNAt(16, bad=set(range(16)))
    tr = SupervisedTrainer(
        bn_model(), data, loss="mse", metrics=(), out_dir=str(tmp_path / "r"), epochs=1,
        batch_size=8, nan_policy="skip", **QUIET,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="ndunet.training"):
        summary = tr.fit()
    assert summary["loss"] != summary["loss"]  # NaN, not 0.0
    assert tr.best.value is None
    assert not (tmp_path / "r" / "checkpoints" / "best").exists()
    assert "every update was skipped" in caplog.text


def test_two_cli_runs_with_one_seed_are_identical(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    for name in ("a", "b"):  # the default device: CUDA where there is one
        out = tmp_path / name
        assert main(["train", str(tmp_path / "tiny.toml"), "--out", str(out), "--quiet"]) == 0
    a, b = (tmp_path / name / "checkpoints" / "last" for name in ("a", "b"))
    if not torch.cuda.is_available():  # the CPU kernels are deterministic: the same bytes
        assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
        return
    # CUDA's backward kernels (cuDNN weight gradients, atomics) sum in varying order, and AdamW
    # turns the noise in near-zero gradients into steps of up to ~lr (1e-3): equal up to that,
    # while another seed would move the weights by far more
    first, second = load_checkpoint(a).model_state, load_checkpoint(b).model_state
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=5e-3, msg=key)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    (folder / "tiny.toml").write_text(TINY)
    assert main(["train", str(folder / "tiny.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder


@pytest.mark.parametrize(
    "override", ["model.activation=gelu", "diffusion.prediction=eps", "model.channels=[4,16]"]
)
def test_resume_with_a_changed_model_or_diffusion_is_refused(tiny_run, override, capsys):
    run = tiny_run / "run"
    before = (run / "checkpoints" / "last" / "manifest.json").read_bytes()
    args = ["train", str(tiny_run / "tiny.toml"), "--out", str(run), "--resume", "--quiet"]
    assert main([*args, "--set", "trainer.max_steps=3", "--set", override]) == 2
    err = capsys.readouterr().err
    key = override.split("=")[0]
    assert key in err and "--allow-changes" in err and "Traceback" not in err
    assert (run / "checkpoints" / "last" / "manifest.json").read_bytes() == before


def test_resume_with_allow_changes_and_a_moved_run_are_exact(tiny_run, capsys, caplog):
    moved = tiny_run / "moved"
    shutil.copytree(tiny_run / "run", moved)
    args = ["train", str(tiny_run / "tiny.toml"), "--out", str(moved), "--resume", "--quiet"]
    with caplog.at_level(logging.WARNING, logger="ndunet.training"):
        assert main([*args, "--set", "trainer.max_steps=3"]) == 0
    assert "not an exact continuation" not in caplog.text  # out_dir differs: still exact
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ndunet.training"):
        code = main([*args, "--allow-changes", "--set", "trainer.max_steps=4",
                     "--set", "model.activation=gelu"])  # fmt: skip
    assert code == 0 and "not an exact continuation" in caplog.text


def _hostile(folder, **changes):
    """A saved UNet folder whose config.json was edited (and its manifest updated to match)."""
    UNet(2, 1, 1, channels=(4, 8), num_groups=2).save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model"]["config"].update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["config.json"] = {
        "sha256": sha256_file(folder / "config.json"),
        "size": (folder / "config.json").stat().st_size,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"channels": [12000, 12000]}, "channels"),
        ({"num_res_blocks": 1e6}, "num_res_blocks"),
        ({"num_res_blocks": 10**6}, "num_res_blocks"),
        ({"spatial_dims": 40}, "spatial_dims"),
        ({"num_classes": 10**12}, "num_classes"),
        ({"kernel_size": 99999}, "kernel_size"),
    ],
)
def test_hostile_configs_are_refused_before_any_allocation(tmp_path, changes, key):
    folder = _hostile(tmp_path / "m", **changes)
    t = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        UNet.from_pretrained(folder)
    assert time.perf_counter() - t < 5  # refused from the numbers, not after building
    assert info.value.key == key and key in str(info.value)


def test_a_tampered_weight_is_refused_on_every_load_path(tmp_path):
    folder = tmp_path / "m"
    UNet(2, 1, 1, channels=(4, 8), num_groups=2).save_pretrained(folder)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-3] ^= 0x10
    (folder / "model.safetensors").write_bytes(bytes(data))
    for load in (UNet.from_pretrained, load_checkpoint):
        with pytest.raises(CheckpointError, match="sha256"):
            load(folder)


def test_input_dtype_mismatch_names_the_dtypes():
    net = UNet(2, 1, 1, channels=(4, 8), num_groups=2)
    with pytest.raises(TypeError, match=r"float64.*float32.*autocast"):
        net(torch.randn(1, 1, 8, 8, dtype=torch.float64))


def test_batchnorm_with_a_last_batch_of_one_names_batch_size_and_drop_last(tmp_path):
    data = NaNAt(9, bad=set())  # 9 = 8 + 1
    tr = SupervisedTrainer(
        bn_model(), data, loss="mse", metrics=(), out_dir=str(tmp_path / "r"), epochs=1,
        batch_size=8, **QUIET,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"drop_last=True.*batch_size"):
        tr.fit()


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    from ndunet.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match=r"2 processes.*1 CUDA device.*device='cpu'"):
        resolve_device("auto", local_rank=1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)


def test_compiled_training_keeps_eager_checkpoints_and_resumes(tmp_path, monkeypatch):
    calls = []
    real_compile = torch.compile

    def eager_compile(module, **kw):  # the wiring, without a C++ toolchain in the test
        calls.append(kw)
        return real_compile(module, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    data = NaNAt(16, bad=set())
    common = dict(loss="mse", metrics=(), out_dir=str(tmp_path / "r"), batch_size=8, **QUIET)
    SupervisedTrainer(bn_model(), data, epochs=1, compile=True, compile_mode="reduce-overhead",
                      **common).fit()  # fmt: skip
    assert calls == [{"mode": "reduce-overhead", "dynamic": False}]  # CUDA graphs: static
    saved = load_checkpoint(tmp_path / "r").model_state
    assert set(saved) == set(bn_model().state_dict())  # the eager model's names
    tr = SupervisedTrainer(bn_model(), data, epochs=2, resume=True, **common)  # eager resume
    tr.fit()
    assert tr.step == 4


def test_a_pickle_given_as_the_run_file_is_a_config_error(tmp_path, capsys):
    import pickle

    for name in ("cfg.toml", "cfg.json", "cfg.pkl"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"model": [1, 2, 3], "x": object.__name__}))
        assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(path) in err
    assert not (tmp_path / "run").exists()


def _rewrite_json(folder, name, edit):
    """Edit a checkpoint's JSON file and update its manifest entry to match."""
    path = folder / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_a_run_saved_before_newer_options_resumes_as_it_was(tiny_run, caplog):
    old = tiny_run / "old"
    shutil.copytree(tiny_run / "run", old)

    def forget(cfg):  # as written by an ndunet that had none of these options yet
        del cfg["diffusion"]["config"]["sampler"], cfg["trainer"]["compile"]
        del cfg["model"]["config"]["attention_gates"]

    _rewrite_json(old / "checkpoints" / "last", "config.json", forget)
    args = ["train", str(tiny_run / "tiny.toml"), "--out", str(old), "--resume", "--quiet"]
    with caplog.at_level(logging.WARNING, logger="ndunet.training"):
        assert main([*args, "--set", "trainer.max_steps=3"]) == 0
    assert "not an exact continuation" not in caplog.text

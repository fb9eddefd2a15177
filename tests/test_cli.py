"""The `ndunet` command: help, error handling (exit code 2, no traceback), a seconds-long train,
sample and summary, resume, and a seconds-long demo checking every output file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ndunet.app.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


pytestmark = pytest.mark.usefixtures("one_thread")


TINY_DIFFUSION = """
[task]
type = "diffusion"
conditional = true
validate = false

[data]
name = "digits"

[model]
channels = [8, 16]
num_res_blocks = 1
num_groups = 4
attention_levels = [false, true]
attention_head_dim = 8

[diffusion]
timesteps = 100
cond_drop_prob = 0.1
sample_steps = 3

[trainer]
epochs = 1
max_steps = 2
batch_size = 32
sample_n = 10
log_every_steps = 1
"""

TINY_CLASSIFY = """
[task]
type = "supervised"
head = "pooled"

[data]
name = "digits"

[model]
channels = [8, 16]
num_res_blocks = 1
num_groups = 4

[trainer]
epochs = 1
max_steps = 2
batch_size = 64
"""


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ndunet", *args], capture_output=True, text=True, env=env
    )


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_DIFFUSION)
    return path


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.toml").write_text(TINY_DIFFUSION)
    assert main(["train", str(folder / "tiny.toml"), "--out", str(folder / "run")]) == 0
    return folder / "run"


@pytest.mark.parametrize("command", [[], ["demo"], ["train"], ["sample"], ["summary"]])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ndunet")
    expected = {
        "": ["COMMAND", "demo", "train", "sample", "summary"],
        "demo": ["--minutes", "--out", "--seed"],
        "train": ["--resume", "--set", "torchrun", "digits_diffusion"],
        "sample": ["--guidance", "--labels", "--sampler", "--steps"],
        "summary": ["--set"],
    }
    for word in expected[command[0] if command else ""]:
        assert word in out


def test_python_m_ndunet_and_config_errors_exit_2_without_traceback(tmp_path):
    proc = run_cli("--help")
    assert proc.returncode == 0 and all(c in proc.stdout for c in ("demo", "train", "sample"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nchanels = [8, 16]\n")
    proc = run_cli("train", str(bad), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "model.chanels" in proc.stderr
    assert "did you mean 'channels'" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.lr=fast", "trainer.lr"),
        ("model.channels=[8]", "model.channels"),  # UNetConfig's own check: >= 2 levels
        ("data.path=x", "data.path"),
        ("diffusion.prediction=noise", "diffusion"),
        ("data.normalize=unitt", "data.normalize"),  # the dataset's own check, located
    ],
)
def test_bad_values_exit_2_naming_the_key(tiny_config, override, key, capsys, tmp_path):
    code = main(["train", str(tiny_config), "--out", str(tmp_path / "r"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2
    assert key in err and "config error" in err
    if key.count(".") == 1:  # errors about one key name the --set item that set it
        assert f"--set {override}" in err


def test_train_sample_and_outputs(diffusion_run, tmp_path, capsys):
    run = diffusion_run
    for name in ("checkpoints", "log.csv", "samples.png", "run_config.json", "config.json"):
        assert (run / name).exists(), name
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["model"]["channels"] == [8, 16] and saved["task"]["conditional"] is True
    npy = tmp_path / "x.npy"
    assert main(["sample", str(run), "--n", "6", "--steps", "2", "--out", str(npy)]) == 0
    x = np.load(npy)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    png = tmp_path / "x.png"
    args = ["--n", "4", "--steps", "2", "--labels", "3,5", "--guidance", "2", "--out", str(png)]
    code = main(["sample", str(run / "checkpoints" / "last"), *args])
    assert code == 0 and png.stat().st_size > 0
    capsys.readouterr()
    # never overwrites; bad labels and unknown suffixes are usage errors
    assert main(["sample", str(run), "--steps", "2", "--out", str(npy)]) == 2
    assert "exists" in capsys.readouterr().err
    assert np.array_equal(np.load(npy), x)
    assert main(["sample", str(run), "--labels", "12", "--out", str(tmp_path / "y.png")]) == 2
    assert "outside 0..9" in capsys.readouterr().err
    assert main(["sample", str(run), "--out", str(tmp_path / "y.jpg")]) == 2
    assert main(["sample", str(tmp_path / "absent")]) == 2


def test_sample_is_reproducible_and_follows_the_seed(diffusion_run, tmp_path):
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        path = tmp_path / f"{name}.npy"
        args = ["sample", str(diffusion_run), "--n", "3", "--steps", "2", "--seed", seed]
        assert main([*args, "--out", str(path)]) == 0
        outs.append(np.load(path))
    if torch.cuda.is_available():  # "auto" sampled on CUDA, whose kernels need not be bitwise
        np.testing.assert_allclose(outs[1], outs[0], rtol=0, atol=1e-5)  # reproducible
    else:
        assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    # --device: the seed's noise comes from a CPU generator, so every device draws the same
    cpu = tmp_path / "cpu.npy"
    args = ["sample", str(diffusion_run), "--n", "3", "--steps", "2", "--seed", "1"]
    assert main([*args, "--device", "cpu", "--out", str(cpu)]) == 0
    np.testing.assert_allclose(np.load(cpu), outs[0], atol=1e-3)  # outs: "auto", maybe CUDA
    if torch.cuda.is_available():
        gpu = tmp_path / "gpu.npy"
        assert main([*args, "--device", "cuda", "--out", str(gpu)]) == 0
        np.testing.assert_allclose(np.load(gpu), outs[0], atol=1e-3)


def test_sample_refuses_a_bad_device_before_loading(diffusion_run, tmp_path, capsys):
    out = tmp_path / "x.npy"
    assert main(["sample", str(diffusion_run), "--device", "gpu0", "--out", str(out)]) == 2
    assert "--device 'gpu0'" in capsys.readouterr().err and not out.exists()


def test_refuses_a_non_empty_run_folder_then_resumes(diffusion_run, tiny_config, capsys):
    before = sorted(p.name for p in diffusion_run.iterdir())
    assert main(["train", str(tiny_config), "--out", str(diffusion_run)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert sorted(p.name for p in diffusion_run.iterdir()) == before
    args = ["--out", str(diffusion_run), "--resume", "--set", "trainer.max_steps=4"]
    code = main(["train", str(tiny_config), *args])
    assert code == 0
    with open(diffusion_run / "log.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]
    assert steps == [1, 2, 3, 4]  # the resumed run continued at step 3


def test_supervised_pooled_head_reports_test_metrics(tmp_path, capsys):
    cfg = tmp_path / "cls.toml"
    cfg.write_text(TINY_CLASSIFY)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    assert '"test"' in capsys.readouterr().out
    # a supervised run cannot be sampled from
    assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s.png")]) == 2


def test_summary_counts_the_models_parameters(tiny_config, capsys):
    from ndunet import UNet

    args = ["--set", "model.channels=[8,16,32]", "--set", "model.attention_levels=[0,0,1]"]
    assert main(["summary", str(tiny_config), *args]) == 2  # attention_levels must be booleans
    assert "model.attention_levels" in capsys.readouterr().err
    args[-1] = "model.attention_levels=[false,false,true]"
    assert main(["summary", str(tiny_config), *args]) == 0
    out = capsys.readouterr().out
    reference = UNet(
        2, 1, 1, channels=(8, 16, 32), num_res_blocks=1, num_groups=4, attention_head_dim=8,
        attention_levels=(False, False, True), time_embedding=True, num_classes=10,
    )  # fmt: skip
    total = sum(p.numel() for p in reference.parameters())
    assert f"{total:,}" in out


def test_demo_smoke_writes_every_output(tmp_path, capsys):
    from ndunet.app.demo import run_demo

    out = tmp_path / "demo"
    result = run_demo(out=out, minutes=0.05, width=8, sample_steps=3, progress=False)
    for name in ("samples.png", "samples.npy", "denoising.png", "loss.png", "log.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "checkpoints" / "last").is_dir()
    x = np.load(out / "samples.npy")
    assert x.shape == (100, 1, 8, 8) and x.dtype == np.float32
    assert x.min() >= -1 and x.max() <= 1
    check = json.loads((out / "eval.json").read_text())
    assert 0 <= check["label_agreement"] <= 1 and check["steps"] >= 1
    assert check["classifier_accuracy_on_real_test_digits"] > 0.9  # the judge itself works
    assert result["eval"] == check
    printed = capsys.readouterr().out
    assert str((out / "samples.png").resolve()) in printed
    # a non-empty --out is refused and left alone
    assert main(["demo", "--out", str(out), "--minutes", "0.05"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert np.array_equal(np.load(out / "samples.npy"), x)


def test_demo_default_folder_is_the_first_free_one(tmp_path, monkeypatch):
    from ndunet.app.demo import demo_out_dir

    monkeypatch.chdir(tmp_path)
    assert demo_out_dir(None) == Path("ndunet-demo")
    Path("ndunet-demo").mkdir()
    assert demo_out_dir(None) == Path("ndunet-demo")  # empty: usable
    Path("ndunet-demo/file").write_text("mine")
    Path("ndunet-demo-2").mkdir()
    Path("ndunet-demo-2/file").write_text("mine")
    assert demo_out_dir(None) == Path("ndunet-demo-3")
    with pytest.raises(FileExistsError):
        demo_out_dir("ndunet-demo")


@pytest.mark.slow
def test_train_under_torchrun(tiny_config, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "ndunet", "train", str(tiny_config), "--out", str(tmp_path / "run")]
    cmd += ["--set", "trainer.device=cpu"]  # gloo on CPUs: two ranks, whatever GPUs there are
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("finished:") == 1  # only rank 0 reports
    with open(tmp_path / "run" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f) if r["loss"]] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "last").is_dir()

"""compile=True: checkpoints in the eager model's format, resume both ways, DDP, static shapes
for the CUDA-graph modes, and validation / sampling on the eager module.

On the CPU torch.compile runs with the "eager" or "aot_eager" backend (the trainer's wiring and
AOTAutograd without inductor's C++ build); the gpu-marked test compiles for real."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ndunet.training import DiffusionTrainer, SupervisedTrainer, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import _train_script as script
from _runs import TINY

SCRIPT = Path(__file__).parent / "_train_script.py"

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"progress": False, "plot": False}
EXACT = {"noise": 0.0, "dropout": 0.0, "n": 32, "grad_accum": 1, "scheduler": "constant"}


@pytest.fixture
def compile_calls(monkeypatch) -> list[dict]:
    """torch.compile with backend="eager" (what the trainer asked is recorded); the compiled
    module counts its calls in ``calls[i]["forwards"]``."""
    calls: list[dict] = []
    real = torch.compile

    def fake(module, **options):
        record = {**options, "forwards": 0}
        calls.append(record)
        return _Counting(real(module, backend="eager"), record)

    monkeypatch.setattr(torch, "compile", fake)
    return calls


class _Counting(torch.nn.Module):
    """The compiled module, counting its forward calls."""

    def __init__(self, compiled: torch.nn.Module, record: dict) -> None:
        super().__init__()
        self.compiled, self.record = compiled, record

    def forward(self, *args, **kwargs):
        self.record["forwards"] += 1
        return self.compiled(*args, **kwargs)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder).model_state


def test_resume_eager_to_compiled_and_back_matches_an_eager_run(tmp_path, monkeypatch):
    eager = script.run(tmp_path / "eager", epochs=3, **EXACT)
    script.run(tmp_path / "mixed", epochs=1, **EXACT)  # eager ...
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, mode=None, **kw: real(m, backend="aot_eager"))
    script.run(tmp_path / "mixed", resume=True, epochs=2, compile=True, **EXACT)  # ... compiled
    monkeypatch.setattr(torch, "compile", real)
    last = script.run(tmp_path / "mixed", resume=True, epochs=3, **EXACT)  # ... eager again
    assert last.step == eager.step == 12
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "mixed")
    assert set(a) == set(b) == set(script.make_model(0.0).state_dict())
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_cuda_graph_modes_compile_static_shapes(tmp_path, compile_calls, caplog):
    x = torch.randn(20, 2, 8)
    data = (x, (x[:, 0].mean(-1) > 0).long())
    common = dict(loss="cross_entropy", metrics=(), batch_size=8, device="cpu", **QUIET)
    with caplog.at_level(logging.INFO, logger="ndunet.training"):
        SupervisedTrainer(script.make_model(0.0), data, out_dir=str(tmp_path / "a"), epochs=1,
                          compile=True, compile_mode="reduce-overhead", **common).fit()  # fmt: skip
    assert compile_calls[0]["mode"] == "reduce-overhead" and compile_calls[0]["dynamic"] is False
    assert compile_calls[0]["forwards"] == 3  # batches of 8, 8 and 4: each shape one graph
    assert "last batch of each epoch holds 4 sample(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ndunet.training"):
        SupervisedTrainer(script.make_model(0.0), data, out_dir=str(tmp_path / "b"), epochs=1,
                          compile=True, compile_mode="max-autotune", drop_last=True,
                          **common).fit()  # fmt: skip
    assert compile_calls[1]["dynamic"] is False and "last batch" not in caplog.text
    SupervisedTrainer(script.make_model(0.0), data, out_dir=str(tmp_path / "c"), epochs=1,
                      compile=True, **common).fit()  # fmt: skip
    assert "dynamic" not in compile_calls[2]  # other modes: torch's automatic dynamic shapes


def test_compiled_diffusion_validates_and_samples_with_the_eager_module(tmp_path, compile_calls):
    from ndunet import Diffusion, UNet

    net = UNet(1, 1, 1, channels=(4, 8), num_groups=2, time_embedding=True)
    data = torch.rand(16, 1, 8) * 2 - 1
    tr = DiffusionTrainer(
        Diffusion(net, timesteps=20, sample_steps=2), data, data[:8], out_dir=str(tmp_path / "r"),
        epochs=1, batch_size=8, compile=True, sample_every=1, sample_n=2, device="cpu", **QUIET,
    )  # fmt: skip
    tr.fit()
    assert compile_calls[0]["forwards"] == 2  # the training batches only
    assert (tmp_path / "r" / "samples" / "epoch-0001.png").is_file()
    assert set(_weights(tmp_path / "r")) == set(net.state_dict())  # no _orig_mod. prefix


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_compiled_ddp_matches_one_process_and_resumes_eager(tmp_path):
    # two CPU ranks (gloo) whatever GPUs there are; aot_eager: AOTAutograd and DDP's bucketed
    # graph split, without a C++ build
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += [str(SCRIPT), str(tmp_path / "ddp"), "--batch-size", "4", "--epochs", "1"]
    cmd += ["--samples", "32", "--noise", "0", "--dropout", "0", "--grad-accum", "2"]
    cmd += ["--scheduler", "constant", "--compile-backend", "aot_eager", "--then-resume-to", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = script.run(tmp_path / "single", epochs=2, batch_size=8, **{**EXACT, "grad_accum": 2})
    ddp, ref = load_checkpoint(tmp_path / "ddp"), _weights(tmp_path / "single")
    assert ddp.trainer_state()["step"] == single.step == 4
    assert set(ddp.model_state) == set(ref)  # no module. / _orig_mod. prefixes
    for k, v in ref.items():  # gradients were all-reduced through the compiled graphs
        torch.testing.assert_close(ddp.model_state[k], v, rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.gpu
def test_reduce_overhead_on_cuda_with_a_ragged_batch_resumes_eager(tmp_path, monkeypatch):
    from ndunet import Diffusion, UNet

    marks = []
    real_mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(
        torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or real_mark()
    )
    data = torch.rand(20, 1, 8, 8) * 2 - 1  # batches of 8, 8 and 4
    common = dict(batch_size=8, device="cuda", sample_n=2, **QUIET)

    def trainer(**kw):
        net = UNet(2, 1, 1, channels=(8, 16), num_groups=4, time_embedding=True)
        d = Diffusion(net, timesteps=20, sample_steps=2)
        return DiffusionTrainer(d, data, data[:8], out_dir=str(tmp_path / "r"), **common, **kw)

    tr = trainer(epochs=2, compile=True, compile_mode="reduce-overhead", sample_every=1)
    tr.fit()
    assert len(marks) == tr.step == 6
    assert all(torch.isfinite(p).all() for p in tr.network.parameters())
    assert set(_weights(tmp_path / "r")) == set(tr.network.state_dict())
    more = trainer(epochs=3, resume=True)  # eager from the compiled run's checkpoint
    more.fit()
    assert more.step == 9 and torch.isfinite(more.sample(2)).all()


TINY_RUN = TINY  # test_run_safety's two-step diffusion run file


def test_cli_compile_flag_then_an_eager_resume(tmp_path, compile_calls):
    from ndunet.app.cli import main

    (tmp_path / "tiny.toml").write_text(TINY_RUN)
    args = ["train", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "run"), "--quiet"]
    mode = ["--set", "trainer.compile_mode=reduce-overhead"]
    assert main([*args, "--compile", *mode]) == 0  # the default device: CUDA where there is one
    assert compile_calls[0]["mode"] == "reduce-overhead" and compile_calls[0]["forwards"] == 2
    saved = load_checkpoint(tmp_path / "run")
    assert saved.config["trainer"]["compile"] is True
    assert not [k for k in saved.model_state if k.startswith(("_orig_mod.", "module."))]
    assert main([*args, "--resume", "--set", "trainer.max_steps=3"]) == 0  # eager
    assert len(compile_calls) == 1 and load_checkpoint(tmp_path / "run").config["step"] == 3

"""DDP: two CPU processes under torchrun (gloo) train to the same weights as one process with
the same global batch; only rank 0 writes the run folder; resume works the same."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ndunet.training import load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import _train_script as script

SCRIPT = Path(__file__).parent / "_train_script.py"

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")


def _torchrun(out: Path, *args: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(out),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_ddp_two_processes_match_single_process_at_same_global_batch(tmp_path):
    # deterministic data and model (no noise, no dropout): only the batch split differs
    common = [
        "--noise",
        "0",
        "--dropout",
        "0",
        "--samples",
        "64",
        "--grad-accum",
        "1",
        "--save-every-steps",
        "3",
        "--ema-decay",
        "0.9",
        "--scheduler",
        "constant",
    ]
    # 1 epoch, then (same processes, a new trainer) resumed for a 2nd; constant lr, so the
    # split into two fits does not change the schedule
    _torchrun(
        tmp_path / "ddp", "--batch-size", "4", "--epochs", "1", "--then-resume-to", "2", *common
    )
    single = script.run(
        tmp_path / "single",
        noise=0.0,
        dropout=0.0,
        n=64,
        batch_size=8,
        grad_accum=1,
        epochs=2,
        save_every_steps=3,
        ema_decay=0.9,
        scheduler="constant",
    )
    a, b = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "single")
    st = a.trainer_state()
    assert st["world_size"] == 2 and st["step"] == single.step == 16 and len(st["ranks"]) == 2
    moved = 0.0
    for k, v in b.model_state.items():
        torch.testing.assert_close(a.model_state[k], v, rtol=1e-4, atol=1e-5)
        moved = max(moved, (v - script.make_model(0.0).state_dict()[k]).abs().max().item())
    assert moved > 1e-2  # training really changed the weights
    for k, v in b.ema_state.items():
        torch.testing.assert_close(a.ema_state[k], v, rtol=1e-4, atol=1e-5)
    # one writer: a single log with each step once
    rows = (tmp_path / "ddp" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows if r.split(",")[2]] == list(range(1, 17))

    # sharded validation (each rank half of val_data, sums all-reduced) equals one process's
    def val_rows(run):
        with open(tmp_path / run / "log.csv") as f:
            return {
                r["step"]: (float(r["val_loss"]), float(r["val_accuracy"]))
                for r in csv.DictReader(f)
                if r["val_loss"]
            }

    ddp_val, single_val = val_rows("ddp"), val_rows("single")
    assert list(ddp_val) == list(single_val) == ["8", "16"]
    for step, (loss, acc) in single_val.items():
        assert ddp_val[step][0] == pytest.approx(loss, rel=1e-4) and ddp_val[step][1] == acc
    # the epoch-end DDP checkpoint continues in one process (same global batch)
    more = script.run(
        tmp_path / "ddp", resume=True, noise=0.0, dropout=0.0, n=64, batch_size=8, grad_accum=1,
        epochs=3, save_every_steps=3, ema_decay=0.9, scheduler="constant",
    )  # fmt: skip
    assert more.step == 24 and load_checkpoint(tmp_path / "ddp").trainer_state()["world_size"] == 1


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL DDP needs a GPU per process")
def test_nccl_ddp_on_two_gpus_matches_one_cpu_process(tmp_path):
    # one GPU per rank (cuda:LOCAL_RANK, nccl); with fewer GPUs the CPU test above covers DDP
    common = ["--noise", "0", "--dropout", "0", "--samples", "64", "--grad-accum", "1"]
    common += ["--save-every-steps", "3", "--scheduler", "constant"]
    _torchrun(tmp_path / "nccl", "--batch-size", "4", "--epochs", "1", "--device", "cuda", *common)
    single = script.run(
        tmp_path / "single", noise=0.0, dropout=0.0, n=64, batch_size=8, grad_accum=1, epochs=1,
        save_every_steps=3, scheduler="constant",
    )  # fmt: skip
    a, b = load_checkpoint(tmp_path / "nccl"), load_checkpoint(tmp_path / "single")
    assert a.trainer_state()["world_size"] == 2 and a.trainer_state()["step"] == single.step
    for k, v in b.model_state.items():
        torch.testing.assert_close(a.model_state[k], v, rtol=1e-3, atol=1e-4)


def test_the_process_group_ndunet_creates_is_destroyed_at_exit(monkeypatch):
    """init_distributed registers the group's teardown with atexit when it creates the group
    (gloo's threads otherwise race the interpreter's exit: an abort), and only then."""
    from ndunet.training import distributed as D

    state = {"initialized": False, "destroyed": 0}
    registered = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(D.dist, "is_initialized", lambda: state["initialized"])
    monkeypatch.setattr(
        D.dist, "init_process_group", lambda backend: state.update(initialized=True)
    )
    monkeypatch.setattr(D.dist, "destroy_process_group", lambda: state.update(destroyed=state["destroyed"] + 1, initialized=False))  # fmt: skip
    monkeypatch.setattr(D.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(D.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(D.atexit, "register", registered.append)
    assert D.init_distributed("cpu") == D.DistInfo(1, 1, 2)
    assert registered == [D.destroy_at_exit]
    D.init_distributed("cpu")  # the group exists now: nothing registered twice
    assert len(registered) == 1
    registered[0]()
    assert state == {"initialized": False, "destroyed": 1}
    registered[0]()  # already gone (the user destroyed it): nothing to do
    assert state["destroyed"] == 1

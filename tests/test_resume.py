"""Exact resume: runs stopped (cleanly, or by SIGKILL at random moments) and resumed end with
weights, EMA and optimizer state bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from ndunet.training import SupervisedTrainer, load_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
import _train_script as script

SCRIPT = Path(__file__).parent / "_train_script.py"


pytestmark = pytest.mark.usefixtures("one_thread")


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.model_state.keys() == cb.model_state.keys()
    for k in ca.model_state:
        assert torch.equal(ca.model_state[k], cb.model_state[k]), k
    assert (ca.ema_state is None) == (cb.ema_state is None)
    for k in ca.ema_state or {}:
        assert torch.equal(ca.ema_state[k], cb.ema_state[k]), k
    sa, sb = ca.trainer_state(), cb.trainer_state()
    assert (sa["step"], sa["epoch"]) == (sb["step"], sb["epoch"])
    for pid, st in sa["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, sb["optimizer"]["state"][pid][name]), (pid, name)
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"]
    assert sa["best_value"] == sb["best_value"]


def _step_of(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last" / "config.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_crash_mid_epoch_and_resume_is_bit_identical(tmp_path):
    ref = script.run(tmp_path / "ref", save_every_steps=1, ema_decay=0.9)
    # the loader raises on its 244th sample: epoch 2 (0-based 1), batch 15 (0-based 14)
    with pytest.raises(RuntimeError, match="simulated crash"):
        script.run(tmp_path / "cut", save_every_steps=1, ema_decay=0.9, crash_after=244)
    state = load_checkpoint(tmp_path / "cut").trainer_state()
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (15, 1, 14)
    done = script.run(tmp_path / "cut", resume=True, save_every_steps=1, ema_decay=0.9)
    assert done.step == ref.step == 24
    _assert_same_checkpoint(
        tmp_path / "ref" / "checkpoints" / "last", tmp_path / "cut" / "checkpoints" / "last"
    )
    # the resumed log has each step once, in order
    rows = (tmp_path / "cut" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows if r.split(",")[2]] == list(range(1, 25))


def test_user_dataloader_resume_is_bit_identical(tmp_path):
    """A shuffled user DataLoader draws its order from the global RNG: resume replays it."""

    def go(out, **kw):
        loader = DataLoader(script.NoisyPairs(48, 0, 0.1), batch_size=8, shuffle=True)
        tr = SupervisedTrainer(
            script.make_model(0.2),
            loader,
            out_dir=str(out),
            epochs=2,
            lr=1e-2,
            progress=False,
            seed=3,
            device="cpu",
            **kw,
        )
        tr.fit()
        return tr

    go(tmp_path / "ref", max_steps=9)  # 6 batches per epoch: stops in epoch 2
    go(tmp_path / "cut", max_steps=3)  # mid-epoch
    go(tmp_path / "cut", resume=True, max_steps=6)  # epoch boundary
    go(tmp_path / "cut", resume=True, max_steps=9)
    _assert_same_checkpoint(
        tmp_path / "ref" / "checkpoints" / "last", tmp_path / "cut" / "checkpoints" / "last"
    )


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """A subprocess checkpointing every step is SIGKILLed three times at random moments (any
    phase: training, writing, swapping folders); each restart resumes; the end equals an
    uninterrupted run bit for bit."""
    ref_dir, run = tmp_path / "ref", tmp_path / "killed"
    script.run(ref_dir, ema_decay=0.0)
    rnd = random.Random(os.getpid())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    kills = 0
    for i, threshold in enumerate((3, 10, 17)):
        cmd = [sys.executable, str(SCRIPT), str(run)] + (["--resume"] if i else [])
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while _step_of(run) < threshold and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rnd.uniform(0.0, 0.03))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=60)
        assert proc.returncode in (-signal.SIGKILL, 0), err.decode()[-2000:]
        # whatever the moment of the kill, a complete checkpoint is there
        assert load_checkpoint(run).trainer_state()["step"] >= 1
    assert kills >= 2  # the runs really were interrupted
    script.run(run, resume=True, ema_decay=0.0)
    _assert_same_checkpoint(ref_dir / "checkpoints" / "last", run / "checkpoints" / "last")
    assert not list((run / "checkpoints").glob(".*"))  # no temp/old folders left behind


class _CrashingImages(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, crash_at: int = 0) -> None:
        self.x, self.calls, self.crash_at = x, 0, crash_at

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.crash_at:
            raise RuntimeError("simulated crash while loading")
        return self.x[i]


def test_diffusion_trainer_resume_with_ema_is_bit_identical(tmp_path):
    """Diffusion draws t and noise from the global RNG every step, and keeps an EMA."""
    from ndunet.diffusion import Diffusion
    from ndunet.training import DiffusionTrainer
    from test_trainer import TinyDenoiser

    x = torch.rand(24, 1, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def go(out, crash_at=0, resume=False):
        torch.manual_seed(0)
        diffusion = Diffusion(TinyDenoiser(1), timesteps=50)
        tr = DiffusionTrainer(
            diffusion,
            _CrashingImages(x, crash_at),
            out_dir=str(out),
            epochs=2,
            batch_size=4,
            ema_decay=0.9,
            save_every_steps=1,
            resume=resume,
            progress=False,
            device="cpu",
            seed=5,
        )
        tr.fit()

    go(tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        go(tmp_path / "cut", crash_at=35)  # epoch 2, batch 3
    go(tmp_path / "cut", resume=True)
    _assert_same_checkpoint(
        tmp_path / "ref" / "checkpoints" / "last", tmp_path / "cut" / "checkpoints" / "last"
    )


def test_mid_epoch_resume_with_another_world_size_is_refused(tmp_path):
    from ndunet.pretrained import sha256_file

    script.run(tmp_path / "r", max_steps=3, save_every_steps=0, epochs=1)  # stops mid-epoch
    last = tmp_path / "r" / "checkpoints" / "last"
    state = torch.load(last / "trainer_state.pt", weights_only=True)
    state["ranks"] = state["ranks"] * 2  # as if written by 2 DDP processes
    torch.save(state, last / "trainer_state.pt")
    manifest = json.loads((last / "manifest.json").read_text())
    p = last / "trainer_state.pt"
    manifest["files"]["trainer_state.pt"] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    (last / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"mid-epoch by 2 process\(es\); resuming it with 1"):
        script.run(tmp_path / "r", resume=True, epochs=1)


def test_random_augmentation_in_workers_resumes_exactly(tmp_path):
    """Samples drawn with random noise in DataLoader workers: a run resumed mid-epoch (even with
    another number of workers) matches the uninterrupted one."""
    kw = dict(save_every_steps=0, noise=0.1, epochs=2, n=64, scheduler="constant")  # 4 steps/epoch
    ref = script.run(tmp_path / "ref", max_steps=8, num_workers=2, **kw)
    script.run(tmp_path / "cut", max_steps=3, num_workers=1, **kw)
    cut = script.run(tmp_path / "cut", max_steps=8, num_workers=2, resume=True, **kw)
    for p, q in zip(ref.module.parameters(), cut.module.parameters()):
        assert torch.equal(p, q)
    # and the noise really is random: without it the weights differ
    plain = script.run(tmp_path / "plain", max_steps=8, num_workers=2, **{**kw, "noise": 0.0})
    assert not all(
        torch.equal(p, q) for p, q in zip(ref.module.parameters(), plain.module.parameters())
    )

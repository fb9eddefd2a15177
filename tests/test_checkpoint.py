"""Checkpoint folders: round trip, integrity checks, interrupted swaps, and unsafe pickles."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ndunet.pretrained import (
    CheckpointError,
    link_checkpoint,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
    sha256_file,
    verify_checkpoint,
)
from ndunet.rng import capture_rng, restore_rng


def _save(dest: Path, **kw) -> dict:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "step": 3,
        "rng": capture_rng(),
        "order": torch.randperm(7),
        "best": None,
    }
    save_checkpoint(
        dest,
        config={"model": None, "trainer": {"lr": 1.0}},
        model_state=model.state_dict(),
        ema_state={"module.w": torch.ones(2)},
        trainer_state=state,
        **kw,
    )
    return {"model": model.state_dict(), "state": state}


def test_round_trip_is_exact_and_weights_only(tmp_path):
    saved = _save(tmp_path / "ck")
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.config["trainer"] == {"lr": 1.0} and ck.config["format"] == "ndunet-checkpoint"
    for k, v in saved["model"].items():
        assert torch.equal(ck.model_state[k], v)
    assert torch.equal(ck.ema_state["module.w"], torch.ones(2))
    st = ck.trainer_state()
    assert torch.equal(st["order"], saved["state"]["order"]) and st["step"] == 3
    # the trainer state is plain data: torch's own weights_only loader reads it
    raw = torch.load(tmp_path / "ck" / "trainer_state.pt", weights_only=True)
    assert raw["optimizer"]["state"][0]["exp_avg"].shape == (4, 3)
    # the model file is ordinary safetensors
    assert set(load_file(str(tmp_path / "ck" / "model.safetensors"))) == set(saved["model"])
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())["files"]
    assert manifest["model.safetensors"]["sha256"] == sha256_file(
        tmp_path / "ck" / "model.safetensors"
    )


def test_rng_state_round_trip_reproduces_draws(tmp_path):
    import random

    import numpy as np

    _save(tmp_path / "ck")
    state = load_checkpoint(tmp_path / "ck").trainer_state()["rng"]
    restore_rng(state)
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert (
        torch.equal(first[0], second[0]) and (first[1] == second[1]).all() and first[2] == second[2]
    )


def test_tied_weights_are_saved(tmp_path):
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    save_checkpoint(tmp_path / "ck", config={}, model_state=model.state_dict())
    ck = load_checkpoint(tmp_path / "ck")
    assert torch.equal(ck.model_state["head.weight"], emb.weight.detach())


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "manifest"])
def test_corrupted_or_truncated_checkpoint_gives_clear_error(tmp_path, damage):
    _save(tmp_path / "ck")
    target = tmp_path / "ck" / "model.safetensors"
    if damage == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
        match = "sha256"
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
        match = "truncated"
    elif damage == "delete":
        target.unlink()
        match = "missing"
    else:
        (tmp_path / "ck" / "manifest.json").unlink()
        match = "manifest"
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(tmp_path / "ck")


def test_truncated_trainer_state_without_verification_gives_clear_error(tmp_path):
    _save(tmp_path / "ck")
    p = tmp_path / "ck" / "trainer_state.pt"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_trainer_state(p)


class _Payload:
    """Unpickling this calls Path.touch: a stand-in for arbitrary code execution."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    _save(tmp_path / "ck")
    sentinel = tmp_path / "pwned"
    evil = tmp_path / "ck" / "trainer_state.pt"
    torch.save({"step": 1, "payload": _Payload(sentinel)}, evil)
    # make the manifest agree, so the integrity check passes and the loader itself must refuse
    manifest_path = tmp_path / "ck" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["trainer_state.pt"] = {
        "sha256": sha256_file(evil),
        "size": evil.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest))
    ck = load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="refusing"):
        ck.trainer_state()
    assert not sentinel.exists()
    # a control: the unsafe loader would have run it
    torch.load(evil, weights_only=False)
    assert sentinel.exists()


def test_kill_between_the_two_renames_is_read_in_place_and_recovered_by_the_writer(tmp_path):
    first = _save(tmp_path / "last")
    # state after `last -> .last.old` and before `.last.tmp -> last`: a complete old copy and a
    # half-written temp folder
    os.rename(tmp_path / "last", tmp_path / ".last.old")
    (tmp_path / ".last.tmp").mkdir()
    (tmp_path / ".last.tmp" / "model.safetensors").write_bytes(b"partial")
    ck = load_checkpoint(tmp_path / "last")  # a reader reads .last.old in place, touching nothing
    assert torch.equal(ck.model_state["0.weight"], first["model"]["0.weight"])
    assert ck.path == tmp_path / ".last.old" and verify_checkpoint(tmp_path / "last") == ck.path
    assert sorted(os.listdir(tmp_path)) == [".last.old", ".last.tmp"]
    assert ck.trainer_state()["step"] == 3
    second = _save(tmp_path / "last")  # the writer finishes the swap, then saves
    assert sorted(os.listdir(tmp_path)) == ["last"]
    ck = load_checkpoint(tmp_path / "last")
    assert torch.equal(ck.model_state["0.weight"], second["model"]["0.weight"])


def test_overwrite_replaces_whole_folder_and_copies_are_independent(tmp_path):
    _save(tmp_path / "last")
    second = _save(tmp_path / "last")
    ck = load_checkpoint(tmp_path / "last")
    assert torch.equal(ck.model_state["0.weight"], second["model"]["0.weight"])
    link_checkpoint(tmp_path / "last", tmp_path / "best")
    verify_checkpoint(tmp_path / "best")
    assert sorted(os.listdir(tmp_path)) == ["best", "last"]
    for name in os.listdir(tmp_path / "last"):  # copies, not hard links to one inode
        a, b = tmp_path / "last" / name, tmp_path / "best" / name
        assert a.stat().st_ino != b.stat().st_ino and a.read_bytes() == b.read_bytes()
    _save(tmp_path / "last")
    assert torch.equal(
        load_checkpoint(tmp_path / "best").model_state["0.weight"], second["model"]["0.weight"]
    )


def test_missing_folder_and_foreign_config_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    _save(tmp_path / "ck")
    cfg = tmp_path / "ck" / "config.json"
    cfg.write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="format"):
        load_checkpoint(tmp_path / "ck", verify=False)

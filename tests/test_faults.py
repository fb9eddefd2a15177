"""Faults around run folders: readers beside a writer, two writers, folders ndunet did not make,
symbolic links, silent corruption, full disks and files of the wrong kind."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ndunet._checkpoint_read as reader
from ndunet.files import (
    RunLock,
    RunLockedError,
    UnsafePathError,
    remove_tree,
    safe_open_append,
    safe_write_bytes,
    safe_write_text,
    safe_write_with,
)
from ndunet.pretrained import (
    CheckpointError,
    link_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    sha256_file,
    verify_checkpoint,
)
from ndunet.training.logging import RunLog
from ndunet.training.run_dir import (
    RUN_MARKER,
    check_run_dir,
    claim_run_dir,
    mark_run_dir,
    read_run_marker,
)

FILES_PY = Path(reader.__file__).with_name("files.py")


def _save(dest: Path, value: float = 1.0, **kw) -> Path:
    return save_checkpoint(
        dest,
        config={"step": int(value)},
        model_state={"w": torch.full((3,), value)},
        ema_state={"w": torch.full((3,), -value)},
        trainer_state={"step": int(value), "order": torch.arange(4)},
        **kw,
    )


def _run(tmp_path: Path, epochs: int = 0) -> Path:
    """A marked run folder with checkpoints/last (step 9) and epoch-0001..epoch-<epochs>."""
    run = tmp_path / "run"
    mark_run_dir(run)
    (run / "config.json").write_text("{}")
    for e in range(1, epochs + 1):
        _save(run / "checkpoints" / f"epoch-{e:04d}", float(e))
    _save(run / "checkpoints" / "last", 9.0)
    return run


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "link" if p.is_symlink() else p.read_bytes().hex()
        for p in sorted(root.rglob("*"))
        if p.is_file() or p.is_symlink()
    }


# ----- 1. readers never modify what they read ----------------------------------------------


def test_reader_leaves_a_writers_temp_and_old_folders_alone(tmp_path):
    run = _run(tmp_path)
    ckpt = run / "checkpoints"
    (ckpt / ".last.tmp").mkdir()  # a writer is in the middle of a save
    (ckpt / ".last.tmp" / "model.safetensors").write_bytes(b"half")
    before = _tree(run)
    assert load_checkpoint(run).config["step"] == 9
    assert verify_checkpoint(ckpt / "last") == ckpt / "last"
    assert check_run_dir(run, resume=True) == ckpt / "last"
    assert _tree(run) == before
    # the writer now swapped `last` away and has not renamed its temp folder in yet
    os.rename(ckpt / "last", ckpt / ".last.old")
    before = _tree(run)
    ck = load_checkpoint(run)
    assert ck.path == ckpt / ".last.old" and ck.model_state["w"][0] == 9.0
    assert ck.trainer_state()["step"] == 9
    assert check_run_dir(run, resume=True) == ckpt / ".last.old"
    assert _tree(run) == before


def test_reading_never_writes_even_on_a_read_only_disk(tmp_path, monkeypatch):
    run = _run(tmp_path, epochs=1)
    (run / "checkpoints" / ".last.tmp").mkdir()  # stale: a writer was killed mid-save
    os.rename(run / "checkpoints" / "last", run / "checkpoints" / ".last.old")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    for name in ("rename", "replace", "unlink", "rmdir", "mkdir", "link", "remove"):
        monkeypatch.setattr(os, name, read_only)
    monkeypatch.setattr(shutil, "rmtree", read_only)
    assert load_checkpoint(run).trainer_state()["step"] == 9
    assert load_checkpoint(run / "checkpoints" / "epoch-0001", verify=False).config["step"] == 1
    assert check_run_dir(run, resume=True).name == ".last.old"


def test_reader_gets_one_whole_checkpoint_when_a_save_swaps_it_mid_read(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    _save(ckpt / "last", 1.0)
    opened = []
    real_open_file = reader._open_file

    def open_then_save(folder, dfd, name):
        opened.append(name)
        if len(opened) == 2:  # the manifest and one file read: a writer swaps in a new last
            _save(ckpt / "last", 2.0)
        if len(opened) == 4:  # again: the folder this reader holds is now deleted
            _save(ckpt / "last", 3.0)
        return real_open_file(folder, dfd, name)

    monkeypatch.setattr(reader, "_open_file", open_then_save)
    ck = load_checkpoint(ckpt / "last")
    assert len(opened) == 9  # two reads lost their folder and started over, the third is whole
    assert ck.config["step"] == 3 and ck.model_state["w"][0] == 3 and ck.ema_state["w"][0] == -3
    assert ck.trainer_state()["step"] == 3


# ----- 2. one writer per run folder ---------------------------------------------------------


def test_a_second_lock_on_a_run_folder_is_refused_naming_the_holder(tmp_path):
    first = RunLock(tmp_path / "run").acquire()
    second = RunLock(tmp_path / "run")  # another open of the lock file: conflicts in-process too
    with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on host .+, since"):
        second.acquire()
    assert not second.held
    first.release()
    with second:
        assert second.held
        with pytest.raises(RunLockedError, match="in use"):
            RunLock(tmp_path / "run").acquire()
    with RunLock(tmp_path / "run"):  # released on exit
        pass


def test_the_lock_dies_with_its_process(tmp_path):
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('files', {str(FILES_PY)!r})\n"
        "files = importlib.util.module_from_spec(spec); spec.loader.exec_module(files)\n"
        "lock = files.RunLock(sys.argv[1]).acquire(); print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {proc.pid} "):
            RunLock(tmp_path / "run").acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with RunLock(tmp_path / "run") as lock:  # no stale lock after a kill
        assert lock.held


# ----- 3. only a folder ndunet made is resumed ----------------------------------------------


def test_resume_never_takes_over_a_folder_without_the_run_marker(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own config"}')
    (mine / "log.csv").write_text("my,own,data\n")
    before = _tree(mine)
    with pytest.raises(FileExistsError, match=RUN_MARKER):
        check_run_dir(mine, resume=True)
    assert _tree(mine) == before
    mark_run_dir(mine)  # a run killed before its first checkpoint starts over
    assert check_run_dir(mine, resume=True) is None


def test_run_marker_is_json_idempotent_and_checked(tmp_path):
    run = tmp_path / "run"
    marker = mark_run_dir(run)
    info = json.loads(marker.read_text())
    assert info["format"] == "ndunet-run" and info["version"] == 1 and info["created"]
    assert mark_run_dir(run) == marker and json.loads(marker.read_text()) == info
    RunLock(run).acquire().release()
    assert check_run_dir(run, resume=False) is None  # marker and lock alone: still empty
    marker.write_bytes(b"\x80\x04not json")
    with pytest.raises(FileExistsError, match="not a readable ndunet run marker"):
        read_run_marker(run)


def test_claim_locks_and_marks_and_leaves_refused_folders_untouched(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "checkpoints").mkdir()
    (mine / "checkpoints" / "last").mkdir()  # another tool's folder layout
    for resume in (False, True):
        with pytest.raises((FileExistsError, CheckpointError)):
            claim_run_dir(mine, resume)
    assert sorted(p.name for p in mine.rglob("*")) == ["checkpoints", "config.json", "last"]
    lock, resume_from = claim_run_dir(tmp_path / "new", resume=False)
    assert resume_from is None and read_run_marker(tmp_path / "new") is not None
    with pytest.raises(RunLockedError):
        claim_run_dir(tmp_path / "new", resume=True)
    lock.release()


def test_a_run_from_before_markers_is_resumed_only_when_its_checkpoint_verifies(tmp_path):
    run = _run(tmp_path)
    (run / RUN_MARKER).unlink()
    lock, resume_from = claim_run_dir(run, resume=True)
    lock.release()
    assert resume_from == run / "checkpoints" / "last" and read_run_marker(run) is not None
    (run / RUN_MARKER).unlink()
    _flip(run / "checkpoints" / "last" / "model.safetensors")
    with pytest.raises(CheckpointError, match="cannot resume"):
        check_run_dir(run, resume=True)


# ----- 4. symbolic links: never written through, never deleted -----------------------------


@pytest.fixture
def outside(tmp_path):
    out = tmp_path / "outside"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    return out


def test_safe_writes_refuse_links_and_paths_outside_the_root(tmp_path, outside):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").symlink_to(outside / "precious.txt")
    (run / "samples").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="is a symbolic link"):
        safe_write_text(run / "run_config.json", "{}", root=run)
    with pytest.raises(UnsafePathError, match="lies under a symbolic link"):
        safe_write_bytes(run / "samples" / "epoch-0001.png", b"png", root=run)
    with pytest.raises(UnsafePathError, match="not inside"):
        safe_write_text(run / ".." / "outside" / "precious.txt", "x", root=run)
    with pytest.raises(UnsafePathError):
        safe_open_append(run / "run_config.json", root=run)
    with pytest.raises(UnsafePathError):
        remove_tree(run / "samples", root=run)
    assert _tree(outside) == {"precious.txt": b"keep me".hex()}
    assert not [p for p in run.iterdir() if ".tmp" in p.name]


def test_write_new_file_refuses_existing_files_and_dangling_links(tmp_path):
    target = tmp_path / "samples.png"
    safe_write_with(target, lambda p: p.write_bytes(b"png"), overwrite=False)
    assert target.read_bytes() == b"png"
    with pytest.raises(FileExistsError, match="exists"):
        safe_write_with(target, lambda p: p.write_bytes(b"new"), overwrite=False)
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FileExistsError, match="symbolic link"):
        safe_write_bytes(dangling, b"png", overwrite=False)
    assert not (tmp_path / "nowhere.png").exists() and target.read_bytes() == b"png"


def test_run_log_never_appends_through_a_link(tmp_path, outside):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").symlink_to(outside / "precious.txt")
    with pytest.raises(UnsafePathError):
        RunLog(run, [], progress=False, tensorboard=False)
    (run / "train.log").unlink()
    (run / "log.csv").symlink_to(outside / "precious.txt")
    log = RunLog(run, [], progress=False, tensorboard=False)
    try:
        with pytest.raises(UnsafePathError):
            log.open_csv(None)
        with pytest.raises(UnsafePathError):
            log.open_csv(5)
    finally:
        log.close()
    assert _tree(outside) == {"precious.txt": b"keep me".hex()}


def test_checkpoint_links_are_never_followed_or_deleted(tmp_path, outside):
    run = _run(tmp_path, epochs=3)
    ckpt = run / "checkpoints"
    shutil.rmtree(ckpt / "epoch-0001")
    (ckpt / "epoch-0001").symlink_to(outside)
    (ckpt / ".last.tmp").symlink_to(outside)  # ndunet's scratch name: the link itself goes
    with pytest.raises(UnsafePathError, match="epoch-0001"):
        check_run_dir(run, resume=True)
    _save(ckpt / "last", 10.0)
    assert not (ckpt / ".last.tmp").is_symlink() and load_checkpoint(run).config["step"] == 10
    assert prune_checkpoints(ckpt, keep_last=1, root=run) == [ckpt / "epoch-0002"]
    assert (ckpt / "epoch-0001").is_symlink() and (ckpt / "epoch-0003").is_dir()
    (ckpt / "best").symlink_to(outside)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        link_checkpoint(ckpt / "last", ckpt / "best", root=run)
    assert _tree(outside) == {"precious.txt": b"keep me".hex()}


# ----- 5. corruption: independent copies, verified loads, helpful advice -------------------


def test_last_best_and_epoch_are_independent_copies(tmp_path):
    ckpt = tmp_path / "checkpoints"
    _save(ckpt / "epoch-0001")
    link_checkpoint(ckpt / "epoch-0001", ckpt / "best")
    link_checkpoint(ckpt / "epoch-0001", ckpt / "last")
    _flip(ckpt / "last" / "model.safetensors")  # one bad block on disk
    with pytest.raises(CheckpointError, match="sha256"):
        verify_checkpoint(ckpt / "last")
    verify_checkpoint(ckpt / "best")
    verify_checkpoint(ckpt / "epoch-0001")
    # a damaged source is never copied
    before = _tree(ckpt / "best")
    with pytest.raises(CheckpointError, match="fails its sha256 check"):
        link_checkpoint(ckpt / "last", ckpt / "best")
    assert _tree(ckpt / "best") == before and sorted(p.name for p in ckpt.iterdir()) == [
        "best",
        "epoch-0001",
        "last",
    ]


def test_resume_error_names_an_epoch_checkpoint_that_verifies(tmp_path):
    run = _run(tmp_path, epochs=3)
    ckpt = run / "checkpoints"
    _flip(ckpt / "last" / "trainer_state.pt")
    _flip(ckpt / "epoch-0003" / "model.safetensors")
    with pytest.raises(CheckpointError, match="epoch-0002' verifies") as info:
        check_run_dir(run, resume=True)
    assert "cp -r" in str(info.value)
    for e in (1, 2):
        _flip(ckpt / f"epoch-{e:04d}" / "config.json")
    with pytest.raises(CheckpointError, match="no epoch-NNNN checkpoint"):
        check_run_dir(run, resume=True)


def test_trainer_state_replaced_after_loading_is_refused(tmp_path):
    _save(tmp_path / "last", 1.0)
    ck = load_checkpoint(tmp_path / "last")
    _save(tmp_path / "last", 2.0)  # a newer save replaced the folder
    with pytest.raises(CheckpointError, match="does not match the manifest"):
        ck.trainer_state()


# ----- 6. clear errors ----------------------------------------------------------------------


def test_disk_full_during_torch_save_names_the_cause_and_keeps_the_previous(tmp_path, monkeypatch):
    _save(tmp_path / "last", 1.0)

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="no space left on device") as info:
        _save(tmp_path / "last", 2.0)
    assert "last" in str(info.value)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last"]
    assert load_checkpoint(tmp_path / "last").config["step"] == 1


def test_disk_full_in_a_write_is_reported_with_the_path(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if len(data) > 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match=r"no space left on device .*'.*last") as info:
        _save(tmp_path / "last", 1.0)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError, match=r"no space left on device .*big\.bin"):
        safe_write_bytes(tmp_path / "big.bin", bytes(1000))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "damage",
    [b"", b"\x80\x04\x95pickle", (2**62).to_bytes(8, "little") + b"{}", b"\x10" + bytes(7) + b"{"],
)
def test_damaged_safetensors_gives_a_checkpoint_error_naming_the_file(tmp_path, damage):
    _save(tmp_path / "ck")
    (tmp_path / "ck" / "ema.safetensors").write_bytes(damage)
    with pytest.raises(CheckpointError, match=r"ema\.safetensors"):
        load_checkpoint(tmp_path / "ck", verify=False)


@pytest.mark.parametrize("name", ["config.json", "manifest.json"])
def test_a_pickle_where_json_belongs_gives_a_checkpoint_error(tmp_path, name):
    _save(tmp_path / "ck")
    torch.save({"not": "json"}, tmp_path / "ck" / name)
    if name == "config.json":  # the manifest agrees: the parser itself must refuse
        manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
        p = tmp_path / "ck" / name
        manifest["files"][name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        (tmp_path / "ck" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"{name}.*not a JSON file"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("entry", [5, {"sha256": "ab"}, {"sha256": 1, "size": 2}])
def test_a_malformed_manifest_gives_a_checkpoint_error(tmp_path, entry):
    _save(tmp_path / "ck")
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = entry
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="manifest"):
        load_checkpoint(tmp_path / "ck")

"""The run folder: never deleted, never silently reused, and never a folder ndunet did not make.

A trainer marks its run folder first thing (`mark_run_dir`: `.ndunet-run`, a small JSON file).
Resuming, or restarting a run killed before its first checkpoint, requires that marker, so a
folder that merely holds files with familiar names (config.json, log.csv) is never taken over.
A folder without the marker whose `checkpoints/last` verifies (a run written before markers
existed) may still be resumed; the trainer marks it then.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ndunet.files import LOCK_NAME, RunLock, UnsafePathError, is_temp_name, safe_write_text
from ndunet.pretrained import (
    CheckpointError,
    find_verified_epoch,
    read_manifest,
    verify_checkpoint,
)
from ndunet.training.logging import logger

RUN_MARKER = ".ndunet-run"
MARKER_FORMAT = "ndunet-run"
MARKER_VERSION = 1

# What fit() creates before the first checkpoint exists (a marked run may start over on these).
STARTUP_FILES = {
    "config.json",
    "log.csv",
    "train.log",
    "tensorboard",
    "checkpoints",
    "loss.png",
    "samples",
}
# Names ndunet writes into a run folder (and its checkpoints/): none may be a symbolic link.
_WRITTEN = STARTUP_FILES | {"run_config.json", "test_metrics.json", "samples.png", RUN_MARKER}
_CHECKPOINT_NAMES = ("last", "best")


def read_run_marker(out_dir: str | Path) -> dict[str, Any] | None:
    """The run marker of `out_dir` (None when there is none). Raises FileExistsError when
    `.ndunet-run` is there but is not an ndunet run marker (or is a link). Read-only."""
    marker = Path(out_dir) / RUN_MARKER
    if marker.is_symlink():
        raise FileExistsError(f"{str(marker)!r} is a symbolic link, not an ndunet run marker")
    try:
        info = json.loads(marker.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{str(marker)!r} is not a readable ndunet run marker: {e}") from e
    if not isinstance(info, dict) or info.get("format") != MARKER_FORMAT:
        raise FileExistsError(f"{str(marker)!r} is not an ndunet run marker: {info!r:.200}")
    version = info.get("version")
    if not isinstance(version, int) or version > MARKER_VERSION:
        raise FileExistsError(
            f"{str(marker)!r} has version {version!r}; this ndunet reads run markers up to "
            f"version {MARKER_VERSION} (a newer ndunet made this run)"
        )
    return info


def mark_run_dir(out_dir: str | Path) -> Path:
    """Create `out_dir` if needed and write its run marker, before any other file of the run.
    Idempotent: an existing valid marker is kept. Returns the marker's path."""
    from ndunet import __version__

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / RUN_MARKER
    if read_run_marker(out_dir) is None:
        info = {
            "format": MARKER_FORMAT,
            "version": MARKER_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "ndunet_version": __version__,
        }
        try:
            safe_write_text(marker, json.dumps(info) + "\n", root=out_dir, overwrite=False)
        except FileExistsError:
            read_run_marker(out_dir)  # written meanwhile: it must be a valid one
    return marker


def _has_checkpoint(ckpt_dir: Path) -> bool:
    return (ckpt_dir / "last").exists() or (ckpt_dir / ".last.old").exists()


def _refuse_links(out_dir: Path) -> None:
    """Raise UnsafePathError if a name ndunet writes in the run folder is a symbolic link."""
    ckpt = out_dir / "checkpoints"
    names = [out_dir / n for n in sorted(_WRITTEN)] + [ckpt / n for n in _CHECKPOINT_NAMES]
    if ckpt.is_dir() and not ckpt.is_symlink():
        names += sorted(ckpt.glob("epoch-*"))
    links = [str(p.relative_to(out_dir)) for p in names if p.is_symlink()]
    if links:
        raise UnsafePathError(
            f"out_dir={str(out_dir)!r} holds symbolic links where ndunet writes: {links}. "
            "ndunet never writes or deletes through a link: replace each by what it points to "
            "(a real file or folder), or choose a new out_dir."
        )


def check_run_dir(out_dir: Path, resume: bool, *, verify: bool = True) -> Path | None:
    """Decide how a run may use `out_dir` (read-only: every rank may call it). Returns the
    checkpoint to resume from, or None for a fresh run: an empty folder (its lock, marker and
    temp files aside), or with resume=True a marked run that never reached a checkpoint (it
    starts over). verify=False skips hashing the checkpoint (a cheap first look).
    Raises FileExistsError for a folder that cannot be resumed (not empty without resume; no
    marker and no checkpoint; files other than start-up files and no checkpoint),
    UnsafePathError for links where ndunet writes, and CheckpointError for a damaged checkpoint
    (never falls back to starting over)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir={str(out_dir)!r} exists and is a file, not a folder")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if all(e in (LOCK_NAME, RUN_MARKER) or is_temp_name(e) for e in entries):
        return None
    entries = [e for e in entries if e not in (LOCK_NAME, RUN_MARKER)]
    shown = ", ".join(entries[:6]) + (" ..." if len(entries) > 6 else "")
    if not resume:
        raise FileExistsError(
            f"out_dir={str(out_dir)!r} is not empty ({shown}). ndunet never overwrites or deletes "
            "a run folder: pass resume=True to continue that run, or choose a new out_dir."
        )
    marked = read_run_marker(out_dir) is not None
    ckpt_dir = out_dir / "checkpoints"
    if not _has_checkpoint(ckpt_dir):
        if not marked:
            raise FileExistsError(
                f"resume=True but out_dir={str(out_dir)!r} holds no checkpoint "
                f"(checkpoints/last) to resume from and no {RUN_MARKER} marker: it is not a run "
                f"folder ndunet made (contents: {shown}). ndunet never writes into such a "
                "folder: choose a new out_dir."
            )
        if not all(e in STARTUP_FILES or is_temp_name(e) for e in entries):
            raise FileExistsError(
                f"resume=True but out_dir={str(out_dir)!r} holds no checkpoint "
                f"(checkpoints/last) to resume from, and files a run does not write at start-up "
                f"(contents: {shown}). Choose a new out_dir, or remove the folder yourself."
            )
        _refuse_links(out_dir)
        logger.warning(
            "out_dir=%r holds a run that never reached a checkpoint: starting it over", str(out_dir)
        )
        return None
    _refuse_links(out_dir)
    last = ckpt_dir / "last"
    if not verify:
        found = last if last.exists() else ckpt_dir / ".last.old"
        if not marked:
            read_manifest(found)  # no marker: at least an ndunet checkpoint must be there
        return found
    try:
        found = verify_checkpoint(last)
    except CheckpointError as e:
        good = find_verified_epoch(ckpt_dir)
        advice = (
            f"{str(good)!r} verifies: to resume from it, replace 'last' by a copy of it "
            f"(rm -r {str(last)!r} && cp -r {str(good)!r} {str(last)!r})"
            if good is not None
            else "no epoch-NNNN checkpoint in checkpoints/ verifies either"
        )
        raise CheckpointError(
            f"cannot resume from {str(last)!r}: {e}. The run folder is left untouched; {advice}."
        ) from e
    if not marked:
        logger.warning(
            "out_dir=%r has no %s marker (made by an older ndunet?); its checkpoint verifies, "
            "so it is resumed",
            str(out_dir),
            RUN_MARKER,
        )
    return found


def claim_run_dir(out_dir: str | Path, resume: bool) -> tuple[RunLock, Path | None]:
    """For the one process that writes the run (rank 0): check `out_dir` (nothing is created in
    a folder that will be refused), take its RunLock, check again under the lock, and mark it.
    Returns (the held lock: release it when the run ends, the checkpoint to resume from or
    None). Raises as check_run_dir does, and RunLockedError while another process holds it."""
    out_dir = Path(out_dir)
    check_run_dir(out_dir, resume, verify=False)
    lock = RunLock(out_dir).acquire()
    try:
        resume_from = check_run_dir(out_dir, resume)
        mark_run_dir(out_dir)
    except BaseException:
        lock.release()
        raise
    return lock, resume_from

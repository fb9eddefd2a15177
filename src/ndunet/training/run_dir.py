"""The run folder: never deleted, never silently reused."""

from __future__ import annotations

from pathlib import Path

from ndunet.pretrained import CheckpointError, verify_checkpoint
from ndunet.training.logging import logger

# What fit() creates before the first checkpoint exists (resume=True may start over on these).
STARTUP_FILES = {
    "config.json",
    "log.csv",
    "train.log",
    "tensorboard",
    "checkpoints",
    "loss.png",
    "samples",
}


def _has_checkpoint(ckpt_dir: Path) -> bool:
    return (ckpt_dir / "last").exists() or (ckpt_dir / ".last.old").exists()


def check_run_dir(out_dir: Path, resume: bool) -> Path | None:
    """Decide how a run may use `out_dir`. Returns the checkpoint to resume from, or None for a
    fresh run (with resume=True also when the folder holds only STARTUP_FILES and no
    checkpoint: a run killed before its first checkpoint starts over). Raises FileExistsError for a non-empty folder that cannot be resumed, and
    CheckpointError for a damaged checkpoint (never falls back to starting over)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir={str(out_dir)!r} exists and is a file, not a folder")
    entries = sorted(p.name for p in out_dir.iterdir()) if out_dir.is_dir() else []
    if not entries:
        return None
    shown = ", ".join(entries[:6]) + (" ..." if len(entries) > 6 else "")
    if not resume:
        raise FileExistsError(
            f"out_dir={str(out_dir)!r} is not empty ({shown}). ndunet never overwrites or deletes "
            "a run folder: pass resume=True to continue that run, or choose a new out_dir."
        )
    ckpt_dir = out_dir / "checkpoints"
    ours = {e for e in entries if e in STARTUP_FILES or (e.startswith(".") and e.endswith(".tmp"))}
    if not _has_checkpoint(ckpt_dir) and ours == set(entries):
        # a run killed before its first checkpoint: only what fit() writes at start is there
        logger.warning(
            "out_dir=%r holds a run that never reached a checkpoint: starting it over", str(out_dir)
        )
        return None
    if not _has_checkpoint(ckpt_dir):
        raise FileExistsError(
            f"resume=True but out_dir={str(out_dir)!r} holds no checkpoint (checkpoints/last) to "
            f"resume from (contents: {shown}). Choose a new out_dir, or remove the folder yourself."
        )
    last = ckpt_dir / "last"
    try:
        return verify_checkpoint(last)
    except CheckpointError as e:
        raise CheckpointError(
            f"cannot resume from {str(last)!r}: {e}. The run folder is left untouched; an older "
            "per-epoch checkpoint in checkpoints/ may be copied over 'last' by hand."
        ) from e

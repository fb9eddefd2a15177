"""Checkpoint folders: save_pretrained form, atomic writes, integrity check, no code execution.

A checkpoint is a folder:
    config.json          {"format", "ndunet_version", "model", "diffusion", "trainer", ...}
    model.safetensors    network weights (the bare network, not the DDP/Diffusion wrapper)
    ema.safetensors      EMA-averaged network weights (when EMA is on)
    extra.safetensors    other tensors of the wrapper (e.g. Diffusion buffers), when any
    trainer_state.pt     optimizer, scheduler, scaler, step, epoch, RNG states, data order;
                         tensors and plain containers only, read with torch.load(weights_only=True)
    manifest.json        sha256 and size of every file above (of the bytes handed to the disk),
                         written last

Writers (one per run: the holder of its `ndunet.files.RunLock`) write into a hidden sibling
folder through `ndunet.files`, then swap it in with two renames (`dest -> .dest.old`,
`.dest.tmp -> dest`): a kill at any instant leaves the new or the previous checkpoint complete,
and the next save (`recover()`) finishes the swap. `link_checkpoint` copies bytes (no hard links:
one damaged block must not spoil last, best and epoch-NNNN together) and checks the copy.

Readers never modify a folder: they verify and load through a descriptor of the folder (a swap
under them cannot mix two checkpoints), read `.dest.old` in place when a swap is half done, and
retry when a writer removes what they were reading.

Links: a user-visible checkpoint name (last, best, epoch-NNNN) that is a symbolic link is never
written through or deleted (saving raises UnsafePathError; pruning skips it with a warning). Only
ndunet's scratch names (`.dest.tmp`, `.dest.old`) are removed when they are links: the link
itself, never what it points to.
"""

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_tensors_bytes
from torch import Tensor

from ndunet._checkpoint_read import (
    CHUNK,
    FORMAT,
    MANIFEST,
    TENSOR_FILES,
    TRAINER_STATE,
    Checkpoint,
    CheckpointError,
    epoch_checkpoints,
    find_verified_epoch,
    load_checkpoint,
    load_trainer_state,
    read_manifest,
    scratch_paths,
    sha256_file,
    verify_checkpoint,
)
from ndunet.files import (
    check_path,
    fsync_dir,
    remove_tree,
    safe_write_bytes,
    safe_write_stream,
    safe_write_text,
)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "Checkpoint",
    "CheckpointError",
    "atomic_write_text",
    "epoch_checkpoints",
    "find_verified_epoch",
    "link_checkpoint",
    "load_checkpoint",
    "load_trainer_state",
    "prune_checkpoints",
    "read_manifest",
    "recover",
    "save_checkpoint",
    "sha256_file",
    "verify_checkpoint",
]
logger = logging.getLogger("ndunet.training.checkpoint")  # train.log records it
_warned_links: set[Path] = set()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically inside its folder (see `ndunet.files.safe_write_text`)."""
    safe_write_text(path, text, root=Path(path).parent)


def _plain_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU copies; tensors sharing storage (tied weights) are cloned apart, which
    safetensors requires."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for k, v in state.items():
        t = v.detach().cpu().contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[k] = t
    return out


# ----- writing: only the holder of the run's lock ------------------------------------------


def recover(dest: str | Path, *, root: str | Path | None = None) -> None:
    """Writers only (readers never call it): finish a swap that a kill interrupted (restore
    `.dest.old` if `dest` is missing) and remove leftovers. `root`: the folder nothing is
    written outside of (default: dest's folder)."""
    dest = Path(dest)
    root = dest.parent if root is None else Path(root)
    check_path(dest, root)
    tmp, old = scratch_paths(dest)
    for scratch in (tmp, old):
        if scratch.is_symlink():
            logger.warning("removing the symbolic link %s (not what it points to)", scratch)
            scratch.unlink()
    if not dest.exists() and old.is_dir():
        os.rename(old, dest)
        fsync_dir(dest.parent)
    for scratch in (old, tmp):
        if os.path.lexists(scratch):
            remove_tree(scratch, root=root)


def _swap_in(tmp: Path, dest: Path, root: Path) -> None:
    _, old = scratch_paths(dest)
    fsync_dir(tmp)
    check_path(dest, root)
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)
    if os.path.lexists(old):
        remove_tree(old, root=root)


def _bytes_entry(path: Path, data: bytes, root: Path) -> dict[str, Any]:
    safe_write_bytes(path, data, root=root)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _write_folder(dest: Path, root: Path, fill: Any) -> Path:
    """Make `.dest.tmp`, let `fill(tmp)` write it and return its manifest entries, write the
    manifest, swap it in. On failure the scratch folder goes and the previous `dest` stays."""
    check_path(dest, root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest, root=root)
    tmp, _ = scratch_paths(dest)
    tmp.mkdir()
    try:
        files = fill(tmp)
        manifest = json.dumps({"format": FORMAT, "files": files}, indent=1)
        safe_write_text(tmp / MANIFEST, manifest, root=root)
        _swap_in(tmp, dest, root)
    except BaseException as e:
        with contextlib.suppress(OSError):
            recover(dest, root=root)
        if isinstance(e, OSError) and not isinstance(e, FileExistsError):
            raise OSError(
                e.errno,
                f"saving checkpoint {str(dest)!r} failed; the previous checkpoint there, if any, "
                f"is intact. {e.strerror or e}",
            ) from e
        raise
    return dest


def save_checkpoint(
    dest: str | Path,
    *,
    config: dict[str, Any],
    model_state: dict[str, Tensor],
    ema_state: dict[str, Tensor] | None = None,
    extra_state: dict[str, Tensor] | None = None,
    trainer_state: dict[str, Any] | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring). `root`: the run folder
    nothing may be written outside of (default: dest's folder). Returns `dest`. A failed write
    (disk full) raises OSError naming the checkpoint; the previous one stays."""
    dest = Path(dest)
    base = dest.parent if root is None else Path(root)

    def fill(tmp: Path) -> dict[str, Any]:
        text = json.dumps({"format": FORMAT, **config}, indent=2)
        files = {"config.json": _bytes_entry(tmp / "config.json", text.encode(), base)}
        states = (model_state, ema_state, extra_state or None)
        for name, state in zip(TENSOR_FILES, states, strict=True):
            if state is not None:
                data = save_tensors_bytes(_plain_tensors(state))
                files[name] = _bytes_entry(tmp / name, data, base)
        if trainer_state is not None:
            sha, size = safe_write_stream(
                tmp / TRAINER_STATE, lambda f: torch.save(trainer_state, f), root=base
            )
            files[TRAINER_STATE] = {"sha256": sha, "size": size}
        return files

    return _write_folder(dest, base, fill)


def link_checkpoint(src: str | Path, dest: str | Path, *, root: str | Path | None = None) -> Path:
    """Make `dest` an independent copy of checkpoint `src` (bytes copied, not hard links),
    swapped in atomically. Every source file must match src's manifest and every copy is read
    back and checked against it (CheckpointError otherwise; the previous `dest` stays)."""
    src, dest = Path(src), Path(dest)
    base = dest.parent if root is None else Path(root)
    files = read_manifest(src)

    def fill(tmp: Path) -> dict[str, Any]:
        for name, meta in files.items():
            with open(src / name, "rb") as f:

                def copy(out: Any, f: Any = f) -> None:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        out.write(chunk)

                got = safe_write_stream(tmp / name, copy, root=base)
            if got != (meta["sha256"], meta["size"]):
                raise CheckpointError(
                    f"cannot copy checkpoint {str(src)!r} to {str(dest)!r}: its {name!r} fails "
                    "its sha256 check (corrupted); nothing was copied"
                )
            if sha256_file(tmp / name) != meta["sha256"]:
                raise CheckpointError(
                    f"the copy of {name!r} written for {str(dest)!r} reads back differently "
                    "(disk or memory error); nothing was copied"
                )
        return files

    return _write_folder(dest, base, fill)


def prune_checkpoints(
    ckpt_dir: str | Path, keep_last: int, *, root: str | Path | None = None
) -> list[Path]:
    """Delete all but the newest `keep_last` epoch-NNNN folders; returns what went. A link is
    skipped with a warning (never followed, never deleted) and not counted."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
        raise ValueError(f"keep_last={keep_last!r} must be an int >= 0")
    ckpt_dir = Path(ckpt_dir)
    base = ckpt_dir.parent if root is None else Path(root)
    epochs = []
    for p in epoch_checkpoints(ckpt_dir):
        if not p.is_symlink():
            epochs.append(p)
        elif p not in _warned_links:
            _warned_links.add(p)
            logger.warning("%s is a symbolic link: never pruned (nor what it points to)", p)
    gone = epochs[: max(0, len(epochs) - keep_last)]
    for p in gone:
        remove_tree(p, root=base)
    return gone

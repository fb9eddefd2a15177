"""Checkpoint folders: save_pretrained form, atomic writes, integrity check, no code execution.

A checkpoint is a folder:
    config.json          {"format", "ndunet_version", "model", "diffusion", "trainer", ...}
    model.safetensors    network weights (the bare network, not the DDP/Diffusion wrapper)
    ema.safetensors      EMA-averaged network weights (when EMA is on)
    extra.safetensors    other tensors of the wrapper (e.g. Diffusion buffers), when any
    trainer_state.pt     optimizer, scheduler, scaler, step, epoch, RNG states, data order;
                         tensors and plain containers only, read with torch.load(weights_only=True)
    manifest.json        sha256 and size of every file above, written last

Writes go to a hidden sibling folder; every file is fsync'ed, then the folder is swapped in with two
renames (`dest -> .dest.old`, `.dest.tmp -> dest`). A kill at any instant leaves either the new
or the previous checkpoint complete; `recover()` finishes an interrupted swap.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "ndunet-checkpoint"
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or unsafe."""


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (directories: best effort, not all platforms allow it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file via temp file + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")


def recover(dest: Path) -> None:
    """Finish a swap that a kill interrupted: restore `.dest.old` if `dest` is missing; drop
    leftovers otherwise."""
    dest = Path(dest)
    tmp, old = _paths(dest)
    if not dest.exists() and old.exists():
        os.rename(old, dest)
        _fsync_path(dest.parent)
    if old.exists():
        shutil.rmtree(old)
    if tmp.exists():
        shutil.rmtree(tmp)


def _swap_in(tmp: Path, dest: Path) -> None:
    _, old = _paths(dest)
    _fsync_path(tmp)
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    _fsync_path(dest.parent)
    if old.exists():
        shutil.rmtree(old)


def _write_manifest(folder: Path) -> None:
    files = {
        p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(
    dest: str | Path,
    *,
    config: dict[str, Any],
    model_state: dict[str, Tensor],
    ema_state: dict[str, Tensor] | None = None,
    extra_state: dict[str, Tensor] | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically (see the module docstring). Returns `dest`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    recover(dest)
    tmp, _ = _paths(dest)
    tmp.mkdir()
    with open(tmp / "config.json", "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, **config}, f, indent=2)
    save_file(_plain_tensors(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(_plain_tensors(ema_state), str(tmp / "ema.safetensors"))
    if extra_state:
        save_file(_plain_tensors(extra_state), str(tmp / "extra.safetensors"))
    if trainer_state is not None:
        torch.save(trainer_state, tmp / "trainer_state.pt")
    for p in tmp.iterdir():
        _fsync_path(p)
    _write_manifest(tmp)
    _swap_in(tmp, dest)
    return dest


def link_checkpoint(src: str | Path, dest: str | Path) -> Path:
    """Make `dest` a copy of checkpoint `src` (hard links where possible: files are never
    modified in place), swapped in atomically."""
    src, dest = Path(src), Path(dest)
    recover(dest)
    tmp, _ = _paths(dest)
    tmp.mkdir(parents=True)
    for p in src.iterdir():
        try:
            os.link(p, tmp / p.name)
        except OSError:
            shutil.copy2(p, tmp / p.name)
            _fsync_path(tmp / p.name)
    _swap_in(tmp, dest)
    return dest


def verify_checkpoint(path: str | Path) -> Path:
    """Check the manifest: every listed file exists with its size and sha256. Returns the folder
    (after finishing an interrupted swap)."""
    path = Path(path)
    recover(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a folder")
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no readable {MANIFEST} (incomplete or not an ndunet checkpoint): {e}"
        ) from e
    for name, meta in files.items():
        p = path / name
        if not p.is_file():
            raise CheckpointError(
                f"checkpoint {str(path)!r}: file {name!r} listed in the manifest is missing"
            )
        if p.stat().st_size != meta["size"]:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {name!r} has {p.stat().st_size} bytes, expected {meta['size']} (truncated or corrupted)"
            )
        if sha256_file(p) != meta["sha256"]:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: {name!r} fails its sha256 check (corrupted or modified)"
            )
    for required in ("config.json", "model.safetensors"):
        if required not in files:
            raise CheckpointError(f"checkpoint {str(path)!r}: manifest lacks {required!r}")
    return path


def _load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from e


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of trainer_state.pt: a pickle naming anything other than
    tensors and plain containers is refused, and nothing in it runs."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
            f"containers (loading it could execute code). Details: {e}"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"cannot read {str(path)!r} (truncated or corrupted?): {e}") from e


@dataclass
class Checkpoint:
    """A loaded checkpoint folder (tensors on CPU)."""

    path: Path
    config: dict[str, Any]
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor] | None = None
    extra_state: dict[str, Tensor] = field(default_factory=dict)

    def trainer_state(self) -> dict[str, Any]:
        """The optimizer/scheduler/RNG/step state (loaded on demand)."""
        p = self.path / "trainer_state.pt"
        if not p.is_file():
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has no trainer_state.pt (weights-only checkpoint)"
            )
        return load_trainer_state(p)


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Load a checkpoint folder, or `checkpoints/last` of a run folder. Verifies the manifest
    first (raises CheckpointError on any mismatch)."""
    path = Path(path)
    if (path / "checkpoints" / "last").exists() or (path / "checkpoints" / ".last.old").exists():
        path = path / "checkpoints" / "last"
    if verify:
        verify_checkpoint(path)
    elif not path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a folder")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: unreadable config.json: {e}") from e
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: config.json format is {config.get('format')!r}, expected {FORMAT!r}"
        )
    ema = path / "ema.safetensors"
    extra = path / "extra.safetensors"
    return Checkpoint(
        path=path,
        config=config,
        model_state=_load_tensors(path / "model.safetensors"),
        ema_state=_load_tensors(ema) if ema.is_file() else None,
        extra_state=_load_tensors(extra) if extra.is_file() else {},
    )

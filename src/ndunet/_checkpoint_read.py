"""Reading checkpoint folders (see `ndunet.pretrained` for the format): read-only, through a
descriptor of the folder, so a writer's swap under a reader cannot mix two checkpoints; a half
done swap is read from `.dest.old` in place; a folder removed under a reader is read again."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors_bytes
from torch import Tensor

FORMAT = "ndunet-checkpoint"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.pt"
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "extra.safetensors")
CHUNK = 1 << 20
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_EPOCH = re.compile(r"epoch-(\d+)")


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupted or unsafe."""


class _Swapped(Exception):
    """The folder being read was replaced or removed by a writer: read again."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def scratch_paths(dest: Path) -> tuple[Path, Path]:
    """The temp and old names a writer's swap uses beside `dest`."""
    return dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")


def epoch_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The `epoch-NNNN` entries of a checkpoints folder, oldest first (links included)."""
    ckpt_dir = Path(ckpt_dir)
    found = [p for p in ckpt_dir.glob("epoch-*") if _EPOCH.fullmatch(p.name)]
    return sorted((p for p in found if p.is_dir() or p.is_symlink()), key=lambda p: int(p.name[6:]))


def _open_dir(path: Path) -> tuple[Path, int | None]:
    """The folder to read (`path`, or mid-swap its `.old` sibling) and a descriptor on it."""
    for candidate in (path, scratch_paths(path)[1]):
        if not candidate.is_dir():
            continue
        if os.open not in os.supports_dir_fd:  # pragma: no cover - Windows
            return candidate, None
        try:
            return candidate, os.open(candidate, os.O_RDONLY | _DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            continue
    raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a folder")


def _open_file(folder: Path, dfd: int | None, name: str) -> io.BufferedReader:
    fd = os.open(name, os.O_RDONLY, dir_fd=dfd) if dfd is not None else os.open(folder / name, 0)
    return open(fd, "rb")


def _moved(path: Path, dfd: int | None) -> bool:
    """Whether `path` no longer names the folder open as `dfd` (a writer swapped it)."""
    if dfd is None:
        return False
    try:
        now, held = os.stat(path), os.fstat(dfd)
    except FileNotFoundError:
        return True
    return (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev)


def _parse_json(data: bytes, where: Path) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError included: a pickle or binary file
        raise CheckpointError(
            f"{str(where)!r} is not a JSON file (a pickle or other binary file in its place?): {e}"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{str(where)!r} holds a JSON {type(obj).__name__}, not an object")
    return obj


def _parse_manifest(data: bytes, folder: Path) -> dict[str, dict[str, Any]]:
    files = _parse_json(data, folder / MANIFEST).get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"checkpoint {str(folder)!r}: {MANIFEST} lists no files")
    for name, meta in files.items():
        plain = name == Path(name).name and name not in (".", "..", MANIFEST)
        if not (plain and isinstance(meta, dict) and isinstance(meta.get("sha256"), str)) or (
            type(meta.get("size")) is not int
        ):
            raise CheckpointError(f"checkpoint {str(folder)!r}: bad {MANIFEST} entry {name!r}")
    for required in ("config.json", "model.safetensors"):
        if required not in files:
            raise CheckpointError(f"checkpoint {str(folder)!r}: manifest lacks {required!r}")
    return files


def read_manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The file entries ({name: {"sha256", "size"}}) of a checkpoint folder's manifest, checked
    for form only (no hashing). Read-only; CheckpointError when missing or malformed."""
    folder = Path(folder)
    try:
        data = (folder / MANIFEST).read_bytes()
    except OSError as e:
        raise CheckpointError(
            f"checkpoint {str(folder)!r} has no readable {MANIFEST} (incomplete or not an "
            f"ndunet checkpoint): {e}"
        ) from e
    return _parse_manifest(data, folder)


def _check(folder: Path, name: str, data_hash: str, size: int, meta: dict[str, Any]) -> None:
    if size != meta["size"]:
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: {name!r} has {size} bytes, expected {meta['size']} "
            "(truncated or corrupted)"
        )
    if data_hash != meta["sha256"]:
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: {name!r} fails its sha256 check (corrupted or modified)"
        )


def _snapshot(
    path: Path, keep: tuple[str, ...], verify: bool, final: bool
) -> tuple[Path, dict, dict]:
    """Read (and, with verify, check against the manifest) one consistent version of a
    checkpoint folder. Returns (folder, manifest files or {}, {name: bytes} for `keep`).
    A file gone from a folder a writer swapped away or is deleting (`.old`) raises _Swapped
    (read again) unless `final`."""
    folder, dfd = _open_dir(path)
    blobs: dict[str, bytes] = {}
    files: dict[str, dict[str, Any]] = {}
    try:
        try:
            if verify:
                with _open_file(folder, dfd, MANIFEST) as f:
                    files = _parse_manifest(f.read(), folder)
            for name in files if verify else keep:
                try:
                    f = _open_file(folder, dfd, name)
                except FileNotFoundError:
                    if verify or name in ("config.json", "model.safetensors"):
                        raise
                    continue
                with f:
                    h, size, parts = hashlib.sha256(), 0, []
                    for chunk in iter(lambda f=f: f.read(CHUNK), b""):
                        size += len(chunk)
                        if verify:
                            h.update(chunk)
                        if name in keep:
                            parts.append(chunk)
                if verify:
                    _check(folder, name, h.hexdigest(), size, files[name])
                if name in keep:
                    blobs[name] = b"".join(parts)
        except FileNotFoundError as e:
            if not final and (folder != path or _moved(folder, dfd)):
                raise _Swapped from e
            missing = Path(e.filename or "").name or "?"
            if missing == MANIFEST:
                raise CheckpointError(
                    f"checkpoint {str(folder)!r} has no readable {MANIFEST} (incomplete or not "
                    "an ndunet checkpoint)"
                ) from e
            listed = " listed in the manifest" if verify else ""
            raise CheckpointError(
                f"checkpoint {str(folder)!r}: file {missing!r}{listed} is missing"
            ) from e
    finally:
        if dfd is not None:
            os.close(dfd)
    return folder, files, blobs


def _retrying(read: Any, attempts: int = 5) -> Any:
    """`read(final)` again while a writer swaps the folder under it; the last try reports."""
    for _ in range(attempts - 1):
        try:
            return read(False)
        except _Swapped:
            continue
    return read(True)


def verify_checkpoint(path: str | Path) -> Path:
    """Check the manifest: every listed file exists with its size and sha256. Read-only. Returns
    the folder checked: `path`, or its `.old` sibling when a writer's swap is half done."""
    path = Path(path)
    return _retrying(lambda final: _snapshot(path, (), True, final)[0])


def find_verified_epoch(ckpt_dir: str | Path) -> Path | None:
    """The newest `epoch-NNNN` checkpoint in `ckpt_dir` that verifies, or None."""
    for p in reversed(epoch_checkpoints(ckpt_dir)):
        try:
            return verify_checkpoint(p)
        except CheckpointError:
            continue
    return None


def _tensors(data: bytes, where: Path) -> dict[str, Tensor]:
    try:
        return load_tensors_bytes(data)
    except (SafetensorError, RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise CheckpointError(
            f"cannot read {str(where)!r} (not a valid safetensors file): {e}"
        ) from e


def _trainer_state_from(data: bytes, path: Path) -> dict[str, Any]:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds objects other than tensors and plain "
            f"containers (loading it could execute code). Details: {e}"
        ) from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"cannot read {str(path)!r} (truncated or corrupted?): {e}") from e


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """torch.load(weights_only=True) of trainer_state.pt: a pickle naming anything other than
    tensors and plain containers is refused, and nothing in it runs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {str(path)!r}: {e}") from e
    return _trainer_state_from(data, path)


@dataclass
class Checkpoint:
    """A loaded checkpoint folder (tensors on CPU). `manifest`: the file entries it was
    verified against (None when loaded with verify=False)."""

    path: Path
    config: dict[str, Any]
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor] | None = None
    extra_state: dict[str, Tensor] = field(default_factory=dict)
    manifest: dict[str, Any] | None = field(default=None, repr=False)

    def trainer_state(self) -> dict[str, Any]:
        """The optimizer/scheduler/RNG/step state, read on demand and checked against the
        manifest the checkpoint was loaded with."""
        p = self.path / TRAINER_STATE
        if self.manifest is not None and TRAINER_STATE not in self.manifest:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has no {TRAINER_STATE} (weights-only checkpoint)"
            )
        try:
            data = p.read_bytes()
        except FileNotFoundError as e:
            raise CheckpointError(
                f"checkpoint {str(self.path)!r} has no {TRAINER_STATE} (weights-only checkpoint, "
                "or a writer replaced the folder since it was loaded)"
            ) from e
        if self.manifest is not None:
            meta = self.manifest[TRAINER_STATE]
            if (len(data), hashlib.sha256(data).hexdigest()) != (meta["size"], meta["sha256"]):
                raise CheckpointError(
                    f"{str(p)!r} does not match the manifest the checkpoint was loaded with: "
                    "corrupted, or replaced by a newer save since (load the checkpoint again)"
                )
        return _trainer_state_from(data, p)


def load_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Load a checkpoint folder, or `checkpoints/last` of a run folder. Verifies the manifest
    first (CheckpointError on any mismatch) and loads exactly the bytes it verified. Read-only:
    safe on a run a trainer is writing, and on a read-only disk."""
    path = Path(path)
    ckpt = path / "checkpoints"
    if (ckpt / "last").exists() or (ckpt / ".last.old").exists():
        path = ckpt / "last"
    keep = ("config.json", *TENSOR_FILES)
    folder, files, blobs = _retrying(lambda final: _snapshot(path, keep, verify, final))
    config = _parse_json(blobs["config.json"], folder / "config.json")
    if config.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(folder)!r}: config.json format is {config.get('format')!r}, "
            f"expected {FORMAT!r}"
        )
    tensors = {name: _tensors(blobs[name], folder / name) for name in TENSOR_FILES if name in blobs}
    return Checkpoint(
        path=folder,
        config=config,
        model_state=tensors["model.safetensors"],
        ema_state=tensors.get("ema.safetensors"),
        extra_state=tensors.get("extra.safetensors", {}),
        manifest=files if verify else None,
    )

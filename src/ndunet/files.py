"""Safe files: atomic writes that never follow a symlink or leave their folder, log appends,
guarded deletion, and the writer lock of a run folder.

Every write goes to a fresh temp file beside the target (O_CREAT|O_EXCL|O_NOFOLLOW), is fsync'ed,
then renamed over the target (a rename replaces a name; it never writes through a link). Before
anything is written, the target is refused (UnsafePathError) when it, or any folder between
`root` and it, is a symbolic link, or when it lies outside `root`. `root` itself may be a link
(a run folder on another disk): the user chose it. Deletion (`remove_tree`) refuses the same way.
The checks guard against links already there, not against a process racing to plant one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "UnsafePathError",
    "check_path",
    "describe_write_error",
    "fsync_dir",
    "is_temp_name",
    "remove_tree",
    "safe_open_append",
    "safe_write_bytes",
    "safe_write_stream",
    "safe_write_text",
    "safe_write_with",
]

LOCK_NAME = ".ndunet-lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC


class UnsafePathError(ValueError):
    """A path is a symbolic link, has a linked folder below its root, or lies outside its root."""


class RunLockedError(RuntimeError):
    """Another process holds the writer lock of a run folder."""


def check_path(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Path:
    """The absolute `path`, after checking it lies strictly inside `root` (default: its own
    folder) and that neither it nor a folder between `root` and it is a symbolic link. Parts
    that do not exist yet are fine. Raises UnsafePathError."""
    target = Path(os.path.abspath(path))
    base = target.parent if root is None else Path(os.path.abspath(root))
    rel = os.path.relpath(target, base)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise UnsafePathError(
            f"path={str(path)!r} is not inside root={str(base)!r}; ndunet writes only inside "
            "the folder it was given"
        )
    current = base
    for part in Path(rel).parts:
        current = current / part
        if current.is_symlink():
            what = "is" if current == target else "lies under"
            raise UnsafePathError(
                f"path={str(path)!r} {what} a symbolic link ({str(current)!r} -> "
                f"{os.readlink(current)!r}); ndunet never writes or deletes through a link. "
                "Remove the link or choose another path."
            )
    return target


def is_temp_name(name: str) -> bool:
    """True for the names of ndunet's temp files and folders (`.x.tmp`, `.x.<token>.tmp.png`)."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a folder so a rename in it is durable (best effort: not every platform allows it)."""
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


def describe_write_error(error: BaseException, path: str | os.PathLike[str]) -> OSError | None:
    """An OSError naming `path` and the likely cause for a failed write (disk full, quota,
    a write that stopped part-way, as torch reports it: "unexpected pos"); None when `error`
    is not a write failure."""
    text = str(error)
    code = getattr(error, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "StorageFull" in text:
        return OSError(
            code if code == errno.EDQUOT else errno.ENOSPC,
            f"no space left on device (or quota exceeded) while writing {str(path)!r}; free some "
            f"space and retry (the previous version of the file, if any, is untouched). "
            f"Details: {text}",
        )
    if isinstance(error, RuntimeError) and ("unexpected pos" in text or "write" in text.lower()):
        return OSError(
            errno.EIO,
            f"could not write {str(path)!r}: the write stopped part-way (no space left on "
            f"device, a quota, or an I/O error?); the previous version of the file, if any, "
            f"is untouched. Details: {text}",
        )
    return None


def _target(path: str | os.PathLike[str], root: Any, overwrite: bool) -> Path:
    if not overwrite and os.path.lexists(path):
        kind = "a symbolic link" if os.path.islink(path) else "a file"
        raise FileExistsError(
            f"path={str(path)!r} exists ({kind}); refusing to overwrite it. Choose a new path."
        )
    target = check_path(path, root)
    if target.is_dir():
        raise IsADirectoryError(f"path={str(path)!r} is a folder; expected a file path")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _temp_name(target: Path) -> Path:
    # keep the suffix: some writers check it (PIL, matplotlib, ndunet.viz want .png)
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp{target.suffix}")


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    if overwrite:
        check_path(target, target.parent)  # a link planted meanwhile is refused, not replaced
        os.replace(tmp, target)
    else:
        try:
            os.link(tmp, target)  # atomic no-clobber, even over a dangling link
        except FileExistsError:
            raise FileExistsError(
                f"path={str(target)!r} appeared while writing it; refusing to overwrite it"
            ) from None
        except OSError:  # no hard links on this file system
            if os.path.lexists(target):
                msg = f"path={str(target)!r} exists; refusing to overwrite it"
                raise FileExistsError(msg) from None
            os.rename(tmp, target)
        else:
            os.unlink(tmp)
    if not is_temp_name(target.parent.name):  # a scratch folder is synced when swapped in
        fsync_dir(target.parent)


def _atomic(
    path: str | os.PathLike[str], root: Any, overwrite: bool, fill: Callable[[Path, int], None]
) -> Path:
    target = _target(path, root, overwrite)
    tmp = _temp_name(target)
    fd = os.open(tmp, _NEW_FILE, 0o666)
    try:
        try:
            fill(tmp, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            raise UnsafePathError(f"temp file {str(tmp)!r} was replaced while writing")
        _publish(tmp, target, overwrite)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # the temp name itself (a link there is removed, never followed)
        better = describe_write_error(e, target)
        if better is None:
            raise
        raise better from e
    return target


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def safe_write_bytes(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write `data` to `path` atomically (temp file, fsync, rename) inside `root` (default: the
    file's folder). overwrite=False refuses any existing `path`, a dangling link included."""
    return _atomic(path, root, overwrite, lambda _tmp, fd: _write_all(fd, data))


def safe_write_text(
    path: str | os.PathLike[str],
    text: str,
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """`safe_write_bytes` of `text` encoded as UTF-8."""
    return safe_write_bytes(path, text.encode("utf-8"), root=root, overwrite=overwrite)


class _HashingWriter:
    """A binary file-like object over a raw descriptor that hashes what it writes."""

    def __init__(self, fd: int) -> None:
        self.fd, self.size, self.hash = fd, 0, hashlib.sha256()
        self.error: OSError | None = None  # torch reports a failed write as "unexpected pos"

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            _write_all(self.fd, view)
        except OSError as e:
            self.error = e
            raise
        self.hash.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        pass


def safe_write_stream(
    path: str | os.PathLike[str],
    write: Callable[[Any], object],
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> tuple[str, int]:
    """Atomic write of what `write(f)` writes to the binary file-like `f` (e.g.
    `lambda f: torch.save(obj, f)`). Returns (sha256 hex, size) of the bytes handed to the
    disk: a manifest built from them catches a write the disk did not keep."""
    box: list[_HashingWriter] = []

    def fill(_tmp: Path, fd: int) -> None:
        box.append(_HashingWriter(fd))
        try:
            write(box[0])
        except Exception as e:
            if box[0].error is None or box[0].error is e:
                raise
            raise box[0].error from e

    _atomic(path, root, overwrite, fill)
    return box[0].hash.hexdigest(), box[0].size


def safe_write_with(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = True,
) -> Path:
    """Atomic write for code that insists on a file name (PIL, matplotlib, ndunet.viz):
    `write(tmp)` writes a fresh temp path beside `path` (same suffix); it is then fsync'ed and
    renamed into place. E.g. `safe_write_with(out, lambda p: save_samples(x, p),
    overwrite=False)` for a CLI's --out: an existing file or link there is refused."""
    return _atomic(path, root, overwrite, lambda tmp, _fd: write(tmp))


def safe_open_append(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> IO[str]:
    """Open a text file for appending (created if missing) with O_NOFOLLOW, inside `root`.
    A link, or anything but a regular file, is refused."""
    target = check_path(path, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(target, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"path={str(path)!r} is a symbolic link; not appending") from e
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePathError(f"path={str(path)!r} is not a regular file; not appending to it")
    return open(fd, "a", encoding=encoding, newline=newline)  # the caller closes it


def remove_tree(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> None:
    """Delete the folder or file `path` inside `root`. A link at `path` or above it (below
    `root`) raises UnsafePathError: it is never followed and never deleted. Links inside the
    folder are removed as links (shutil.rmtree never follows them)."""
    target = check_path(path, root)
    if target.is_dir():
        shutil.rmtree(target)
    elif os.path.lexists(target):
        os.unlink(target)


class RunLock:
    """The writer lock of a run folder: `fcntl.flock` (exclusive, non-blocking) on
    `<out_dir>/.ndunet-lock`. The kernel drops it when the process dies, so a killed trainer
    never leaves a stale lock; the holder's pid, host and start time are written into the file
    so a refused `acquire()` names them. Two RunLock objects conflict even in one process.

        with RunLock(out_dir):
            ...  # the only writer of out_dir
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self._fd: int | None = None  # keep the object: garbage collection releases the lock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock (creating out_dir if needed) or raise RunLockedError naming the holder.
        Returns self."""
        if self._fd is not None:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        check_path(self.path, self.out_dir)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = _describe_holder(os.pread(fd, 4096, 0))
                os.close(fd)
                raise RunLockedError(
                    f"out_dir={str(self.out_dir)!r} is in use by another ndunet process "
                    f"({holder}); two writers would corrupt the run. Wait for it to finish, "
                    "stop it, or choose another out_dir."
                ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays, emptied). Safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor of the open file releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _describe_holder(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode("utf-8"))
        return f"pid {info['pid']} on host {info['host']}, since {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: it has not written its details yet"

"""One reader interface for every format: ``Volume``/``Header`` records, a registry by suffix,
``read``/``read_header``/``shape_of``/``write``.

Each format lives in its own module (``npy``, ``nifti``, ``tiff``, ``zarr_io``, ``hdf5``, ``png``)
with ``header(path, key)``, ``read(path, key)`` and, where writable, ``check_write(...)`` and
``write(tmp, ...)``. Modules are imported on first use, so a missing optional library costs
nothing until its format is asked for, and then it names the extra to install.

``axes`` uses tifffile's letters: X, Y, Z spatial; C (channel) and S (sample, e.g. RGB) are
channels; T is time; anything else (I, Q, ...) is an axis of unknown meaning. ``spacing`` has one
entry per axis of the array, None where the file does not say.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ndunet._checks import did_you_mean, invalid

PathLike = str | os.PathLike[str]
Spacing = tuple[float | None, ...]

EXTRAS = {"nibabel": "nifti", "tifffile": "tiff", "zarr": "zarr", "h5py": "hdf5"}


@dataclass(frozen=True)
class Header:
    """What a file says about its array without reading the data."""

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str | None = None
    affine: np.ndarray | None = None
    spacing: Spacing | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("axes", "spacing"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.shape):
                raise ValueError(f"{name}={value!r} has not one entry per axis of {self.shape}")


@dataclass
class Volume:
    """An array read from a file, with what the file says about it.

    ``array`` is a numpy array, a read-only ``np.memmap`` or a lazy array-like (nibabel proxy,
    zarr/h5py array) that reads only what is sliced. ``axes``/``affine``/``spacing``/``meta`` as
    in :class:`Header`. Use as a context manager (or call ``close``) to release open files.
    """

    array: Any
    axes: str | None = None
    affine: np.ndarray | None = None
    spacing: Spacing | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    dtype: np.dtype | None = None  # what slicing returns, where it differs from array.dtype
    closer: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def header(self) -> Header:
        dtype = np.dtype(self.dtype if self.dtype is not None else self.array.dtype)
        return Header(self.shape, dtype, self.axes, self.affine, self.spacing, self.meta)

    def close(self) -> None:
        if self.closer is not None:
            self.closer()
            self.closer = None

    def __enter__(self) -> Volume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Format:
    """A registered format: the suffixes it owns and the module that reads (and writes) it."""

    name: str
    suffixes: tuple[str, ...]
    module: str
    writable: bool = False
    folder: bool = False


FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Add (or replace) a format; its suffixes are matched case-insensitively, longest first."""
    FORMATS[fmt.name] = fmt


for _fmt in (
    Format("npy", (".npy",), "ndunet.io.npy", writable=True),
    Format("npz", (".npz",), "ndunet.io.npy"),
    Format("nifti", (".nii", ".nii.gz"), "ndunet.io.nifti", writable=True),
    Format("tiff", (".tif", ".tiff", ".ome.tif", ".ome.tiff"), "ndunet.io.tiff", writable=True),
    Format("zarr", (".zarr", ".ome.zarr"), "ndunet.io.zarr_io", folder=True),
    Format("hdf5", (".h5", ".hdf5"), "ndunet.io.hdf5"),
    Format("png", (".png",), "ndunet.io.png", writable=True),
):
    register(_fmt)


def suffixes() -> list[str]:
    """Every registered suffix, longest first."""
    return sorted((s for f in FORMATS.values() for s in f.suffixes), key=lambda s: (-len(s), s))


def match_suffix(path: PathLike) -> tuple[Format, str] | None:
    """The format of ``path`` by its suffix and the suffix matched, or None."""
    name = Path(path).name.lower()
    for suffix in suffixes():
        if name.endswith(suffix) and len(name) > len(suffix):
            return next(f for f in FORMATS.values() if suffix in f.suffixes), suffix
    return None


def format_of(path: PathLike, param: str = "path") -> tuple[Format, str]:
    """Like ``match_suffix`` but refusing an unknown suffix with the list of known ones."""
    found = match_suffix(path)
    if found is None:
        known = suffixes()
        ext = "".join(Path(path).suffixes[-2:]).lower() or Path(path).name
        raise ValueError(
            invalid(param, str(path), f"a file ending in one of {known}") + did_you_mean(ext, known)
        )
    return found


def stem_of(path: PathLike) -> str:
    """The file name without its format suffix (``case1.nii.gz`` -> ``case1``)."""
    name = Path(path).name
    found = match_suffix(path)
    return name[: -len(found[1])] if found else Path(path).stem


def require(module: str) -> Any:
    """Import an optional library or raise an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS[module]
        raise ImportError(
            f"reading/writing this format needs {module}: pip install 'ndunet[{extra}]' "
            "(or 'ndunet[io]' for every format)"
        ) from None


def _module(path: PathLike, param: str = "path") -> tuple[Format, Any]:
    fmt, _ = format_of(path, param)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{param}={str(path)!r} does not exist")
    if fmt.folder != p.is_dir():
        kind = "a folder" if fmt.folder else "a file"
        raise ValueError(invalid(param, str(path), f"{kind} for the {fmt.name} format"))
    return fmt, importlib.import_module(fmt.module)


def read(path: PathLike, key: str | None = None) -> Volume:
    """The array in ``path`` with its metadata, read lazily where the format allows.

    ``key`` picks one array of a container (npz member, zarr/HDF5 array path, TIFF series
    index); without it a container must hold exactly one array. Nothing is written to the file.
    """
    _, mod = _module(path)
    volume = mod.read(Path(path), key)
    volume.meta.setdefault("path", str(path))
    return volume


def read_header(path: PathLike, key: str | None = None) -> Header:
    """Shape, dtype, axes, affine and spacing of ``path`` from its header (no voxel data read)."""
    _, mod = _module(path)
    header = mod.header(Path(path), key)
    header.meta.setdefault("path", str(path))
    return header


def shape_of(path: PathLike, key: str | None = None) -> tuple[int, ...]:
    """The shape of the array in ``path``, from its header."""
    return read_header(path, key).shape


def write(
    path: PathLike,
    array: Any,
    *,
    affine: Any = None,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
) -> Path:
    """Write ``array`` to ``path`` in the format of its suffix; returns the path.

    ``affine`` (4x4, NIfTI only), ``spacing`` (one positive number per axis; NIfTI zooms, TIFF
    resolution + metadata) and ``axes`` (TIFF letters like "ZYX") are refused by formats that
    cannot store them. The file is written to a temporary file in the same folder and moved into
    place; an existing ``path`` or a symbolic link there is refused, never overwritten.
    """
    fmt, suffix = format_of(path)
    if not fmt.writable:
        writable = [s for f in FORMATS.values() if f.writable for s in f.suffixes]
        raise ValueError(invalid("path", str(path), f"a writable suffix, one of {writable}"))
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise TypeError(invalid("array", type(array).__name__, "a numpy array or torch tensor"))
    affine = _check_affine(affine)
    spacing = _check_spacing(spacing, array.ndim)
    if axes is not None and (not isinstance(axes, str) or len(axes) != array.ndim):
        raise ValueError(invalid("axes", axes, f"a string of {array.ndim} axis letters"))
    target = Path(path)
    if target.is_symlink():
        raise ValueError(f"path={str(path)!r} is a symbolic link; write refuses links")
    if target.exists():
        raise FileExistsError(f"path={str(path)!r} already exists; write never overwrites it")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"the folder of path={str(path)!r} does not exist")
    mod = importlib.import_module(fmt.module)
    mod.check_write(array, affine=affine, spacing=spacing, axes=axes)
    _atomic(
        target, suffix, lambda tmp: mod.write(tmp, array, affine=affine, spacing=spacing, axes=axes)
    )
    return target


def _check_affine(affine: Any) -> np.ndarray | None:
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(invalid("affine", affine, "a finite 4x4 matrix"))
    return a


def _check_spacing(spacing: Any, ndim: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    what = f"{ndim} positive finite numbers (one per array axis)"
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(invalid("spacing", spacing, what)) from None
    if len(values) != ndim or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(invalid("spacing", spacing, what))
    return values


def _atomic(target: Path, suffix: str, writer: Callable[[Path], None]) -> None:
    """Run ``writer`` on a temp file beside ``target`` (same suffix, so libraries pick the same
    encoding), flush it to disk, then link it into place (refusing to replace a file that
    appeared meanwhile; ``os.replace`` where the file system has no hard links)."""
    fd, name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=f".tmp{suffix}"
    )
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise FileExistsError(
                f"path={str(target)!r} appeared while writing; not replaced"
            ) from None
        except OSError:  # no hard links here (some network/FAT file systems)
            os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def axes_from_names(names: Sequence[str]) -> str | None:
    """Axis letters from axis names (OME-Zarr, HDF5 dimension labels): x/y/z/t/c and long forms."""
    table = {"x": "X", "y": "Y", "z": "Z", "t": "T", "time": "T", "c": "C", "channel": "C"}
    table["channels"] = "C"
    if not names or any(not isinstance(n, str) or not n for n in names):
        return None
    return "".join(table.get(n.lower(), "Q") for n in names)

"""What a run records about its training data, and the sample files written with it.

``ndunet train`` writes into the run folder ``normalization.json`` (the training data's
``Normalization.to_dict()``: how file values were mapped for the model) and, for volumes that
carry one, ``geometry.json`` (spacing / affine of the first training volume). ``ndunet sample``
undoes the normalisation on the arrays it writes and gives NIfTI outputs that geometry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

NORMALIZATION_FILE = "normalization.json"
GEOMETRY_FILE = "geometry.json"
# --out suffixes of ndunet sample: a PNG grid, or arrays through ndunet.io.write
SAMPLE_SUFFIXES = (".png", ".npy", ".nii", ".nii.gz", ".tif", ".tiff")
SPATIAL_LETTERS = "ZYX"


def data_records(data: Any) -> dict[str, str]:
    """``{file name: JSON text}`` describing ``data`` (a training split) for its run folder."""
    out: dict[str, str] = {}
    norm = getattr(data, "normalization", None)
    if norm is not None:
        out[NORMALIZATION_FILE] = json.dumps(norm.to_dict(), indent=2) + "\n"
    if callable(getattr(data, "meta", None)) and len(data):
        meta = data.meta(0)
        affine, spacing = meta.get("affine"), meta.get("spacing")
        if affine is not None or spacing is not None:
            geometry = {
                "source": meta.get("path"),
                "spatial_shape": list(meta["spatial_shape"]),
                "spacing": None if spacing is None else list(spacing),
                "affine": None if affine is None else np.asarray(affine).tolist(),
            }
            out[GEOMETRY_FILE] = json.dumps(geometry, indent=2) + "\n"
    return out


def run_folder_of(path: str | Path) -> Path:
    """The run folder of a run or checkpoint folder (``run/checkpoints/<which>`` -> ``run``)."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else path


def read_records(path: str | Path) -> tuple[Any, dict[str, Any] | None]:
    """(Normalization or None, geometry dict or None) recorded in the run folder of ``path``."""
    from ndunet.data import Normalization

    folder = run_folder_of(path)
    norm = geometry = None
    if (folder / NORMALIZATION_FILE).is_file():
        text = (folder / NORMALIZATION_FILE).read_text(encoding="utf-8")
        norm = Normalization.from_dict(json.loads(text))
    if (folder / GEOMETRY_FILE).is_file():
        geometry = json.loads((folder / GEOMETRY_FILE).read_text(encoding="utf-8"))
    return norm, geometry


def sample_suffix(out: Path) -> str:
    """The --out suffix (``.nii.gz`` counts as one), or a ValueError listing the valid ones."""
    name = out.name.lower()
    found = next(
        (s for s in sorted(SAMPLE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), ""
    )
    if not found or name == found:
        raise ValueError(
            f"--out {str(out)!r}: the file must end in one of {list(SAMPLE_SUFFIXES)} (.png: a "
            "grid picture; the others: the arrays, in the training data's units)"
        )
    return found


def sample_targets(out: Path, n: int) -> list[Path]:
    """The files ``--out`` means for ``n`` samples: one file, except NIfTI (one per sample,
    ``name-0.nii.gz``, ``name-1.nii.gz``, ... when n > 1)."""
    suffix = sample_suffix(out)
    if suffix not in (".nii", ".nii.gz") or n == 1:
        return [out]
    stem, width = out.name[: -len(suffix)], len(str(n - 1))
    return [out.with_name(f"{stem}-{i:0{width}d}{suffix}") for i in range(n)]


def write_sample_arrays(
    x: torch.Tensor, targets: list[Path], geometry: dict[str, Any] | None
) -> None:
    """Write samples ``x`` (N, C, *spatial) to ``targets`` through ``ndunet.io.write``:

    - ``.npy``: the batch as it is.
    - ``.tif(f)``: one stack, axes I (sample, when N > 1), C (when C > 1), then Z/Y/X (Q for
      spatial axes beyond three); 2-D or more only.
    - ``.nii(.gz)``: one file per sample, spatial axes first and channels last (as a 4-D NIfTI
      holds modalities; dropped when C = 1), with the recorded affine, else spacing.
    """
    from ndunet.io import write

    array = x.detach().cpu().float().numpy()
    n, channels, spatial = array.shape[0], array.shape[1], array.shape[2:]
    suffix = sample_suffix(targets[0])
    if suffix == ".npy":
        write(targets[0], array)
        return
    if suffix in (".tif", ".tiff"):
        if len(spatial) < 2:
            raise ValueError("TIFF holds images of 2 or more axes; write 1-D samples as .npy")
        letters = "Q" * (len(spatial) - 3) + SPATIAL_LETTERS[-min(3, len(spatial)) :]
        keep = [i for i, size in enumerate((n, channels)) if size > 1]
        stack = array.reshape(tuple((n, channels)[i] for i in keep) + spatial)
        write(targets[0], stack, axes="".join("IC"[i] for i in keep) + letters)
        return
    affine = spacing = None
    if geometry is not None and geometry.get("affine") is not None:
        affine = np.asarray(geometry["affine"], dtype=np.float64)
    elif geometry is not None and geometry.get("spacing") is not None:
        known = geometry["spacing"]
        if len(known) == len(spatial) and all(s is not None for s in known):
            spacing = list(known) + ([1.0] if channels > 1 else [])
    for sample, target in zip(array, targets):
        volume = np.moveaxis(sample, 0, -1)  # (*spatial, C): NIfTI's x, y, z, (t), channels
        write(target, volume[..., 0] if channels == 1 else volume, affine=affine, spacing=spacing)

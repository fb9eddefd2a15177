"""Random patches from volumes of varying shapes, a share of them centred on foreground.

nnU-Net's sampling (https://arxiv.org/abs/1809.10486): a third of the patches are forced to
contain foreground, the rest are uniform crops; volumes smaller than the patch are padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ndunet._checks import check_float, check_int, invalid
from ndunet.functional import pad_nd

__all__ = ["PatchDataset", "sample_generator"]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index) alone (ints hash deterministically)."""
    return torch.Generator().manual_seed(hash((seed, epoch, int(index))) & (2**63 - 1))


class PatchDataset(Dataset):
    """Patches of ``patch_size`` from a map-style dataset of ``(x, y)`` or ``(x,)`` samples.

    x is (C, *spatial), shapes may differ between samples; y, when present, is a per-voxel label
    (*spatial) or (C', *spatial) on the same grid. Item i is a patch of volume
    ``i // patches_per_volume``, drawn from a generator seeded by (seed, epoch, i) alone, so it
    is the same on every run, in every worker, and after a resume (call ``set_epoch``).

    Args:
        dataset: the volumes.
        patch_size: patch length per spatial axis (an int for all axes).
        patches_per_volume: patches per loaded volume.
        foreground_fraction: chance that a patch is centred on a random foreground voxel
            (label != 0; for a one-channel integral label a foreground class is drawn first, so
            small classes are found). Volumes without foreground give a uniform crop.
        seed: base seed of the crops and of ``transform``.
        transform: applied to each patch as ``transform(x, y, generator=g)`` (see
            ``ndunet.transforms``), with the patch's own generator.
        pad_value: fill of x where a volume is smaller than the patch (labels are padded with 0).
    """

    def __init__(
        self,
        dataset: Any,
        patch_size: int | Sequence[int],
        patches_per_volume: int = 1,
        foreground_fraction: float = 1 / 3,
        seed: int = 0,
        transform: Any = None,
        pad_value: float = 0.0,
    ) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(invalid("dataset", type(dataset).__name__, "a map-style dataset"))
        what = "a positive int or a sequence of positive ints (one per spatial axis)"
        if isinstance(patch_size, int) and not isinstance(patch_size, bool):
            check_int("patch_size", patch_size, 1)
        elif isinstance(patch_size, Sequence) and len(patch_size) > 0:
            for p in patch_size:
                if isinstance(p, bool) or not isinstance(p, int) or p < 1:
                    raise ValueError(invalid("patch_size", patch_size, what))
            patch_size = tuple(patch_size)
        else:
            raise TypeError(invalid("patch_size", patch_size, what))
        self.dataset = dataset
        self.patch_size = patch_size
        self.patches_per_volume = check_int("patches_per_volume", patches_per_volume, 1)
        self.foreground_fraction = check_float("foreground_fraction", foreground_fraction, 0, 1)
        self.seed = check_int("seed", seed)
        if transform is not None and not callable(transform):
            raise TypeError(invalid("transform", transform, "None or t(x, y, generator=g)"))
        self.transform = transform
        self.pad_value = check_float("pad_value", pad_value)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the crops of ``epoch`` (a new set each epoch, reproducible)."""
        self.epoch = check_int("epoch", epoch, 0)

    def __len__(self) -> int:
        return len(self.dataset) * self.patches_per_volume

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index={index} is out of range for {len(self)} patches")
        index %= len(self)
        x, y = self._load(index // self.patches_per_volume)
        n = x.dim() - 1
        size = self._size(n)
        g = sample_generator(self.seed, self.epoch, index)
        # pad to at least the patch, the missing length split in halves (odd voxel after)
        pad = [(d // 2, d - d // 2) for d in (max(p - s, 0) for p, s in zip(size, x.shape[1:]))]
        if any(b or a for b, a in pad):
            x = pad_nd(x[None], pad, value=self.pad_value)[0]
            if y is not None:
                lab = y if y.dim() == n + 1 else y[None]  # (C', *spatial)
                lab = pad_nd(lab[None], pad)[0]
                y = lab if y.dim() == n + 1 else lab[0]
        forced = torch.rand((), generator=g, dtype=torch.float64).item()
        centre = None
        if y is not None and forced < self.foreground_fraction:
            centre = _foreground_voxel(y, n, g)
        start = []
        for axis, (s, p) in enumerate(zip(x.shape[1:], size)):
            if centre is None:
                start.append(int(torch.randint(s - p + 1, (), generator=g)))
            else:
                start.append(min(max(centre[axis] - p // 2, 0), s - p))
        crop = tuple(slice(b, b + p) for b, p in zip(start, size))
        x = x[(slice(None), *crop)]
        if y is not None:
            y = y[(Ellipsis, *crop)]
        if self.transform is not None:
            x, y = self.transform(x, y, generator=g)
        return (x,) if y is None else (x, y)

    def _load(self, volume: int) -> tuple[Tensor, Tensor | None]:
        sample = self.dataset[volume]
        if isinstance(sample, Tensor):
            sample = (sample,)
        if not isinstance(sample, (tuple, list)) or len(sample) not in (1, 2):
            raise TypeError(
                f"dataset[{volume}] is {type(sample).__name__}; expected (x,) or (x, y) tensors"
            )
        x, y = sample[0], sample[1] if len(sample) == 2 else None
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(
                f"dataset[{volume}] x has shape {tuple(getattr(x, 'shape', ()))}; expected "
                "(C, *spatial)"
            )
        spatial = tuple(x.shape[1:])
        if y is not None and (
            not isinstance(y, Tensor)
            or y.dim() not in (len(spatial), len(spatial) + 1)
            or tuple(y.shape[-len(spatial) :]) != spatial
        ):
            raise ValueError(
                f"dataset[{volume}] y has shape {tuple(getattr(y, 'shape', ()))}; patches need a "
                f"per-voxel label (*spatial) or (C', *spatial) with spatial={spatial} as x"
            )
        return x, y

    def _size(self, spatial_dims: int) -> tuple[int, ...]:
        if isinstance(self.patch_size, int):
            return (self.patch_size,) * spatial_dims
        if len(self.patch_size) != spatial_dims:
            raise ValueError(
                invalid("patch_size", self.patch_size, f"{spatial_dims} sizes for the data's axes")
            )
        return self.patch_size

    def __repr__(self) -> str:
        return (
            f"PatchDataset({len(self.dataset)} volumes, patch_size={self.patch_size}, "
            f"patches_per_volume={self.patches_per_volume}, "
            f"foreground_fraction={self.foreground_fraction:.3g}, seed={self.seed})"
        )


def _foreground_voxel(y: Tensor, spatial_dims: int, g: torch.Generator) -> list[int] | None:
    """A random foreground voxel (label != 0) as spatial indices, or None if there is none."""
    lab = y[0] if y.dim() > spatial_dims and y.shape[0] == 1 else y  # (*spatial) or (C', *spatial)
    if lab.dim() == spatial_dims and (
        not lab.is_floating_point() or bool((lab == lab.round()).all())
    ):
        classes = torch.unique(lab)
        classes = classes[classes != 0]
        if len(classes) == 0:
            return None
        cls = classes[int(torch.randint(len(classes), (), generator=g))]
        mask = lab == cls
    else:
        mask = (lab != 0).any(dim=0) if lab.dim() > spatial_dims else lab != 0
    flat = torch.nonzero(mask.flatten()).squeeze(1)  # (n_foreground,)
    if len(flat) == 0:
        return None
    k = int(flat[int(torch.randint(len(flat), (), generator=g))])
    coords = []
    for s in reversed(mask.shape):
        coords.append(k % s)
        k //= s
    return coords[::-1]

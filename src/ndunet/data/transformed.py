"""The ``transform=`` hook for any dataset: augment whole samples, seeded per (seed, epoch, index)."""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from ndunet._checks import check_int, invalid

from .patches import sample_generator

__all__ = ["TransformedDataset"]


class TransformedDataset(Dataset):
    """Samples of ``dataset`` passed through ``transform(x, y, generator=g)`` (``ndunet.transforms``).

    The generator of item i is ``sample_generator(seed, epoch, i)``: the same draws on every run,
    in every worker and after a resume (the trainer calls ``set_epoch``). A target ``y`` on x's
    grid (``(*spatial)`` or ``(C', *spatial)``) moves with the image; any other target (a class
    label, a vector) is passed through untouched, as is a sample without one.
    """

    def __init__(self, dataset: Any, transform: Any, seed: int = 0) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(invalid("dataset", type(dataset).__name__, "a map-style dataset"))
        if not callable(transform):
            raise TypeError(invalid("transform", transform, "a callable t(x, y, generator=g)"))
        self.dataset, self.transform = dataset, transform
        self.seed = check_int("seed", seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the augmentations of ``epoch`` (new ones each epoch, reproducible)."""
        self.epoch = check_int("epoch", epoch, 0)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        sample = self.dataset[index]
        if isinstance(sample, Tensor):
            sample = (sample,)
        if not isinstance(sample, (tuple, list)) or len(sample) not in (1, 2):
            raise TypeError(
                f"dataset[{index}] is {type(sample).__name__}; expected (x,) or (x, y) tensors"
            )
        x, y = sample[0], sample[1] if len(sample) == 2 else None
        g = sample_generator(self.seed, self.epoch, index % len(self))
        if not _on_grid(x, y):
            x, _ = self.transform(x, None, generator=g)
            return (x,) if y is None else (x, y)
        x, y = self.transform(x, y, generator=g)
        return (x, y)

    def __repr__(self) -> str:
        return f"TransformedDataset({self.dataset!r}, {self.transform!r}, seed={self.seed})"


def _on_grid(x: Any, y: Any) -> bool:
    """Whether ``y`` is a per-voxel target of the (C, *spatial) image ``x``."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.dim() < 2:
        return False
    spatial = tuple(x.shape[1:])
    return (
        y.dim() in (len(spatial), len(spatial) + 1) and tuple(y.shape[-len(spatial) :]) == spatial
    )

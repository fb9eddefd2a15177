"""NDDataset: in-memory samples (x, y) of any spatial_dims, with the metadata a model needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch.utils.data import Dataset

from ndunet._checks import check_choice

from .normalize import Normalization

Task = Literal["classification", "segmentation", "denoising", "regression", "unlabeled"]
TASKS: tuple[str, ...] = ("classification", "segmentation", "denoising", "regression", "unlabeled")


class NDDataset(Dataset):
    """Samples ``(x[i], y[i])`` from tensors held in memory, or ``(x[i],)`` when ``y`` is None.

    ``x`` is float32 ``(N, C, *spatial)``. ``y`` is None (unlabeled), int64 ``(N,)`` class labels,
    or a per-sample target ``(N, ...)`` (a mask, a clean signal). The full tensors stay available
    as ``.x`` and ``.y``; ``spatial_dims``, ``in_channels``, ``out_channels`` and ``num_classes``
    describe them for building a model. ``normalization`` records how the loader mapped the
    file's values into ``x`` (None when it did not say), to undo on outputs.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        task: Task,
        num_classes: int | None = None,
        out_channels: int | None = None,
        class_names: Sequence[str] | None = None,
        name: str = "",
        normalization: Normalization | None = None,
    ) -> None:
        check_choice("task", task, TASKS)
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.ndim < 3:
            raise TypeError(
                f"x must be a float32 tensor of shape (N, C, *spatial), got "
                f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
            )
        if (y is None) != (task == "unlabeled"):
            raise ValueError(
                f"task={task!r} does not match y={'None' if y is None else 'a tensor'}"
            )
        if y is not None and (not isinstance(y, torch.Tensor) or len(y) != len(x)):
            raise ValueError(
                f"y must be a tensor with one entry per sample ({len(x)}), got "
                f"{tuple(getattr(y, 'shape', ()))}"
            )
        self.x = x
        self.y = y
        self.task = task
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.name = name
        self.normalization = normalization
        if out_channels is None:
            out_channels = _default_out_channels(x, y, task, num_classes)
        self.out_channels = out_channels

    @property
    def spatial_dims(self) -> int:
        return self.x.ndim - 2

    @property
    def in_channels(self) -> int:
        return self.x.shape[1]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[2:])

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.y is None:
            return (self.x[index],)
        return self.x[index], self.y[index]

    def subset(self, indices: torch.Tensor | Sequence[int]) -> NDDataset:
        """A new NDDataset holding the given samples (copies of the rows), same metadata."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return NDDataset(
            self.x[idx],
            None if self.y is None else self.y[idx],
            task=self.task,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            out_channels=self.out_channels,
            class_names=self.class_names,
            name=self.name,
            normalization=self.normalization,
        )

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{self.y.dtype} {tuple(self.y.shape)}"
        return (
            f"NDDataset({self.name or 'data'}: x {tuple(self.x.shape)}, y {y}, task={self.task!r}, "
            f"spatial_dims={self.spatial_dims}, num_classes={self.num_classes})"
        )


def _default_out_channels(
    x: torch.Tensor, y: torch.Tensor | None, task: str, num_classes: int | None
) -> int | None:
    if y is None:
        return None
    if task == "classification":
        return num_classes
    if y.ndim == x.ndim:  # (N, C', *spatial): one output channel per target channel
        return y.shape[1]
    if task == "segmentation":  # integer mask (N, *spatial): one logit per class
        return num_classes
    return 1

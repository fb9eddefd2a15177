"""Turn what the user passes as training data into batches, in a resumable order.

Accepted `data` (train and validation alike):
- a `torch.utils.data.Dataset` whose samples are `x`, `(x,)`, `(x, y)` or dicts under one pair
  of `BATCH_KEYS`: `{"x": x, "y": y}` or MONAI's `{"image": x, "label": y}` (the label key
  optional; other keys, such as metadata, are ignored). x: (C, *spatial) tensor. Dicts under
  other keys: wrap the dataset in `DictSamples(dataset, ("img", "seg"))`.
- a tensor / numpy array X of shape (N, C, *spatial): samples are `(x,)`.
- a tuple `(X, Y)` of tensors / arrays with the same first length: samples are `(x, y)`.
- a dict `{"x": X, "y": Y}` (or `{"image": X, "label": Y}`) of tensors / arrays: samples are
  `(x, y)`.
- a `DataLoader`: used as given (its batch size, sampler, collate). Mid-epoch resume replays its
  epoch-start RNG state and fast-forwards through the consumed batches (they are loaded again).

For everything else the trainer builds the DataLoader with a `ResumableSampler` (a
DistributedSampler whose per-epoch order is stored in checkpoints, and which can skip the batches a
resumed epoch already consumed) and a dedicated generator, so creating an iterator never draws from
the global RNG: that is what keeps resume bit-exact. With num_workers > 0 each sample is loaded
under RNGs seeded from (seed, epoch, index) (`SeededSamples`), so random augmentation in workers
is also reproduced exactly after a resume, whatever the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ndunet.rng import restore_rng

from .batch import BATCH_KEYS, DictSamples, check_batch_keys, key_pair
from .batch import unpack_batch as unpack_batch  # where the trainers import it from


class TensorPairDataset(Dataset):
    """Samples `(x,)` or `(x, y)` from in-memory tensors."""

    def __init__(self, x: Tensor, y: Tensor | None = None) -> None:
        if y is not None and len(y) != len(x):
            raise ValueError(f"data: x has {len(x)} samples but y has {len(y)}; they must match")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return (self.x[i],) if self.y is None else (self.x[i], self.y[i])


def _as_tensor(a: Any, name: str) -> Tensor:
    if isinstance(a, Tensor):
        return a
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.float() if t.is_floating_point() else t
    raise TypeError(f"{name}: expected a tensor or numpy array, got {type(a).__name__}")


def as_dataset(data: Any, name: str = "train_data", batch_keys: Any = None) -> Dataset:
    """A Dataset from any accepted input except a DataLoader (see the module docstring).

    ``batch_keys`` (an (image key, label key) pair, or several): dict samples under those keys
    are read as ``(x, y)`` (see :class:`DictSamples`); by default ``BATCH_KEYS``."""
    keys = BATCH_KEYS if batch_keys is None else check_batch_keys(batch_keys)
    if isinstance(data, Dataset) and not isinstance(data, (Tensor, np.ndarray)):
        if not hasattr(data, "__len__"):
            raise TypeError(
                f"{name}: iterable-style datasets are not supported; pass a map-style Dataset or a DataLoader"
            )
        return data if batch_keys is None else DictSamples(data, keys)
    if isinstance(data, (Tensor, np.ndarray)):
        x = _as_tensor(data, name)
        if x.dim() < 2:
            raise ValueError(f"{name}: array of shape {tuple(x.shape)}; expected (N, C, *spatial)")
        return TensorPairDataset(x)
    if isinstance(data, Mapping):
        xk, yk = key_pair(data, keys, f"{name}: dict")
        if not set(data) <= {xk, yk}:  # whole arrays carry no metadata: a stray key is a typo
            raise ValueError(
                f"{name}: dict with keys {sorted(data)}; expected {xk!r} and optional {yk!r}"
            )
        y = data.get(yk)
        return TensorPairDataset(
            _as_tensor(data[xk], f"{name}[{xk!r}]"),
            None if y is None else _as_tensor(y, f"{name}[{yk!r}]"),
        )
    if (
        isinstance(data, (tuple, list))
        and len(data) in (1, 2)
        and all(isinstance(a, (Tensor, np.ndarray)) for a in data)
    ):
        tensors = [_as_tensor(a, f"{name}[{i}]") for i, a in enumerate(data)]
        return TensorPairDataset(*tensors)
    raise TypeError(
        f"{name}: got {type(data).__name__}; expected a Dataset, a DataLoader, a tensor/array "
        "(N, C, *spatial), a tuple (X, Y) or a dict {'x': X, 'y': Y} / {'image': X, 'label': Y}"
    )


class SeededSamples(Dataset):
    """Loads sample i of epoch e with torch, numpy and Python RNGs seeded from (seed, e, i): the
    random draws of a sample no longer depend on which worker loads it or on what it loaded
    before. Used for num_workers > 0 (workers own their RNGs, so the main process is unaffected)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        s = hash((self.seed, self.epoch, int(i))) & (2**63 - 1)  # ints hash deterministically
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        random.seed(s)
        return self.dataset[i]


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose epoch order can be read, restored, and skipped into.

    The order is a permutation of the whole dataset (world-size independent); each rank takes its
    shard exactly as DistributedSampler does (pad by wrapping, then `order[rank::world]`).
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.order: Tensor = self._default_order()
        self.skip = 0

    def _default_order(self) -> Tensor:
        n = len(self.dataset)  # type: ignore[arg-type]
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=g)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order = self._default_order()
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = self.order.tolist()
        if not self.drop_last:  # pad by wrapping so every rank gets num_samples
            pad = self.total_size - len(indices)
            while pad > 0:
                indices += indices[:pad]
                pad = self.total_size - len(indices)
        indices = indices[: self.total_size][self.rank : self.total_size : self.num_replicas]
        return iter(indices[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _on_cpu(dataset: Dataset) -> bool:
    """False for in-memory tensors already on a device: only CPU tensors can be pinned (the
    loader would fail on its first batch)."""
    while isinstance(dataset, SeededSamples):
        dataset = dataset.dataset
    if isinstance(dataset, TensorPairDataset):
        return all(t.device.type == "cpu" for t in (dataset.x, dataset.y) if t is not None)
    return True


def build_loader(
    data: Any,
    *,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    num_workers: int,
    rank: int,
    world_size: int,
    pin_memory: bool,
    name: str,
) -> DataLoader:
    """The trainer's DataLoader over `data` (a user DataLoader is returned unchanged)."""
    if isinstance(data, DataLoader):
        if world_size > 1 and not isinstance(data.sampler, DistributedSampler):
            raise ValueError(
                f"{name}: a DataLoader under DDP must use a DistributedSampler; pass a Dataset "
                "instead and the trainer shards it"
            )
        return data
    dataset = as_dataset(data, name)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError(f"{name}: the dataset is empty")
    collate = getattr(dataset, "collate", None)  # e.g. VolumeDataset's, naming shape mismatches
    if num_workers > 0:
        dataset = SeededSamples(dataset, seed)
    sampler = ResumableSampler(dataset, world_size, rank, shuffle, seed, drop_last)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        pin_memory=pin_memory and _on_cpu(dataset),
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


def eval_loader(data: Any, *, batch_size: int, rank: int, world_size: int, name: str) -> DataLoader:
    """Evaluation batches: no shuffle; under DDP each rank takes `indices[rank::world]` with no
    padding (so no sample counts twice); metric sums are all-reduced afterwards."""
    if isinstance(data, DataLoader):
        return data
    dataset = as_dataset(data, name)
    collate = getattr(dataset, "collate", None)
    if world_size > 1:
        dataset = torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size))  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def set_dataset_epoch(dataset: Any, epoch: int) -> None:
    """Tell a dataset that draws per epoch (``set_epoch``: PatchDataset, TransformedDataset)
    which epoch it serves, looking through wrappers that hold it as ``.dataset`` (SeededSamples,
    DictSamples, Subset). Workers are not persistent, so each epoch's copy carries it."""
    while dataset is not None:
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(epoch)
            return
        dataset = getattr(dataset, "dataset", None)


class EpochBatches:
    """A training loader read epoch by epoch, in groups of ``grad_accum`` batches, resumable
    mid-epoch with identical batches.

    With the trainer's own loader (a :class:`ResumableSampler`) the epoch's order is stored and
    the consumed batches are skipped without loading them. A user DataLoader draws its order (and
    worker seeds) from the global RNG: the RNG state at the epoch's start is stored, and a resumed
    epoch replays it and fast-forwards (loading the consumed batches again).
    """

    def __init__(self, loader: DataLoader, seed: int, grad_accum: int) -> None:
        self.loader, self.seed, self.grad_accum = loader, seed, grad_accum
        self.order: Tensor | None = None  # this epoch's order (own sampler)
        self.epoch_rng: Tensor | None = None  # the global RNG at this epoch's start (user loader)

    def __len__(self) -> int:
        """Batches per epoch (on this rank)."""
        return len(self.loader)

    def epoch(
        self, epoch: int, start_batch: int, rng_after_iter: dict[str, Any] | None = None
    ) -> Iterator[list[Any]]:
        """This epoch's batches from ``start_batch`` on, grouped by ``grad_accum``.

        ``rng_after_iter``: the global RNG state a resumed run had right after creating its
        iterator (restored so random draws during training continue identically)."""
        loader = self.loader
        if isinstance(loader.sampler, ResumableSampler):
            loader.sampler.set_epoch(epoch)
            if isinstance(loader.dataset, SeededSamples):  # workers get a copy at iter()
                loader.dataset.epoch = epoch
            set_dataset_epoch(loader.dataset, epoch)
            if start_batch > 0 and self.order is not None:  # resumed mid-epoch
                loader.sampler.order = self.order
            loader.sampler.skip = start_batch * (loader.batch_size or 1)
            loader.generator.manual_seed(self.seed * 1_000_003 + epoch)  # worker seeds
            self.order = loader.sampler.order
            it = iter(loader)
        else:
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            set_dataset_epoch(loader.dataset, epoch)
            if start_batch == 0:
                if rng_after_iter is not None:  # resumed at an epoch boundary
                    restore_rng(rng_after_iter)
                    rng_after_iter = None
                self.epoch_rng = torch.get_rng_state()
            elif self.epoch_rng is not None:
                torch.set_rng_state(self.epoch_rng)
            it = iter(loader)
            for _ in range(start_batch):  # fast-forward (batches are loaded again)
                next(it)
        if rng_after_iter is not None:
            restore_rng(rng_after_iter)
        while micro := list(islice(it, self.grad_accum)):
            yield micro

    def state_dict(self, mid_epoch: bool) -> dict[str, Tensor]:
        """How the current epoch's batches were ordered (empty at an epoch boundary)."""
        if not mid_epoch:
            return {}
        return {"order": self.order} if self.order is not None else {"epoch_rng": self.epoch_rng}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.order, self.epoch_rng = state.get("order"), state.get("epoch_rng")

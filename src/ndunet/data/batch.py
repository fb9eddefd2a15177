"""Samples and batches as ``(x, y-or-None)``: tensors, tuples, and dicts under configurable keys
(ndunet's ``x``/``y`` and MONAI's ``image``/``label`` by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["BATCH_KEYS", "DictSamples", "check_batch_keys", "key_pair", "unpack_batch"]

BatchKeys = tuple[str, str]
# (image key, label key) pairs a dict sample may use: ndunet's own, then MONAI's
BATCH_KEYS: tuple[BatchKeys, ...] = (("x", "y"), ("image", "label"))


def check_batch_keys(batch_keys: Any) -> tuple[BatchKeys, ...]:
    """``batch_keys`` as a tuple of (image key, label key) pairs; one pair may be given bare."""
    what = "an (image key, label key) pair of strings, e.g. ('image', 'label'), or a list of them"
    bare = isinstance(batch_keys, (tuple, list)) and batch_keys and isinstance(batch_keys[0], str)
    pairs = (batch_keys,) if bare else batch_keys
    if not isinstance(pairs, (tuple, list)) or not pairs:
        raise TypeError(f"batch_keys={batch_keys!r} is not valid; expected {what}")
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"batch_keys={batch_keys!r} is not valid; expected {what}")
        if not all(isinstance(k, str) and k for k in pair) or pair[0] == pair[1]:
            raise ValueError(f"batch_keys={batch_keys!r} is not valid; expected {what}")
    return tuple((str(a), str(b)) for a, b in pairs)


def key_pair(data: Mapping[str, Any], batch_keys: tuple[BatchKeys, ...], what: str) -> BatchKeys:
    """The one key pair ``data`` uses; a dict mixing pairs is refused (a label silently dropped
    otherwise)."""
    found = [pair for pair in batch_keys if pair[0] in data]
    known = [k for pair in batch_keys for k in pair]
    expected = ", or ".join(f"{a!r} and optional {b!r}" for a, b in batch_keys)
    if len(found) != 1:
        raise ValueError(f"{what} has keys {sorted(data)}; expected {expected}")
    stray = [k for k in known if k in data and k not in found[0]]
    if stray:
        raise ValueError(
            f"{what} has keys {sorted(data)}: image key {found[0][0]!r} pairs with label key "
            f"{found[0][1]!r}, not {stray}; expected {expected}"
        )
    return found[0]


class DictSamples(Dataset):
    """Dict samples under other keys as ``(x,)`` / ``(x, y)``: ``DictSamples(ds, ("img", "seg"))``.

    ``batch_keys`` is one (image key, label key) pair or several (the first present is used)."""

    def __init__(self, dataset: Dataset, batch_keys: Any = BATCH_KEYS) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset: expected a map-style Dataset, got {type(dataset).__name__}")
        self.dataset, self.batch_keys = dataset, check_batch_keys(batch_keys)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        x, y = unpack_batch(self.dataset[i], self.batch_keys)
        return (x,) if y is None else (x, y)


def unpack_batch(batch: Any, batch_keys: Any = BATCH_KEYS) -> tuple[Tensor, Tensor | None]:
    """(x, y-or-None) from a collated batch (or one sample): a tensor, a 1- or 2-sequence, or a
    dict under one pair of ``batch_keys`` (default ``BATCH_KEYS``: x/y and MONAI's image/label;
    other keys ignored)."""
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        keys = BATCH_KEYS if batch_keys is BATCH_KEYS else check_batch_keys(batch_keys)
        xk, yk = key_pair(batch, keys, "batch dict")
        return batch[xk], batch.get(yk)
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(
        f"batch of type {type(batch).__name__} (len {len(batch) if hasattr(batch, '__len__') else '?'}); "
        "samples must be x, (x,), (x, y) or {'x': x, 'y': y} / {'image': x, 'label': y}"
    )

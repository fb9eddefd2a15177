"""Seeded, disjoint, covering train/val/test splits, stratified by class where labels exist."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from ndunet._checks import check_choice, check_float, check_int

Split = Literal["train", "val", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


def _count(fraction: float, n: int) -> int:
    # A requested split is never empty: asking for 5% of 10 samples gives 1, not 0.
    return max(1, round(fraction * n)) if fraction > 0 else 0


def split_indices(
    n: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Indices of ``n`` samples into ``{"train", "val", "test"}`` (sorted int64 tensors).

    The three parts are disjoint and cover ``range(n)``; they depend only on the arguments, so
    separate calls for each split agree. Sizes are ``round(fraction * n)`` (at least 1 when the
    fraction is positive). With integer ``labels`` the split is stratified: each class lands in
    each part in proportion, up to one sample.
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    check_float("val_fraction", val_fraction, 0.0, 1.0)
    check_float("test_fraction", test_fraction, 0.0, 1.0)
    n_test, n_val = _count(test_fraction, n), _count(val_fraction, n)
    if n - n_test - n_val < 1:
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} leave no training "
            f"sample out of n={n}; their sum must stay below 1 - 1/n"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    order = perm
    if labels is not None:
        labels = torch.as_tensor(labels)
        if labels.shape != (n,) or labels.is_floating_point():
            raise ValueError(
                f"labels must be an integer tensor of shape ({n},), got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )
        permuted = labels[perm]
        # Each sample's rank within its class (in shuffled order) as a fraction of the class size.
        # Sorting by it interleaves the classes in proportion, so every prefix of `order` (the
        # test part, then the val part) is stratified; ties keep the shuffled order.
        key = torch.empty(n, dtype=torch.float64)
        for c in permuted.unique():
            members = (permuted == c).nonzero().flatten()
            key[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
        order = perm[torch.sort(key, stable=True).indices]
    return {
        "test": order[:n_test].sort().values,
        "val": order[n_test : n_test + n_val].sort().values,
        "train": order[n_test + n_val :].sort().values,
    }


def take_split(
    n: int,
    split: Split,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The indices of one split of ``n`` samples; ``"all"`` is every index in order."""
    check_choice("split", split, SPLITS)
    if split == "all":  # no split asked for: fractions may not fit tiny n, and that is fine
        return torch.arange(check_int("n", n, 1))
    parts = split_indices(
        n, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, labels=labels
    )
    return parts[split]


def check_splits(split: Split | Sequence[Split]) -> tuple[Split, ...]:
    """``split`` (one name, or several for loaders that read their files once for all) as a
    tuple of distinct split names."""
    parts = (split,) if isinstance(split, str) else tuple(split)
    for part in parts:
        check_choice("split", part, SPLITS)
    if not parts or len(set(parts)) != len(parts):
        raise ValueError(f"split={split!r} is not valid; expected one name or distinct names")
    return parts  # type: ignore[return-value]


def take_splits(
    n: int,
    splits: Sequence[Split],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    labels: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """``take_split`` for several splits at once: ``{split: indices}``."""
    fractions = {"seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    return {s: take_split(n, s, labels=labels, **fractions) for s in splits}

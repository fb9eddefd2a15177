"""Datasets by name, for configs: ``load_dataset("digits", split="train")``, or several splits at
once with ``load_splits`` (one read of the files for the loaders that can)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ndunet._checks import did_you_mean

from .arrays import arrays
from .base import NDDataset
from .blobs import blobs
from .digits import digits
from .faces import faces
from .images import images
from .splits import check_splits
from .volumes import volumes

DATASETS: dict[str, Callable[..., NDDataset]] = {
    "digits": digits,
    "faces": faces,
    "blobs": blobs,
    "arrays": arrays,
    "images": images,
    "volumes": volumes,
}
# loaders whose ``split`` takes a list and then read (or scan) their files once for all splits
ONE_READ: tuple[str, ...] = ("arrays", "images", "volumes")


def load_dataset(name: str, **kwargs: Any) -> NDDataset:
    """Build the dataset registered as ``name`` with keyword arguments (checked before loading)."""
    return _checked(name, kwargs)(**kwargs)


def load_splits(name: str, splits: Sequence[str], **kwargs: Any) -> dict[str, Any]:
    """``{split: dataset}`` for each of ``splits``; the loaders of ``ONE_READ`` read the files
    once for all of them (the same datasets as one call per split)."""
    parts = check_splits(splits)  # type: ignore[arg-type]
    factory = _checked(name, {**kwargs, "split": parts[0]})
    if name in ONE_READ:
        return factory(split=list(parts), **kwargs)
    return {part: factory(split=part, **kwargs) for part in parts}


def _checked(name: str, kwargs: dict[str, Any]) -> Callable[..., Any]:
    names = sorted(DATASETS)
    if not isinstance(name, str) or name not in DATASETS:
        hint = did_you_mean(name, names) if isinstance(name, str) else ""
        raise ValueError(f"dataset name={name!r} is unknown; valid names are {names}{hint}")
    factory = DATASETS[name]
    params = inspect.signature(factory).parameters
    for key in kwargs:
        if key not in params:
            raise ValueError(
                f"dataset {name!r} has no option {key!r}; valid options are "
                f"{list(params)}{did_you_mean(key, list(params))}"
            )
    missing = [p for p in required_options(name) if p not in kwargs]
    if missing:
        raise ValueError(f"dataset {name!r} needs option(s) {missing}")
    return factory


def required_options(name: str) -> list[str]:
    """The options dataset ``name`` cannot do without (no default)."""
    params = inspect.signature(DATASETS[name]).parameters.values()
    return [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]

"""One small resolver for pluggable parts given by name: clear errors that list valid names."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def did_you_mean(value: str, options: list[str]) -> str:
    """A " Did you mean 'x'?" suffix for the closest option, or an empty string."""
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def lookup(table: Mapping[str, T], value: Any, param: str) -> T:
    """Resolve a case-insensitive name in ``table`` or raise a ValueError listing the valid ones."""
    if not isinstance(value, str):
        raise TypeError(f"{param} must be a name (str), got {type(value).__name__}: {value!r}")
    key = value.lower().replace("-", "_")
    if key in table:
        return table[key]
    names = sorted(table)
    raise ValueError(
        f"{param}={value!r} is not a known option; valid: {', '.join(names)}."
        + did_you_mean(key, names)
    )

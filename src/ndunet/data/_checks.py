"""Argument checks shared by the dataset constructors: each names the parameter and what is allowed."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed) if isinstance(value, str) else ""
        raise ValueError(f"{name}={value!r} is not valid; expected one of {list(allowed)}{hint}")
    return value


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """'; did you mean X?' for the choice that starts with or most resembles value, else ''."""
    choices = list(choices)
    prefixed = [c for c in choices if value and c.startswith(value)]
    close = prefixed[:1] or difflib.get_close_matches(value, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}={value!r} must be an int >= {minimum}")
    if value < minimum:
        raise ValueError(f"{name}={value!r} must be an int >= {minimum}")
    return value


def check_float(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite real number in [low, high] (or (low, high] with low_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} must be a real number")
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or value > high:
        interval = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name}={value!r} must be a finite number in {interval}")
    return float(value)


def check_size(name: str, value: Any, spatial_dims: int = 2) -> tuple[int, ...] | None:
    """None, a positive int (the same on every axis) or a tuple of spatial_dims positive ints."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        values: tuple[Any, ...] = (value,) * spatial_dims
    elif isinstance(value, (tuple, list)) and len(value) == spatial_dims:
        values = tuple(value)
    else:
        raise TypeError(
            f"{name}={value!r} must be None, a positive int or a sequence of {spatial_dims} "
            "positive ints"
        )
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name}={value!r} must hold positive ints only")
    return values

"""Every argument check and choice lookup of ndunet: one "did you mean", one message format.

Messages name the parameter and the value, then say what is allowed::

    norm='batchy' is not valid; expected one of ['batch', 'group', ...] (did you mean 'batch'?)
    kernel_size=4 is not valid; expected an odd int >= 1

Wrong *types* raise TypeError, wrong *values* ValueError. Checks run before any work or
allocation, so a bad argument never costs memory or time.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")
IntOrTuple = int | Sequence[int]

__all__ = [
    "as_tuple",
    "check_bool",
    "check_choice",
    "check_float",
    "check_input",
    "check_int",
    "check_keys",
    "check_size",
    "did_you_mean",
    "invalid",
    "lookup",
    "spatial_dims_of",
]


def did_you_mean(value: Any, choices: Iterable[Any]) -> str:
    """`` (did you mean 'x'?)`` for the choice ``value`` starts or most resembles, else ``""``."""
    if not isinstance(value, str) or not value:
        return ""
    names = [str(c) for c in choices]
    low = value.lower()
    prefixed = [c for c in names if c.lower().startswith(low)]
    close = prefixed[:1] or difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in names}
        hit = difflib.get_close_matches(low, list(lowered), n=1, cutoff=0.6)
        close = [lowered[hit[0]]] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def invalid(name: str, value: Any, expected: str, hint: str = "") -> str:
    """The one message format: ``name=value is not valid; expected ...``."""
    return f"{name}={value!r} is not valid; expected {expected}{hint}"


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed`` (compared with ``==`` and the same type)."""
    allowed = tuple(allowed)
    if any(value == a and type(value) is type(a) for a in allowed):
        return value
    raise ValueError(invalid(name, value, f"one of {list(allowed)}", did_you_mean(value, allowed)))


def lookup(table: Mapping[str, T], value: Any, param: str) -> T:
    """Resolve a case-insensitive name (``-`` read as ``_``) in ``table``."""
    if not isinstance(value, str):
        raise TypeError(invalid(param, value, f"a name (str), one of {sorted(table)}"))
    key = value.lower().replace("-", "_")
    if key in table:
        return table[key]
    names = sorted(table)
    raise ValueError(invalid(param, value, f"one of {names}", did_you_mean(key, names)))


def check_keys(owner: str, keys: Iterable[str], valid: Sequence[str]) -> None:
    """Refuse names not in ``valid``: ``unknown <owner> option 'x' (did you mean 'y'?)``."""
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown {owner} option {unknown[0]!r}{did_you_mean(unknown[0], valid)}; valid "
            f"options: {list(valid)}"
        )


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(invalid(name, value, "True or False"))
    return value


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool) in ``[minimum, maximum]`` (either bound optional)."""
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    what = f"an int{lo}{' and' if lo and hi else ''}{hi}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(invalid(name, value, what))
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(invalid(name, value, what))
    return value


def check_float(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real number in the interval ``[low, high]`` (ends opened on request)."""
    if math.isinf(low) and math.isinf(high):
        what = "a finite number"
    elif math.isinf(high):
        what = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif math.isinf(low):
        what = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        what = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(invalid(name, value, what))
    bad_low = value <= low if low_open else value < low
    bad_high = value >= high if high_open else value > high
    if not math.isfinite(value) or bad_low or bad_high:
        raise ValueError(invalid(name, value, what))
    return float(value)


def check_size(name: str, value: Any, spatial_dims: int = 2) -> tuple[int, ...] | None:
    """None, a positive int (the same on every axis) or a sequence of spatial_dims positive ints."""
    if value is None:
        return None
    what = f"None, a positive int or a sequence of {spatial_dims} positive ints"
    if isinstance(value, int) and not isinstance(value, bool):
        values: tuple[Any, ...] = (value,) * spatial_dims
    elif isinstance(value, (tuple, list)) and len(value) == spatial_dims:
        values = tuple(value)
    else:
        raise TypeError(invalid(name, value, what))
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(invalid(name, value, what))
    return values


def as_tuple(
    value: IntOrTuple, spatial_dims: int, name: str, *, minimum: int = 0
) -> tuple[int, ...]:
    """Expand an int or per-axis sequence to a ``spatial_dims``-tuple, checking length and range."""
    what = f"an int or a sequence of 1 or spatial_dims={spatial_dims} ints >= {minimum}"
    if isinstance(value, bool):
        raise TypeError(invalid(name, value, what))
    if isinstance(value, int):
        out = (value,) * spatial_dims
    elif isinstance(value, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        out = tuple(value)
        if len(out) == 1 and spatial_dims != 1:
            out = out * spatial_dims
        if len(out) != spatial_dims:
            raise ValueError(
                f"{name}={value!r} has {len(out)} entries; expected 1 or "
                f"spatial_dims={spatial_dims}"
            )
    else:
        raise TypeError(invalid(name, value, what))
    for v in out:
        if v < minimum:
            raise ValueError(invalid(name, value, what))
    return out


def check_input(input: torch.Tensor, spatial_dims: int, name: str = "input") -> None:
    """Require a (B, C, *spatial) tensor with exactly ``spatial_dims`` spatial axes."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name} has shape {tuple(input.shape)} ({input.dim()} dims); expected "
            f"(batch, channels, *spatial) with spatial_dims={spatial_dims}, i.e. "
            f"{spatial_dims + 2} dims"
        )
    for axis, size in enumerate(input.shape[2:]):
        if size < 1:
            raise ValueError(f"{name} spatial axis {axis} has size {size}; sizes must be >= 1")


def spatial_dims_of(input: torch.Tensor, name: str = "input") -> int:
    """Infer spatial_dims from a (B, C, *spatial) tensor."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() < 3:
        raise ValueError(
            f"{name} has shape {tuple(input.shape)}; expected (batch, channels, *spatial) with "
            "at least one spatial axis"
        )
    return input.dim() - 2

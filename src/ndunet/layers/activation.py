"""Activations by name, class, ``functools.partial`` or module instance, resolved in one place."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from ndunet._checks import lookup

__all__ = [
    "ACTIVATIONS",
    "ActivationName",
    "ActivationSpec",
    "activation",
    "activation_name",
    "activation_to_json",
    "check_activation",
]

ActivationName = Literal[
    "relu", "leaky_relu", "silu", "swish", "gelu", "elu", "selu", "prelu", "mish", "tanh",
    "sigmoid", "softplus", "identity", "none",
]  # fmt: skip
ActivationSpec = (
    str | dict[str, Any] | type[nn.Module] | nn.Module | Callable[[], nn.Module] | None
)  # a dict is a name with arguments: {"name": "leaky_relu", "negative_slope": 0.2}

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,  # same function, the name used in the EfficientNet/diffusion literature
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "prelu": nn.PReLU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
    "none": nn.Identity,
}


def activation(spec: ActivationSpec, param: str = "activation") -> nn.Module:
    """A fresh activation module from a name, a module class, a factory/partial or an instance.

    An instance is deep-copied, so a module with parameters (e.g. ``nn.PReLU()``) given once is
    not shared by every block that uses it.
    """
    if spec is None:
        return nn.Identity()
    if isinstance(spec, str):
        return lookup(ACTIVATIONS, spec, param)()
    if isinstance(spec, dict):
        kwargs = dict(spec)
        cls = lookup(ACTIVATIONS, kwargs.pop("name", None), f"{param}['name']")
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise TypeError(f"{param}={spec!r} is not valid: {e}") from None
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    if callable(spec):
        module = spec()
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"{param}={spec!r} must build an nn.Module when called, got {type(module).__name__}"
            )
        return module
    raise TypeError(
        f"{param} must be a name ({', '.join(sorted(ACTIVATIONS))}), an nn.Module class, a "
        f"partial or an instance; got {type(spec).__name__}: {spec!r}"
    )


def activation_name(spec: Any) -> str | None:
    """The registered name equivalent to ``spec``, or None when it has no exact name.

    Classes in the registry map to their name; so do instances and partials with default
    arguments (``nn.SiLU()``, ``partial(nn.GELU)``). ``nn.LeakyReLU(0.2)`` has no name.
    """
    if spec is None:
        return "none"
    if isinstance(spec, str):
        key = spec.lower().replace("-", "_")
        return key if key in ACTIVATIONS else None
    cls: Any = spec
    if isinstance(spec, functools.partial):
        if spec.args or spec.keywords:
            return None
        cls = spec.func
    elif isinstance(spec, nn.Module):
        cls = type(spec)
        if repr(spec) != repr(cls()):  # differs from the defaults (e.g. a negative_slope)
            return None
    for name, entry in ACTIVATIONS.items():
        if entry is cls:
            return name
    return None


def check_activation(spec: Any, param: str = "activation") -> None:
    """Refuse what :func:`activation` cannot build, without building anything."""
    if spec is None or isinstance(spec, nn.Module):
        return
    if isinstance(spec, str):
        lookup(ACTIVATIONS, spec, param)
    elif isinstance(spec, dict):
        if "custom" not in spec:
            lookup(ACTIVATIONS, spec.get("name"), f"{param}['name']")
    elif not callable(spec):
        raise TypeError(
            f"{param}={spec!r} is not valid; expected a name ({', '.join(sorted(ACTIVATIONS))}), "
            "a name with arguments, an nn.Module class, a partial or an instance"
        )


def activation_to_json(spec: Any) -> str | dict[str, Any]:
    """What a config file records for ``spec``: its registered name; a name with arguments for a
    registered module configured otherwise (``nn.LeakyReLU(0.2)`` ->
    ``{"name": "leaky_relu", "negative_slope": 0.2}``); else ``{"custom": repr(spec)}``."""
    name = activation_name(spec)
    if name is not None:
        return name
    if isinstance(spec, dict):
        return dict(spec)
    cls: Any = spec.func if isinstance(spec, functools.partial) else type(spec)
    names = [n for n, entry in ACTIVATIONS.items() if entry is cls]
    if names and isinstance(spec, functools.partial) and not spec.args:
        return {"name": names[0], **spec.keywords}
    if names and isinstance(spec, nn.Module):
        keys = [k for k in getattr(cls, "__constants__", ()) if k != "inplace"]
        kwargs = {k: getattr(spec, k) for k in keys}
        if repr(cls(**kwargs)) == repr(spec):  # the constants say all there is
            return {"name": names[0], **kwargs}
    return {"custom": repr(spec)}

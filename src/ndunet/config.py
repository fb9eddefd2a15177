"""One convention for every config of ndunet: UNet, Diffusion, Trainer and the run-file sections.

A config is a frozen dataclass declared with :func:`config`. Its field types are the checks:
``Literal`` choices, ints, floats, bools, tuples (JSON lists become tuples) and optionals are
checked and normalised in ``__post_init__`` through :func:`check_type`; range checks that types
cannot say live in the class's ``check_values()``. Every problem is one :class:`ConfigError` that
names the option, the value and what is allowed, with a "did you mean" for unknown names (also
for the names users bring from other libraries, e.g. ``max_epochs`` -> ``epochs``)::

    @config
    class ToyConfig(Config):
        mode: Literal["a", "b"] = "a"
        depth: int = 2

        def check_values(self) -> None:
            check_int("depth", self.depth, 1)

``to_dict`` gives JSON-ready values; ``from_dict`` is its inverse; ``replace`` changes fields.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ndunet._checks import did_you_mean, invalid

__all__ = ["Config", "ConfigError", "check_type", "config", "describe_type"]

C = TypeVar("C", bound="Config")

# Names users bring from other libraries (Lightning, diffusers, MONAI, Keras) -> ours.
ALIASES: dict[str, str] = {
    "max_epochs": "epochs",
    "num_epochs": "epochs",
    "n_epochs": "epochs",
    "learning_rate": "lr",
    "accumulate_grad_batches": "grad_accum",
    "gradient_accumulation_steps": "grad_accum",
    "gradient_clip_val": "grad_clip",
    "max_grad_norm": "grad_clip",
    "precision": "amp",
    "mixed_precision": "amp",
    "num_train_timesteps": "timesteps",
    "beta_schedule": "schedule",
    "prediction_type": "prediction",
    "num_inference_steps": "sample_steps",
    "block_out_channels": "channels",
    "layers_per_block": "num_res_blocks",
    "num_res_units": "num_res_blocks",
    "features": "channels",
    "act": "activation",
    "dimensions": "spatial_dims",
    "ndim": "spatial_dims",
}


class ConfigError(ValueError, TypeError):
    """A bad config option. ``key`` is the option (``section.key`` in run files) and ``source``
    where it was set (a file, a ``--set`` item); both a ValueError and a TypeError, so code that
    catches either (as for other bad arguments) sees it."""

    def __init__(self, message: str, key: str | None = None, source: str | None = None) -> None:
        self.detail, self.key, self.source = message, key, source
        # "trainer.lr=..." says the key already: "channels=[..] is not valid" needs no prefix
        named = key is not None and message.startswith(f"{key.rsplit('.', 1)[-1]}=")
        if named and key is not None and "." in key:
            message = f"{key.rsplit('.', 1)[0]}.{message}"
        shown = None if named else key
        super().__init__(": ".join(part for part in (source, shown, message) if part))

    def located(self, source: str | None, section: str | None = None) -> ConfigError:
        """The same error, its key prefixed by ``section`` and said to come from ``source``."""
        key = ".".join(part for part in (section, self.key) if part) or None
        return ConfigError(self.detail, key, source)


def suggest(key: str, valid: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for an unknown option name, knowing other libraries' names."""
    alias = ALIASES.get(key)
    if alias in valid:
        return f" (did you mean {alias!r}?)"
    return did_you_mean(key, valid)


def unknown_option(
    owner: str, key: str, valid: Sequence[str], moved: Mapping[str, str] | None = None
) -> ConfigError:
    if moved and key in moved:  # an option that lives elsewhere now
        return ConfigError(f"not a {owner} option: {moved[key]}", key)
    return ConfigError(
        f"unknown {owner} option{suggest(key, valid)}; valid options: {list(valid)}", key
    )


# ----- types ------------------------------------------------------------------------------------


class _WrongType(Exception):
    pass


def check_type(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` and normalised (lists -> tuples where a tuple is
    asked, ints -> floats where a float is, ``"none"`` -> None where None is allowed)."""
    try:
        return _coerce(value, hint)
    except _WrongType:
        hint_text = ""
        if isinstance(value, str):
            hint_text = did_you_mean(value, _literal_strings(hint))
        raise ConfigError(invalid(key, value, describe_type(hint), hint_text), key) from None


def _literal_strings(hint: Any) -> list[str]:
    if get_origin(hint) is Literal:
        return [a for a in get_args(hint) if isinstance(a, str)]
    if get_origin(hint) in (Union, types.UnionType):
        return [s for a in get_args(hint) for s in _literal_strings(a)]
    return []


def _coerce(value: Any, hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any or hint is object or isinstance(hint, (str, typing.ForwardRef)):
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _WrongType
    if origin is Union or origin is types.UnionType:
        nullish = value is None or (value in ("none", "None", "null") and str not in args)
        if type(None) in args and nullish:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _WrongType:
                continue
        raise _WrongType
    if hint is type(None):
        if value is None:
            return None
        raise _WrongType
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _WrongType
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _WrongType
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _WrongType
    if hint is str:
        if isinstance(value, str):
            return value
        raise _WrongType
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _WrongType
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _WrongType
        return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if origin in (list, Sequence) or hint in (list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _WrongType
        return [_coerce(v, args[0]) for v in value] if args else list(value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _WrongType
        return dict(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _WrongType
    return value


def describe_type(hint: Any) -> str:
    """Words for a type hint: 'an int', 'a list of ints', "one of 'a', 'b'", ..."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union or origin is types.UnionType:
        parts = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or none" if type(None) in args else text
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe_type(a) for a in args)})"
    if origin in (list, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return words.get(hint, f"values ({describe_type(hint)})")


def _json_ready(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


_KEY_IN_MESSAGE = re.compile(r"^(?:\w+\.)?(\w+)=")


# ----- the base class -----------------------------------------------------------------------------


class Config:
    """Base of ndunet's config dataclasses (declare them with :func:`config`)."""

    # fields whose type is not checked (e.g. a norm given as a class); subclasses extend
    unchecked: ClassVar[tuple[str, ...]] = ()
    # former options that live elsewhere now -> where (said instead of a "did you mean")
    moved: ClassVar[dict[str, str]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return _hints(cls)

    def __post_init__(self) -> None:
        hints = self.field_types()
        for name in self.field_names():
            if name in self.unchecked:
                continue
            value = check_type(getattr(self, name), hints[name], name)
            object.__setattr__(self, name, value)
        try:
            self.check_values()
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:  # a _checks message: "name=value is not valid; ..."
            match = _KEY_IN_MESSAGE.match(str(e))
            key = match.group(1) if match and match.group(1) in self.field_names() else None
            raise ConfigError(str(e), key) from None

    def check_values(self) -> None:
        """Checks beyond the field types (ranges, combinations); raise ValueError/TypeError."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples become lists); :meth:`from_dict` is the inverse."""
        return {name: _json_ready(getattr(self, name)) for name in self.field_names()}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a mapping; unknown keys are a ConfigError with a "did you mean"."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a table of options, got {type(data).__name__}")
        return cls(**data)

    @classmethod
    def check_partial(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Names and types of some options (a run-file section before the data fills the rest)."""
        names, hints = cls.field_names(), cls.field_types()
        out = {}
        for key, value in data.items():
            if key not in names:
                raise unknown_option(cls.__name__, key, names, cls.moved)
            out[key] = value if key in cls.unchecked else check_type(value, hints[key], key)
        return out

    def replace(self: C, **changes: Any) -> C:
        """A copy with some options changed (checked like the original)."""
        return type(self)(**{**{n: getattr(self, n) for n in self.field_names()}, **changes})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def config(cls: type[C]) -> type[C]:
    """Declare a config: a frozen dataclass whose constructor refuses unknown options with a
    "did you mean" (``TrainerConfig(max_epochs=3)`` suggests ``epochs``)."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    init: Callable[..., None] = cls.__init__  # type: ignore[misc]
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for key in kwargs:
            if key not in names:
                raise unknown_option(cls.__name__, key, names, cls.moved)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[misc]
    return cls

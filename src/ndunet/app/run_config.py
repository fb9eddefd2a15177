"""Run configs: one TOML or JSON file with the sections [task], [data], [model], [diffusion] and
[trainer], checked key by key before anything is built.

Every problem becomes one :class:`ConfigError` that names the file (or the ``--set`` item) and
the key: unknown sections and keys (with a "did you mean"), values of the wrong type, data paths
that do not exist. ``--set section.key=value`` overrides parse ``value`` as a TOML value
(``[32, 64]``, ``1e-3``, ``true``, ``"text"``) and fall back to a bare string (``--set
data.name=faces``); ``none`` sets an optional field to None (TOML has no null).

Relative data paths in a file are resolved against the file's folder; those given with ``--set``
against the current directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("task", "data", "model", "diffusion", "trainer")
# Data options that name files or folders (checked to exist), and those the runner sets itself.
PATH_OPTIONS = ("path", "folder", "y_path")
RUNNER_OPTIONS = ("split",)
# Model fields filled from the data when the config leaves them out.
INFERRED_MODEL_FIELDS = ("spatial_dims", "in_channels", "out_channels", "num_classes")


class ConfigError(ValueError):
    """A bad run config; the message names the file (or ``--set`` item) and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.detail = source, key, message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


@dataclass
class TaskConfig:
    """What the run trains."""

    type: Literal["diffusion", "supervised"] = "diffusion"
    conditional: bool = False  # diffusion: condition on the data's class labels (enables CFG)
    validate: bool = True  # hold out the data's "val" split for validation
    test: bool = True  # supervised: evaluate the final weights on the "test" split at the end
    head: Literal["dense", "pooled"] = "dense"  # supervised: per-voxel output, or one per sample


@dataclass
class DataConfig:
    """A dataset of ``ndunet.data`` by name, with its keyword options (``split`` is set by the run)."""

    name: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class RunConfig:
    """A checked run config. ``model`` and ``diffusion`` stay dicts of checked keys until the
    data is known (``spatial_dims``, channels and classes may come from it)."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    source: str = "<config>"
    origins: dict[str, str] = field(default_factory=dict)  # "section.key" -> "--set ..." item

    def where(self, section: str, key: str) -> tuple[str, None]:
        """Where ``section.key`` was set: the ``--set`` item, else the config file."""
        return self.origins.get(f"{section}.{key}", self.source), None

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready sections (round-trips through :func:`parse_config`)."""
        return {
            "task": dataclasses.asdict(self.task),
            "data": self.data.to_dict(),
            "model": dict(self.model),
            "diffusion": dict(self.diffusion),
            "trainer": dict(self.trainer),
        }


# ----- reading ---------------------------------------------------------------------------------


def packaged_configs() -> dict[str, Path]:
    """The example configs shipped in ``ndunet/configs``, by name (file name without .toml)."""
    folder = Path(__file__).resolve().parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_config(name: str | Path) -> Path:
    """A config file path, or the packaged config of that name (e.g. ``digits_diffusion``)."""
    path = Path(name)
    if path.is_file():
        return path
    packaged = packaged_configs()
    stem = path.name.removesuffix(".toml").replace("-", "_")
    if not path.exists() and stem in packaged and len(path.parts) == 1:
        return packaged[stem]
    raise ConfigError(
        str(name),
        "",
        f"no such config file{_hint(stem, list(packaged))}; packaged configs: {list(packaged)}",
    )


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw sections of a .toml or .json file; ConfigError for a missing or unparsable file."""
    path = resolve_config(path)
    source = str(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError(source, "", f"not valid {kind}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"expected a table of sections, got {type(raw).__name__}")
    return raw


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax (numbers, booleans, lists, quoted strings) or a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, parsed value)."""
    source = f"--set {item}"
    if "=" not in item:
        raise ConfigError(source, "", "expected section.key=value, e.g. trainer.lr=1e-3")
    dotted, text = item.split("=", 1)
    section, _, key = dotted.strip().partition(".")
    if not key:
        raise ConfigError(
            source, dotted, f"expected section.key with a section among {list(SECTIONS)}"
        )
    return section, key.strip(), parse_value(text.strip())


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read and check a config file, then apply ``--set`` overrides (each checked as well)."""
    path = resolve_config(path)
    raw = read_file(path)
    origins: dict[str, tuple[str, Path]] = {}  # "section.key" -> (source, base folder for paths)
    for item in overrides:
        section, key, value = parse_override(item)
        _check_section_name(section, f"--set {item}")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(str(path), section, "must be a table of keys")
        table[key] = value
        origins[f"{section}.{key}"] = (f"--set {item}", Path.cwd())
    return parse_config(raw, source=str(path), base_dir=path.parent, origins=origins)


def parse_config(
    raw: Mapping[str, Any],
    *,
    source: str = "<config>",
    base_dir: str | Path | None = None,
    origins: Mapping[str, tuple[str, Path]] | None = None,
) -> RunConfig:
    """Check raw sections (from TOML, JSON or a dict) and return a RunConfig."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    origins = dict(origins or {})

    def where(section: str, key: str) -> tuple[str, Path]:
        return origins.get(f"{section}.{key}", (source, base))

    for section in raw:
        _check_section_name(section, source)
        if not isinstance(raw[section], dict):
            raise ConfigError(source, section, "must be a table of keys, e.g. [" + section + "]")
    from ndunet.diffusion import DiffusionConfig
    from ndunet.models.unet import UNetConfig
    from ndunet.training import TrainerConfig

    task_raw = _check_keys(raw.get("task", {}), "task", TaskConfig, where)
    task = build_section(source, "task", TaskConfig, task_raw, where)
    model = _check_keys(raw.get("model", {}), "model", UNetConfig, where)
    diffusion = _check_keys(raw.get("diffusion", {}), "diffusion", DiffusionConfig, where)
    trainer = _check_keys(raw.get("trainer", {}), "trainer", TrainerConfig, where)
    build_section(source, "trainer", TrainerConfig, trainer, where)  # its range checks, now
    data = _check_data(dict(raw.get("data", {})), where)
    sources = {key: src for key, (src, _) in origins.items()}
    return RunConfig(task, data, model, diffusion, trainer, source, sources)


def _check_section_name(section: str, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(
            source,
            section,
            f"unknown section{_hint(section, SECTIONS)}; sections: {list(SECTIONS)}",
        )


def _check_keys(table: dict[str, Any], section: str, cls: type, where: Any) -> dict[str, Any]:
    """Keys of ``table`` checked against the dataclass ``cls`` (names and types)."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in table.items():
        src, _ = where(section, key)
        if key not in names:
            raise ConfigError(
                src, f"{section}.{key}", f"unknown key{_hint(key, names)}; valid keys: {names}"
            )
        out[key] = check_type(value, hints[key], src, f"{section}.{key}")
    return out


def build_section(
    source: str, section: str, cls: Any, values: dict[str, Any], where: Any = None
) -> Any:
    """``cls(**values)``, its ValueError/TypeError turned into a ConfigError naming the key the
    message mentions (and where that key was set), else the section."""
    try:
        return cls(**values)
    except (ValueError, TypeError) as e:
        message = str(e)
        found = [
            (m.start(), k) for k in values if (m := re.search(rf"\b{re.escape(k)}\b", message))
        ]
        if found:  # the key the message names first
            key = min(found)[1]
            src = where(section, key)[0] if where is not None else source
            raise ConfigError(src, f"{section}.{key}", message) from None
        raise ConfigError(source, section, message) from None


def _check_data(table: dict[str, Any], where: Any) -> DataConfig:
    from ndunet.data import DATASETS

    name = table.pop("name", "digits")
    src, _ = where("data", "name")
    names = sorted(DATASETS)
    if not isinstance(name, str) or name not in DATASETS:
        hint = _hint(name, names) if isinstance(name, str) else ""
        raise ConfigError(src, "data.name", f"unknown dataset {name!r}{hint}; valid: {names}")
    factory = DATASETS[name]
    params = inspect.signature(factory).parameters
    hints = get_type_hints(factory)
    allowed = [p for p in params if p not in RUNNER_OPTIONS]
    options: dict[str, Any] = {}
    for key, value in table.items():
        src, base = where("data", key)
        if key in RUNNER_OPTIONS:
            raise ConfigError(src, f"data.{key}", "is set by the run (train/val/test); remove it")
        if key not in params:
            raise ConfigError(
                src,
                f"data.{key}",
                f"dataset {name!r} has no option {key!r}{_hint(key, allowed)}; options: {allowed}",
            )
        value = check_type(value, hints.get(key, Any), src, f"data.{key}")
        if key in PATH_OPTIONS and value is not None:
            resolved = (base / Path(value).expanduser()).resolve()
            if not resolved.exists():
                raise ConfigError(
                    src, f"data.{key}", f"{str(value)!r} does not exist (looked for {resolved})"
                )
            value = str(resolved)
        options[key] = value
    missing = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind is not inspect.Parameter.VAR_KEYWORD
        and p.name not in options
    ]
    if missing:
        src, _ = where("data", missing[0])
        raise ConfigError(src, f"data.{missing[0]}", f"dataset {name!r} needs this option")
    return DataConfig(name, options)


# ----- types -----------------------------------------------------------------------------------


class _WrongType(Exception):
    pass


def check_type(value: Any, hint: Any, source: str, key: str) -> Any:
    """``value`` checked against the type ``hint`` (lists become tuples where a tuple is asked)."""
    try:
        return _coerce(value, hint)
    except _WrongType:
        choices = [a for a in get_args(hint) if isinstance(a, str)]
        hint_text = (
            _hint(value, choices) if get_origin(hint) is Literal and isinstance(value, str) else ""
        )
        raise ConfigError(source, key, f"{value!r} is not {describe(hint)}{hint_text}") from None


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
        if not isinstance(value, dict):
            raise _WrongType
        return dict(value)
    if isinstance(hint, type) and not isinstance(value, hint):
        raise _WrongType
    return value


def describe(hint: Any) -> str:
    """Words for a type hint: 'an integer', 'a list of integers', 'one of ["a", "b"]', ..."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is Union or origin is types.UnionType:
        parts = [describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or none" if type(None) in args else text
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in words:
        return words[hint]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin in (list, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, Mapping) or hint is dict:
        return "a table"
    return getattr(hint, "__name__", str(hint))


def _plural(hint: Any) -> str:
    words = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return words.get(hint, f"values ({describe(hint)})")


def _hint(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""Run configs: one TOML or JSON file with the sections [task], [data], [patches], [augment],
[model], [diffusion] and [trainer], checked key by key before anything is built.

[patches] trains on random patches of the training volumes (:class:`PatchConfig`); [augment]
is a table of transforms by name (``ndunet.transforms.TRANSFORMS``) with their options, applied
in the order given, e.g. ``flip = {axes = [0, 1, 2]}`` and ``gamma = {prob = 0.3}``.

Every problem becomes one :class:`ConfigError` that names the file (or the ``--set`` item) and
the key: unknown sections and keys (with a "did you mean"), values of the wrong type, data paths
that do not exist. ``--set section.key=value`` overrides parse ``value`` as a TOML value
(``[32, 64]``, ``1e-3``, ``true``, ``"text"``) and fall back to a bare string (``--set
data.name=faces``); ``none`` sets an optional field to None (TOML has no null).

Relative data paths in a file are resolved against the file's folder; those given with ``--set``
against the current directory.
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from ndunet._checks import check_float, check_int, did_you_mean
from ndunet.config import Config, ConfigError, check_type, config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SECTIONS = ("task", "data", "patches", "augment", "model", "diffusion", "trainer")
# Data options that name files or folders (checked to exist), and those the runner sets itself.
PATH_OPTIONS = ("path", "folder", "y_path", "labels")
RUNNER_OPTIONS = ("split",)

__all__ = ["ConfigError", "PatchConfig", "RunConfig", "TaskConfig", "load_config", "parse_config"]


@config
class TaskConfig(Config):
    """What the run trains."""

    type: Literal["diffusion", "supervised"] = "diffusion"
    conditional: bool = False  # diffusion: condition on the data's class labels (enables CFG)
    validate: bool = True  # hold out the data's "val" split for validation
    test: bool = True  # supervised: evaluate the final weights on the "test" split at the end
    head: Literal["dense", "pooled"] = "dense"  # supervised: per-voxel output, or one per sample


@config
class PatchConfig(Config):
    """[patches]: train on random patches of the training volumes (``ndunet.data.patches``).

    nnU-Net's sampling: ``foreground_fraction`` of the patches centred on a random foreground
    voxel, volumes smaller than the patch padded with ``pad_value``, new crops every epoch seeded
    by the trainer's seed. Validation then predicts whole volumes through sliding windows of
    ``patch_size`` unless [trainer] sets ``val_roi_size``.
    """

    patch_size: tuple[int, ...]  # one length per spatial axis
    patches_per_volume: int = 1  # patches drawn from each loaded volume per epoch
    foreground_fraction: float = 1 / 3
    pad_value: float = 0.0

    def check_values(self) -> None:
        if not self.patch_size or min(self.patch_size) < 1:
            raise ValueError(
                f"patch_size={list(self.patch_size)!r} is not valid; expected one positive "
                "length per spatial axis, e.g. [64, 64, 32]"
            )
        check_int("patches_per_volume", self.patches_per_volume, 1)
        check_float("foreground_fraction", self.foreground_fraction, 0.0, 1.0)


@dataclass
class DataConfig:
    """A dataset of ``ndunet.data`` by name, with its keyword options (``split`` is set by the run)."""

    name: str = "digits"
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


@dataclass
class RunConfig:
    """A checked run file. ``trainer`` is built; ``model`` and ``diffusion`` stay tables of
    checked options until the data is known (``spatial_dims``, channels and classes may come
    from it), and are built once, by the assembly."""

    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    patches: PatchConfig | None = None  # None: train on whole samples
    augment: dict[str, dict[str, Any]] = field(default_factory=dict)  # transform name -> options
    model: dict[str, Any] = field(default_factory=dict)
    diffusion: dict[str, Any] = field(default_factory=dict)
    trainer: Any = None  # TrainerConfig
    trainer_table: dict[str, Any] = field(default_factory=dict)  # the keys the file gave
    source: str = "<config>"
    origins: dict[str, str] = field(default_factory=dict)  # "section.key" -> "--set ..." item

    def where(self, section: str, key: str | None) -> str:
        """Where ``section.key`` was set: the ``--set`` item, else the config file."""
        return self.origins.get(f"{section}.{key}", self.source)

    def located(self, error: ConfigError, section: str) -> ConfigError:
        """``error`` (about a key of ``section``) said to come from where that key was set."""
        key = error.key.split(".")[0] if error.key else None
        return error.located(self.where(section, key), section)

    def to_dict(self) -> dict[str, Any]:
        """The file's sections as given (round-trips through :func:`parse_config`)."""
        out = {"task": self.task.to_dict(), "data": self.data.to_dict()}
        if self.patches is not None:
            out["patches"] = self.patches.to_dict()
        if self.augment:
            out["augment"] = {name: _plain(options) for name, options in self.augment.items()}
        return {
            **out,
            "model": _plain(self.model),
            "diffusion": _plain(self.diffusion),
            "trainer": _plain(self.trainer_table),
        }


def _plain(table: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in table.items()}


def _hint(value: str, choices: Sequence[str]) -> str:
    return did_you_mean(value, choices)


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
        f"no such config file{_hint(stem, list(packaged))}; packaged configs: {list(packaged)}",
        None,
        str(name),
    )


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw sections of a .toml or .json file; ConfigError for a missing or unparsable file."""
    path = resolve_config(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not a text file (expected TOML or JSON)", None, source) from None
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError(f"not valid {kind}: {e}", None, source) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table of sections, got {type(raw).__name__}", None, source)
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
        raise ConfigError("expected section.key=value, e.g. trainer.lr=1e-3", None, source)
    dotted, text = item.split("=", 1)
    section, _, key = dotted.strip().partition(".")
    if not key:
        raise ConfigError(
            f"expected section.key with a section among {list(SECTIONS)}", dotted, source
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
            raise ConfigError("must be a table of keys", section, str(path))
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
    from ndunet.diffusion import DiffusionConfig
    from ndunet.models import check_model_table
    from ndunet.training import TrainerConfig

    base = Path(base_dir) if base_dir is not None else Path.cwd()
    origins = dict(origins or {})
    cfg = RunConfig(source=source, origins={k: src for k, (src, _) in origins.items()})

    def where(section: str, key: str) -> tuple[str, Path]:
        return origins.get(f"{section}.{key}", (source, base))

    for section in raw:
        _check_section_name(section, source)
        if not isinstance(raw[section], dict):
            raise ConfigError("must be a table of keys, e.g. [" + section + "]", section, source)

    def build(section: str, make: Any) -> Any:
        try:
            return make(raw.get(section, {}))
        except ConfigError as e:
            raise cfg.located(e, section) from None

    cfg.task = build("task", TaskConfig.from_dict)
    cfg.model = build("model", check_model_table)  # type = "unet" (default), "resnet18", ...
    cfg.diffusion = build("diffusion", DiffusionConfig.check_partial)
    cfg.trainer_table = build("trainer", TrainerConfig.check_partial)
    cfg.trainer = build("trainer", TrainerConfig.from_dict)
    cfg.data = _check_data(dict(raw.get("data", {})), where)
    if "patches" in raw:
        if "patch_size" not in raw["patches"]:
            src, _ = where("patches", "patch_size")
            raise ConfigError("needs this option, e.g. [64, 64, 32]", "patches.patch_size", src)
        cfg.patches = build("patches", PatchConfig.from_dict)
    cfg.augment = _check_augment(dict(raw.get("augment", {})), where)
    return cfg


def _check_section_name(section: str, source: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(
            f"unknown section{_hint(section, SECTIONS)}; sections: {list(SECTIONS)}",
            section,
            source,
        )


def _check_augment(table: dict[str, Any], where: Any) -> dict[str, dict[str, Any]]:
    """[augment]: each transform built once from its name and options (so bad ones fail here)."""
    from ndunet.transforms import build_transform

    for name, options in table.items():
        src, _ = where("augment", name)
        if not isinstance(options, dict):
            raise ConfigError(
                "expected a table of the transform's options, e.g. {prob = 0.5} ({} for defaults)",
                f"augment.{name}",
                src,
            )
        try:
            build_transform({name: options})
        except (ValueError, TypeError) as e:
            raise ConfigError(str(e), f"augment.{name}", src) from None
    return table


def _check_data(table: dict[str, Any], where: Any) -> DataConfig:
    from ndunet.data import DATASETS
    from ndunet.data.registry import required_options

    name = table.pop("name", "digits")
    src, _ = where("data", "name")
    names = sorted(DATASETS)
    if not isinstance(name, str) or name not in DATASETS:
        hint = _hint(name, names) if isinstance(name, str) else ""
        raise ConfigError(f"unknown dataset {name!r}{hint}; valid: {names}", "data.name", src)
    factory = DATASETS[name]
    params = inspect.signature(factory).parameters
    hints = get_type_hints(factory)
    allowed = [p for p in params if p not in RUNNER_OPTIONS]
    options: dict[str, Any] = {}
    for key, value in table.items():
        src, base = where("data", key)
        if key in RUNNER_OPTIONS:
            raise ConfigError("is set by the run (train/val/test); remove it", f"data.{key}", src)
        if key not in params:
            raise ConfigError(
                f"dataset {name!r} has no option {key!r}{_hint(key, allowed)}; options: {allowed}",
                f"data.{key}",
                src,
            )
        try:
            value = check_type(value, hints.get(key, Any), key)
        except ConfigError as e:
            raise e.located(src, "data") from None
        if key in PATH_OPTIONS and value is not None:  # one path, or a list of them
            paths = [value] if isinstance(value, str) else list(value)
            for i, item in enumerate(paths):
                resolved = (base / Path(item).expanduser()).resolve()
                if not resolved.exists():
                    raise ConfigError(
                        f"{str(item)!r} does not exist (looked for {resolved})", f"data.{key}", src
                    )
                paths[i] = str(resolved)
            value = paths[0] if isinstance(value, str) else paths
        options[key] = value
    missing = [p for p in required_options(name) if p not in options]
    if missing:
        src, _ = where("data", missing[0])
        raise ConfigError(f"dataset {name!r} needs this option", f"data.{missing[0]}", src)
    return DataConfig(name, options)

"""Run configs: parsing, --set overrides, type checks and error messages (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ndunet.app.run_config import (
    ConfigError,
    load_config,
    packaged_configs,
    parse_config,
    parse_override,
    parse_value,
)
from ndunet.config import describe_type as describe


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[32, 64]", [32, 64]),
        ("1e-3", 1e-3),
        ("3", 3),
        ("true", True),
        ('"7"', "7"),
        ("faces", "faces"),  # not TOML: a bare string
        ("[false, true]", [False, True]),
        ("{a = 1}", {"a": 1}),
    ],
)
def test_parse_value_follows_toml(text, expected):
    value = parse_value(text)
    assert value == expected and type(value) is type(expected)


def test_parse_override_splits_section_key_value():
    assert parse_override("model.channels=[8, 16]") == ("model", "channels", [8, 16])
    assert parse_override("trainer.out_dir=a=b") == ("trainer", "out_dir", "a=b")
    for bad in ("model.channels", "lr=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_every_packaged_config_loads():
    configs = packaged_configs()
    assert {"digits_diffusion", "digits_classify", "blobs3d_segmentation"} <= set(configs)
    for name, path in configs.items():
        cfg = load_config(name)  # by name, as `ndunet train digits_diffusion`
        assert cfg.source == str(path)
        assert cfg.task.type in ("diffusion", "supervised")


def test_file_values_are_typed_and_overrides_apply(tmp_path):
    path = write(
        tmp_path,
        '[task]\ntype = "supervised"\n[data]\nname = "digits"\nsize = 16\n'
        "[model]\nchannels = [8, 16]\n[trainer]\nlr = 1\nbetas = [0.5, 0.9]\n",
    )
    cfg = load_config(path, ["trainer.epochs=3", "model.channels=[4,8,16]", "data.size=none"])
    assert cfg.model["channels"] == (4, 8, 16)  # lists become the tuples the dataclass declares
    assert cfg.trainer.lr == 1.0 and isinstance(cfg.trainer.lr, float)  # int -> float
    assert cfg.trainer.betas == (0.5, 0.9)
    assert cfg.trainer.epochs == 3
    assert cfg.data.options == {"size": None}
    assert cfg.task.type == "supervised"


def test_json_config_round_trips(tmp_path):
    cfg = load_config("digits_diffusion")
    path = write(tmp_path, json.dumps(cfg.to_dict()), "run.json")
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()
    assert again.model["channels"] == (64, 128) and again.task == cfg.task


@pytest.mark.parametrize(
    ("text", "override", "key", "words"),
    [
        ("[model]\nchanels = [8, 16]\n", None, "model.chanels", "did you mean 'channels'"),
        ("[trainr]\nlr = 1\n", None, "trainr", "did you mean 'trainer'"),
        ("[trainer]\nepochs = 1.5\n", None, "trainer.epochs", "expected an integer"),
        ('[trainer]\nlr = "fast"\n', None, "trainer.lr", "expected a number"),
        ("[trainer]\nlr = -1.0\n", None, "trainer.lr", ">= 0"),
        ('[task]\ntype = "superviced"\n', None, "task.type", "did you mean 'supervised'"),
        ("[model]\nchannels = 8\n", None, "model.channels", "a list of integers"),
        ('[data]\nname = "digts"\n', None, "data.name", "did you mean 'digits'"),
        ("[data]\nsise = 16\n", None, "data.sise", "did you mean 'size'"),
        ('[data]\nname = "blobs"\n', None, "data.spatial_dims", "needs this option"),
        ('[data]\nsplit = "train"\n', None, "data.split", "set by the run"),
        ("[task]\n", "trainer.lr=-3", "trainer.lr", ">= 0"),
        ("[task]\n", "model.num_res_blocks=two", "model.num_res_blocks", "an integer"),
    ],
)
def test_errors_name_the_key_and_where_it_was_set(tmp_path, text, override, key, words):
    path = write(tmp_path, text)
    err = error_of(path, [override] if override else [])
    message = str(err)
    assert err.key == key and key in message
    assert words in message
    where = f"--set {override}" if override else str(path)
    assert err.source == where and message.startswith(where)


def test_missing_data_path_is_named_with_the_file(tmp_path):
    path = write(tmp_path, '[task]\ntype = "supervised"\n[data]\nname = "arrays"\npath = "nope"\n')
    err = error_of(path)
    assert err.key == "data.path" and err.source == str(path)
    assert "'nope' does not exist" in str(err) and str(tmp_path / "nope") in str(err)


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "data.npz").write_bytes(b"")
    (tmp_path / "other.npz").write_bytes(b"")
    path = write(sub, '[data]\nname = "arrays"\npath = "data.npz"\n')
    monkeypatch.chdir(tmp_path)  # the file's paths do not depend on where ndunet runs
    assert load_config(path).data.options["path"] == str((sub / "data.npz").resolve())
    # --set paths are the user's shell paths: relative to the current folder
    cfg = load_config(path, ["data.path=other.npz"])
    assert cfg.data.options["path"] == str((tmp_path / "other.npz").resolve())
    assert error_of(path, ["data.path=data.npz"]).source == "--set data.path=data.npz"


def test_unreadable_files_are_config_errors(tmp_path):
    assert "no such config file" in str(error_of(tmp_path / "absent.toml"))
    err = error_of(write(tmp_path, "[model\nchannels = 1\n"))
    assert "not valid TOML" in str(err) and "line 1" in str(err)
    err = error_of(write(tmp_path, "{", "bad.json"))
    assert "not valid JSON" in str(err)
    err = error_of(write(tmp_path, "model = 3\n"))
    assert err.key == "model" and "table" in str(err)


def test_parse_config_accepts_a_dict():
    cfg = parse_config({"task": {"conditional": True}, "trainer": {"max_steps": 5}})
    assert cfg.task.conditional is True and cfg.trainer.max_steps == 5
    assert cfg.trainer_table == {"max_steps": 5}
    assert cfg.data.name == "digits" and cfg.model == {}


def test_describe_reads_like_english():
    from typing import Literal

    assert describe(int) == "an integer"
    assert describe(tuple[int, ...]) == "a list of integers"
    assert describe(int | None) == "an integer or none"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"

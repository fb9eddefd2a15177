"""``save_pretrained`` / ``from_pretrained`` for every model kind, in ndunet's one folder format
(config.json + model.safetensors + manifest.json, written atomically, verified when read)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch

from ndunet.pretrained import load_checkpoint, save_checkpoint

M = TypeVar("M", bound="PretrainedMixin")


class PretrainedMixin:
    """For models with a ``config`` (``to_dict``) built as ``cls(config)`` from their
    ``config_class`` (``from_config`` here), or with a ``from_config`` of their own."""

    config_class: ClassVar[type[Any]]

    @classmethod
    def from_config(cls: type[M], config: Any) -> M:
        """Build a fresh model (random weights) from its config or the config's ``to_dict()``."""
        want = cls.config_class
        if isinstance(config, dict):
            config = want.from_dict(config)
        if not isinstance(config, want):
            raise TypeError(
                f"config must be a {want.__name__} or dict, got {type(config).__name__}"
            )
        return cls(config)  # type: ignore[call-arg]

    def summary(self, input_shape: tuple[int, ...], **kwargs: Any) -> Any:
        """Per-layer table (name, output shape, parameters); see :func:`ndunet.summary`."""
        from ndunet.model_summary import summary

        return summary(self, input_shape, **kwargs)  # type: ignore[arg-type]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model's folder: its config and weights (safetensors), with a manifest.
        An existing model folder is replaced atomically; any other non-empty folder is refused."""
        import ndunet

        path = Path(directory)
        if path.is_dir() and any(path.iterdir()) and not (path / "manifest.json").is_file():
            raise FileExistsError(
                f"directory={str(path)!r} is not empty and is not an ndunet model folder; "
                "ndunet never deletes files it did not write: choose an empty or new folder"
            )
        entry = {"type": type(self).__name__, "config": self.config.to_dict()}  # type: ignore[attr-defined]
        return save_checkpoint(
            directory,
            config={"ndunet_version": ndunet.__version__, "model": entry},
            model_state=self.state_dict(),  # type: ignore[attr-defined]
        )

    @classmethod
    def from_pretrained(
        cls: type[M],
        directory: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        which: Literal["last", "best"] = "last",
        **build: Any,
    ) -> M:
        """Rebuild a model from a save_pretrained folder, a checkpoint folder or a run folder
        (its ``checkpoints/<which>``); the manifest is verified and nothing is unpickled.
        ``build`` goes to ``from_config`` (e.g. ``in_layer=`` for a custom stem)."""
        path = Path(directory)
        if (path / "checkpoints").is_dir():
            path = path / "checkpoints" / which
        ck = load_checkpoint(path)
        entry = ck.config.get("model") or {}
        if entry.get("type") != cls.__name__:
            raise ValueError(
                f"{str(path)!r} holds a {entry.get('type') or ck.config.get('model_class')!r} "
                f"model, not a {cls.__name__}"
            )
        model = cls.from_config(entry["config"], **build)  # type: ignore[attr-defined]
        model.load_state_dict(ck.model_state, strict=True)
        return model.to(device)

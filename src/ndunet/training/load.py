"""Rebuild what a saved folder holds (network, Diffusion wrapper, EMA weights) from the folder
alone, e.g. for ``ndunet sample``: a run folder, a checkpoint folder, or a ``save_pretrained``
folder, of any model kind ndunet saves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from ndunet._checks import check_choice
from ndunet.models import MODEL_TYPES, build_model
from ndunet.pretrained import Checkpoint, CheckpointError, load_checkpoint


@dataclass
class LoadedRun:
    """`model` carries the trained weights; `ema_model` the EMA weights (None without EMA);
    `diffusion` wraps `model` (None for a supervised run); `config` is the folder's config.json."""

    model: nn.Module
    diffusion: nn.Module | None
    ema_model: nn.Module | None
    config: dict[str, Any]
    path: Path

    @property
    def sampling_model(self) -> nn.Module:
        """The network to sample with: the EMA weights when there are any."""
        return self.ema_model if self.ema_model is not None else self.model


def ema_weights(ema_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The averaged network's state dict out of an `ndunet.EMA` state dict."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


def checkpoint_folder(path: str | Path, which: Literal["last", "best"] = "last") -> Path:
    """The checkpoint folder ``path`` means: a run folder's ``checkpoints/<which>``, or ``path``."""
    check_choice("which", which, ("last", "best"))
    path = Path(path)
    return path / "checkpoints" / which if (path / "checkpoints").is_dir() else path


def rebuild_model(ck: Checkpoint) -> nn.Module:
    """A fresh model of the kind and config a checkpoint records (weights not loaded)."""
    entry = ck.config.get("model")
    if entry is None:
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r} holds weights of a {ck.config.get('model_class', 'custom')} "
            "model, which cannot be rebuilt from the folder alone; build the model yourself and "
            "load load_checkpoint(path).model_state into it"
        )
    if entry.get("type") not in MODEL_TYPES:
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r}: model type {entry.get('type')!r} is not valid; "
            f"expected one of {sorted(MODEL_TYPES)}"
        )
    cfg = entry["config"]
    if cfg.get("custom_in_layer") or cfg.get("custom_out_layer"):
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r}: the model was built with custom in/out layers, which "
            "the config cannot rebuild; build the model yourself and load model_state into it"
        )
    return build_model(entry)


def load_run(path: str | Path, which: Literal["last", "best"] = "last") -> LoadedRun:
    """Load a run folder (its checkpoints/<which>), a checkpoint folder or a save_pretrained
    folder, verify it, and rebuild the model (+ Diffusion, + EMA copy) on CPU in eval mode."""
    ck = load_checkpoint(checkpoint_folder(path, which))
    model = rebuild_model(ck)
    model.load_state_dict(ck.model_state)
    model.eval()
    ema_model = None
    if ck.ema_state is not None:
        ema_model = rebuild_model(ck)
        ema_model.load_state_dict(ema_weights(ck.ema_state))
        ema_model.eval()
    diffusion = None
    entry = ck.config.get("diffusion")
    if entry is not None:
        from ndunet.diffusion import Diffusion, DiffusionConfig

        if entry.get("config") is None:
            raise CheckpointError(f"checkpoint {str(ck.path)!r}: diffusion entry has no config")
        diffusion = Diffusion(model, config=DiffusionConfig.from_dict(entry["config"]))
        extra = {k: v for k, v in (ck.extra_state or {}).items() if not k.startswith("power_ema.")}
        if extra:  # (the power EMA profiles of a run are for ndunet.posthoc_ema)
            diffusion.load_state_dict(
                {**extra, **{f"model.{k}": v for k, v in ck.model_state.items()}}
            )
        diffusion.eval()
    return LoadedRun(model, diffusion, ema_model, ck.config, ck.path)

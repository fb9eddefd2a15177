"""Rebuild what a checkpoint holds (network, Diffusion wrapper, EMA weights) from the folder
alone, e.g. for `ndunet sample`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from ndunet.pretrained import Checkpoint, CheckpointError, load_checkpoint


@dataclass
class Pipeline:
    """`model` carries the trained weights; `ema_model` the EMA weights (None without EMA);
    `diffusion` wraps `model` (None for a supervised run)."""

    model: nn.Module
    diffusion: nn.Module | None
    ema_model: nn.Module | None
    ema_state: dict[str, Tensor] | None
    config: dict[str, Any]
    path: Path

    @property
    def sampling_model(self) -> nn.Module:
        """The network to sample with: the EMA weights when there are any."""
        return self.ema_model if self.ema_model is not None else self.model


def ema_weights(ema_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The averaged network's state dict out of an `ndunet.EMA` state dict."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


def _build_model(ck: Checkpoint) -> nn.Module:
    entry = ck.config.get("model")
    if entry is None:
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r} holds weights of a {ck.config.get('model_class', 'custom')} model, "
            "which cannot be rebuilt from the folder alone; build the model yourself and load "
            "load_checkpoint(path).model_state into it"
        )
    if entry.get("type") != "UNet":
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r}: unknown model type {entry.get('type')!r}; known: UNet"
        )
    cfg = entry["config"]
    if cfg.get("custom_in_layer") or cfg.get("custom_out_layer"):
        raise CheckpointError(
            f"checkpoint {str(ck.path)!r}: the UNet was built with custom in/out layers, which the "
            "config cannot rebuild; build the model yourself and load model_state into it"
        )
    from ndunet.models.unet import UNet

    return UNet.from_config(cfg)


def load_pipeline(path: str | Path, which: Literal["last", "best"] = "last") -> Pipeline:
    """Load a run folder (its checkpoints/<which>) or a checkpoint folder, verify it, and rebuild
    the UNet (+ Diffusion, + EMA copy) on CPU in eval mode."""
    if which not in ("last", "best"):
        raise ValueError(f"which={which!r}; allowed: 'last', 'best'")
    path = Path(path)
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints" / which
    ck = load_checkpoint(path)
    model = _build_model(ck)
    model.load_state_dict(ck.model_state)
    model.eval()
    ema_model = None
    if ck.ema_state is not None:
        ema_model = _build_model(ck)
        ema_model.load_state_dict(ema_weights(ck.ema_state))
        ema_model.eval()
    diffusion = None
    entry = ck.config.get("diffusion")
    if entry is not None:
        from ndunet.diffusion import Diffusion, DiffusionConfig

        if entry.get("config") is None:
            raise CheckpointError(f"checkpoint {str(ck.path)!r}: diffusion entry has no config")
        diffusion = Diffusion.from_config(model, DiffusionConfig.from_dict(entry["config"]))
        if ck.extra_state:
            diffusion.load_state_dict(
                {**ck.extra_state, **{f"model.{k}": v for k, v in ck.model_state.items()}}
            )
        diffusion.eval()
    return Pipeline(
        model=model,
        diffusion=diffusion,
        ema_model=ema_model,
        ema_state=ck.ema_state,
        config=ck.config,
        path=ck.path,
    )

"""What a run folder says about its run: the config.json written beside every checkpoint, and
restoring a trainer from a checkpoint folder (refusing one whose model was configured otherwise)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ndunet.models import model_entry
from ndunet.pretrained import CheckpointError, load_checkpoint
from ndunet.training.logging import logger

# Trainer settings that may change on resume without changing what is computed.
FREE_ON_RESUME = frozenset(
    {
        "out_dir", "epochs", "max_steps", "time_limit", "device", "num_workers",
        "log_every_steps", "plot", "tensorboard", "sample_every", "sample_n", "keep_last",
        "save_every_steps", "save_checkpoints", "val_every", "val_every_steps",
        "val_roi_size", "val_overlap", "val_sw_batch_size", "val_mode", "compile", "compile_mode",
    }
)  # fmt: skip


def _differences(saved: Any, now: Any, prefix: str) -> dict[str, tuple[Any, Any]]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(saved) | set(now)):
            out.update(_differences(saved.get(key), now.get(key), f"{prefix}.{key}"))
        return out
    return {} if saved == now else {prefix: (saved, now)}


def _with_defaults(saved: dict[str, Any], classes: dict[str, Any]) -> dict[str, Any]:
    """``saved`` (a config.json) with each section's missing options set to their defaults."""
    out = dict(saved)
    for section, cls in classes.items():
        entry = saved.get(section)
        if cls is None or not isinstance(entry, dict) or not dataclasses.is_dataclass(cls):
            continue
        defaults = {
            f.name: _json_ready(f.default)
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }
        defaults.update(
            {
                f.name: _json_ready(f.default_factory())
                for f in dataclasses.fields(cls)
                if f.default_factory is not dataclasses.MISSING
            }
        )
        if section == "trainer":
            out[section] = {**defaults, **entry}
        elif isinstance(entry.get("config"), dict):
            out[section] = {**entry, "config": {**defaults, **entry["config"]}}
    return out


def _json_ready(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_ready(v) for v in value]
    return value


class FolderMixin:
    """What a trainer writes as config.json, and how it resumes from a checkpoint folder."""

    def describe_run(self, indent: int | None = None) -> Any:
        """The config.json of a run folder and of each of its checkpoints (text when ``indent``)."""
        import ndunet

        cls = type(self.network)
        data = {
            "ndunet_version": ndunet.__version__,
            "task": self.task,
            "model": model_entry(self.network),
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "diffusion": self.diffusion_entry(),
            "trainer": self.config.to_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "best": {"metric": self.best.key, "value": self.best.value},
        }
        return data if indent is None else json.dumps(data, indent=indent)

    def _check_same_run(self, saved: dict[str, Any], path: Path) -> None:
        """Refuse to resume weights trained as another model or diffusion (unless the trainer was
        built with allow_changes=True); warn when a trainer setting changes the computation."""
        now = self.describe_run()
        saved = _with_defaults(saved, self._config_classes())
        changed = {}
        for section in ("model", "diffusion"):
            diff = _differences(saved.get(section), now[section], section)
            # "model.config.activation" reads as the run file's "model.activation"
            changed.update(
                {k.replace(f"{section}.config.", f"{section}."): v for k, v in diff.items()}
            )
        if changed and not self.allow_changes:
            shown = "; ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise CheckpointError(
                f"cannot resume {str(path)!r} with a changed model or diffusion config ({shown}). "
                "Resume with the run's own settings, or pass allow_changes=True "
                "(ndunet train --allow-changes) to continue anyway."
            )
        trainer = _differences(saved.get("trainer", {}), now["trainer"], "trainer")
        settings = {k: v for k, v in trainer.items() if k.split(".", 1)[1] not in FREE_ON_RESUME}
        if changed or settings:
            logger.warning(
                "resuming with changed settings %s (saved, now): the run is not an exact continuation",
                {**changed, **settings},
            )

    def _config_classes(self) -> dict[str, Any]:
        """The config class of each section (their defaults stand in for options a run saved
        by an older ndunet does not record)."""
        diffusion = getattr(getattr(self.module, "config", None), "__class__", None)
        return {
            "model": getattr(type(self.network), "config_class", None),
            "diffusion": diffusion if self.diffusion_entry() is not None else None,
            "trainer": type(self.config),
        }

    def restore_checkpoint(self, path: Path) -> None:
        """Load a verified checkpoint folder into a trainer whose fit() set-up is done: weights,
        EMA, extra tensors and :meth:`Trainer.load_state_dict`."""
        ck = load_checkpoint(path)
        self._check_same_run(ck.config, path)
        state = ck.trainer_state()
        if len(state["ranks"]) != self.dist.world_size and state["batch_in_epoch"]:
            raise ValueError(
                f"{str(path)!r} was written mid-epoch by {len(state['ranks'])} process(es); resuming "
                f"it with {self.dist.world_size} would split the rest of the epoch differently. Resume "
                f"with {len(state['ranks'])} process(es), or from an epoch-end checkpoint (copy "
                "checkpoints/epoch-NNNN over checkpoints/last)."
            )
        self.network.load_state_dict(ck.model_state)
        self.load_extra_state(ck.extra_state)
        if self.ema is not None:
            if ck.ema_state is None:
                raise CheckpointError(
                    f"{str(path)!r} has no ema.safetensors but ema_decay={self.config.ema_decay}"
                )
            self.ema.load_state_dict(ck.ema_state)
        try:
            self.load_state_dict(state)
        except ValueError as e:
            raise CheckpointError(f"{str(path)!r}: {e}") from None
        if self.batch_in_epoch and not state["data_order"]:
            raise CheckpointError(f"{str(path)!r}: mid-epoch checkpoint without its data order")

"""Checkpoint contents of a trainer: the config.json description and the trainer_state dict
(only tensors and plain containers, so torch.load(weights_only=True) reads it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ndunet.pretrained import CheckpointError, load_checkpoint
from ndunet.training import distributed as D
from ndunet.training.logging import logger
from ndunet.training.rng import capture_rng

if TYPE_CHECKING:
    from ndunet.training.trainer import Trainer

STATE_VERSION = 1


def model_entry(network: nn.Module) -> dict[str, Any] | None:
    """{"type": "UNet", "config": {...}} for an ndunet UNet (rebuildable from the file alone);
    None for any other model."""
    cls = type(network)
    cfg = getattr(network, "config", None)
    if cls.__name__ == "UNet" and cls.__module__.startswith("ndunet") and hasattr(cfg, "to_dict"):
        return {"type": "UNet", "config": cfg.to_dict()}
    return None


def run_config(tr: Trainer) -> dict[str, Any]:
    """The config.json of the run folder and of every checkpoint."""
    import ndunet

    cls = type(tr.network)
    return {
        "ndunet_version": ndunet.__version__,
        "task": tr.task,
        "model": model_entry(tr.network),
        "model_class": f"{cls.__module__}.{cls.__qualname__}",
        "diffusion": tr.diffusion_entry(),
        "trainer": tr.config.to_dict(),
        "step": tr.step,
        "epoch": tr.epoch,
        "best": {"metric": tr.best.key, "value": tr.best.value},
    }


def describe(tr: Trainer) -> str:
    """run_config as indented JSON text."""
    return json.dumps(run_config(tr), indent=2)


def trainer_state(tr: Trainer) -> dict[str, Any]:
    """Everything beyond the weights that resume needs. Per-rank parts are gathered from all ranks
    (a collective: every rank calls this)."""
    own = {
        "rng": capture_rng(),
        "epoch_loss": float(getattr(tr, "_epoch_loss", 0.0)),
        "epoch_batches": int(getattr(tr, "_epoch_batches_n", 0)),
    }
    ranks = D.gather_objects(own, tr.dist)
    order = getattr(tr, "_order", None)
    epoch_rng = getattr(tr, "_epoch_rng", None)
    data_order: dict[str, Any] = {}
    if tr.batch_in_epoch > 0:  # mid-epoch: how this epoch's batches were ordered
        data_order = {"order": order} if order is not None else {"epoch_rng": epoch_rng}
    return {
        "version": STATE_VERSION,
        "step": tr.step,
        "epoch": tr.epoch,
        "batch_in_epoch": tr.batch_in_epoch,
        "world_size": tr.dist.world_size,
        "optimizer": tr.optimizer.state_dict(),
        "scheduler": tr.scheduler.state_dict(),
        "scaler": tr.scaler.state_dict(),
        "ranks": ranks,
        "data_order": data_order,
        "best_value": tr.best.value,
        "history": tr.history,
        "elapsed": tr._wall(),
        "skipped": int(getattr(tr, "_skipped", 0)),
        "sample_shape": list(tr.sample_shape) if getattr(tr, "sample_shape", None) else None,
    }


def load_state_into(tr: Trainer, path: Path) -> None:
    """Restore a trainer from a verified checkpoint folder (weights, EMA, optimizer, ...)."""
    ck = load_checkpoint(path)
    st = ck.trainer_state()
    if st.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"{str(path)!r}: trainer_state version {st.get('version')!r}, expected {STATE_VERSION}"
        )
    if len(st["ranks"]) != tr.dist.world_size and st["batch_in_epoch"]:
        raise ValueError(
            f"{str(path)!r} was written mid-epoch by {len(st['ranks'])} process(es); resuming it with "
            f"{tr.dist.world_size} would split the rest of the epoch differently. Resume with "
            f"{len(st['ranks'])} process(es), or from an epoch-end checkpoint (copy "
            "checkpoints/epoch-NNNN over checkpoints/last)."
        )
    saved = ck.config.get("trainer", {})
    changed = {
        k: (saved.get(k), v)
        for k, v in tr.config.to_dict().items()
        if k in saved and saved[k] != v and k not in ("resume", "epochs", "progress")
    }
    if changed:
        logger.warning(
            "resuming with changed settings %s (saved, now): the run is not an exact continuation",
            changed,
        )
    tr.network.load_state_dict(ck.model_state)
    tr.load_extra_state(ck.extra_state)
    if tr.ema is not None:
        if ck.ema_state is None:
            raise CheckpointError(
                f"{str(path)!r} has no ema.safetensors but ema_decay={tr.config.ema_decay}"
            )
        tr.ema.load_state_dict(ck.ema_state)
    tr.optimizer.load_state_dict(st["optimizer"])
    tr.scheduler.load_state_dict(st["scheduler"])
    tr.scaler.load_state_dict(st["scaler"])
    tr.step, tr.epoch, tr.batch_in_epoch = st["step"], st["epoch"], st["batch_in_epoch"]
    tr.best.value, tr.history, tr._elapsed, tr._skipped = (
        st["best_value"],
        list(st["history"]),
        st["elapsed"],
        st["skipped"],
    )
    if st["sample_shape"] is not None:
        tr.sample_shape = tuple(st["sample_shape"])
    ranks = st["ranks"]
    if len(ranks) == tr.dist.world_size:
        mine = ranks[tr.dist.rank]
        tr._rng = mine["rng"]
        tr._epoch_loss, tr._epoch_batches_n = mine["epoch_loss"], mine["epoch_batches"]
    else:
        logger.warning(
            "checkpoint written by %d processes, resumed by %d: RNG streams restart",
            len(ranks),
            tr.dist.world_size,
        )
        tr._rng = None
        tr._epoch_loss, tr._epoch_batches_n = ranks[0]["epoch_loss"], ranks[0]["epoch_batches"]
    order = st["data_order"]
    tr._order = order.get("order")
    tr._epoch_rng = order.get("epoch_rng")
    if tr.batch_in_epoch and tr._order is None and tr._epoch_rng is None:
        raise CheckpointError(f"{str(path)!r}: mid-epoch checkpoint without its data order")

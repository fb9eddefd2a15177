"""Build what a run file describes: its datasets, its model and its trainer.

Every error is a :class:`ConfigError` naming the key and where it was set (the file or a
``--set`` item). Nothing is written here: the trainer creates the run folder when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndunet.app.run_config import RunConfig
from ndunet.config import ConfigError


def build_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The dataset splits the run uses: train, and val / test when enabled (empty ones dropped)."""
    from ndunet.data import load_dataset

    splits = ["train"]
    if cfg.task.validate:
        splits.append("val")
    if cfg.task.type == "supervised" and cfg.task.test:
        splits.append("test")
    out = {}
    for split in splits:
        try:
            data = load_dataset(cfg.data.name, split=split, **cfg.data.options)
        except (ValueError, TypeError, OSError) as e:  # the dataset's own checks, located
            key = next((k for k in cfg.data.options if f"{k}=" in str(e)), None)
            where = cfg.where("data", key) if key else cfg.source
            raise ConfigError(str(e), f"data.{key}" if key else "data", where) from None
        if len(data) or split == "train":
            out[split] = data
    if not len(out["train"]):
        raise ConfigError("the train split is empty; lower val/test_fraction", "data", cfg.source)
    return out


def train_dataset(cfg: RunConfig, data: Any) -> Any:
    """The train split as the trainer reads it: random patches ([patches]) and/or augmentation
    ([augment]), both seeded by (trainer seed, epoch, index) so resumed runs draw the same; or
    the split itself when neither section is given."""
    from ndunet.data.patches import PatchDataset
    from ndunet.data.transformed import TransformedDataset
    from ndunet.transforms import build_transform

    n = data.spatial_dims
    transform = build_transform(cfg.augment) if cfg.augment else None
    for name in cfg.augment:  # axes and planes must exist in the data
        probe = torch.zeros(data.in_channels, *(4,) * n)  # (C, *spatial)
        try:
            build_transform({name: cfg.augment[name]})(probe, generator=torch.Generator())
        except (ValueError, TypeError) as e:
            raise ConfigError(
                f"{e} (the data has spatial_dims={n})",
                f"augment.{name}",
                cfg.where("augment", name),
            ) from None
    if cfg.patches is None:
        return data if transform is None else TransformedDataset(data, transform, cfg.trainer.seed)
    p = cfg.patches
    if len(p.patch_size) != n:
        raise ConfigError(
            f"patch_size={list(p.patch_size)} is not valid; expected {n} lengths, one per "
            f"spatial axis of dataset {cfg.data.name!r}",
            "patches.patch_size",
            cfg.where("patches", "patch_size"),
        )
    return PatchDataset(
        data, p.patch_size, p.patches_per_volume, p.foreground_fraction,
        seed=cfg.trainer.seed, transform=transform, pad_value=p.pad_value,
    )  # fmt: skip


def whole_volume_defaults(cfg: RunConfig, data: Any) -> dict[str, Any]:
    """Supervised runs on patches validate whole volumes through windows of the patch size,
    unless [trainer] sets val_roi_size; a val_roi_size must fit the data's spatial axes."""
    roi = cfg.trainer.val_roi_size
    if roi is not None and (cfg.task.type != "supervised" or len(roi) != data.spatial_dims):
        expected = (
            f"{data.spatial_dims} window lengths, one per spatial axis"
            if cfg.task.type == "supervised"
            else "none (sliding-window validation is for supervised runs)"
        )
        raise ConfigError(
            f"val_roi_size={list(roi)} is not valid; expected {expected}",
            "trainer.val_roi_size",
            cfg.where("trainer", "val_roi_size"),
        )
    if cfg.patches is None or cfg.task.type != "supervised" or "val_roi_size" in cfg.trainer_table:
        return {}
    return {"val_roi_size": cfg.patches.patch_size}


def model_config(cfg: RunConfig, data: Any) -> Any:
    """The UNetConfig of [model], with spatial_dims, channels and classes filled from the data."""
    from ndunet.models import UNetConfig

    values = dict(cfg.model)
    values.setdefault("spatial_dims", data.spatial_dims)
    values.setdefault("in_channels", data.in_channels)
    if cfg.task.type == "diffusion":
        values.setdefault("out_channels", data.in_channels)
        values.setdefault("time_embedding", True)
        if cfg.task.conditional:
            if data.task != "classification" or not data.num_classes:
                raise ConfigError(
                    f"needs class labels, but dataset {cfg.data.name!r} is a {data.task} dataset",
                    "task.conditional",
                    cfg.source,
                )
            values.setdefault("num_classes", data.num_classes)
    else:
        if data.out_channels is None:
            raise ConfigError(
                f"dataset {cfg.data.name!r} has no targets to learn", "data", cfg.source
            )
        values.setdefault("out_channels", data.out_channels)
    try:
        return UNetConfig.from_dict(values)
    except ConfigError as e:
        raise cfg.located(e, "model") from None


def build_model(cfg: RunConfig, data: Any) -> nn.Module:
    """The run's network: a UNet, or a UNetClassifier for ``task.head = "pooled"``."""
    from ndunet.models import UNet, UNetClassifier

    unet_config = model_config(cfg, data)
    if cfg.task.type == "supervised" and cfg.task.head == "pooled":
        return UNetClassifier(unet_config)
    return UNet(unet_config)


def supervised_defaults(cfg: RunConfig, data: Any) -> dict[str, Any]:
    """Loss and metrics for the data's task when [trainer] names none."""
    if cfg.task.head == "pooled" or data.task == "classification":
        return {"loss": "cross_entropy", "metrics": ("accuracy",)}
    if data.task == "segmentation":
        return {"loss": "dice_ce", "metrics": ("dice", "iou")}
    return {"loss": "mse", "metrics": ("psnr",)}


def build_trainer(
    cfg: RunConfig,
    out_dir: Path,
    *,
    resume: bool,
    allow_changes: bool = False,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """(trainer, datasets) for the run described by ``cfg``. The model is built after seeding
    with the run's seed, so the same file and seed give the same initial weights."""
    from ndunet.rng import seed_everything

    datasets = build_datasets(cfg)
    train = datasets["train"]
    seed_everything(cfg.trainer.seed)
    model = build_model(cfg, train)
    from ndunet.diffusion import Diffusion, DiffusionConfig
    from ndunet.training import DiffusionTrainer, SupervisedTrainer

    diffusion = cfg.task.type == "diffusion"
    trainer_cls: Any = DiffusionTrainer if diffusion else SupervisedTrainer
    defaults = dict(trainer_cls.config_defaults)
    if not diffusion:
        defaults.update(supervised_defaults(cfg, train))
    defaults.update(whole_volume_defaults(cfg, train))
    changes = {k: v for k, v in defaults.items() if k not in cfg.trainer_table}
    try:
        trainer_config = cfg.trainer.replace(**changes, out_dir=str(out_dir))
    except ConfigError as e:
        raise cfg.located(e, "trainer") from None
    module: nn.Module = model
    if diffusion:
        try:
            values = {"num_classes": getattr(model, "num_classes", None), **cfg.diffusion}
            module = Diffusion(model, config=DiffusionConfig.from_dict(values))
        except ConfigError as e:
            raise cfg.located(e, "diffusion") from None
    train_data = train_dataset(cfg, train)  # patches and augmentation; metadata stays on train
    trainer = trainer_cls(
        module, train_data, datasets.get("val"), config=trainer_config, resume=resume,
        allow_changes=allow_changes, progress=progress,
    )  # fmt: skip
    return trainer, datasets

"""Build what a run file describes: its datasets, its model and its trainer.

Every error is a :class:`ConfigError` naming the key and where it was set (the file or a
``--set`` item). Nothing is written here: the trainer creates the run folder when it starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    trainer = trainer_cls(
        module, train, datasets.get("val"), config=trainer_config, resume=resume,
        allow_changes=allow_changes, progress=progress,
    )  # fmt: skip
    return trainer, datasets

"""Build what a run file describes: its datasets, its model and its trainer.

Every error is a :class:`ConfigError` naming the key and where it was set (the file or a
``--set`` item). Nothing is written here: the trainer creates the run folder when it starts.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ndunet.app.run_config import RunConfig
from ndunet.config import ConfigError


def build_datasets(cfg: RunConfig) -> dict[str, Any]:
    """The dataset splits the run uses: train, and val / test when enabled (empty ones dropped).

    Loaders that can read their files once for all splits do (``ndunet.data.load_splits``);
    ``model.spatial_dims`` states the data's layout when [data] does not; a diffusion run
    refuses training data outside [-1, 1] (see :func:`check_diffusion_range`)."""
    from ndunet.data import DATASETS, load_splits

    splits = ["train"]
    if cfg.task.validate:
        splits.append("val")
    if cfg.task.type == "supervised" and cfg.task.test:
        splits.append("test")
    options, section = dict(cfg.data.options), "data"
    accepts = inspect.signature(DATASETS[cfg.data.name]).parameters
    if "spatial_dims" in cfg.model and "spatial_dims" in accepts and "spatial_dims" not in options:
        options["spatial_dims"] = cfg.model["spatial_dims"]  # the model's axes are the data's
        section = "model"
    try:
        parts = load_splits(cfg.data.name, splits, **options)
    except (ValueError, TypeError, OSError, ImportError) as e:  # the dataset's checks, located
        key = next((k for k in options if f"{k}=" in str(e)), None)
        where = cfg.where(section if key == "spatial_dims" else "data", key)
        name = f"{section if key == 'spatial_dims' else 'data'}.{key}" if key else "data"
        raise ConfigError(str(e), name, where if key else cfg.source) from None
    out = {split: data for split, data in parts.items() if len(data) or split == "train"}
    train = out["train"]
    if not len(train):
        raise ConfigError("the train split is empty; lower val/test_fraction", "data", cfg.source)
    stated = cfg.model.get("spatial_dims")
    if stated is not None and stated != train.spatial_dims:
        raise ConfigError(
            f"is {stated}, but dataset {cfg.data.name!r} is {train.spatial_dims}-D; set "
            f"data.spatial_dims (and channel_axis) to read it as {stated}-D, or drop "
            "model.spatial_dims",
            "model.spatial_dims",
            cfg.where("model", "spatial_dims"),
        )
    varying = [s for s, d in out.items() if getattr(d, "spatial_shape", ()) is None]
    if varying and cfg.patches is None and cfg.trainer.batch_size > 1:
        raise ConfigError(
            f"is {cfg.trainer.batch_size}, but the {'/'.join(varying)} volumes of dataset "
            f"{cfg.data.name!r} differ in shape, so they cannot be batched; set "
            "trainer.batch_size = 1, or train on patches ([patches] patch_size = [...])",
            "trainer.batch_size",
            cfg.where("trainer", "batch_size"),
        )
    if cfg.task.type == "diffusion":
        check_diffusion_range(cfg, train)
    return out


def check_diffusion_range(cfg: RunConfig, data: Any, samples: int = 4) -> None:
    """Diffusion learns and samples in [-1, 1]: refuse training data outside it, naming the
    ``data.normalize`` value that maps it there. Checked on all of an in-memory dataset, else
    on the recorded normalisation or the first ``samples`` samples (a cheap look, not a proof)."""
    from ndunet.data import DATASETS

    norm = getattr(data, "normalization", None)
    x = getattr(data, "x", None)
    if isinstance(x, torch.Tensor):
        low, high, seen = float(x.min()), float(x.max()), "the training samples"
    elif norm is not None and norm.kind in ("minmax", "ct"):  # mapped (and clipped) into [-1, 1]
        return
    else:
        firsts = [torch.as_tensor(data[i][0]) for i in range(min(samples, len(data)))]
        low = min(float(t.min()) for t in firsts)
        high = max(float(t.max()) for t in firsts)
        seen = f"the first {len(firsts)} training sample(s)"
    if low >= -1 - 1e-5 and high <= 1 + 1e-5:
        return
    allowed = _literals(typing.get_type_hints(DATASETS[cfg.data.name]).get("normalize"))
    fix = next((c for c in ("minmax", "symmetric") if c in allowed), None)
    how = (
        f"set data.normalize = {fix!r} to map the training range to [-1, 1] (recorded in the "
        "run folder and undone by ndunet sample)"
        if fix
        else f"dataset {cfg.data.name!r} has no normalize option: scale the data to [-1, 1] first"
    )
    raise ConfigError(
        f"diffusion trains and samples in [-1, 1], but {seen} of dataset {cfg.data.name!r} "
        f"reach [{low:.4g}, {high:.4g}]; {how}",
        "data.normalize",
        cfg.where("data", "normalize"),
    )


def _literals(hint: Any) -> list[str]:
    """The strings a (possibly nested) Literal type hint allows."""
    args = typing.get_args(hint)
    return [a for a in args if isinstance(a, str)] + [s for a in args for s in _literals(a)]


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

    values = {k: v for k, v in cfg.model.items() if k != "type"}
    values.setdefault("spatial_dims", data.spatial_dims)
    if cfg.task.type == "diffusion":
        in_channels, out_channels = diffusion_channels(cfg, data)
        values.setdefault("in_channels", in_channels)
        values.setdefault("out_channels", out_channels)
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
        values.setdefault("in_channels", data.in_channels)
        if data.out_channels is None:
            raise ConfigError(
                f"dataset {cfg.data.name!r} has no targets to learn", "data", cfg.source
            )
        values.setdefault("out_channels", data.out_channels)
    try:
        return UNetConfig.from_dict(values)
    except ConfigError as e:
        raise cfg.located(e, "model") from None


def diffusion_channels(cfg: RunConfig, data: Any) -> tuple[int, int]:
    """(network input, output) channels of a diffusion run: the data's, plus the condition's.
    ``[diffusion] condition = "image"`` generates the data's targets given its inputs (pairs
    as for supervised restoration); "mask" adds a mask and known values per data channel."""
    condition = cfg.diffusion.get("condition", "none")
    if condition == "image":
        if data.task not in ("denoising", "regression") or not data.out_channels:
            raise ConfigError(
                f"needs (input, target) image pairs, but dataset {cfg.data.name!r} is a "
                f"{data.task} dataset",
                "diffusion.condition",
                cfg.where("diffusion", "condition"),
            )
        cond = cfg.diffusion.get("cond_channels", data.in_channels)
        return data.out_channels + cond, data.out_channels
    if condition == "mask":
        return 3 * data.in_channels, data.in_channels
    return data.in_channels, data.in_channels


def build_model(cfg: RunConfig, data: Any) -> nn.Module:
    """The run's network: a UNet, or a UNetClassifier for ``task.head = "pooled"``; another kind
    when [model] names a ``type`` (a ResNet, "resnet_unet": see ``app/model_kinds.py``)."""
    from ndunet.models import UNet, UNetClassifier

    if cfg.model.get("type", "unet") != "unet":
        from ndunet.app.model_kinds import build_model_kind

        return build_model_kind(cfg, data)
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
            if values.get("condition") == "image":
                values.setdefault("cond_channels", train.in_channels)
            module = Diffusion(model, config=DiffusionConfig.from_dict(values))
        except ConfigError as e:
            raise cfg.located(e, "diffusion") from None
    train_data = train_dataset(cfg, train)  # patches and augmentation; metadata stays on train
    trainer = trainer_cls(
        module, train_data, datasets.get("val"), config=trainer_config, resume=resume,
        allow_changes=allow_changes, progress=progress,
    )  # fmt: skip
    return trainer, datasets

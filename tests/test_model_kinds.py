"""Run files choose the network with [model] type: ResNet presets and custom layouts for one
output per sample, "resnet_unet" for dense outputs; trained by ``ndunet train`` and rebuilt from
the run folder; wrong combinations refused before any work, naming the key."""

from __future__ import annotations

import pytest
import torch

from ndunet.app.cli import main
from ndunet.app.run_config import load_config, parse_config
from ndunet.config import ConfigError
from ndunet.models import ResNet, ResNetUNet, UNet, check_model_table
from ndunet.training import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ["--set", "trainer.max_steps=2", "--set", "trainer.batch_size=16", "--quiet"]


def test_packaged_resnet_config_trains_and_rebuilds_from_its_folder(tmp_path) -> None:
    run = tmp_path / "resnet"
    args = ["train", "digits_resnet", "--out", str(run), *SHORT]
    args += ["--set", "model.widths=[4,8,8,8]", "--set", "model.stem_channels=4"]
    assert main(args) == 0
    loaded = load_run(run)
    assert isinstance(loaded.model, ResNet)
    assert loaded.model.config.layers == (2, 2, 2, 2) and loaded.model.config.num_classes == 10
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(ResNet.from_pretrained(run).eval()(x), loaded.model(x))


def test_resnet_unet_on_a_segmentation_run(tmp_path) -> None:
    run = tmp_path / "seg"
    cfg = load_config("blobs3d_segmentation")
    table = {"type": "resnet_unet", "encoder": "resnet18", "encoder_depth": 2,
             "encoder_widths": [4, 4, 8, 8], "stem_channels": 4, "decoder_channels": [8, 8, 4]}  # fmt: skip
    raw = cfg.to_dict()
    raw["model"] = table
    raw["trainer"] = {**raw["trainer"], "max_steps": 2, "batch_size": 2}
    from ndunet.app.assemble import build_trainer

    trainer, _ = build_trainer(parse_config(raw), run, resume=False, progress=False)
    trainer.fit()
    loaded = load_run(run).model
    assert isinstance(loaded, ResNetUNet) and loaded.config.encoder_depth == 2


def test_the_default_type_is_the_unet() -> None:
    cfg = parse_config(
        {"task": {"type": "supervised", "head": "pooled"}, "model": {"channels": [4, 8]}}
    )
    assert "type" not in cfg.model
    table = check_model_table({"type": "unet", "channels": [4, 8]})
    assert table == {"type": "unet", "channels": (4, 8)}
    from ndunet.app.assemble import build_model
    from ndunet.data import digits

    model = build_model(parse_config({"model": table}), digits("train"))
    assert isinstance(model, UNet)


@pytest.mark.parametrize(
    ("model", "task", "match"),
    [
        ({"type": "resnet19"}, {}, r"model\.type=.*did you mean 'resnet18'"),
        ({"type": "resnet18", "layers": [1, 1]}, {}, r"model\.layers=.*type = \"resnet\""),
        ({"type": "resnet18", "channels": [4]}, {}, "did you mean 'in_channels'"),
        ({"type": "resnet_unet", "encoder": "resnet_18"}, {}, "did you mean 'resnet18'"),
    ],
)
def test_bad_model_tables_name_the_key(model: dict, task: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config({"task": task, "model": model})


@pytest.mark.parametrize(
    ("model", "task", "match"),
    [
        ({"type": "resnet18"}, {"type": "diffusion"}, 'use type = "unet"'),
        ({"type": "resnet_unet"}, {"type": "supervised", "head": "pooled"}, "use a ResNet"),
    ],
)
def test_kinds_that_do_not_fit_the_task_are_refused(model: dict, task: dict, match: str) -> None:
    from ndunet.app.assemble import build_model
    from ndunet.data import digits

    with pytest.raises(ConfigError, match=match):
        build_model(parse_config({"task": task, "model": model}), digits("train"))

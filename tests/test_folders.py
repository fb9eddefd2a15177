"""Every model kind ndunet saves rebuilds from its folder alone (run folder, checkpoint folder or
save_pretrained folder), and every config class names a misspelled option's right name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndunet import UNet
from ndunet.app.cli import main
from ndunet.config import ConfigError
from ndunet.diffusion import DiffusionConfig
from ndunet.models import UNetClassifier, UNetConfig
from ndunet.training import SupervisedTrainer, TrainerConfig, load_run

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"progress": False, "device": "cpu", "plot": False}


def test_classification_run_from_the_packaged_config_rebuilds_from_its_folder(tmp_path):
    run = tmp_path / "cls"
    args = ["train", "digits_classify", "--out", str(run), "--quiet"]
    args += ["--set", "trainer.max_steps=2", "--set", "model.channels=[8,16]"]
    assert main(args) == 0
    loaded = load_run(run)
    assert isinstance(loaded.model, UNetClassifier)
    again = UNetClassifier.from_pretrained(run)
    x = torch.randn(3, 1, 8, 8)
    out = loaded.model(x)
    assert out.shape == (3, 10) and torch.equal(again.eval()(x), out)
    # and through save_pretrained: the same folder format
    again.save_pretrained(tmp_path / "saved")
    assert torch.equal(UNetClassifier.from_pretrained(tmp_path / "saved").eval()(x), out)


def test_unet_with_a_configured_activation_trains_saves_and_rebuilds(tmp_path):
    net = UNet(2, 1, 1, channels=(4, 8), num_groups=2, activation=nn.LeakyReLU(0.2))
    x = torch.randn(16, 1, 8, 8)
    trainer = SupervisedTrainer(
        net, (x, x), loss="mse", metrics=(), out_dir=str(tmp_path / "run"), epochs=1,
        batch_size=8, **QUIET,
    )  # fmt: skip
    trainer.fit()
    rebuilt = UNet.from_pretrained(tmp_path / "run")  # a run folder: its checkpoints/last
    act = rebuilt.down[0].units[0].block.act1
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.2
    assert torch.equal(rebuilt.eval()(x[:2]), net.eval()(x[:2]))
    assert load_run(tmp_path / "run", which="best").model.config.to_dict() == net.config.to_dict()


def test_a_custom_activation_is_recorded_as_custom_not_a_crash(tmp_path):
    class Sine(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x)

    net = UNet(1, 1, 1, channels=(4, 8), num_groups=2, activation=Sine())
    x = torch.randn(8, 1, 8)
    SupervisedTrainer(
        net, (x, x), loss="mse", metrics=(), out_dir=str(tmp_path / "run"), epochs=1, **QUIET
    ).fit()
    with pytest.raises(ValueError, match="custom activation"):
        load_run(tmp_path / "run")


@pytest.mark.parametrize(
    ("make", "suggestion"),
    [
        (lambda: UNetConfig(2, 1, 1, chanels=(4, 8)), "channels"),
        (lambda: UNet(2, 1, 1, block_out_channels=(4, 8)), "channels"),
        (lambda: DiffusionConfig(timestep=10), "timesteps"),
        (lambda: DiffusionConfig(prediction_type="v"), "prediction"),
        (lambda: TrainerConfig(max_epochs=3), "epochs"),
        (lambda: TrainerConfig(learning_rate=1e-3), "lr"),
        (lambda: TrainerConfig.from_dict({"bach_size": 4}), "batch_size"),
    ],
)
def test_every_config_class_names_the_right_option(make, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        make()


def test_task_section_names_the_right_option(tmp_path, capsys):
    from ndunet.app.run_config import TaskConfig

    with pytest.raises(ConfigError, match="did you mean 'conditional'"):
        TaskConfig(conditionnal=True)


def test_a_bad_sampler_fails_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "digits_diffusion", "--out", str(out), "--set", "diffusion.sampler=dpm++"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "diffusion.sampler" in err and "did you mean 'dpm++2m'" in err
    assert not out.exists()
    args[-1] = "trainer.sampler=dpm++2m"  # where it used to live: said where it lives now
    assert main(args) == 2
    assert "[diffusion]" in capsys.readouterr().err and not out.exists()

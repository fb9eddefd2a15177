"""summary(): shapes from the conv/pool size formula, parameter counts from closed form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndunet.model_summary import summary
from ndunet.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sequential_rows_match_closed_form(capsys: pytest.CaptureFixture[str]) -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 5 * 6, 4),
    )
    s = summary(model, (2, 3, 11, 12))
    rows = {r.name: r for r in s.rows}
    assert rows["0"].output_shape == (2, 8, 11, 12)  # (11 + 2 - 3) // 1 + 1 = 11
    assert rows["2"].output_shape == (2, 8, 5, 6)  # floor(11 / 2), 12 / 2
    assert rows["4"].output_shape == (2, 4)
    assert rows["0"].params == 3 * 8 * 9 + 8 and rows["4"].params == 240 * 4 + 4
    assert s.total_params == 3 * 8 * 9 + 8 + 240 * 4 + 4 == s.trainable_params
    assert s.param_bytes == 4 * s.total_params
    printed = capsys.readouterr().out
    assert "Conv2d" in printed and "(2, 8, 5, 6)" in printed and f"{s.total_params:,}" in printed


def test_shared_and_frozen_parameters_counted_once() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    model[0].bias.requires_grad_(False)
    s = summary(model, (1, 4), verbose=False)
    assert s.total_params == 20 and s.trainable_params == 16
    assert s.rows[0].calls == 2


def test_unet_summary_and_depth(capsys: pytest.CaptureFixture[str]) -> None:
    model = UNet(3, 2, 3, channels=(4, 8), time_embedding=True, num_classes=2)
    model.train()
    s = model.summary((2, 5, 6, 7), depth=1)  # no batch axis: batch 1 is added
    assert s.input_shape == (1, 2, 5, 6, 7) and s.output_shape == (1, 3, 5, 6, 7)
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert model.training  # mode restored
    rows = {r.name: r for r in s.rows}
    assert rows["stem"].output_shape == (1, 4, 6, 6, 8)  # padded inside to multiples of 2
    assert rows["down.1.units.0"].output_shape == (1, 8, 3, 3, 4)
    printed = capsys.readouterr().out
    assert "stem" in printed and "down.1.units" not in printed and "units" not in printed


def test_summary_bad_input() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        summary(nn.Linear(2, 2), (0, 2))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        summary(lambda x: x, (1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depth"):
        summary(nn.Linear(2, 2), (1, 2), depth=-1)


def test_summary_passes_forward_kwargs() -> None:
    model = UNet(1, 1, 1, channels=(4, 8), time_embedding=True)
    s = summary(model, (3, 1, 8), t=torch.tensor([1, 2, 3]), verbose=False)
    assert s.output_shape == (3, 1, 8)


def test_top_level_summary_is_the_function() -> None:
    import ndunet

    assert ndunet.summary is summary

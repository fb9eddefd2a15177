"""ResNet for any spatial_dims: the published ImageNet parameter counts, shapes on N = 1..4 with
odd sizes, an N-D ResNet embedded in (N+1)-D (a singleton axis) giving the same output,
training, and save/load through every folder kind."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ndunet.config import ConfigError
from ndunet.models import (
    RESNET_PRESETS,
    ResNet,
    ResNetConfig,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# torchvision's ImageNet models (3 input channels, 1000 classes), as published.
PUBLISHED = {
    resnet18: 11_689_512,
    resnet34: 21_797_672,
    resnet50: 25_557_032,
    resnet101: 44_549_160,
    resnet152: 60_192_808,
}
TINY = {"widths": (4, 8), "layers": (1, 2), "stem_channels": 4}
ODD = {1: (2, 3, 13), 2: (2, 3, 9, 14), 3: (2, 3, 7, 5, 6), 4: (2, 3, 5, 4, 3, 6)}


@pytest.mark.parametrize("make", list(PUBLISHED), ids=lambda f: f.__name__)
def test_parameter_counts_equal_the_published_imagenet_models(make) -> None:
    with torch.device("meta"):  # shapes only: nothing allocated
        model = make(2, in_channels=3, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED[make]
    assert model.config.preset_name() == make.__name__


def test_module_names_follow_torchvision() -> None:
    with torch.device("meta"):
        model = resnet50(2)
    names = set(model.state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight",
                "layer4.2.bn3.weight", "fc.weight", "fc.bias"):  # fmt: skip
        assert key in names
    assert model.layer3[0].conv2.stride == (2, 2) and model.layer3[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_runs_on_every_spatial_dims_with_odd_sizes(spatial_dims: int, block: str) -> None:
    shape = ODD[spatial_dims]
    model = ResNet(spatial_dims, in_channels=3, num_classes=5, block=block, **TINY)
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 5) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    feats = model.features(torch.randn(shape))
    assert [f.shape[1] for f in feats] == list(model.config.stage_channels())
    # stride 2 with padding rounds up: ceil(s / 2) per stride-2 layer
    expected = [(s + 1) // 2 for s in shape[2:]]  # the stem
    assert tuple(feats[0].shape[2:]) == tuple(expected)


def _embed(low: nn.Module, high: nn.Module) -> None:
    """Copy low-N weights into the (N+1)-D model's centre tap along the new last axis: on an
    input of size 1 there, only that tap ever meets data (the others meet zero padding)."""
    with torch.no_grad():
        for p, w in zip(high.state_dict().values(), low.state_dict().values()):
            if p.shape == w.shape:
                p.copy_(w)
            else:
                p.normal_()  # taps that must not matter
                p[..., p.shape[-1] // 2] = w


@pytest.mark.parametrize("low_dims", [1, 2, 3])
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_lower_dim_resnet_embedded_in_higher_dim(low_dims: int, block: str) -> None:
    kwargs = dict(in_channels=2, num_classes=4, block=block, **TINY)
    low, high = ResNet(low_dims, **kwargs), ResNet(low_dims + 1, **kwargs)
    for m in low.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    _embed(low, high)
    low.eval(), high.eval()
    x = torch.randn(2, 2, *{1: (11,), 2: (9, 6), 3: (5, 7, 4)}[low_dims])
    torch.testing.assert_close(high(x.unsqueeze(-1)), low(x), rtol=1e-4, atol=1e-5)


def test_learns_a_tiny_classification_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 1, 12)
    y = (x.mean((1, 2)) > 0).long()
    model = ResNet(1, in_channels=1, num_classes=2, **TINY, stem_kernel_size=3, stem_stride=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_options_presets_and_features() -> None:
    model = ResNet(2, in_channels=1, num_classes=None, norm="group", num_groups=2,
                   activation="silu", zero_init_residual=True, dropout=0.1, **TINY)  # fmt: skip
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 8)  # pooled features of the last stage
    assert all(not b.last_norm().weight.detach().any() for b in model.layer1)
    cfg = ResNetConfig.preset("resnet50", 3, in_channels=1, num_classes=3)
    assert cfg.layers == RESNET_PRESETS["resnet50"]["layers"] and cfg.block == "bottleneck"
    with pytest.raises(ConfigError, match=r"layers=.*preset"):
        ResNetConfig.preset("resnet18", 2, layers=(1, 1))
    with pytest.raises(ValueError, match="did you mean 'resnet50'"):
        ResNetConfig.preset("resnet5", 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"widths": (4, 8, 16)}, "one width per stage"),
        ({"block": "bottle"}, "did you mean 'bottleneck'"),
        ({"stem_kernel_size": 4}, "stem_kernel_size"),
        ({"layers": (0, 1)}, "layers"),
        ({"num_classes": 0}, "num_classes"),
        ({"norm": "batchh"}, "did you mean 'batch'"),
        ({"width": (4, 8)}, "did you mean 'widths'"),
    ],
)
def test_bad_configs_name_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        ResNet(2, **{**TINY, **kwargs})


def test_bad_input_is_refused() -> None:
    model = ResNet(2, in_channels=3, **TINY)
    with pytest.raises(ValueError, match="in_channels=3"):
        model(torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="spatial_dims=2"):
        model(torch.randn(1, 3, 8))


def test_save_pretrained_and_run_folder_round_trip(tmp_path) -> None:
    from ndunet.training import SupervisedTrainer, load_run

    model = ResNet(3, in_channels=1, num_classes=3, block="bottleneck", activation="gelu",
                   stem_pool=False, **TINY)  # fmt: skip
    x, y = torch.randn(8, 1, 7, 6, 4), torch.randint(0, 3, (8,))
    SupervisedTrainer(
        model, (x, y), loss="cross_entropy", metrics=("accuracy",), out_dir=str(tmp_path / "run"),
        epochs=1, batch_size=4, progress=False, device="cpu", plot=False,
    ).fit()  # fmt: skip
    model.eval()
    loaded = load_run(tmp_path / "run").model
    assert isinstance(loaded, ResNet) and loaded.config == model.config
    torch.testing.assert_close(loaded(x), model(x))
    model.save_pretrained(tmp_path / "saved")
    again = ResNet.from_pretrained(tmp_path / "saved").eval()
    assert torch.equal(again(x), model(x))
    entry = json.loads((tmp_path / "saved" / "config.json").read_text())["model"]
    assert entry["type"] == "ResNet" and entry["config"]["block"] == "bottleneck"

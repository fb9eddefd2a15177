"""ResNetUNet: shapes on N = 1..4 with odd sizes for basic and bottleneck encoders, an N-D model
embedded in (N+1)-D (data constant along the new axis) giving the same output, a ResNet's weights as the encoder,
attention on skips and decoder stages, config checks, and save/load through every folder kind."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ndunet.config import ConfigError
from ndunet.models import ResNet, ResNetUNet, ResNetUNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"encoder_widths": (4, 4, 8, 8), "stem_channels": 4, "decoder_channels": None}
ODD = {1: (2, 2, 37), 2: (2, 2, 19, 23), 3: (2, 2, 9, 7, 11), 4: (2, 1, 3, 3, 4, 3)}
DEPTH = {1: 4, 2: 3, 3: 2, 4: 1}  # factor 32 / 16 / 8 / 4: inputs stay tiny


@pytest.mark.parametrize("encoder", ["resnet18", "resnet50"])
def test_shapes_on_every_spatial_dims_with_odd_sizes(spatial_dims: int, encoder: str) -> None:
    shape = ODD[spatial_dims]
    model = ResNetUNet(spatial_dims, in_channels=shape[1], out_channels=3, encoder=encoder,
                       encoder_depth=DEPTH[spatial_dims], **TINY)  # fmt: skip
    out = model(torch.randn(shape))
    assert out.shape == (shape[0], 3, *shape[2:]) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert len(model.decoder) == model.config.num_decoder_stages() == DEPTH[spatial_dims] + 1


def test_default_layout_is_segmentation_models_unet() -> None:
    cfg = ResNetUNetConfig(2, 3, 2)
    assert cfg.scales() == (2, 4, 8, 16, 32)
    assert cfg.decoder_widths() == (256, 128, 64, 32, 16)
    assert cfg.encoder_config().layers == (3, 4, 6, 3)  # resnet34
    small = ResNetUNetConfig(2, 1, 2, stem_kernel_size=3, stem_stride=1, stem_pool=False)
    assert small.scales() == (1, 1, 2, 4, 8) and small.num_decoder_stages() == 4


@pytest.mark.parametrize("low_dims", [1, 2])
def test_lower_dim_model_embedded_in_higher_dim(low_dims: int) -> None:
    kwargs = dict(in_channels=2, out_channels=3, encoder="resnet18", encoder_depth=2, **TINY,
                  skip_attention=("channel", "gate"), decoder_attention=("spatial", False, False))  # fmt: skip
    low, high = ResNetUNet(low_dims, **kwargs), ResNetUNet(low_dims + 1, **kwargs)
    for m in low.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # kernels act along the old axes only (the new axis: centre tap)
        for p, w in zip(high.state_dict().values(), low.state_dict().values()):
            if p.shape == w.shape:
                p.copy_(w)
            else:
                p.zero_()
                p[..., p.shape[-1] // 2] = w
    low.eval(), high.eval()
    x = torch.randn(2, 2, *{1: (21,), 2: (13, 10)}[low_dims])
    out = high(x.unsqueeze(-1).expand(*x.shape, 8).contiguous())  # constant along the new axis
    for k in range(8):
        torch.testing.assert_close(out[..., k], low(x), rtol=1e-4, atol=1e-5)


def test_a_resnets_weights_load_into_the_encoder() -> None:
    model = ResNetUNet(2, in_channels=1, out_channels=2, encoder="resnet18", **TINY)
    classifier = ResNet(model.config.encoder_config().replace(num_classes=10))
    weights = {k: v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    model.encoder.load_state_dict(weights, strict=True)
    assert torch.equal(model.encoder.layer2[0].conv1.weight, classifier.layer2[0].conv1.weight)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"encoder": "resnet_34"}, "did you mean 'resnet34'"),
        ({"encoder_depth": 5}, "encoder_depth"),
        ({"decoder_channels": (8, 8)}, r"decoder_channels=.*expected 5"),
        ({"skip_attention": ("gate",)}, r"skip_attention=.*expected 4"),
        ({"decoder_attention": ("cross",) * 5}, "on skip connections"),
        ({"encoder_layers": (1, 1), "encoder_widths": (4, 4, 4)}, "one width per stage"),
    ],
)
def test_bad_configs_name_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ResNetUNetConfig(2, 1, 1, **kwargs)


def test_save_pretrained_and_run_folder_round_trip(tmp_path) -> None:
    from ndunet.training import SupervisedTrainer, load_run

    model = ResNetUNet(
        2, in_channels=1, out_channels=2, encoder="resnet50", encoder_layers=(1, 1),
        encoder_widths=(4, 4), stem_channels=4, decoder_channels=(8, 8, 4), norm="group",
        num_groups=2, skip_attention=("cross", ["channel", "spatial"]), attention_head_dim=4,
    )  # fmt: skip
    x, y = torch.randn(4, 1, 12, 10), torch.randint(0, 2, (4, 12, 10))
    SupervisedTrainer(
        model, (x, y), loss="cross_entropy", metrics=(), out_dir=str(tmp_path / "run"),
        epochs=1, batch_size=2, progress=False, device="cpu", plot=False,
    ).fit()  # fmt: skip
    model.eval()
    loaded = load_run(tmp_path / "run").model
    assert isinstance(loaded, ResNetUNet) and loaded.config == model.config
    torch.testing.assert_close(loaded(x), model(x))
    model.save_pretrained(tmp_path / "saved")
    assert torch.equal(ResNetUNet.from_pretrained(tmp_path / "saved").eval()(x), model(x))

"""UNet options beyond the basics: composable attention (every kind, every stacking order, in
blocks, on skips and at the bottleneck) trained a few steps at N = 1..4; per-convolution kernels;
the additive time embedding and its sinusoid width; anisotropic per-axis strides and kernels
(shape arithmetic, a slice-by-slice 2-D oracle, padding per axis); legacy configs unchanged; every
new option through JSON, save/load and a run folder."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from ndunet import UNet
from ndunet.config import ConfigError
from ndunet.models import UNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")

ORDERS = list(itertools.permutations(["channel", "spatial", "self"]))
NAMES = {"channel": "ChannelAttention", "spatial": "SpatialAttention", "self": "SelfAttention",
         "cbam": "CBAM", "gate": "AttentionGate", "cross": "CrossAttention"}  # fmt: skip
SIZES = {1: (2, 1, 12), 2: (2, 1, 6, 5), 3: (2, 1, 4, 3, 4), 4: (2, 1, 2, 3, 2, 4)}
SMALL = {"channels": (4, 8), "num_res_blocks": 1, "num_groups": 2, "attention_head_dim": 4}


def _train(model: nn.Module, x: torch.Tensor, steps: int = 4, **inputs) -> list[float]:
    target = torch.randn(x.shape[0], model.config.out_channels, *x.shape[2:])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = (model(x, **inputs) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _kinds(module: nn.Module) -> list[str]:
    mods = module if isinstance(module, nn.Sequential) else [module]
    return [type(m).__name__ for m in mods]


@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_every_stacking_order_trains_at_every_spatial_dims(spatial_dims: int, order) -> None:
    stack = list(order)
    model = UNet(
        spatial_dims, 1, 1, **SMALL, time_embedding=True, attention_levels=([], stack),
        bottleneck_attention=stack[::-1], skip_attention=([*stack, "cross"], ["gate", *stack]),
    )  # fmt: skip
    assert _kinds(model.down[1].units[0].attn) == [NAMES[k] for k in order]  # in its blocks
    assert _kinds(model.mid[0].attn) == [NAMES[k] for k in order[::-1]]  # at the bottleneck
    deep, shallow = model.up[0].skip_attn[0], model.up[1].skip_attn[0]  # up[0]: deepest level
    assert [type(m).__name__ for m in deep.layers] == [NAMES[k] for k in ("gate", *order)]
    assert [type(m).__name__ for m in shallow.layers] == [NAMES[k] for k in (*order, "cross")]
    x = torch.randn(SIZES[spatial_dims])
    losses = _train(model, x, t=torch.tensor([3, 70]))
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < losses[0]


@pytest.mark.parametrize("placement", ["after", "residual"])
def test_each_kind_singly_at_every_position(spatial_dims: int, placement: str) -> None:
    model = UNet(
        spatial_dims, 1, 2, **SMALL, block="plain", attention_levels=("qkv", "cbam"),
        bottleneck_attention="channel", skip_attention=("cross", "spatial"),
        attention_placement=placement, attention_reduction=2, attention_kernel_size=3,
    )  # fmt: skip
    unit = model.down[0].units[0]
    attn = unit.attn if placement == "after" else unit.block.attn
    assert type(attn).__name__ == "SelfAttention"
    assert (unit.attn is None) == (placement == "residual")
    mid = model.mid[0].attn or model.mid[0].block.attn
    assert mid.mlp[0].out_features == 4  # 8 channels // attention_reduction 2
    losses = _train(model, torch.randn(SIZES[spatial_dims]), steps=3)
    assert losses[-1] < losses[0]


def test_attention_specs_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"attention_levels=.*use it on skip connections"):
        UNetConfig(2, 1, 1, channels=(4, 8), attention_levels=(False, "cross"))
    with pytest.raises(ConfigError, match="did you mean 'channel'"):
        UNetConfig(2, 1, 1, channels=(4, 8), skip_attention=("chanel", False))
    with pytest.raises(ConfigError, match=r"skip_attention.*one per level"):
        UNetConfig(2, 1, 1, channels=(4, 8), skip_attention=("gate",))
    with pytest.raises(ConfigError, match="attention_kernel_size"):
        UNetConfig(2, 1, 1, attention_kernel_size=4)


def test_legacy_attention_keeps_its_meaning() -> None:
    """Configs written before stacks existed build the same modules: True is "self", "cbam" keeps
    reduction 16, attention gates stay where their weights were saved."""
    model = UNet(2, 1, 1, channels=(32, 64), attention_levels=(False, True), attention_gates=True,
                 bottleneck_attention="cbam")  # fmt: skip
    assert type(model.down[1].units[0].attn).__name__ == "SelfAttention"
    assert model.mid[0].attn.mlp[0].out_features == 64 // 16
    keys = set(model.state_dict())
    assert {"up.0.gates.0.theta.weight", "down.1.units.0.attn.qkv.weight"} <= keys
    assert not any("skip_attn" in k for k in keys)
    assert sum(p.numel() for p in model.parameters()) == 900_046  # as built before this change


def test_per_convolution_kernels_and_additive_time_embedding() -> None:
    model = UNet(2, 1, 1, channels=(4, 8), num_groups=2, block_kernel_sizes=(1, 3, 1),
                 time_embedding=True, time_injection="add", time_freq_dim=10)  # fmt: skip
    block = model.down[0].units[0].block
    assert [getattr(block, f"conv{j}").kernel_size for j in (1, 2, 3)] == [(1, 1), (3, 3), (1, 1)]
    assert block.emb_proj.out_features == 4  # a bias per channel, not a scale and a shift
    assert model.time_embed.linear1.in_features == 10
    aniso = UNetConfig(3, 1, 1, channels=(4, 8), kernel_sizes=((1, 3, 3), 3),
                       block_kernel_sizes=(1, 5, (3, 1, 1)))  # fmt: skip
    assert aniso.conv_kernels(0) == ((1, 1, 1), (1, 5, 5), (3, 1, 1))
    assert aniso.conv_kernels(1) == ((1, 1, 1), (5, 5, 5), (3, 1, 1))
    with pytest.raises(ConfigError, match="block_kernel_sizes=2"):
        UNetConfig(2, 1, 1, block_kernel_sizes=(1, 2))


def _shapes(model: UNet, x: torch.Tensor) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    hooks = [
        level.units[-1].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[2:])))
        for level in model.down
    ]
    out = model(x)
    for h in hooks:
        h.remove()
    assert out.shape[2:] == x.shape[2:]
    return shapes


def test_anisotropic_volume_pools_depth_only_twice() -> None:
    strides = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    kernels = ((1, 3, 3), (1, 3, 3), 3, 3, 3)
    model = UNet(3, 1, 2, channels=(4, 4, 8, 8, 8), num_res_blocks=1, num_groups=2,
                 strides=strides, kernel_sizes=kernels)  # fmt: skip
    assert model.config.downsample_factors == (4, 16, 16)
    size = [20, 64, 64]
    expected = [tuple(size)]
    for step in strides:  # per-axis arithmetic: each level divides each axis by its factor
        size = [s // f for s, f in zip(size, step)]
        expected.append(tuple(size))
    with torch.no_grad():
        assert _shapes(model, torch.randn(1, 1, 20, 64, 64)) == expected
        assert model(torch.randn(1, 1, 19, 61, 50)).shape == (1, 2, 19, 61, 50)  # padded per axis
    assert model.down[0].units[0].block.conv1.weight.shape[2:] == (1, 3, 3)
    assert model.down[3].units[0].block.conv1.weight.shape[2:] == (3, 3, 3)
    assert model.down[0].resample.op.stride == (1, 2, 2)
    assert model.up[3].resample.op[1].kernel_size == (1, 3, 3)  # no smoothing across slices
    # MONAI DynUNet / nnU-Net's layout, with a leading stride of 1, means the same
    dyn = UNetConfig(3, 1, 2, channels=(4, 4, 8, 8, 8), strides=((1, 1, 1), *strides))
    assert dyn.down_factors() == strides


def test_thin_axis_that_isotropic_pooling_refuses() -> None:
    x = torch.randn(1, 1, 2, 16, 16)
    with pytest.raises(ValueError, match="too small"):
        UNet(3, 1, 1, channels=(4, 8, 8), num_groups=2)(x)
    model = UNet(3, 1, 1, channels=(4, 8, 8), num_groups=2, strides=((1, 2, 2), (1, 2, 2)))
    assert model(x).shape == x.shape


def test_anisotropic_unet_is_a_2d_unet_slice_by_slice() -> None:
    """Kernels and strides of 1 along depth make a 3-D U-Net act on each slice alone: with
    per-channel norms (batch norm, eval) it equals the 2-D U-Net with the same weights."""
    common = dict(channels=(4, 8, 8), num_res_blocks=(1, 2, 1), norm="batch", block_kernel_sizes=(3, 1),
                  time_embedding=True, upsample="nearest", attention_gates=True)  # fmt: skip
    flat = UNet(2, 2, 3, **common).eval()
    deep = UNet(3, 2, 3, **common, strides=((1, 2, 2), (1, 2, 2)),
                kernel_sizes=((1, 3, 3),) * 3).eval()  # fmt: skip
    with torch.no_grad():
        for m in flat.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2)
        for p, w in zip(deep.state_dict().values(), flat.state_dict().values()):
            p.copy_(w if p.shape == w.shape else w.unsqueeze(2))  # (O, I, 1, kh, kw)
    x, t = torch.randn(2, 2, 3, 9, 10), torch.tensor([5, 600])
    out = deep(x, t)
    for d in range(3):
        torch.testing.assert_close(out[:, :, d], flat(x[:, :, d], t), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strides": ((1, 2), 2, 2)}, "strides=.*spatial_dims=3"),
        ({"strides": (2, 2)}, "strides=.*2 entries"),
        ({"strides": (2, 2, 2, 2)}, "first is the input level's"),
        ({"kernel_sizes": (3, 3)}, "kernel_sizes=.*one per level"),
        ({"kernel_sizes": ((3, 2, 3), 3, 3, 3)}, "kernel_sizes=2"),
        ({"strides": (0, 2, 2)}, "strides"),
    ],
)
def test_bad_anisotropic_options_name_the_option(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetConfig(3, 1, 1, channels=(4, 8, 8, 8), **kwargs)


EVERY_NEW_OPTION = dict(
    channels=(4, 8, 8), num_res_blocks=1, num_groups=2, attention_head_dim=4,
    attention_levels=([], ["channel", "spatial"], "qkv"), bottleneck_attention=["cbam", "self"],
    skip_attention=(["cross", "channel"], "gate", "spatial"), attention_reduction=2,
    attention_kernel_size=3, attention_placement="residual", time_embedding=True,
    time_injection="add", time_freq_dim=6, block_kernel_sizes=(1, 3, 1),
    strides=((1, 2), (2, 2)), kernel_sizes=((1, 3), 3, 3), norm="batch",
)  # fmt: skip


def test_every_new_option_round_trips_through_json_save_load_and_a_run_folder(tmp_path) -> None:
    from ndunet.training import SupervisedTrainer, load_run

    model = UNet(2, 1, 1, **EVERY_NEW_OPTION)
    again = UNetConfig.from_dict(json.loads(json.dumps(model.config.to_dict())))
    assert again == model.config
    x, t = torch.randn(4, 1, 6, 9), torch.tensor([1, 2, 3, 4])
    model.eval()
    ref = model(x, t)
    model.save_pretrained(tmp_path / "saved")
    torch.testing.assert_close(UNet.from_pretrained(tmp_path / "saved").eval()(x, t), ref)

    net = UNet(2, 1, 1, **{**EVERY_NEW_OPTION, "time_embedding": False, "time_freq_dim": None})
    SupervisedTrainer(
        net, (x, x), loss="mse", metrics=(), out_dir=str(tmp_path / "run"), epochs=1,
        batch_size=2, progress=False, device="cpu", plot=False,
    ).fit()  # fmt: skip
    loaded = load_run(tmp_path / "run").model
    assert loaded.config == net.config
    torch.testing.assert_close(loaded(x), net.eval()(x))

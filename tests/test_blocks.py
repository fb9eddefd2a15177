"""Blocks against formulas written with torch's functional ops, and resampling against
repeat_interleave / pooling oracles, for every spatial_dims."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ndunet.blocks import ConvBlock, Downsample, ResBlock, Unit, Upsample, make_attention
from ndunet.layers.activation import activation, activation_name

pytestmark = pytest.mark.usefixtures("one_thread")


SIZES = {1: (10,), 2: (6, 4), 3: (4, 2, 6), 4: (2, 4, 2, 4)}
NATIVE_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _conv(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference 'same' convolution with torch's native op (N <= 3)."""
    n = x.dim() - 2
    return NATIVE_CONV[n](x, m.weight, m.bias, padding=m.weight.shape[-1] // 2)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("channels", [(4, 4), (4, 6)])
def test_resblock_formula(spatial_dims: int, channels: tuple[int, int]) -> None:
    cin, cout = channels
    block = ResBlock(spatial_dims, cin, cout, embed_dim=5, norm="group")
    x, emb = torch.randn(2, cin, *SIZES[spatial_dims]), torch.randn(2, 5)
    ones = (1,) * spatial_dims
    h = _conv(
        block.conv1,
        F.silu(F.group_norm(x, block.norm1.num_groups, block.norm1.weight, block.norm1.bias)),
    )
    h = F.group_norm(h, block.norm2.num_groups, block.norm2.weight, block.norm2.bias)
    scale, shift = (emb @ block.emb_proj.weight.T + block.emb_proj.bias).chunk(2, 1)
    h = h * (1 + scale.reshape(2, cout, *ones)) + shift.reshape(2, cout, *ones)
    h = _conv(block.conv2, F.silu(h))
    skip = x if cin == cout else _conv(block.skip, x)
    torch.testing.assert_close(block(x, emb), skip + h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_convblock_formula(spatial_dims: int) -> None:
    block = ConvBlock(spatial_dims, 3, 5, norm="batch", act="relu", kernel_size=5).eval()
    x = torch.randn(2, 3, *SIZES[spatial_dims])
    bn = block.norm
    h = F.batch_norm(_conv(block.conv, x), bn.running_mean, bn.running_var, bn.weight, bn.bias)
    torch.testing.assert_close(block(x), F.relu(h), rtol=1e-5, atol=1e-5)


def test_blocks_run_for_every_spatial_dims(spatial_dims: int) -> None:
    x = torch.randn(2, 4, *SIZES[spatial_dims])
    for cls in (ResBlock, ConvBlock):
        block = cls(spatial_dims, 4, 6, embed_dim=3, norm="instance", act="gelu", dropout=0.1)
        out = block(x, torch.randn(2, 3))
        assert out.shape == (2, 6, *SIZES[spatial_dims])


def test_film_identity_when_scale_and_shift_vanish() -> None:
    block = ResBlock(2, 4, 4, embed_dim=3)
    with torch.no_grad():
        block.emb_proj.weight.zero_()
        block.emb_proj.bias.zero_()
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(block(x, torch.randn(1, 3)), block(x, torch.randn(1, 3)))


def test_nearest_upsample_with_identity_conv_repeats(spatial_dims: int) -> None:
    up = Upsample(spatial_dims, 3, "nearest")
    conv = up.op[1]
    with torch.no_grad():  # identity kernel: a 1 at the centre tap of channel c -> c
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(3):
            conv.weight[(c, c, *[1] * spatial_dims)] = 1.0
    x = torch.randn(2, 3, *SIZES[spatial_dims])
    expected = x
    for axis in range(spatial_dims):
        expected = expected.repeat_interleave(2, dim=2 + axis)
    torch.testing.assert_close(up(x), expected)


def test_transpose_upsample_with_unit_taps_repeats(spatial_dims: int) -> None:
    up = Upsample(spatial_dims, 2, "transpose")
    with torch.no_grad():
        up.op.weight.zero_()
        up.op.bias.zero_()
        for c in range(2):
            up.op.weight[c, c] = 1.0  # every tap of channel c -> c
    x = torch.randn(1, 2, *SIZES[spatial_dims])
    expected = x
    for axis in range(spatial_dims):
        expected = expected.repeat_interleave(2, dim=2 + axis)
    torch.testing.assert_close(up(x), expected)


@pytest.mark.parametrize("mode", ["max", "avg", "conv"])
def test_downsample_halves(spatial_dims: int, mode: str) -> None:
    down = Downsample(spatial_dims, 3, mode)  # type: ignore[arg-type]
    x = torch.randn(2, 3, *SIZES[spatial_dims])
    out = down(x)
    assert out.shape == (2, 3, *[s // 2 for s in SIZES[spatial_dims]])
    if mode != "conv":  # a 2-box reduction: reshape every axis into (size/2, 2) and reduce
        shape = [2, 3]
        for s in SIZES[spatial_dims]:
            shape += [s // 2, 2]
        boxes = x.reshape(shape)
        box_axes = tuple(3 + 2 * i for i in range(spatial_dims))
        expected = boxes.amax(box_axes) if mode == "max" else boxes.mean(box_axes)
        torch.testing.assert_close(out, expected)


def test_unit_and_attention_factory() -> None:
    block = ResBlock(2, 4, 8)
    unit = Unit(block, make_attention("self", 2, 8, head_dim=4))
    assert unit(torch.randn(1, 4, 4, 4)).shape == (1, 8, 4, 4)
    assert make_attention(None, 2, 8) is None and make_attention("none", 2, 8) is None
    with pytest.raises(ValueError, match="did you mean 'cbam'"):
        make_attention("cbm", 2, 8)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode,match", [("bilinear", "upsample"), ("pool", "downsample")])
def test_resample_bad_mode(mode: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        (Upsample if match == "upsample" else Downsample)(2, 4, mode)  # type: ignore[arg-type]


def test_activation_specs() -> None:
    assert isinstance(activation("SiLU"), nn.SiLU)
    assert isinstance(activation(nn.GELU), nn.GELU)
    assert isinstance(activation(functools.partial(nn.LeakyReLU, 0.2)), nn.LeakyReLU)
    prelu = nn.PReLU()
    copy = activation(prelu)
    assert isinstance(copy, nn.PReLU) and copy is not prelu  # no parameter sharing
    assert isinstance(activation(None), nn.Identity)
    with pytest.raises(ValueError, match="did you mean 'relu'"):
        activation("rellu")
    with pytest.raises(TypeError, match=r"nn\.Module"):
        activation(lambda: 3)  # type: ignore[arg-type, return-value]
    assert activation_name(nn.SiLU()) == "silu"
    assert activation_name(functools.partial(nn.ReLU)) == "relu"
    assert activation_name(nn.LeakyReLU(0.2)) is None
    assert activation_name(functools.partial(nn.LeakyReLU, 0.2)) is None


def _norm(m: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return F.group_norm(h, m.num_groups, m.weight, m.bias)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_resblock_with_1_3_1_kernels_and_additive_embedding(spatial_dims: int) -> None:
    block = ResBlock(spatial_dims, 4, 6, embed_dim=5, norm="group", kernel_sizes=(1, 3, 1),
                     embed_mode="add")  # fmt: skip
    x, emb = torch.randn(2, 4, *SIZES[spatial_dims]), torch.randn(2, 5)
    bias = (emb @ block.emb_proj.weight.T + block.emb_proj.bias).reshape(2, 6, *(1,) * spatial_dims)
    h = _conv(block.conv1, F.silu(_norm(block.norm1, x)))
    h = _conv(block.conv2, F.silu(_norm(block.norm2, h) + bias))  # added after the second norm
    h = _conv(block.conv3, F.silu(_norm(block.norm3, h)))
    assert [block.conv1.weight.shape[-1], block.conv2.weight.shape[-1]] == [1, 3]
    torch.testing.assert_close(block(x, emb), _conv(block.skip, x) + h, rtol=1e-5, atol=1e-5)


def test_convblock_with_two_kernels_and_attention_on_the_residual_branch() -> None:
    attn = make_attention(["channel", "spatial"], 2, 6)
    block = ConvBlock(2, 3, 6, kernel_sizes=(3, (1, 5)), norm="none", act="relu", attn=attn)
    x = torch.randn(2, 3, 5, 7)
    h = F.relu(_conv(block.conv, x))
    h = F.relu(F.conv2d(h, block.conv2.weight, block.conv2.bias, padding=(0, 2)))
    torch.testing.assert_close(block(x), attn(h))
    res = ResBlock(2, 6, 6, attn=attn)
    no_attn = ResBlock(2, 6, 6)
    no_attn.load_state_dict({k: v for k, v in res.state_dict().items() if "attn" not in k})
    y = torch.randn(2, 6, 5, 7)
    # x + attn(branch), against the same block without attention: x + branch
    branch = no_attn(y) - y
    torch.testing.assert_close(res(y), y + attn(branch), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["max", "avg", "conv"])
def test_per_axis_factors_resample_only_the_chosen_axes(mode: str) -> None:
    x = torch.randn(2, 3, 3, 8, 6)
    down = Downsample(3, 3, mode, factor=(1, 2, 3))  # type: ignore[arg-type]
    out = down(x)
    assert out.shape == (2, 3, 3, 4, 2)
    if mode == "max":  # boxes of 1 x 2 x 3
        torch.testing.assert_close(out, x.reshape(2, 3, 3, 4, 2, 2, 3).amax((4, 6)))
    for up_mode in ("nearest", "transpose"):
        up = Upsample(3, 3, up_mode, factor=(1, 2, 3))  # type: ignore[arg-type]
        assert up(out).shape == (2, 3, 3, 8, 6)
    up = Upsample(3, 3, "nearest", factor=(1, 2, 3))
    with torch.no_grad():  # identity conv: nearest resizing repeats each axis by its factor
        up.op[1].weight.zero_()
        up.op[1].bias.zero_()
        for c in range(3):
            up.op[1].weight[c, c, 0, 1, 1] = 1
    expected = out.repeat_interleave(2, 3).repeat_interleave(3, 4)
    torch.testing.assert_close(up(out), expected)
    assert up.op[1].kernel_size == (1, 3, 3)

"""Attention layers against independent oracles: torch's MultiheadAttention (self- and
cross-attention), closed-form position codes, scipy correlation for CBAM's spatial gate, einsum
for attention gates; CBAM's halves composed equal CBAM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from ndunet.layers.attention import (
    CBAM,
    AttentionGate,
    ChannelAttention,
    CrossAttention,
    SelfAttention,
    SpatialAttention,
    sinusoidal_positions,
)
from ndunet.layers.embedding import ClassEmbedding, TimeEmbedding, sinusoidal_embedding

pytestmark = pytest.mark.usefixtures("one_thread")


SIZES = {1: (7,), 2: (3, 5), 3: (2, 3, 4), 4: (2, 3, 2, 3)}


@pytest.mark.parametrize("num_heads", [1, 4])
def test_self_attention_matches_torch_multihead(spatial_dims: int, num_heads: int) -> None:
    c = 16
    layer = SelfAttention(spatial_dims, c, num_heads=num_heads, norm="none").eval()
    mha = nn.MultiheadAttention(c, num_heads, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.qkv.weight)
        mha.in_proj_bias.copy_(layer.qkv.bias)
        mha.out_proj.weight.copy_(layer.proj.weight)
        mha.out_proj.bias.copy_(layer.proj.bias)
    x = torch.randn(2, c, *SIZES[spatial_dims])
    seq = x.flatten(2).transpose(1, 2)  # (B, L, C), row-major positions
    expected = seq + mha(seq, seq, seq, need_weights=False)[0]
    out = layer(x)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), expected, rtol=1e-5, atol=1e-5)


def test_self_attention_is_permutation_equivariant_without_positions() -> None:
    x = torch.randn(1, 8, 3, 4, 2)
    perm = torch.randperm(24)
    for pos, equivariant in [(None, True), ("sinusoidal", False)]:
        layer = SelfAttention(3, 8, head_dim=4, pos_embedding=pos)
        out = layer(x).flatten(2)[..., perm]
        out_p = layer(x.flatten(2)[..., perm].reshape(x.shape)).flatten(2)
        assert torch.allclose(out, out_p, atol=1e-5) == equivariant


def test_sinusoidal_positions_closed_form() -> None:
    shape, c = (3, 4), 10  # 2 axes x (2 sin + 2 cos) = 8 coded channels + 2 zero
    pe = sinusoidal_positions(shape, c)
    assert pe.shape == (12, 10)
    for i in range(3):
        for j in range(4):
            row = pe[i * 4 + j].tolist()
            w = [1.0, 10000 ** (-1 / 2)]
            want = [math.sin(i * w[0]), math.sin(i * w[1]), math.cos(i * w[0]), math.cos(i * w[1])]
            want += [math.sin(j * w[0]), math.sin(j * w[1]), math.cos(j * w[0]), math.cos(j * w[1])]
            np.testing.assert_allclose(row, [*want, 0.0, 0.0], atol=1e-6)


def test_self_attention_head_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SelfAttention(2, 12, num_heads=5)
    with pytest.raises(ValueError, match="pos_embedding"):
        SelfAttention(2, 8, pos_embedding="learned")  # type: ignore[arg-type]


def test_cbam_matches_numpy_scipy(spatial_dims: int) -> None:
    c, k = 8, 3
    layer = CBAM(spatial_dims, c, reduction=4, kernel_size=k)
    x = torch.randn(2, c, *SIZES[spatial_dims])
    out = layer(x).detach().numpy()
    xn = x.numpy().astype(np.float64)
    w1, b1 = (
        layer.mlp[0].weight.detach().double().numpy(),
        layer.mlp[0].bias.detach().double().numpy(),
    )
    w2, b2 = (
        layer.mlp[2].weight.detach().double().numpy(),
        layer.mlp[2].bias.detach().double().numpy(),
    )
    axes = tuple(range(2, 2 + spatial_dims))

    def mlp(v: np.ndarray) -> np.ndarray:
        return np.maximum(v @ w1.T + b1, 0) @ w2.T + b2

    gate = 1 / (1 + np.exp(-(mlp(xn.mean(axes)) + mlp(xn.max(axes)))))  # (B, C)
    xc = xn * gate.reshape(gate.shape + (1,) * spatial_dims)
    pooled = [xc.mean(1), xc.max(1)]  # 2 x (B, *spatial)
    wk = layer.spatial.weight.detach().double().numpy()[0]  # (2, *kernel)
    conv = float(layer.spatial.bias.detach()) + sum(
        np.stack([ndimage.correlate(p[b], wk[i], mode="constant") for b in range(2)])
        for i, p in enumerate(pooled)
    )
    expected = xc * (1 / (1 + np.exp(-conv)))[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_attention_gate_matches_einsum(spatial_dims: int) -> None:
    gate_layer = AttentionGate(spatial_dims, 6, 10, inter_channels=4)
    skip = torch.randn(2, 6, *SIZES[spatial_dims])
    g = torch.randn(2, 10, *SIZES[spatial_dims])

    def pointwise(conv: nn.Module, v: torch.Tensor) -> torch.Tensor:
        w = conv.weight.reshape(conv.weight.shape[:2])  # (out, in)
        out = torch.einsum("oi,bi...->bo...", w, v)
        return out if conv.bias is None else out + conv.bias.reshape(-1, *[1] * spatial_dims)

    a = torch.relu(pointwise(gate_layer.theta, skip) + pointwise(gate_layer.phi, g))
    expected = skip * torch.sigmoid(pointwise(gate_layer.psi, a))
    torch.testing.assert_close(gate_layer(skip, g), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="spatial shape"):
        gate_layer(skip, g[..., :1])


def test_sinusoidal_time_embedding_closed_form() -> None:
    t = torch.tensor([0.0, 3.0, 999.0])
    emb = sinusoidal_embedding(t, 6, max_period=100.0)
    freqs = [100 ** (-k / 3) for k in range(3)]
    for row, tv in zip(emb.tolist(), t.tolist()):
        want = [math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs]
        np.testing.assert_allclose(row, want, rtol=1e-5, atol=1e-4)
    assert sinusoidal_embedding(t, 5).shape == (3, 5)  # odd dim: a zero column
    assert torch.all(sinusoidal_embedding(t, 5)[:, -1] == 0)


def test_time_and_class_embeddings() -> None:
    te = TimeEmbedding(16, freq_dim=8)
    assert te(torch.tensor([1, 2, 3])).shape == (3, 16)
    ce = ClassEmbedding(4, 16)
    assert ce.embedding.num_embeddings == 5 and ce.null_class == 4
    assert ce(torch.tensor([0, 4])).shape == (2, 16)
    with pytest.raises(ValueError, match="num_classes"):
        ClassEmbedding(0, 8)


@pytest.mark.parametrize(("query_channels", "num_heads"), [(16, 1), (16, 4), (6, 2)])
def test_cross_attention_matches_torch_multihead(
    spatial_dims: int, query_channels: int, num_heads: int
) -> None:
    """Keys/values from the skip x, queries from the decoder features, on the flattened
    tokens: MultiheadAttention(embed_dim=C) gets the queries already mapped by our q layer
    (its own query projection set to the identity) when their width differs from C."""
    c = 16
    layer = CrossAttention(spatial_dims, c, query_channels, num_heads=num_heads, norm="none")
    mha = nn.MultiheadAttention(c, num_heads, batch_first=True).eval()
    same = query_channels == c
    with torch.no_grad():
        q_weight = layer.q.weight if same else torch.eye(c)
        q_bias = layer.q.bias if same else torch.zeros(c)
        mha.in_proj_weight.copy_(torch.cat([q_weight, layer.kv.weight]))
        mha.in_proj_bias.copy_(torch.cat([q_bias, layer.kv.bias]))
        mha.out_proj.weight.copy_(layer.proj.weight)
        mha.out_proj.bias.copy_(layer.proj.bias)
    x = torch.randn(2, c, *SIZES[spatial_dims])
    h = torch.randn(2, query_channels, *SIZES[spatial_dims])
    kv = x.flatten(2).transpose(1, 2)  # (B, L, C), row-major positions
    q = h.flatten(2).transpose(1, 2)  # (B, L, Cq)
    if not same:
        q = q @ layer.q.weight.T + layer.q.bias  # (B, L, C)
    expected = kv + mha(q, kv, kv, need_weights=False)[0]
    out = layer(x, h)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="spatial shape"):
        layer(x, h[..., :1])


def test_cbam_is_channel_then_spatial_attention(spatial_dims: int) -> None:
    c = 8
    cbam = CBAM(spatial_dims, c, reduction=2, kernel_size=3)
    channel = ChannelAttention(spatial_dims, c, reduction=2)
    spatial = SpatialAttention(spatial_dims, kernel_size=3)
    channel.mlp.load_state_dict(cbam.mlp.state_dict())
    spatial.conv.load_state_dict(cbam.spatial.state_dict())
    x = torch.randn(2, c, *SIZES[spatial_dims])
    torch.testing.assert_close(spatial(channel(x)), cbam(x))
    # the channel gate alone, from its formula: sigmoid(mlp(mean) + mlp(max)) per channel
    flat = x.flatten(2)
    gate = torch.sigmoid(channel.mlp(flat.mean(2)) + channel.mlp(flat.amax(2)))
    torch.testing.assert_close(channel(x), x * gate.reshape(2, c, *(1,) * spatial_dims))
    assert ChannelAttention(2, 64).mlp[0].out_features == 8  # default reduction 8 (seed project)
    assert CBAM(2, 64).mlp[0].out_features == 4  # CBAM keeps the paper's 16

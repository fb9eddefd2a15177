"""The transposed fold where the leading taps tile the output (stride == kernel, dilation 1 on
the leading axes; fold_tiled.py): against the numpy scatter oracle, gradcheck and gradgradcheck,
with the forward and backward split into blocks of frames of every size, gradients arriving in
every layout, and the output layouts each fold.layout promises."""

from __future__ import annotations

import pytest
import torch

from ndunet import functional as FN
from ndunet.functional import fold, fold_tiled
from test_fold_strategies import layouts, scatter_conv_transpose

# (kernel, stride, padding, output_padding, dilation, groups, size): the leading axes tile
# (stride == kernel, dilation 1); the inner axes anything; leading padding (a crop) and
# output_padding past the last tap (zeros) included
TILED = [
    ((2, 2, 2, 2), (2, 2, 2, 2), (0,) * 4, (0,) * 4, (1,) * 4, 1, (3, 2, 3, 2)),
    ((2, 3, 1, 2), (2, 1, 2, 2), (0, 1, 0, 1), (0, 0, 1, 1), (1, 2, 1, 1), 2, (3, 3, 2, 3)),
    ((3, 2, 2, 1), (3, 2, 1, 1), (1, 0, 1, 0), (2, 0, 0, 0), (1, 1, 2, 1), 1, (2, 3, 2, 3)),
    ((1, 2, 3, 2), (1, 1, 1, 2), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 1, 1), 2, (4, 2, 3, 2)),
    ((2, 2, 2, 2, 2), (2, 2, 2, 2, 2), (0,) * 5, (0,) * 5, (1,) * 5, 1, (2, 3, 2, 2, 2)),
    ((2, 3, 2, 1, 2), (2, 3, 1, 1, 2), (1, 0, 0, 0, 1), (1, 2, 0, 0, 1), (1, 1, 2, 1, 1), 2,
     (3, 2, 2, 3, 2)),
]  # fmt: skip


def _tiled(case, seed=0, dtype=torch.float64):
    kernel, stride, padding, output_padding, dilation, groups, size = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2 * groups, *size, dtype=dtype, generator=g)
    w = torch.randn(2 * groups, 3, *kernel, dtype=dtype, generator=g)  # (in, out/groups, *k)
    b = torch.randn(3 * groups, dtype=dtype, generator=g)
    return x, w, b, (stride, padding, output_padding, groups, dilation)


def _raw(x, w, b, args):
    """The fold itself, in its own output layout (conv_transpose_nd makes a standard input's
    output standard)."""
    stride, padding, output_padding, groups, dilation = args
    return fold.conv_transpose_fold(x, w, stride, padding, output_padding, dilation, groups, b)


def _ref(x, w, b, args):
    stride, padding, output_padding, groups, dilation = args
    y = scatter_conv_transpose(x, w, stride, padding, output_padding, dilation, groups)
    return y if b is None else y + b.view(1, -1, *[1] * len(stride))


@pytest.mark.parametrize("ratio,cap", [(1e-9, 2**19), (0.3, 2**19), (1e9, 0), (1e9, 50)])
@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("case", TILED)
def test_tiled_matches_scatter(monkeypatch, case, layout, ratio, cap) -> None:
    """Every block size (one frame, a few, all; bounded by the ratio or by elements), bias
    fused or not, both layouts."""
    monkeypatch.setattr(fold_tiled, "CHUNK_RATIO", ratio)
    monkeypatch.setattr(fold_tiled, "BLOCK_ELEMENTS", cap)
    x, w, b, args = _tiled(case)
    for bias in (b, None):
        with fold.forced_strategy("outputs", layout):
            ours = FN.conv_transpose_nd(x, w, bias, *args)
        torch.testing.assert_close(ours, _ref(x, w, bias, args), rtol=1e-10, atol=1e-10)


def _grads(x, w, b, args, gy, strategy, layout=None):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    with fold.forced_strategy(strategy, layout):
        y = FN.conv_transpose_nd(*leaves, *args)
    y.backward(gy)
    return [y.detach(), *(t.grad for t in leaves)]


def _gradient_layouts(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One output gradient in every layout it may arrive in."""
    return layouts(torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("case", [TILED[1], TILED[2], TILED[5]])
def test_tiled_gradients_in_every_arriving_layout(monkeypatch, case, layout) -> None:
    """The backward picks its conv layout from the arriving gradient's strides: all give the
    gradients of the overlapping-taps path ("taps" strategy, its own explicit backward), in
    one block and in many."""
    x, w, b, args = _tiled(case, seed=3)
    y0 = FN.conv_transpose_nd(x, w, b, *args)
    for name, gy in _gradient_layouts(y0).items():
        ref = _grads(x, w, b, args, gy, "taps")
        for ratio in (1e-9, 1e9):
            monkeypatch.setattr(fold_tiled, "CHUNK_RATIO", ratio)
            got = _grads(x, w, b, args, gy, "outputs", layout)
            for r, o in zip(ref, got):
                torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("layout", fold.LAYOUTS)
def test_tiled_gradcheck_and_gradgradcheck(monkeypatch, layout) -> None:
    """Numerical Jacobians (an oracle independent of every strategy), blocks of one frame;
    double backward too (the backward is made of differentiable ops)."""
    monkeypatch.setattr(fold_tiled, "CHUNK_RATIO", 1e-9)
    for case, size in ((TILED[0], (2, 1, 2, 1)), (TILED[1], (2, 2, 1, 2)),
                       (TILED[4], (2, 1, 1, 2, 1))):  # fmt: skip
        case = (*case[:-1], size)
        x, w, b, args = _tiled(case, seed=4)
        x, w = x[:1, : case[5]], w[: case[5], :1]  # one batch item, one channel per group
        b = b[: case[5]]
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]

        def conv_t(x, w, b, args=args):
            with fold.forced_strategy("outputs", layout):
                return FN.conv_transpose_nd(x, w, b, *args)

        assert torch.autograd.gradcheck(conv_t, leaves)
        assert torch.autograd.gradgradcheck(conv_t, leaves)


def test_tiled_output_layouts() -> None:
    """ "frames": one leading axis, groups 1: the output is the conv result itself, frame-major
    (B, L*k, O, *R') in memory; otherwise that layout by a copy. "channels_last": channels
    innermost. Every strategy forced to "outputs" reaches the tiled path."""
    x, w, b, args = _tiled(TILED[0], dtype=torch.float32)
    x5, w5, b5, args5 = _tiled(TILED[4], dtype=torch.float32)
    for xs, ws, bs, a in ((x, w, b, args), (x5, w5, b5, args5)):
        m = xs.dim() - 5
        with fold.forced_strategy("outputs", "frames"):
            y = _raw(xs, ws, bs, a)
        assert y.movedim(1, 1 + m).is_contiguous()
        with fold.forced_strategy("outputs", "channels_last"):
            y = _raw(xs, ws, bs, a)
        assert y.movedim(1, -1).is_contiguous()


def test_frames_output_is_a_view_of_the_conv_result(monkeypatch) -> None:
    """m == 1, groups == 1, "frames": no copy after conv_transpose3d (its result's storage is
    the output's), whatever the block size."""
    monkeypatch.setattr(fold_tiled, "CHUNK_RATIO", 1e-9)
    x, w, b, args = _tiled(TILED[0], dtype=torch.float32)
    seen = []
    real = torch.nn.functional.conv_transpose3d

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(fold_tiled.F, "conv_transpose3d", spy)
    with fold.forced_strategy("outputs", "frames"):
        y = _raw(x, w, b, args)
    assert len(seen) == 1 and y.untyped_storage().data_ptr() == seen[0].data_ptr()


@pytest.mark.parametrize(
    "batch,length,per", [(2, 5, 1), (2, 5, 3), (3, 4, 4), (3, 4, 9), (1, 1, 7)]
)
def test_blocks_cover_every_frame_once(batch, length, per) -> None:
    frames = torch.zeros(batch, length)
    blocks = fold_tiled._blocks(batch, length, per)
    for block in blocks:
        assert 0 < frames[block].numel() <= per
        frames[block] += 1
    assert bool((frames == 1).all())

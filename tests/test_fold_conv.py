"""The blocked fold of the N >= 4 conv ("blocks", fold_blocks.py): against scipy.signal.correlate,
the per-frame loop of torch's conv3d, the "taps" strategy's explicit backward, gradcheck and
gradgradcheck, with blocks of every size, inputs and gradients arriving in every layout, both
conv layouts, and geometries where some input frames or kernel taps meet nothing."""

from __future__ import annotations

import pytest
import torch

from ndunet import functional as FN
from ndunet.functional import fold, fold_blocks
from test_fold_strategies import CASES, _case, layouts, per_frame_conv, scipy_conv

# beyond CASES: odd frames of a stride-2 axis never read (their gradient is zero), and leading
# taps that only ever see padding (their weight gradient is zero)
EDGES = [
    ((1, 3, 2, 2), (2, 1, 1, 1), (0, 1, 0, 0), (1, 1, 1, 1), 1, (4, 3, 3, 3)),
    ((5, 3, 1, 2, 1), (1, 2, 1, 1, 1), (2, 1, 0, 1, 0), (1, 1, 1, 1, 1), 2, (1, 4, 3, 2, 3)),
]
# (CHUNK_RATIO, BLOCK_ELEMENTS): the fewest frames per block, a few, all in one block
BLOCKS = [(1e-9, 2**19), (0.3, 2**19), (1e9, 0), (1e9, 40)]


def _bias(w: torch.Tensor, seed: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(w.shape[0], dtype=w.dtype, generator=g)


def _ref(x, w, b, stride, padding, dilation, groups):
    y = scipy_conv(x, w, stride, padding, dilation, groups)
    return y if b is None else y + b.view(1, -1, *[1] * len(stride))


@pytest.mark.parametrize("ratio,cap", BLOCKS)
@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("case", CASES + EDGES)
def test_blocks_match_scipy(monkeypatch, case, layout, ratio, cap) -> None:
    monkeypatch.setattr(fold_blocks, "CHUNK_RATIO", ratio)
    monkeypatch.setattr(fold_blocks, "BLOCK_ELEMENTS", cap)
    x, w, *geo = _case(case)
    for bias in (_bias(w), None):
        ref = _ref(x, w, bias, *geo)
        for name, xs in layouts(x).items():
            with fold.forced_strategy("blocks", layout):
                ours = FN.conv_nd(xs, w, bias, *geo)
            torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10, msg=name)


def _grads(x, w, b, geo, gy, strategy, layout=None):
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    with fold.forced_strategy(strategy, layout):
        y = FN.conv_nd(*leaves, *geo)
    y.backward(gy)
    return [y.detach(), *(t.grad for t in leaves)]


@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], *EDGES])
def test_blocks_gradients_in_every_arriving_layout(monkeypatch, case, layout) -> None:
    """The backward picks its conv layout from the arriving gradient (or the forced layout):
    every layout, in one block and in blocks of one frame, gives the "taps" strategy's
    gradients (its own explicit backward)."""
    x, w, *geo = _case(case, seed=3)
    b = _bias(w)
    y0 = FN.conv_nd(x, w, b, *geo)
    gy0 = torch.randn(y0.shape, dtype=y0.dtype, generator=torch.Generator().manual_seed(5))
    for name, gy in layouts(gy0).items():
        ref = _grads(x, w, b, geo, gy, "taps")
        for ratio, cap in (BLOCKS[0], BLOCKS[2]):
            monkeypatch.setattr(fold_blocks, "CHUNK_RATIO", ratio)
            monkeypatch.setattr(fold_blocks, "BLOCK_ELEMENTS", cap)
            for xname, xs in layouts(x).items():
                got = _grads(xs, w, b, geo, gy, "blocks", layout)
                for r, o in zip(ref, got):
                    torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10, msg=(name, xname))


@pytest.mark.parametrize("layout", fold.LAYOUTS)
def test_blocks_gradcheck_and_gradgradcheck(monkeypatch, layout) -> None:
    """Numerical Jacobians (an oracle independent of every strategy), blocks of one frame;
    double backward too (the backward is made of differentiable ops)."""
    monkeypatch.setattr(fold_blocks, "CHUNK_RATIO", 1e-9)
    sizes = [(3, 2, 3, 2), (4, 3, 2, 3), (3, 2, 2, 2, 2), (3, 3, 2, 2), (1, 3, 2, 2, 2)]
    for i, case in enumerate([CASES[0], CASES[1], CASES[4], *EDGES]):
        kernel, groups = case[0], case[4]
        g = torch.Generator().manual_seed(i)
        x = torch.randn(1, groups, *sizes[i], dtype=torch.float64, generator=g)
        w = torch.randn(groups, 1, *kernel, dtype=torch.float64, generator=g)
        b = torch.randn(groups, dtype=torch.float64, generator=g)
        leaves = [t.requires_grad_() for t in (x, w, b)]

        def conv(x, w, b, case=case):
            with fold.forced_strategy("blocks", layout):
                return FN.conv_nd(x, w, b, *case[1:5])

        assert torch.autograd.gradcheck(conv, leaves)
        assert torch.autograd.gradgradcheck(conv, leaves)


def test_blocks_float32_against_per_frame_loop() -> None:
    """float32 (oneDNN's fast paths, both conv layouts) against per-frame torch conv3d calls,
    the U-Net's kernel 3 with stride 1 and 2, forward and every gradient."""
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 4, 7, 5, 4, 5), torch.randn(6, 2, 3, 3, 3, 3), torch.randn(6)
    for stride in (1, 2):
        geo = ((stride,) * 4, (1,) * 4, (1,) * 4, 2)
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = per_frame_conv(*leaves[:2], *geo) + leaves[2].view(1, -1, 1, 1, 1, 1)
        gy = torch.randn(y.shape)
        y.backward(gy)
        ref = [y.detach(), *(t.grad for t in leaves)]
        for layout in fold.LAYOUTS:
            got = _grads(x, w, b, geo, gy, "blocks", layout)
            for r, o in zip(ref, got):
                torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


def test_strided_classes_convolve_only_the_frames_read(monkeypatch) -> None:
    """Kernel 3 / stride 2 on both leading axes: one conv per residue class, over the frames
    that class reads (every input frame exactly once), with its taps as output channels."""
    seen = []
    real = fold_blocks.conv3d

    def spy(x, w, *args):
        seen.append((x.shape[0], w.shape[0]))
        return real(x, w, *args)

    monkeypatch.setattr(fold_blocks, "conv3d", spy)
    monkeypatch.setattr(fold_blocks, "CHUNK_RATIO", 1e9)
    monkeypatch.setattr(fold_blocks, "BLOCK_ELEMENTS", 0)
    x, w = torch.randn(1, 2, 5, 4, 3, 3, 3), torch.randn(3, 2, 3, 3, 3, 3, 3)
    with fold.forced_strategy("blocks"):
        FN.conv_nd(x, w, None, 2, 1)
    # residues (even, odd) per axis: frames 3 and 2 on axis 0, 2 and 2 on axis 1; taps 1 and 2
    assert sorted(seen) == sorted([(3 * 2, 3), (3 * 2, 6), (2 * 2, 6), (2 * 2, 12)])


def test_output_layouts_and_auto(monkeypatch) -> None:
    """ "blocks" convolves in the layout its input arrives in: NCDHW frames for a standard
    input (its output standard contiguous), channels-last for a channels-innermost one, or the
    forced layout; "auto" takes it on the CPU from BLOCKS_FROM elements of buffer."""
    x, w = torch.randn(2, 4, 5, 4, 3, 3), torch.randn(4, 4, 3, 3, 3, 3)
    xcl = x.movedim(1, -1).contiguous().movedim(-1, 1)
    geometry = ((1,) * 4, (1,) * 4, (1,) * 4, 1)
    with fold.forced_strategy("blocks"):
        assert fold.conv_fold(x, w, *geometry).is_contiguous()
        assert fold.conv_fold(xcl, w, *geometry).movedim(1, -1).is_contiguous()
    with fold.forced_strategy("blocks", "channels_last"):
        assert fold.conv_fold(x, w, *geometry).movedim(1, -1).is_contiguous()
        assert FN.conv_nd(x, w, None, 1, 1).is_contiguous()  # conv_nd: standard in, out
    with fold.forced_strategy("blocks", "frames"):
        assert fold.conv_fold(xcl, w, *geometry).is_contiguous()
    calls = []
    real = fold.conv_blocks
    monkeypatch.setattr(fold, "conv_blocks", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(fold, "BLOCKS_FROM", 3 * x.numel())
    FN.conv_nd(x, w, None, 1, 1)  # buffer: 3 taps x the output, x.numel() here
    FN.conv_nd(x, w, None, 2, 1)  # strided: "inputs"
    monkeypatch.setattr(fold, "BLOCKS_FROM", 3 * x.numel() + 1)
    FN.conv_nd(x, w, None, 1, 1)
    assert calls == [1]


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "standard"
    return "channels-last" if t.movedim(1, -1).is_contiguous() else f"strides {t.stride()}"


@pytest.mark.parametrize("strategy", fold.STRATEGIES)
@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
def test_a_standard_input_gets_a_standard_output_and_gradient(strategy, op) -> None:
    """At N >= 4 the fold works channels-last; a standard input's output and gradient come back
    standard (torch's GroupNorm and SiLU backward are slow on the other layout), the same values
    as the fold's own."""
    if op == "conv":
        w = torch.randn(4, 3, 3, 3, 2, 3, 3, dtype=torch.float64)
        call = lambda x: FN.conv_nd(x, w, None, (2, 1, 1, 1, 1), 1)  # noqa: E731
        raw = lambda x: fold.conv_fold(x, w, (2, 1, 1, 1, 1), (1,) * 5, (1,) * 5, 1)  # noqa: E731
    else:
        w = torch.randn(3, 4, 2, 2, 2, 2, 2, dtype=torch.float64)
        call = lambda x: FN.conv_transpose_nd(x, w, None, 2)  # noqa: E731
        raw = lambda x: fold.conv_transpose_fold(x, w, (2,) * 5, (0,) * 5, (0,) * 5, (1,) * 5, 1)  # noqa: E731
    x0 = torch.randn(2, 3, 4, 3, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    x = x0 * 1  # a non-leaf: its gradient is what the layer hands back, not AccumulateGrad's
    seen = {}
    x.register_hook(lambda g: seen.update(grad=g))
    with fold.forced_strategy(strategy):
        y = call(x)
        want = raw(x0.detach())
        g = torch.randn_like(y)
        y.backward(g)
    assert _layout(y) == "standard" and _layout(seen["grad"]) == "standard"
    torch.testing.assert_close(y, want, rtol=0, atol=0)
    xr = x0.detach().requires_grad_()
    with fold.forced_strategy(strategy):
        raw(xr).backward(g)
    torch.testing.assert_close(seen["grad"], xr.grad, rtol=0, atol=0)


def test_a_channels_last_input_keeps_the_folds_layout() -> None:
    x = torch.randn(2, 3, 4, 3, 3, 4, 3).movedim(1, -1).contiguous().movedim(-1, 1)
    y = FN.conv_nd(x, torch.randn(4, 3, 3, 3, 3, 3, 3), None, 1, 1)
    assert _layout(y) == "channels-last"  # no copy to the standard layout it did not come in

"""ndunet.functional against independent oracles: scipy, numpy brute force, torch at N <= 3."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.signal import correlate

from ndunet import functional as FN
from ndunet.functional.interpolate import interpolate_separable

# ---------------------------------------------------------------------------------------------
# oracles
# ---------------------------------------------------------------------------------------------


def scipy_conv(x, w, bias, stride, padding, dilation, groups):
    """Cross-correlation from scipy.signal.correlate, float64, any N (the independent reference)."""
    x, w = x.numpy(), w.numpy()
    n = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0), *[(p, p) for p in padding]])
    out_c, cin_g = w.shape[:2]
    per_group = out_c // groups
    out = None
    for b in range(x.shape[0]):
        for o in range(out_c):
            g = o // per_group
            acc = 0.0
            for c in range(cin_g):
                k = w[o, c]
                kd = np.zeros([(s - 1) * d + 1 for s, d in zip(k.shape, dilation)])
                kd[tuple(slice(None, None, d) for d in dilation)] = k
                acc = acc + correlate(xp[b, g * cin_g + c], kd, mode="valid")
            acc = acc[tuple(slice(None, None, s) for s in stride)]
            if out is None:
                out = np.zeros((x.shape[0], out_c, *acc.shape))
            out[b, o] = acc + (0.0 if bias is None else bias[o].item())
    assert out.ndim == n + 2
    return torch.from_numpy(out)


def random_conv_case(rng: np.random.Generator, n: int, max_size: int):
    groups = int(rng.choice([1, 2]))
    cin, cout = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    kernel = tuple(int(v) for v in rng.integers(1, 4, n))
    stride = tuple(int(v) for v in rng.integers(1, 3, n))
    dilation = tuple(int(v) for v in rng.integers(1, 3, n))
    padding = tuple(int(v) for v in rng.integers(0, 2, n))
    smallest = [max((k - 1) * d + 1 - 2 * p, 1) for k, d, p in zip(kernel, dilation, padding)]
    size = tuple(int(rng.integers(lo, max(lo, max_size) + 1)) for lo in smallest)
    x = torch.randn(2, cin, *size, dtype=torch.float64)
    w = torch.randn(cout, cin // groups, *kernel, dtype=torch.float64)
    b = torch.randn(cout, dtype=torch.float64)
    return x, w, b, stride, padding, dilation, groups


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_conv_nd_matches_scipy(n: int) -> None:
    rng = np.random.default_rng(n)
    cases = 6 if n < 5 else 3
    for _ in range(cases):
        x, w, b, stride, padding, dilation, groups = random_conv_case(rng, n, 6 if n < 5 else 4)
        ours = FN.conv_nd(x, w, b, stride, padding, dilation, groups)
        ref = scipy_conv(x, w, b, stride, padding, dilation, groups)
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@given(
    size=st.tuples(*[st.integers(2, 5)] * 4),
    kernel=st.tuples(*[st.integers(1, 3)] * 4),
    stride=st.tuples(*[st.integers(1, 2)] * 4),
    pad=st.integers(0, 1),
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_conv_4d_property_scipy(size, kernel, stride, pad) -> None:
    if any(k > s + 2 * pad for k, s in zip(kernel, size)):
        return
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    w = torch.randn(2, 2, *kernel, dtype=torch.float64)
    ours = FN.conv_nd(x, w, None, stride, pad)
    ref = scipy_conv(x, w, None, stride, (pad,) * 4, (1,) * 4, 1)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("position", [0, 1, 3])
def test_conv_4d_embeds_torch_conv3d(position: int) -> None:
    """A 4-D conv over a singleton axis (anywhere) is torch's conv3d over the other three."""
    x3 = torch.randn(2, 4, 5, 6, 7, dtype=torch.float64)
    w3 = torch.randn(6, 2, 3, 2, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    ref = F.conv3d(x3, w3, b, stride=(2, 1, 2), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2)
    x4 = x3.unsqueeze(2 + position)
    w4 = w3.unsqueeze(2 + position)
    ins = lambda t, v: (*t[:position], v, *t[position:])  # noqa: E731
    ours = FN.conv_nd(x4, w4, b, ins((2, 1, 2), 1), ins((1, 0, 1), 0), ins((1, 2, 1), 1), 2)
    torch.testing.assert_close(ours.squeeze(2 + position), ref)


MERGE_AXES = [  # (lengths, kernel, stride, padding, dilation, output_padding, groups wanted)
    # 1x1 skip conv: one axis, native
    ((3, 2, 4, 3), (1,) * 4, (1,) * 4, (0,) * 4, (1,) * 4, None, [[0, 1, 2, 3]]),
    # (x, y, z, t) NIfTI with coarse z and t: (3, 3, 1, 1) -> (x, y, z*t), native
    ((6, 5, 4, 3), (3, 3, 1, 1), (1,) * 4, (1, 1, 0, 0), (1,) * 4, None, [[0], [1], [2, 3]]),
    # a pointwise axis then one whose kernel is within its stride: kernel 2 stride 2
    ((3, 4, 4, 5), (1, 2, 2, 2), (1, 2, 2, 2), (0,) * 4, (1,) * 4, None, [[0, 1], [2], [3]]),
    # reaching across frames (padding, kernel wider than the stride, L % s, dilation): no merge
    ((3, 4, 4, 4), (1, 3, 3, 3), (1,) * 4, (0, 1, 1, 1), (1,) * 4, None, None),
    ((3, 4, 4, 4), (1, 3, 3, 3), (1, 2, 1, 1), (0, 0, 1, 1), (1,) * 4, None, None),
    ((3, 5, 4, 4), (1, 2, 3, 3), (1, 2, 1, 1), (0, 0, 1, 1), (1,) * 4, None, None),
    ((3, 4, 4, 4), (1, 2, 3, 3), (1, 2, 1, 1), (0, 0, 1, 1), (1, 2, 1, 1), None, None),
    # a leading stride is not pointwise; after a non-pointwise axis nothing merges
    ((4, 4, 4, 4), (1, 1, 1, 3), (2, 1, 1, 1), (0, 0, 0, 1), (1,) * 4, None, [[0], [1, 2], [3]]),
    ((4, 4, 4, 4), (3, 1, 1, 3), (1,) * 4, (1, 0, 0, 1), (1,) * 4, None, [[0], [1, 2], [3]]),
    # transposed: taps that tile the output merge (kernel 2 stride 2; kernel 1 stride 2 with
    # output padding 1), overlapping or padded ones do not
    ((3, 2, 3, 2), (1, 2, 2, 2), (1, 2, 2, 2), (0,) * 4, (1,) * 4, (0,) * 4, [[0, 1], [2], [3]]),
    ((3, 2, 3, 2), (1, 1, 2, 2), (1, 2, 2, 2), (0,) * 4, (1,) * 4, (0, 1, 0, 0), [[0, 1], [2], [3]]),
    ((3, 2, 3, 2), (1, 1, 2, 2), (1, 2, 2, 2), (0,) * 4, (1,) * 4, (0,) * 4, None),
    ((3, 2, 3, 2), (1, 3, 2, 2), (1, 2, 2, 2), (0,) * 4, (1,) * 4, (0,) * 4, None),
    ((3, 2, 3, 2), (1, 2, 2, 2), (1, 2, 2, 2), (0, 1, 0, 0), (1,) * 4, (0,) * 4, None),
]  # fmt: skip


@pytest.fixture
def merge_all(monkeypatch):
    """Every merge, whatever the device ("auto" merges only 1x1-like convs on the CPU)."""
    monkeypatch.setattr("ndunet.functional.merged.mode", "all")


@pytest.mark.parametrize("case", MERGE_AXES)
def test_merge_axes_groups(case, merge_all) -> None:
    from ndunet.functional.merged import merge_axes

    *geometry, output_padding, want = case
    assert merge_axes(*geometry, output_padding) == want


def test_merge_axes_auto_merges_by_device() -> None:
    """ "auto": every merge on CUDA; on the CPU only where all axes but the last two are
    pointwise (measured there: the others were a mixed result against the fold)."""
    from ndunet.functional.merged import merge_axes

    nifti = ((6, 5, 4, 3), (3, 3, 1, 1), (1,) * 4, (1, 1, 0, 0), (1,) * 4)
    skip = ((3, 2, 4, 3), (1, 1, 3, 3), (1,) * 4, (0, 0, 1, 1), (1,) * 4)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert merge_axes(*nifti, None, cpu) is None
    assert merge_axes(*nifti, None, cuda) == [[0], [1], [2, 3]]
    assert merge_axes(*skip, None, cpu) == merge_axes(*skip, None, cuda) == [[0, 1], [2], [3]]


MERGED = [  # axes that never mix, merged (merged.py); native where <= 3 axes are left
    # (kernel, stride, padding, dilation, groups, size, contiguous input)
    ((1, 1, 1, 1), (1, 1, 1, 1), (0, 0, 0, 0), (1, 1, 1, 1), 1, (3, 2, 4, 3), True),
    ((1, 1, 3, 2), (1, 1, 2, 1), (0, 0, 1, 0), (1, 2, 1, 2), 2, (3, 2, 6, 5), True),
    ((1, 1, 1, 2, 3), (1, 1, 1, 2, 1), (0, 0, 0, 1, 1), (3, 1, 2, 1, 1), 1, (2, 3, 2, 5, 4), False),
    ((1,) * 6, (1,) * 6, (0,) * 6, (1,) * 6, 2, (2, 1, 2, 2, 3, 2), False),
    ((1, 2, 2, 2), (1, 2, 2, 2), (0, 0, 1, 0), (1, 1, 1, 1), 1, (3, 4, 4, 5), True),
    ((1, 2, 3, 1), (1, 3, 1, 2), (0, 0, 1, 0), (2, 2, 1, 1), 2, (2, 6, 3, 4), True),
    ((3, 3, 1, 1), (2, 1, 1, 1), (1, 1, 0, 0), (1, 2, 1, 1), 1, (5, 4, 3, 2), True),  # (x,y,z,t)
    ((3, 1, 1, 2), (1, 1, 1, 1), (1, 0, 0, 0), (1, 1, 1, 2), 2, (4, 2, 3, 3), False),
    # five axes, two merge: the fold gets the four that are left
    ((3, 3, 2, 1, 1), (1, 2, 1, 1, 1), (1, 1, 0, 0, 0), (1, 1, 1, 1, 1), 1, (3, 4, 3, 2, 2), True),
]  # fmt: skip


@pytest.mark.parametrize("case", MERGED, ids=lambda c: f"k{c[0]}-s{c[1]}")
def test_merged_conv_matches_scipy(case, monkeypatch, merge_all) -> None:
    from ndunet.functional.merged import merge_axes

    kernel, stride, padding, dilation, groups, size, contiguous = case
    axes = merge_axes(size, kernel, stride, padding, dilation)
    assert axes is not None
    if len(axes) <= 3:  # this path must not fold
        monkeypatch.setattr("ndunet.functional.conv.conv_fold", None)
    x = torch.randn(2, 2 * groups, *size, dtype=torch.float64)
    if not contiguous:  # a permuted input (channels innermost): its merged axes are views too
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)
    w = torch.randn(3 * groups, 2, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    x.requires_grad_()
    ours = FN.conv_nd(x, w, b, stride, padding, dilation, groups)
    ref = scipy_conv(x.detach(), w.detach(), b.detach(), stride, padding, dilation, groups)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    small = (x[:1, :, :2], w, b)  # gradients and second derivatives
    fn = lambda x, w, b: FN.conv_nd(x, w, b, stride, padding, dilation, groups)  # noqa: E731
    assert torch.autograd.gradcheck(fn, small) and torch.autograd.gradgradcheck(fn, small)


MERGED_T = [  # transposed: pointwise axes, then taps that tile the output
    # (kernel, stride, padding, output_padding, dilation, groups, size)
    ((1, 2, 2, 2), (1, 2, 2, 2), (0,) * 4, (0,) * 4, (1,) * 4, 1, (3, 2, 3, 2)),
    ((1, 1, 3, 2), (1, 1, 2, 1), (0, 0, 1, 0), (0, 0, 1, 0), (1, 1, 1, 2), 2, (2, 3, 3, 2)),
    ((1, 2, 2, 1), (1, 3, 1, 2), (0, 0, 0, 0), (0, 1, 0, 1), (1, 1, 2, 1), 1, (2, 2, 3, 3)),
    ((2, 2, 1, 1), (2, 2, 1, 1), (0,) * 4, (0,) * 4, (1,) * 4, 2, (2, 3, 2, 3)),  # (x,y,z,t)
    ((1, 1, 2, 2, 2), (1, 1, 2, 2, 2), (0,) * 5, (0,) * 5, (1,) * 5, 2, (2, 2, 2, 3, 2)),
]  # fmt: skip


@pytest.mark.parametrize("case", MERGED_T, ids=lambda c: f"k{c[0]}-s{c[1]}")
def test_merged_conv_transpose_matches_scatter_without_the_fold(
    case, monkeypatch, merge_all
) -> None:
    from test_fold_strategies import scatter_conv_transpose

    kernel, stride, padding, output_padding, dilation, groups, size = case
    monkeypatch.setattr("ndunet.functional.conv.conv_transpose_fold", None)  # must not fold
    x = torch.randn(2, 2 * groups, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2 * groups, 3, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3 * groups, dtype=torch.float64, requires_grad=True)
    args = (stride, padding, output_padding, groups, dilation)
    ours = FN.conv_transpose_nd(x, w, b, *args)
    ref = scatter_conv_transpose(x.detach(), w.detach(), stride, padding, output_padding,
                                 dilation, groups) + b.detach().view(1, -1, *[1] * len(size))  # fmt: skip
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert ours.is_contiguous()
    small = (x[:1, :, :2], w, b)
    fn = lambda x, w, b: FN.conv_transpose_nd(x, w, b, *args)  # noqa: E731
    assert torch.autograd.gradcheck(fn, small) and torch.autograd.gradgradcheck(fn, small)


def test_merged_convs_are_views_of_one_native_conv(monkeypatch, merge_all) -> None:
    """A contiguous input: one native call on a view of it (a 1x1 conv merges every axis into
    one: conv1d), and the output is that call's result, a standard contiguous tensor."""
    from ndunet.functional import conv as conv_module

    seen, inputs = [], []

    def spy(real):
        def call(x, *args):
            inputs.append(x)
            seen.append(real(x, *args))
            return seen[-1]

        return call

    for table in (conv_module._CONV, conv_module._CONV_T):
        for n, op in table.items():
            monkeypatch.setitem(table, n, spy(op))
    x, w = torch.randn(2, 16, 4, 8, 8, 8), torch.randn(8, 16, 1, 1, 1, 1)
    y = FN.conv_nd(x, w)
    torch.testing.assert_close(y, torch.einsum("bclxyz,oc->bolxyz", x, w.flatten(1)))
    y_aniso = FN.conv_nd(x, torch.randn(8, 16, 3, 3, 1, 1), padding=(1, 1, 0, 0))
    yt = FN.conv_transpose_nd(x, torch.randn(16, 4, 1, 2, 2, 2), None, (1, 2, 2, 2))
    assert len(seen) == 3
    for out, conv, xin in zip((y, y_aniso, yt), seen, inputs):
        assert out.is_contiguous()
        assert out.untyped_storage().data_ptr() == conv.untyped_storage().data_ptr()
        assert xin.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()


@pytest.mark.gpu
def test_merged_convs_on_cuda_match_cpu() -> None:
    """CUDA's "auto" merges every case below (on the CPU only the first): forward and every
    gradient on cuDNN (float32, no TF32) against the CPU in float64, and the output layout."""
    from ndunet.functional.merged import merge_axes

    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 4, 5, 3, dtype=torch.float64)
    cases = [  # (op, weight, args): 1x1, (3, 3, 1, 1), (1, 2, 2, 2) up
        (FN.conv_nd, torch.randn(6, 4, 1, 1, 1, 1, dtype=torch.float64), ()),
        (FN.conv_nd, torch.randn(6, 2, 3, 3, 1, 1, dtype=torch.float64), (1, (1, 1, 0, 0), 1, 2)),
        (FN.conv_transpose_nd, torch.randn(4, 3, 1, 2, 2, 2, dtype=torch.float64), ((1, 2, 2, 2),)),
    ]  # fmt: skip
    assert merge_axes((6, 4, 5, 3), (3, 3, 1, 1), (1,) * 4, (1, 1, 0, 0), (1,) * 4, None,
                      torch.device("cuda")) == [[0], [1], [2, 3]]  # fmt: skip
    for fn, w, args in cases:
        b = torch.randn(w.shape[0] if fn is FN.conv_nd else w.shape[1], dtype=torch.float64)
        outs = []
        for device, dtype in (("cpu", torch.float64), ("cuda", torch.float32)):
            leaves = [t.detach().to(device, dtype).requires_grad_() for t in (x, w, b)]
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                y = fn(*leaves, *args)
                y.backward(torch.ones_like(y))
            assert y.is_contiguous()
            outs.append([y.detach(), *(t.grad for t in leaves)])
        for ref, got in zip(*outs):
            torch.testing.assert_close(got.cpu().double(), ref, rtol=1e-3, atol=1e-3)


def test_merging_switched_off_gives_the_folds_numbers(monkeypatch, merge_all) -> None:
    from ndunet.functional import merged

    x = torch.randn(1, 2, 3, 4, 4, 4, dtype=torch.float64)
    w = torch.randn(2, 2, 1, 1, 3, 3, dtype=torch.float64)
    want = FN.conv_nd(x, w, padding=(0, 0, 1, 1))
    monkeypatch.setattr(merged, "mode", "none")
    assert merged.merge_axes((3, 4, 4, 4), (1, 1, 3, 3), (1,) * 4, (0, 0, 1, 1), (1,) * 4) is None
    torch.testing.assert_close(FN.conv_nd(x, w, padding=(0, 0, 1, 1)), want)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv_same_padding_matches_torch() -> None:
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64)
    w = torch.randn(3, 2, 4, 3, dtype=torch.float64)
    ref = F.conv2d(x, w, padding="same", dilation=(1, 2))
    torch.testing.assert_close(FN.conv_nd(x, w, padding="same", dilation=(1, 2)), ref)
    # the same conv lifted to 4-D through two singleton axes takes the fold path
    x4, w4 = x[:, :, None, :, None], w[:, :, None, :, None]
    ours = FN.conv_nd(x4, w4, padding="same", dilation=(1, 1, 1, 2))
    torch.testing.assert_close(ours[:, :, 0, :, 0], ref)


# ---------------------------------------------------------------------------------------------
# transposed convolution
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_conv_transpose_is_adjoint(n: int) -> None:
    """<conv(x), y> == <x, conv_transpose(y)> with the same weight, output_padding included."""
    rng = np.random.default_rng(10 + n)
    checked = 0
    for _ in range(8 if n < 5 else 4):
        x, w, _, stride, padding, dilation, groups = random_conv_case(rng, n, 7 if n < 5 else 5)
        y = FN.conv_nd(x, w, None, stride, padding, dilation, groups)
        # the output_padding that restores x's size exactly
        out_pad = tuple(
            s_in - ((s_out - 1) * s - 2 * p + d * (k - 1) + 1)
            for s_in, s_out, s, p, d, k in zip(
                x.shape[2:], y.shape[2:], stride, padding, dilation, w.shape[2:]
            )
        )
        if any(op >= max(s, d) for op, s, d in zip(out_pad, stride, dilation)):
            continue  # x not reachable by a transposed conv of this geometry
        v = torch.randn_like(y)
        z = FN.conv_transpose_nd(v, w, None, stride, padding, out_pad, groups, dilation)
        assert z.shape == x.shape
        lhs, rhs = (y * v).sum(), (x * z).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)
        checked += 1
    assert checked >= 2, "too few reachable geometries drawn"


@pytest.mark.parametrize("position", [0, 2, 3])
def test_conv_transpose_4d_embeds_torch(position: int) -> None:
    x3 = torch.randn(2, 4, 3, 4, 5, dtype=torch.float64)
    w3 = torch.randn(4, 3, 3, 2, 2, dtype=torch.float64)  # (in, out/groups, *k)
    b = torch.randn(6, dtype=torch.float64)
    kw = {
        "stride": (2, 3, 2),
        "padding": (1, 0, 1),
        "output_padding": (1, 2, 0),
        "dilation": (1, 1, 2),
    }
    ref = F.conv_transpose3d(x3, w3, b, groups=2, **kw)
    ins = lambda t, v: (*t[:position], v, *t[position:])  # noqa: E731
    kw4 = {
        "stride": ins(kw["stride"], 1),
        "padding": ins(kw["padding"], 0),
        "output_padding": ins(kw["output_padding"], 0),
        "dilation": ins(kw["dilation"], 1),
    }
    ours = FN.conv_transpose_nd(
        x3.unsqueeze(2 + position), w3.unsqueeze(2 + position), b, groups=2, **kw4
    )
    torch.testing.assert_close(ours.squeeze(2 + position), ref)


def test_conv_transpose_unet_geometry_4d() -> None:
    """kernel 2 / stride 2 (interleave path) equals the general scatter path and the adjoint."""
    x = torch.randn(1, 3, 3, 2, 3, 2, dtype=torch.float64)
    w = torch.randn(3, 2, 2, 2, 2, 2, dtype=torch.float64)
    up = FN.conv_transpose_nd(x, w, stride=2)
    assert up.shape == (1, 2, 6, 4, 6, 4)
    v = torch.randn(1, 2, 6, 4, 6, 4, dtype=torch.float64)
    torch.testing.assert_close((up * v).sum(), (x * FN.conv_nd(v, w, stride=2)).sum())


def test_gradcheck_4d() -> None:
    x = torch.randn(1, 2, 3, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 1, 2, 2, 1, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: FN.conv_nd(x, w, b, stride=(1, 2, 1, 1), padding=1, groups=2), (x, w, b)
    )
    wt = torch.randn(2, 1, 2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, b: FN.conv_transpose_nd(
            x, w, b, stride=(2, 1, 2, 1), padding=(1, 0, 0, 0), output_padding=(1, 0, 0, 0)
        ),
        (x, wt, torch.randn(1, dtype=torch.float64, requires_grad=True)),
    )


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------


def brute_pool(x, kernel, stride, padding, dilation, op, count_include_pad=True):
    """Every window enumerated explicitly with numpy (padding as -inf for max, 0 for mean)."""
    x = x.numpy()
    n = x.ndim - 2
    fill = -np.inf if op == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), *[(p, p) for p in padding]], constant_values=fill)
    valid = np.pad(np.ones(x.shape[2:]), [(p, p) for p in padding])
    outs = [
        (xp.shape[2 + i] - (kernel[i] - 1) * dilation[i] - 1) // stride[i] + 1 for i in range(n)
    ]
    out = np.zeros((*x.shape[:2], *outs))
    for pos in itertools.product(*[range(o) for o in outs]):
        sl = tuple(
            slice(p * s, p * s + (k - 1) * d + 1, d)
            for p, s, k, d in zip(pos, stride, kernel, dilation)
        )
        win = xp[(slice(None), slice(None), *sl)].reshape(*x.shape[:2], -1)
        if op == "max":
            out[(slice(None), slice(None), *pos)] = win.max(-1)
        else:
            div = np.prod(kernel) if count_include_pad else valid[sl].sum()
            out[(slice(None), slice(None), *pos)] = win.sum(-1) / div
    return torch.from_numpy(out)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_pools_match_brute_force(n: int) -> None:
    rng = np.random.default_rng(20 + n)
    for _ in range(4):
        kernel = tuple(int(v) for v in rng.integers(1, 4, n))
        stride = tuple(int(v) for v in rng.integers(1, 3, n))
        padding = tuple(int(rng.integers(0, k // 2 + 1)) for k in kernel)
        size = tuple(int(rng.integers(k, k + 4)) for k in kernel)
        x = torch.randn(2, 3, *size, dtype=torch.float64)
        torch.testing.assert_close(
            FN.max_pool_nd(x, kernel, stride, padding),
            brute_pool(x, kernel, stride, padding, (1,) * n, "max"),
        )
        for cip in (True, False):
            torch.testing.assert_close(
                FN.avg_pool_nd(x, kernel, stride, padding, count_include_pad=cip),
                brute_pool(x, kernel, stride, padding, (1,) * n, "avg", cip),
            )


@pytest.mark.parametrize("op", ["max", "avg"])
def test_pools_nd_skip_identity_axes_and_max_runs_torchs_3d_pool(op, monkeypatch) -> None:
    """N >= 4: max pool is one native 3-D pool over the last three axes and then a pass per
    leading axis; average pool a pass per axis; neither passes over an identity axis. Values (a
    permuted input) and gradients against brute force."""
    from ndunet.functional import pool

    calls, unfolds = [], []

    def spy(name, real, log, arg=None):
        def call(*args, **kwargs):
            log.append(name if arg is None else args[arg])
            return real(*args, **kwargs)

        monkeypatch.setattr(pool.F if name != "_windows" else pool, name, call)

    for name in ("max_pool3d", "avg_pool3d"):
        spy(name, getattr(F, name), calls)
    spy("_windows", pool._windows, unfolds, arg=1)  # logs the axis
    fn = FN.max_pool_nd if op == "max" else FN.avg_pool_nd
    x = torch.randn(2, 2, 3, 4, 5, 4, 5, dtype=torch.float64)
    kernel, stride, padding = (1, 2, 3, 2, 2), (1, 2, 1, 2, 1), (0, 1, 1, 0, 1)
    ours = fn(x.movedim(1, -1).contiguous().movedim(-1, 1), kernel, stride, padding)
    if op == "max":  # one 3-D max pool, then the leading axes (axis 0 is the identity)
        assert calls == ["max_pool3d"] and unfolds == [1]
    else:  # a pass per axis but the identity one
        assert calls == [] and unfolds == [1, 2, 3, 4]
    torch.testing.assert_close(ours, brute_pool(x, kernel, stride, padding, (1,) * 5, op))
    small = x[:1, :1, :2, :3, :3, :2, :3].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: fn(t, kernel, stride, padding), (small,))


def test_max_pool_dilation_4d() -> None:
    x = torch.randn(1, 2, 7, 5, 6, 5, dtype=torch.float64)
    ours = FN.max_pool_nd(x, (3, 2, 2, 2), (2, 1, 2, 1), (1, 1, 0, 1), (2, 1, 2, 1))
    ref = brute_pool(x, (3, 2, 2, 2), (2, 1, 2, 1), (1, 1, 0, 1), (2, 1, 2, 1), "max")
    torch.testing.assert_close(ours, ref)


# ---------------------------------------------------------------------------------------------
# interpolation and padding
# ---------------------------------------------------------------------------------------------


def axis_map(in_size, out_size, scale_factor, mode, align_corners):
    """Per-axis source coordinates and weights from torch's documented coordinate mapping."""
    dst = np.arange(out_size, dtype=np.float64)  # float64 inputs: torch maps in float64 too
    if mode == "linear" and align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        scale = 1.0 / scale_factor if scale_factor else in_size / out_size
    if mode == "nearest":
        return [(np.minimum(np.floor(dst * scale), in_size - 1).astype(int), np.ones(out_size))]
    src = dst * scale if align_corners else np.maximum((dst + 0.5) * scale - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(int), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    lam = src - i0
    return [(i0, 1 - lam), (i1, lam)]


def brute_interpolate(x, sizes, scales, mode, align_corners):
    """Sum over all 2^N corners with product weights, point by point (no separability used)."""
    x = x.numpy()
    maps = [
        axis_map(x.shape[2 + i], sizes[i], scales[i], mode, align_corners)
        for i in range(len(sizes))
    ]
    out = np.zeros((*x.shape[:2], *sizes))
    for pos in itertools.product(*[range(s) for s in sizes]):
        acc = 0.0
        for corner in itertools.product(*maps):
            idx = tuple(c[0][p] for c, p in zip(corner, pos))
            wgt = np.prod([c[1][p] for c, p in zip(corner, pos)])
            acc = acc + wgt * x[(slice(None), slice(None), *idx)]
        out[(slice(None), slice(None), *pos)] = acc
    return torch.from_numpy(out)


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "linear"])
@pytest.mark.parametrize("align_corners", [None, True])
def test_separable_interpolation_matches_torch(n, mode, align_corners) -> None:
    if align_corners and mode != "linear":
        return
    x = torch.randn(2, 3, *[5, 4, 6][:n], dtype=torch.float64)
    torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[n] if mode == "linear" else mode
    for size, scale in (([7, 3, 11][:n], None), (None, [2.0, 1.5, 0.5][:n])):
        kw = {"size": size} if size else {"scale_factor": scale}
        ref = F.interpolate(x, mode=torch_mode, align_corners=align_corners, **kw)
        sizes = tuple(ref.shape[2:])
        scales = (None,) * n if size else tuple(scale)
        ours = interpolate_separable(x, sizes, scales, mode, bool(align_corners))
        torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_interpolate_4d_matches_pointwise_formula(mode, align_corners) -> None:
    if align_corners and mode != "linear":
        return
    x = torch.randn(1, 2, 3, 4, 2, 3, dtype=torch.float64)
    ac = align_corners if mode == "linear" else None
    ours = FN.interpolate_nd(x, size=(5, 3, 4, 6), mode=mode, align_corners=ac)
    ref = brute_interpolate(x, (5, 3, 4, 6), (None,) * 4, mode, align_corners)
    torch.testing.assert_close(ours, ref)
    ours = FN.interpolate_nd(x, scale_factor=2, mode=mode, align_corners=ac)
    ref = brute_interpolate(x, (6, 8, 4, 6), (2.0,) * 4, mode, align_corners)
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "linear"])
@pytest.mark.parametrize(
    "size_in,size_out",
    [
        ((3, 4, 2, 3), (5, 3, 4, 6)),
        ((5, 4, 6, 5), (3, 4, 2, 3)),
        ((2, 3, 2, 3, 2), (3, 3, 4, 2, 5)),
    ],
)
def test_interpolate_nd_native_inner_axes_match_per_axis_passes(mode, size_in, size_out) -> None:
    """N >= 4 resizes the last three axes with torch's 3-D kernel (smaller side first, growing
    or shrinking): values and gradients as a 1-D pass per axis, and second derivatives."""
    x = torch.randn(2, 3, *size_in, dtype=torch.float64, requires_grad=True)
    for ac in [False, True] if mode == "linear" else [None]:
        ours = FN.interpolate_nd(x, size=size_out, mode=mode, align_corners=ac)
        ref = interpolate_separable(x, size_out, (None,) * len(size_out), mode, bool(ac))
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn(ours.shape, dtype=torch.float64)
        got, want = (torch.autograd.grad(y, x, g)[0] for y in (ours, ref))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    small = x[:1, :1].detach().requires_grad_()
    fn = lambda t: FN.interpolate_nd(t, size=size_out, mode=mode)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (small,)) and torch.autograd.gradgradcheck(fn, (small,))


WHOLE_REPEATS = [  # (input size, repeats) of nearest enlargements by whole factors
    ((3, 2, 4, 3), (2, 2, 2, 2)),
    ((2, 3, 2, 2), (3, 1, 2, 1)),
    ((2, 2, 3, 2), (1, 1, 1, 3)),
    ((2, 3, 2, 2, 3), (2, 3, 1, 1, 2)),
    ((2, 1, 2, 2, 1, 2), (1, 2, 2, 1, 3, 2)),
]


@pytest.mark.parametrize("case", WHOLE_REPEATS, ids=lambda c: "x".join(map(str, c[1])))
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
@pytest.mark.parametrize("given", ["size", "scale_factor"])
def test_whole_factor_nearest_repeats_voxels(case, mode, given, monkeypatch) -> None:
    """Enlargements by whole factors repeat voxels (torch's 3-D kernel and one copy): the same
    values and gradients as the per-axis path, which is never called for them."""
    import ndunet.functional.interpolate as interp

    size, repeats = case
    x = torch.randn(2, 3, *size, dtype=torch.float64).movedim(1, -1).contiguous().movedim(-1, 1)
    out = tuple(n * r for n, r in zip(size, repeats))
    ref = interpolate_separable(x, out, (None,) * len(out), mode, False)
    kw = {"size": out} if given == "size" else {"scale_factor": [float(r) for r in repeats]}
    monkeypatch.setattr(interp, "interpolate_separable", None)  # must not be needed
    xg = x.detach().requires_grad_()
    ours = FN.interpolate_nd(xg, mode=mode, **kw)
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    g = torch.randn_like(ours)
    ours.backward(g)
    # each input voxel collects the gradient of its r0 x r1 x ... block
    blocks = g.reshape(2, 3, *(v for n, r in zip(size, repeats) for v in (n, r)))
    want = blocks.sum(tuple(range(3, 2 + 2 * len(size), 2)))
    torch.testing.assert_close(xg.grad, want, rtol=1e-12, atol=1e-12)


def test_whole_factor_nearest_second_derivatives() -> None:
    x = torch.randn(1, 2, 2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    fn = lambda x: FN.interpolate_nd(x, scale_factor=(2, 1, 3, 2), mode="nearest")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize(
    "kw", [{"size": (5, 4, 4, 4)}, {"scale_factor": 2.5}, {"scale_factor": 2.0000001}]
)
def test_other_nearest_resizes_take_the_per_axis_path(kw, monkeypatch) -> None:
    import ndunet.functional.interpolate as interp

    calls = []
    real = interp.interpolate_separable
    monkeypatch.setattr(interp, "interpolate_separable", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 2, 2, 2, 2, 2, dtype=torch.float64)
    out = FN.interpolate_nd(x, mode="nearest", **kw)
    sizes = tuple(out.shape[2:])
    scales = (None,) * 4 if "size" in kw else (kw["scale_factor"],) * 4
    assert calls and torch.equal(out, brute_interpolate(x, sizes, scales, "nearest", False))


@pytest.mark.parametrize(
    "mode,np_mode", [("reflect", "reflect"), ("replicate", "edge"), ("circular", "wrap")]
)
@pytest.mark.parametrize("n", [1, 4])
def test_pad_nd_matches_numpy(mode, np_mode, n) -> None:
    x = torch.randn(2, 3, *[4, 3, 5, 3][:n], dtype=torch.float64)
    pads = [(1, 2), (2, 0), (0, 3), (2, 2)][:n]
    ref = np.pad(x.numpy(), [(0, 0), (0, 0), *pads], mode=np_mode)
    torch.testing.assert_close(FN.pad_nd(x, pads, mode), torch.from_numpy(ref))


# ---------------------------------------------------------------------------------------------
# bad input: clear errors before any compute
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda x, w: FN.conv_nd(x, w, stride=(1, 2)), r"stride=\(1, 2\) has 2 entries"),
        (lambda x, w: FN.conv_nd(x, w, padding=-1), r"padding=-1"),
        (lambda x, w: FN.conv_nd(x[..., :1, :1], w), r"kernel size 3 .* larger than the padded"),
        (lambda x, w: FN.conv_nd(x, w, groups=3), r"groups=3"),
        (lambda x, w: FN.conv_nd(x[0], w), r"weight has shape"),
        (lambda x, w: FN.conv_nd(x, w, stride=0), r"stride=0"),
        (lambda x, w: FN.conv_nd(x, w, padding="same", stride=2), r"padding='same' needs stride=1"),
        (lambda x, w: FN.max_pool_nd(x, 2, padding=2), r"padding=2.*half"),
        (lambda x, w: FN.max_pool_nd(x, 9), r"kernel_size=9"),
        (lambda x, w: FN.interpolate_nd(x, size=3, scale_factor=2), r"exactly one of size"),
        (lambda x, w: FN.interpolate_nd(x, size=(2, 2, 2)), r"size=\(2, 2, 2\)"),
        (lambda x, w: FN.interpolate_nd(x, size=2, mode="cubic"), r"mode='cubic'"),
        (
            lambda x, w: FN.conv_transpose_nd(x, w.transpose(0, 1), output_padding=1),
            r"output_padding=1",
        ),
    ],
)
def test_bad_input_messages(call, match) -> None:
    x = torch.randn(1, 2, 5, 4, 3, 4)
    w = torch.randn(4, 2, 3, 3, 3, 3)
    with pytest.raises((ValueError, TypeError), match=match):
        call(x, w)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x, w: FN.conv_nd(x, w, padding=100_000), "padding"),
        (lambda x, w: FN.conv_nd(x[:, :, 0, 0], w[:, :, 0, 0], padding=10**6), "padding"),
        (lambda x, w: FN.conv_transpose_nd(x, w.transpose(0, 1), stride=10**4), "stride"),
        (lambda x, w: FN.interpolate_nd(x, scale_factor=1e4), "scale_factor"),
        (lambda x, w: FN.interpolate_nd(x, size=10**4, mode="linear"), "size"),
        (lambda x, w: FN.pad_nd(x, [(100_000, 100_000)] * 4), "padding"),
        (lambda x, w: FN.pad_nd(x[:, :, 0, 0], [(10**6, 10**6)] * 2, "replicate"), "padding"),
    ],
)
def test_huge_results_are_refused_before_allocation(call, name) -> None:
    """A result far over MAX_ELEMENTS is a ValueError naming the parameter, not an allocation."""
    x = torch.randn(1, 2, 5, 4, 3, 4)
    w = torch.randn(4, 2, 3, 3, 3, 3)
    with pytest.raises(ValueError, match=rf"^{name}=.* is not valid; .*at most 2\.1e9 elements.*"):
        call(x, w)


def test_size_limit_allows_what_the_input_already_holds(monkeypatch) -> None:
    """The limit stops what a parameter adds; a result no larger than the input always passes."""
    monkeypatch.setattr("ndunet.functional.checks.MAX_ELEMENTS", 10)
    x = torch.randn(1, 2, 3, 4)
    assert FN.conv_nd(x, torch.randn(2, 2, 3, 3), padding=1).shape == x.shape
    assert FN.interpolate_nd(x, scale_factor=0.5).shape == (1, 2, 1, 2)
    with pytest.raises(ValueError, match=r"padding=\[\(1, 0\), \(0, 0\)\] is not valid"):
        FN.pad_nd(x, [(1, 0), (0, 0)])


@pytest.mark.gpu
def test_4d_ops_on_cuda_match_cpu() -> None:
    x = torch.randn(2, 4, 6, 5, 4, 6)
    w = torch.randn(6, 2, 3, 3, 3, 3)
    wt = torch.randn(4, 3, 2, 2, 2, 2)
    cuda = torch.device("cuda")
    for fn, args in (
        (FN.conv_nd, (x, w, None, 1, 1, 1, 2)),
        (FN.conv_transpose_nd, (x, wt, None, 2)),
        (FN.max_pool_nd, (x, 2)),
        (FN.interpolate_nd, (x, None, 2.0, "linear")),
    ):
        cpu_out = fn(*args)
        gpu_out = fn(*[a.to(cuda) if isinstance(a, torch.Tensor) else a for a in args])
        torch.testing.assert_close(gpu_out.cpu(), cpu_out, rtol=1e-3, atol=1e-3)

"""Every fold strategy of the N >= 4 convolutions is the same exact operator: checked against
scipy.signal.correlate, a numpy scatter for the transposed conv, a per-frame loop of torch's
conv3d, and gradcheck; and the oneDNN conv3d guard, in subprocesses."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import correlate

from ndunet import functional as FN
from ndunet.functional import fold

STRATEGIES = ("outputs", "inputs", "taps", "chunks", "blocks")

# (kernel, stride, padding, dilation, groups, size): unit and strided leading axes, dilation,
# groups, padding, and kernels larger than some axes' stride
CASES = [
    ((3, 3, 3, 3), (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1), 1, (4, 3, 4, 3)),
    ((3, 2, 1, 2), (2, 1, 2, 1), (1, 0, 0, 1), (1, 2, 1, 1), 2, (5, 4, 3, 4)),
    ((2, 3, 2, 1), (1, 2, 1, 1), (0, 1, 1, 0), (2, 1, 1, 1), 2, (5, 5, 3, 2)),
    ((3, 1, 2, 2, 2), (2, 1, 1, 2, 1), (1, 0, 1, 0, 1), (1, 1, 2, 1, 1), 1, (5, 2, 3, 4, 3)),
    ((2, 2, 1, 3, 1), (1, 1, 1, 1, 2), (0, 1, 0, 1, 0), (1, 2, 1, 1, 1), 2, (3, 4, 2, 3, 3)),
]


def scipy_conv(x, w, stride, padding, dilation, groups):
    """Cross-correlation from scipy.signal.correlate (float64), any N."""
    x, w = x.numpy(), w.numpy()
    xp = np.pad(x, [(0, 0), (0, 0), *[(p, p) for p in padding]])
    cin_g, per_group = w.shape[1], w.shape[0] // groups
    out = []
    for b in range(x.shape[0]):
        rows = []
        for o in range(w.shape[0]):
            g = o // per_group
            acc = 0.0
            for c in range(cin_g):
                kd = np.zeros([(k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation)])
                kd[tuple(slice(None, None, d) for d in dilation)] = w[o, c]
                acc = acc + correlate(xp[b, g * cin_g + c], kd, mode="valid")
            rows.append(acc[tuple(slice(None, None, s) for s in stride)])
        out.append(rows)
    return torch.from_numpy(np.array(out))


def scatter_conv_transpose(x, w, stride, padding, output_padding, dilation, groups):
    """Transposed conv by its definition: every input voxel scatters weight * value (numpy)."""
    x, w = x.numpy(), w.numpy()
    cin_g, out_g = x.shape[1] // groups, w.shape[1]
    kernel, lengths = w.shape[2:], x.shape[2:]
    full = [(n - 1) * s + (k - 1) * d + 1 + op for n, k, s, d, op in
            zip(lengths, kernel, stride, dilation, output_padding)]  # fmt: skip
    y = np.zeros((x.shape[0], out_g * groups, *full))
    for pos in itertools.product(*(range(n) for n in lengths)):
        for tap in itertools.product(*(range(k) for k in kernel)):
            at = tuple(i * s + t * d for i, t, s, d in zip(pos, tap, stride, dilation))
            for g in range(groups):
                xs = x[(slice(None), slice(g * cin_g, (g + 1) * cin_g), *pos)]  # (B, C/g)
                ws = w[(slice(g * cin_g, (g + 1) * cin_g), slice(None), *tap)]  # (C/g, O/g)
                y[(slice(None), slice(g * out_g, (g + 1) * out_g), *at)] += xs @ ws
    keep = tuple(slice(p, f - p) for p, f in zip(padding, full))
    return torch.from_numpy(y[(slice(None), slice(None), *keep)])


def per_frame_conv(x, w, stride, padding, dilation, groups):
    """4-D conv as a loop over output frames and taps of axis 0, each one torch conv3d."""
    k, s, p, d = w.shape[2], stride[0], padding[0], dilation[0]
    frames = []
    for t in range((x.shape[2] + 2 * p - d * (k - 1) - 1) // s + 1):
        acc = 0
        for j in range(k):
            i = t * s + j * d - p
            if 0 <= i < x.shape[2]:
                acc = acc + F.conv3d(x[:, :, i], w[:, :, j], None, stride[1:], padding[1:],
                                     dilation[1:], groups)  # fmt: skip
        frames.append(acc)
    return torch.stack(frames, 2)


def _case(case, seed=0):
    kernel, stride, padding, dilation, groups, size = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2 * groups, *size, dtype=torch.float64, generator=g)
    # conv (out, in/groups, *k) and transposed (in, out/groups, *k) weights: the same shape here
    w = torch.randn(2 * groups, 2, *kernel, dtype=torch.float64, generator=g)
    return x, w, stride, padding, dilation, groups


@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", CASES)
def test_conv_strategies_match_scipy(strategy, case, layout) -> None:
    x, w, stride, padding, dilation, groups = _case(case)
    with fold.forced_strategy(strategy, layout):
        ours = FN.conv_nd(x, w, None, stride, padding, dilation, groups)
    ref = scipy_conv(x, w, stride, padding, dilation, groups)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("ratio", [1e-9, 0.1, 1e9])
@pytest.mark.parametrize("case", [CASES[1], CASES[3]])
def test_chunks_of_any_size_match_scipy(monkeypatch, ratio, case) -> None:
    """One output frame per chunk, a few, and all of them in one chunk."""
    monkeypatch.setattr(fold, "CHUNK_RATIO", ratio)
    x, w, stride, padding, dilation, groups = _case(case, seed=2)
    b = torch.randn(w.shape[0], dtype=torch.float64)
    with fold.forced_strategy("chunks"):
        ours = FN.conv_nd(x, w, b, stride, padding, dilation, groups)
    ref = scipy_conv(x, w, stride, padding, dilation, groups) + b.view(1, -1, *[1] * len(stride))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_conv_strategies_match_per_frame_loop_float32(strategy) -> None:
    """In float32 (oneDNN's fast paths, channels-last) against per-frame torch conv3d calls."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 4, 6, 5, 4, 5), torch.randn(6, 2, 3, 3, 2, 3)
    geometry = ((1, 2, 1, 1), (1, 1, 0, 1), (2, 1, 1, 1), 2)
    for geo in (((1, 1, 1, 1), (1, 1, 1, 1), (1, 1, 1, 1), 2), geometry):
        with fold.forced_strategy(strategy):
            ours = FN.conv_nd(x, w, None, *geo)
        torch.testing.assert_close(ours, per_frame_conv(x, w, *geo), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("strategy", ["outputs", "taps"])
@pytest.mark.parametrize("case", CASES)
def test_conv_transpose_strategies_match_scatter(strategy, case, layout) -> None:
    _, stride, padding, dilation, groups, _ = case
    x, w, *_ = _case(case, seed=1)
    output_padding = tuple(max(s, d) - 1 for s, d in zip(stride, dilation))
    with fold.forced_strategy(strategy, layout):
        ours = FN.conv_transpose_nd(x, w, None, stride, padding, output_padding, groups, dilation)
    ref = scatter_conv_transpose(x, w, stride, padding, output_padding, dilation, groups)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("strategy", ["outputs", "taps"])
def test_conv_transpose_unet_geometry_with_bias(strategy) -> None:
    """kernel 2 / stride 2, bias fused or not, output_padding past the last tap included."""
    torch.manual_seed(1)
    x, w, b = torch.randn(2, 4, 2, 3, 2, 2), torch.randn(4, 3, 2, 2, 2, 2), torch.randn(3)
    for op in (0, 1):
        with fold.forced_strategy(strategy):
            ours = FN.conv_transpose_nd(x, w, b, 2, 0, (op, 0, op, 0))
        ref = scatter_conv_transpose(x.double(), w.double(), (2,) * 4, (0,) * 4,
                                     (op, 0, op, 0), (1,) * 4, 1)  # fmt: skip
        ref = ref + b.double().view(1, -1, 1, 1, 1, 1)
        torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradcheck_every_strategy(strategy) -> None:
    for i, case in enumerate((CASES[0], CASES[1], CASES[4])):
        kernel, groups = case[0], case[4]
        size = (3, 2, 3, 2, 2)[: len(kernel)] if i != 1 else (4, 3, 2, 3)
        g = torch.Generator().manual_seed(i)
        x = torch.randn(1, groups, *size, dtype=torch.float64, generator=g).requires_grad_()
        w = torch.randn(groups, 1, *kernel, dtype=torch.float64, generator=g).requires_grad_()
        b = torch.randn(groups, dtype=torch.float64, generator=g).requires_grad_()

        layout = fold.LAYOUTS[1 + i % 2]

        def conv(x, w, b, case=case, layout=layout):
            with fold.forced_strategy(strategy, layout):
                return FN.conv_nd(x, w, b, *case[1:5])

        def conv_t(x, w, b, case=case, layout=layout):
            with fold.forced_strategy(strategy, layout):  # "inputs", "chunks", "blocks": auto there
                return FN.conv_transpose_nd(x, w, b, case[1], case[2], 0, case[4], case[3])

        assert torch.autograd.gradcheck(conv, (x, w, b))
        assert torch.autograd.gradcheck(conv_t, (x, w, b))


def test_auto_picks_by_device_and_buffer_size() -> None:
    """CPU: the fastest there ("blocks" for large unit-stride buffers); CUDA: "chunks" once the
    buffer passes the ratio."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    big = int(fold.BUFFER_RATIO * 10) + 1
    assert fold.strategy == "auto"
    assert fold._choose(True, big, 10, cpu) == "outputs"
    assert fold._choose(True, fold.BLOCKS_FROM, 10, cpu) == "blocks"
    assert fold._choose(False, fold.BLOCKS_FROM, 10, cpu) == "inputs"
    assert fold._choose(False, big, 10, cpu) == "inputs"
    assert fold._choose(True, 10, 10, cuda) == "outputs"
    assert fold._choose(True, big, 10, cuda) == "chunks"
    assert fold._choose(True, big, 10, cuda, transposed=True) == "outputs"
    with fold.forced_strategy("taps"):
        assert fold._choose(True, 10, 10, cpu) == "taps"
        assert fold._choose(True, 10, 10, cpu, transposed=True) == "taps"
    for name in ("chunks", "blocks"):  # no transposed form
        with fold.forced_strategy(name):
            assert fold._choose(True, 10, 10, cpu, transposed=True) == "outputs"


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    src = os.path.join(os.path.dirname(__file__), os.pardir, "src")
    env = {**os.environ, "PYTHONPATH": src, "MALLOC_CHECK_": "3", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_bad_strategy_names() -> None:
    with pytest.raises(ValueError, match=r"strategy='fast' is not valid; use one of"):
        fold.forced_strategy("fast").__enter__()
    run = _run("import ndunet.functional", NDUNET_FOLD_STRATEGY="fast")
    assert run.returncode != 0
    assert "NDUNET_FOLD_STRATEGY='fast' is not valid" in run.stderr
    with pytest.raises(ValueError, match=r"fold_layout='nhwc' is not valid; use one of"):
        fold.forced_strategy("taps", "nhwc").__enter__()
    assert (fold.strategy, fold.layout) == ("auto", "auto")
    run = _run("import ndunet.functional", NDUNET_FOLD_LAYOUT="nhwc")
    assert "NDUNET_FOLD_LAYOUT='nhwc' is not valid" in run.stderr
    run = _run("from ndunet.functional import fold; print(fold.strategy, fold.layout)",
               NDUNET_FOLD_STRATEGY="taps", NDUNET_FOLD_LAYOUT="frames")  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "taps frames"


def test_onednn_depth_padding_guard_in_a_subprocess() -> None:
    """conv3d weight gradients in the configurations where torch 2.13's oneDNN corrupts the heap
    or returns garbage (k=7, s=2, p=3 with depth 5-7; k=9 with depth 6-9), 3-D and as the inner
    conv of the 4-D fold, against float64 (another code path). A subprocess: a segfault there
    fails this test instead of killing the test run."""
    code = """
    import torch
    from ndunet import functional as FN
    from ndunet.functional import fold
    torch.set_num_threads(1)
    cases = [(7, 2, 3, d) for d in (5, 6, 7)] + [(9, 2, 4, 6)] + [(9, 3, 4, d) for d in (6, 9)]
    for k, s, p, d in cases:
        for lead in ((), (2,)):
            x = torch.randn(2, 3, *lead, d, 5, 6)
            w = torch.randn(4, 3, *[1] * len(lead), k, k, k, requires_grad=True)
            n = len(lead)
            geo = ((1,) * n + (s,) * 3, (0,) * n + (p,) * 3)
            for name in (("outputs", "inputs", "taps", "chunks", "blocks") if lead else ("auto",)):
                with fold.forced_strategy(name):
                    g, = torch.autograd.grad(FN.conv_nd(x, w, None, *geo).square().sum(), w)
                w64 = w.detach().double().requires_grad_()
                ref, = torch.autograd.grad(
                    FN.conv_nd(x.double(), w64, None, *geo).square().sum(), w64)
                torch.testing.assert_close(g.double(), ref, rtol=1e-4, atol=1e-3 * ref.abs().max())
    print("all close")
    """
    run = _run(code)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "all close" in run.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("layout", fold.LAYOUTS)
@pytest.mark.parametrize("strategy", ["auto", *STRATEGIES])
def test_strategies_on_cuda_match_cpu(strategy, layout) -> None:
    """Forward and all gradients on CUDA (cuDNN, float32 without TF32) against CPU float64."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 5, 4, 6, dtype=torch.float64)
    cases = [
        (FN.conv_nd, torch.randn(6, 2, 3, 3, 3, 3, dtype=torch.float64), (1, 1, 1, 2)),
        (FN.conv_nd, torch.randn(6, 4, 3, 2, 3, 3, dtype=torch.float64), (2, 1, 1, 1)),
        (FN.conv_transpose_nd, torch.randn(4, 3, 2, 2, 2, 2, dtype=torch.float64), (2,)),
    ]
    for fn, w, args in cases:
        b = torch.randn(w.shape[0] if fn is FN.conv_nd else w.shape[1], dtype=torch.float64)
        outs = []
        for device, dtype in (("cpu", torch.float64), ("cuda", torch.float32)):
            leaves = [t.detach().to(device, dtype).requires_grad_() for t in (x, w, b)]
            with (
                fold.forced_strategy(strategy, layout),
                torch.backends.cudnn.flags(enabled=True, allow_tf32=False),
            ):
                y = fn(*leaves, *args)
                y.backward(torch.ones_like(y))
            outs.append([y.detach(), *(t.grad for t in leaves)])
        for ref, got in zip(*outs):
            torch.testing.assert_close(got.cpu().double(), ref, rtol=1e-3, atol=1e-3)


def layouts(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values in every layout an input or gradient may arrive in."""
    m = t.dim() - 5
    wide = torch.zeros(t.shape[0], 2 * t.shape[1], *t.shape[2:], dtype=t.dtype)
    wide[:, 1::2] = t
    return {
        "contiguous": t,
        "channels-last": t.movedim(1, -1).contiguous().movedim(-1, 1),
        "frames": t.movedim(1, 1 + m).contiguous().movedim(1 + m, 1),
        "strided": wide[:, 1::2],  # e.g. a slice of torch.cat's output or gradient
    }

"""sliding_window_inference and flip_tta against oracles: whole-volume predictions, the closed-form
Gaussian, MONAI's placement rule written out by hand, and (when installed) MONAI itself."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ndunet.functional import conv_nd
from ndunet.inference import (
    flip_tta,
    importance_map,
    sliding_window_inference,
    window_slices,
    window_starts,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# small volumes per spatial_dims, each axis an awkward length for the windows below
SIZES = {1: (23,), 2: (13, 10), 3: (9, 7, 8), 4: (6, 5, 7, 4)}
ROIS = {1: (8,), 2: (6, 4), 3: (4, 5, 3), 4: (3, 4, 3, 2)}


def monai_starts(size: int, roi: int, overlap: float) -> list[int]:
    """MONAI's _get_scan_interval + dense_patch_slices for one axis, transcribed literally."""
    interval = roi if roi == size else (int(roi * (1 - overlap)) or 1)
    scan_num = 1
    for d in range(math.ceil(size / interval)):
        if d * interval + roi >= size:
            scan_num = d + 1
            break
    starts = []
    for idx in range(scan_num):
        start = idx * interval
        starts.append(start - max(start + roi - size, 0))
    return starts


def pointwise(out_channels: int, in_channels: int):
    w = torch.randn(out_channels, in_channels, dtype=torch.float64)
    return lambda t: torch.einsum("oc,bc...->bo...", w.to(t.device), t).tanh()  # any device


@pytest.mark.parametrize(
    ("size", "roi", "overlap", "expected"),
    [(10, 4, 0.5, [0, 2, 4, 6]), (10, 4, 0.25, [0, 3, 6]), (11, 4, 0.25, [0, 3, 6, 7]),
     (5, 5, 0.5, [0]), (7, 3, 0.9, [0, 1, 2, 3, 4]), (9, 4, 0.0, [0, 4, 5])],
)  # fmt: skip
def test_window_starts_by_hand(size, roi, overlap, expected):
    step = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    assert window_starts(size, roi, step) == expected
    assert monai_starts(size, roi, overlap) == expected


def test_window_slices_follow_monai_rule():
    for size, roi, overlap in itertools.product(
        (1, 2, 7, 16, 33), (1, 3, 8, 16), (0, 0.25, 0.5, 0.8)
    ):
        if roi > size:
            continue
        got = [sl[0].start for sl in window_slices((size,), (roi,), (overlap,))]
        assert got == monai_starts(size, roi, overlap), (size, roi, overlap)
    # N-D: the product of the per-axis starts, first axis slowest
    slices = window_slices((10, 11), (4, 4), (0.5, 0.25))
    expected = list(itertools.product(monai_starts(10, 4, 0.5), monai_starts(11, 4, 0.25)))
    assert [(a.start, b.start) for a, b in slices] == expected


def test_gaussian_importance_map_closed_form():
    roi, scale = (5, 6, 7), (0.125, 0.2, 0.3)
    got = importance_map(roi, "gaussian", scale, dtype=torch.float64)
    expected = torch.ones(roi, dtype=torch.float64)
    for axis, (r, s) in enumerate(zip(roi, scale)):
        x = torch.arange(r, dtype=torch.float64) - (r - 1) / 2
        g = torch.exp(-(x**2) / (2 * (s * r) ** 2))
        expected = expected * g.view([-1 if a == axis else 1 for a in range(3)])
    expected = expected.clamp(min=max(expected.min().item(), 1e-3))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)  # MONAI computes in float32
    assert torch.equal(importance_map((3, 4), "constant"), torch.ones(3, 4))


def test_pointwise_predictor_equals_whole_volume(spatial_dims):
    x = torch.randn(2, 3, *SIZES[spatial_dims], dtype=torch.float64)
    predictor = pointwise(5, 3)  # a different channel count out
    for mode, overlap in (("constant", 0.25), ("gaussian", 0.6)):
        y = sliding_window_inference(x, ROIS[spatial_dims], 3, predictor, overlap, mode)
        assert y.shape == (2, 5, *SIZES[spatial_dims])
        torch.testing.assert_close(y, predictor(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_identity_predictor_reproduces_input(spatial_dims, mode):
    x = torch.randn(1, 2, *SIZES[spatial_dims])
    roi = tuple(r + 1 for r in ROIS[spatial_dims])
    y = sliding_window_inference(x, roi, 4, lambda t: t, overlap=0.5, mode=mode)
    torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6)


def test_local_conv_matches_whole_volume_away_from_inner_window_edges(spatial_dims):
    """A 3^N conv sees its whole receptive field except at window edges inside the volume; every
    voxel that no covering window has on such an edge must equal the whole-volume conv."""
    size = {1: (30,), 2: (14, 12), 3: (10, 9, 8), 4: (7, 6, 6, 5)}[spatial_dims]
    roi = {1: (10,), 2: (8, 6), 3: (6, 6, 5), 4: (5, 4, 4, 5)}[spatial_dims]
    x = torch.randn(1, 2, *size, dtype=torch.float64)
    w = torch.randn(3, 2, *(3,) * spatial_dims, dtype=torch.float64)
    predictor = lambda t: conv_nd(t, w, padding=1)  # noqa: E731
    y = sliding_window_inference(x, roi, 2, predictor, overlap=0.5, mode="gaussian")
    good = torch.ones(size, dtype=torch.bool)
    for axis, (s, r) in enumerate(zip(size, roi)):
        bad = torch.zeros(s, dtype=torch.bool)
        for start in monai_starts(s, r, 0.5):
            if start > 0:
                bad[start] = True  # the first voxel of a window that does not start the axis
            if start + r < s:
                bad[start + r - 1] = True
        good &= ~bad.view([-1 if a == axis else 1 for a in range(spatial_dims)])
    assert good.any() and not good.all()
    torch.testing.assert_close(y[..., good], predictor(x)[..., good], rtol=1e-12, atol=1e-12)


def test_input_smaller_than_roi_is_padded_symmetrically_and_cropped():
    x = torch.randn(1, 1, 5, 8)

    def position(t):  # each window voxel holds its index along axis 0 within the window
        return torch.arange(t.shape[2], dtype=t.dtype).view(1, 1, -1, 1).expand_as(t).clone()

    y = sliding_window_inference(x, (10, 4), 1, position, overlap=0.0)
    assert y.shape == x.shape
    # MONAI pads 10 - 5 = 5 as 2 before and 3 after, so the input starts at window row 2
    torch.testing.assert_close(y[0, 0, :, 0], torch.arange(2.0, 7.0))
    # a predictor that averages its window sees the cval padding
    mean = lambda t: t.mean(dim=(2, 3), keepdim=True).expand_as(t)  # noqa: E731
    y = sliding_window_inference(x, (10, 8), 1, mean, padding_mode="constant", cval=2.0)
    expected = (x.sum() + 2.0 * (80 - 40)) / 80
    torch.testing.assert_close(y, torch.full_like(x, expected.item()))
    y = sliding_window_inference(x, (7, -1), 1, mean, padding_mode="replicate")
    padded = F.pad(x, (0, 0, 1, 1), mode="replicate")
    torch.testing.assert_close(y, torch.full_like(x, padded.mean().item()))


def test_roi_fallback_whole_axis_and_batch_independence():
    x = torch.randn(3, 2, 9, 11)
    calls = []

    def record(t):
        calls.append(tuple(t.shape))
        return t * 2

    y = sliding_window_inference(x, (-1, 4), 5, record, overlap=0.5)
    assert {c[2:] for c in calls} == {(9, 4)}
    assert sum(c[0] for c in calls) == 3 * len(monai_starts(11, 4, 0.5))
    torch.testing.assert_close(y, 2 * x)
    y1 = sliding_window_inference(x, (4, 4), 1, lambda t: t.cumsum(2), mode="gaussian")
    y7 = sliding_window_inference(x, (4, 4), 7, lambda t: t.cumsum(2), mode="gaussian")
    torch.testing.assert_close(y1, y7)
    for b in range(3):
        yb = sliding_window_inference(
            x[b : b + 1], (4, 4), 2, lambda t: t.cumsum(2), mode="gaussian"
        )
        torch.testing.assert_close(y1[b : b + 1], yb)


def test_devices_and_dtype():
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    seen = []
    y = sliding_window_inference(
        x, 4, 2, lambda t: seen.append(t.device) or t, sw_device="cpu", device=torch.device("cpu")
    )
    assert y.device.type == "cpu" and y.dtype == torch.float64
    assert all(d.type == "cpu" for d in seen)


@pytest.mark.gpu
def test_windows_on_gpu_output_on_cpu():
    x = torch.randn(1, 2, 20, 18, 9)
    predictor = pointwise(3, 2)
    y = sliding_window_inference(
        x.double(), (8, 8, 8), 4, predictor, 0.5, "gaussian", sw_device="cuda", device="cpu"
    )
    assert y.device.type == "cpu"
    torch.testing.assert_close(y, predictor(x.double()))


def test_errors_name_the_argument():
    x = torch.randn(1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"roi_size=\(4, 4\).*spatial size"):
        sliding_window_inference(x, (4, 4), 1, lambda t: t[:, :, ::2, ::2])
    with pytest.raises(ValueError, match=r"mode='gauss'.*did you mean 'gaussian'"):
        sliding_window_inference(x, 4, 1, lambda t: t, mode="gauss")
    with pytest.raises(ValueError, match=r"overlap=1\.0"):
        sliding_window_inference(x, 4, 1, lambda t: t, overlap=1.0)
    with pytest.raises(ValueError, match="roi_size"):
        sliding_window_inference(x, (4, 4, 4), 1, lambda t: t)
    with pytest.raises(ValueError, match="sw_batch_size=0"):
        sliding_window_inference(x, 4, 0, lambda t: t)
    with pytest.raises(ValueError, match="floating"):
        sliding_window_inference(x.long(), 4, 1, lambda t: t)
    with pytest.raises(ValueError, match=r"padding_mode='reflect'.*axis 0 of length 8"):
        sliding_window_inference(x, (30, 4), 1, lambda t: t, padding_mode="reflect")
    with pytest.raises(TypeError, match="one tensor"):
        sliding_window_inference(x, 4, 1, lambda t: (t,))


def test_flip_tta_averages_all_flips():
    x = torch.randn(2, 1, 5, 6, 4, dtype=torch.float64)
    calls = []

    def predictor(t):
        calls.append(1)
        return t.cumsum(2) + 2 * t.cumsum(3)  # not flip-equivariant on axes 0 and 1

    y = flip_tta(predictor, axes=(0, 1))(x)
    assert len(calls) == 4
    terms = [predictor(x)]
    terms += [predictor(x.flip(d)).flip(d) for d in ([2], [3], [2, 3])]
    torch.testing.assert_close(y, sum(terms) / 4)
    p = pointwise(2, 1)
    torch.testing.assert_close(flip_tta(p, axes=(0, 1, 2))(x), p(x))  # equivariant: unchanged
    with pytest.raises(ValueError, match="axes"):
        flip_tta(p, axes=(0, 3))(x)
    with pytest.raises(ValueError, match="distinct"):
        flip_tta(p, axes=(1, 1))


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_matches_monai(spatial_dims):
    monai = pytest.importorskip("monai.inferers")
    x = torch.randn(2, 2, *SIZES[spatial_dims], dtype=torch.float64)
    w = torch.randn(3, 2, *(3,) * spatial_dims, dtype=torch.float64)
    predictor = lambda t: conv_nd(t, w, padding=1)  # noqa: E731
    roi = tuple(r + 3 for r in ROIS[spatial_dims])
    for mode, overlap, pad in (("constant", 0.25, "constant"), ("gaussian", 0.5, "replicate")):
        kw = dict(overlap=overlap, mode=mode, sigma_scale=0.2, padding_mode=pad)
        ours = sliding_window_inference(x, roi, 3, predictor, **kw)
        ref = monai.sliding_window_inference(x, roi, 3, predictor, **kw)
        torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=1e-10, atol=1e-10)


def test_predict_volume_is_the_whole_volume_result_for_a_pointwise_model():
    """A pointwise model gives, through windows and flips, exactly its whole-volume output."""
    from ndunet.inference import predict_volume

    torch.manual_seed(0)
    x = torch.randn(2, 9, 7, 5)
    model = torch.nn.Conv3d(2, 3, 1)
    with torch.no_grad():
        whole = model(x[None])
    y = predict_volume(model, x, (4, 4, 4), overlap=0.25, tta_axes=(0, 2))
    torch.testing.assert_close(y, whole)

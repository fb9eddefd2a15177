"""ndunet.transforms against oracles: torch.flip/rot90, grid_sample, a per-point N-linear formula,
scipy's Gaussian filter; image/label alignment; seeding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from ndunet.transforms import (
    Compose,
    RandAffine,
    RandContrast,
    RandFlip,
    RandGamma,
    RandGaussianBlur,
    RandGaussianNoise,
    RandRot90,
    affine_coords,
    affine_matrix,
    sample_nd,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = {1: (7,), 2: (6, 5), 3: (5, 4, 6), 4: (4, 5, 3, 4)}
CUBES = {2: (6, 6), 3: (5, 5, 5), 4: (4, 4, 4, 4)}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sample(shape, channels=2):
    image = torch.randn(channels, *shape)
    label = torch.randint(0, 3, shape)
    return image, label


@pytest.mark.parametrize("spatial_dims", [2, 3, 4])
def test_flip_matches_torch_flip(spatial_dims):
    image, label = sample(SHAPES[spatial_dims])
    axes = tuple(range(spatial_dims))
    out, lab = RandFlip(axes, prob=1.0)(image, label, generator=gen())
    assert torch.equal(out, torch.flip(image, [1 + a for a in axes]))
    assert torch.equal(lab, torch.flip(label, list(axes)))
    lab1 = label[None]  # a label with a channel axis flips alike
    _, out1 = RandFlip(axes[1:], prob=1.0)(image, lab1, generator=gen())
    assert torch.equal(out1, torch.flip(lab1, [1 + a for a in axes[1:]]))
    same, same_lab = RandFlip(axes, prob=0.0)(image, label, generator=gen())
    assert same is image and same_lab is label


def test_flip_axes_are_independent():
    image = torch.arange(4.0).view(1, 2, 2)
    seen = {
        tuple(RandFlip((0, 1), 0.5)(image, generator=gen(s))[0].flatten().tolist())
        for s in range(40)
    }
    assert len(seen) == 4  # none, axis 0, axis 1, both


@pytest.mark.parametrize("spatial_dims", [2, 3, 4])
def test_rot90_matches_torch_rot90(spatial_dims):
    image, label = sample(SHAPES[spatial_dims])
    planes = list(itertools.combinations(range(spatial_dims), 2))
    for seed in range(6):
        out, lab = RandRot90(planes, prob=1.0)(image, label, generator=gen(seed))
        matches = [
            (k, p)
            for k, p in itertools.product((1, 2, 3), planes)
            if out.shape == torch.rot90(image, k, (1 + p[0], 1 + p[1])).shape
            and torch.equal(out, torch.rot90(image, k, (1 + p[0], 1 + p[1])))
        ]
        assert matches
        k, p = matches[0]
        assert torch.equal(lab, torch.rot90(label, k, p))
    one = RandRot90([planes[-1]], prob=1.0, max_k=1)(image, generator=gen())[0]
    assert torch.equal(one, torch.rot90(image, 1, (1 + planes[-1][0], 1 + planes[-1][1])))


def test_affine_identity_returns_input(spatial_dims):
    image, label = sample(SHAPES[spatial_dims])
    planes = list(itertools.combinations(range(spatial_dims), 2))
    for mode in ("linear", "nearest"):
        t = RandAffine(planes, 0.0, 0.0, prob=1.0, mode=mode)
        out, lab = t(image, label, generator=gen())
        assert torch.equal(out, image) and torch.equal(lab, label)


@pytest.mark.parametrize("spatial_dims", [2, 3, 4])
def test_affine_quarter_turn_equals_rot90(spatial_dims):
    image, label = sample(CUBES[spatial_dims])
    plane = (spatial_dims - 2, spatial_dims - 1)
    dims = (1 + plane[0], 1 + plane[1])
    for mode in ("nearest", "linear"):
        t = RandAffine([plane], [(math.pi / 2, math.pi / 2)], 0.0, prob=1.0, mode=mode)
        out, lab = t(image, label, generator=gen())
        assert torch.equal(lab, torch.rot90(label, 1, plane))
        if mode == "nearest":
            assert torch.equal(out, torch.rot90(image, 1, dims))
        else:
            torch.testing.assert_close(out, torch.rot90(image, 1, dims), rtol=0, atol=1e-5)


def trilinear_at(volume: torch.Tensor, q: list[float]) -> torch.Tensor:
    """One point by the textbook formula: sum over the 8 corners of prod(1 - |q - corner|)."""
    total = torch.zeros(volume.shape[0], dtype=torch.float64)
    base = [math.floor(v) for v in q]
    for corner in itertools.product((0, 1), repeat=3):
        idx = [b + c for b, c in zip(base, corner)]
        if all(0 <= i < s for i, s in zip(idx, volume.shape[1:])):
            w = math.prod(1 - abs(v - i) for v, i in zip(q, idx))
            total += w * volume[(slice(None), *idx)]
    return total


def test_affine_pointwise_trilinear():
    image = torch.randn(2, 7, 6, 8, dtype=torch.float64)
    planes, angles, scales = [(0, 1), (1, 2), (0, 2)], [0.3, -0.5, 0.8], [1.1, 0.8, 1.05]
    t = RandAffine(planes, [(a, a) for a in angles], [(s - 1, s - 1) for s in scales], prob=1.0)
    out, _ = t(image, generator=gen())
    # the sampling matrix written independently: Givens rotations (i, j) then the scales
    m = torch.eye(3, dtype=torch.float64)
    for (i, j), a in zip(planes, angles):
        g = torch.eye(3, dtype=torch.float64)
        g[i, i] = g[j, j] = math.cos(a)
        g[i, j], g[j, i] = math.sin(a), -math.sin(a)
        m = m @ g
    m = m @ torch.diag(torch.tensor(scales, dtype=torch.float64))
    centre = torch.tensor([3.0, 2.5, 3.5], dtype=torch.float64)
    for p in [(0, 0, 0), (3, 2, 4), (6, 5, 7), (1, 4, 2), (5, 0, 6), (2, 3, 1)]:
        q = (m @ (torch.tensor(p, dtype=torch.float64) - centre) + centre).tolist()
        torch.testing.assert_close(out[(slice(None), *p)], trilinear_at(image, q))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sample_nd_matches_grid_sample(spatial_dims):
    image = torch.randn(3, *SHAPES[spatial_dims], dtype=torch.float64)
    planes = list(itertools.combinations(range(spatial_dims), 2))
    m = affine_matrix(spatial_dims, planes, [0.4, -0.2, 0.7][: len(planes)], [1.2] * spatial_dims)
    coords = affine_coords(SHAPES[spatial_dims], m, torch.float64)  # (N, *spatial)
    sizes = torch.tensor(SHAPES[spatial_dims], dtype=torch.float64).view(-1, *(1,) * spatial_dims)
    grid = (2 * coords / (sizes - 1) - 1).flip(0).movedim(0, -1)[None]  # (1, *spatial, N) x first
    for mode, torch_mode in (("linear", "bilinear"), ("nearest", "nearest")):
        for pad in ("zeros", "border"):
            ref = F.grid_sample(image[None], grid, torch_mode, pad, align_corners=True)[0]
            torch.testing.assert_close(sample_nd(image, coords, mode, pad), ref)


def test_affine_keeps_image_and_label_aligned(spatial_dims):
    shape = SHAPES[spatial_dims]
    spot = tuple(s // 2 for s in shape)
    image = torch.zeros(1, *shape)
    image[(0, *spot)] = 1.0
    label = torch.zeros(shape, dtype=torch.long)
    label[spot] = 1
    planes = list(itertools.combinations(range(spatial_dims), 2))
    for seed in range(5):
        geometry = [RandFlip(range(spatial_dims), 0.5)]
        geometry += [RandRot90(planes, 0.7)] if planes else []
        nearest = Compose([*geometry, RandAffine(planes, 0.6, 0.15, prob=1.0, mode="nearest")])
        out, lab = nearest(image, label, generator=gen(seed))
        assert torch.equal(out[0], lab.float())  # the bright voxel lands where the label does
        linear = Compose([*geometry, RandAffine(planes, 0.6, 0.15, prob=1.0)])
        out, lab = linear(image, label, generator=gen(seed))
        assert lab.dtype == torch.long and set(lab.unique().tolist()) <= {0, 1}
        assert (out[0][lab == 1] > 0).all()  # the label voxel samples the bright voxel


def test_same_seed_same_output():
    image, label = sample((6, 5, 4))
    t = Compose(
        [
            RandFlip((0, 1, 2)),
            RandRot90([(0, 1), (1, 2)]),
            RandAffine([(0, 1)], 0.5, 0.2, prob=0.8),
            RandGamma(prob=0.8),
            RandGaussianNoise(prob=0.8),
            RandContrast(prob=0.8),
            RandGaussianBlur(prob=0.8),
        ]
    )
    a = t(image, label, generator=gen(7))
    b = t(image, label, generator=gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = t(image, label, generator=gen(8))
    assert c[0].shape != a[0].shape or not torch.equal(c[0], a[0])


def test_intensity_transforms_leave_label_alone():
    image, label = sample((5, 6))
    for t in (
        RandGamma(prob=1.0),
        RandGaussianNoise(prob=1.0),
        RandContrast(prob=1.0),
        RandGaussianBlur(prob=1.0),
    ):
        out, lab = t(image, label, generator=gen())
        assert lab is label and out.shape == image.shape and not torch.equal(out, image)


def test_gamma_contrast_noise_formulas():
    image = torch.rand(2, 5, 4, dtype=torch.float64) * 3 - 1
    out, _ = RandGamma((2.0, 2.0), prob=1.0)(image, generator=gen())
    low = image.amin(dim=(1, 2), keepdim=True)
    span = image.amax(dim=(1, 2), keepdim=True) - low
    torch.testing.assert_close(out, ((image - low) / (span + 1e-7)) ** 2 * span + low)
    out, _ = RandContrast((1.5, 1.5), prob=1.0)(image, generator=gen())
    mean = image.mean(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(out, (image - mean) * 1.5 + mean)
    out, _ = RandGaussianNoise(prob=1.0, mean=0.5, std=0.0)(image, generator=gen())
    torch.testing.assert_close(out, image + 0.5)
    big = torch.zeros(1, 100, 100)
    out, _ = RandGaussianNoise(prob=1.0, std=0.3, sample_std=False)(big, generator=gen())
    assert abs(out.std().item() - 0.3) < 0.01


def test_blur_matches_scipy(spatial_dims):
    ndimage = pytest.importorskip("scipy.ndimage")
    image = torch.randn(2, *SHAPES[spatial_dims], dtype=torch.float64)
    out, _ = RandGaussianBlur((0.8, 0.8), prob=1.0)(image, generator=gen())
    for c in range(2):
        ref = ndimage.gaussian_filter(image[c].numpy(), 0.8, mode="nearest", truncate=4.0)
        torch.testing.assert_close(out[c], torch.from_numpy(ref))
    out, _ = RandGaussianBlur((1.2, 1.2), prob=1.0, axes=(0,))(image, generator=gen())
    sigma = [1.2] + [0.0] * (spatial_dims - 1)
    ref = ndimage.gaussian_filter(image[0].numpy(), sigma, mode="nearest", truncate=4.0)
    torch.testing.assert_close(out[0], torch.from_numpy(ref))


def test_errors_name_the_argument():
    image, label = sample((4, 4))
    with pytest.raises(ValueError, match="label"):
        RandFlip((0,))(image, label[:3], generator=gen())
    with pytest.raises(ValueError, match="planes"):
        RandRot90([(0, 2)])(image, generator=gen())
    with pytest.raises(ValueError, match="rotate_planes"):
        RandAffine([(1, 1)])
    with pytest.raises(ValueError, match="rotate_range"):
        RandAffine([(0, 1)], rotate_range=[0.1, 0.2])
    with pytest.raises(ValueError, match="scale_range"):
        RandAffine([(0, 1)], scale_range=[0.1, 0.2, 0.3], prob=1.0)(image, generator=gen())
    with pytest.raises(ValueError, match=r"prob=1\.5"):
        RandGamma(prob=1.5)
    with pytest.raises(TypeError, match="generator"):
        RandFlip((0,))(image, label, generator=None)
    with pytest.raises(ValueError, match="label_mode='linear'"):
        RandAffine([(0, 1)], label_mode="linear", prob=1.0)(image, label, generator=gen())

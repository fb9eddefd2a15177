"""PatchDataset: shapes, index -> volume, foreground share, padding, seeding by (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ndunet.data.patches import PatchDataset
from ndunet.transforms import RandFlip

pytestmark = pytest.mark.usefixtures("one_thread")


def volumes(spatial_dims: int, count: int = 3):
    """Volumes of different shapes; x holds the volume's number in every voxel."""
    out = []
    for v in range(count):
        shape = tuple(6 + v + a for a in range(spatial_dims))
        x = torch.full((2, *shape), float(v))
        y = torch.zeros(shape, dtype=torch.long)
        y[tuple(s // 2 for s in shape)] = 1
        out.append((x, y))
    return out


def test_shapes_and_volume_of_each_index(spatial_dims):
    data = volumes(spatial_dims)
    ds = PatchDataset(data, 4, patches_per_volume=3)
    assert len(ds) == 9
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (2, *(4,) * spatial_dims) and y.shape == (4,) * spatial_dims
        assert torch.all(x == i // 3)  # item i comes from volume i // patches_per_volume
    per_axis = (3, 5, 2, 4)[:spatial_dims]
    x, y = PatchDataset(data, per_axis)[0]
    assert x.shape[1:] == per_axis and y.shape == per_axis
    (x,) = PatchDataset([(d[0],) for d in data], 4)[1]  # unlabeled
    assert x.shape == (2, *(4,) * spatial_dims)


def test_crop_is_a_window_of_the_volume():
    x = torch.arange(20 * 15, dtype=torch.float32).view(1, 20, 15)
    ds = PatchDataset([(x,)], (6, 4), patches_per_volume=10)
    for i in range(10):
        (p,) = ds[i]
        r0, c0 = divmod(int(p[0, 0, 0]), 15)
        assert torch.equal(p, x[:, r0 : r0 + 6, c0 : c0 + 4])


def contains_foreground(ds: PatchDataset) -> float:
    return sum(bool(ds[i][1].any()) for i in range(len(ds))) / len(ds)


def test_foreground_share():
    x = torch.randn(1, 40, 40)
    y = torch.zeros(40, 40, dtype=torch.long)
    y[5, 33] = 1  # a uniform 6x6 crop holds it with chance 36 / 35^2 (about 3 %)
    data = [(x, y)]
    chance = contains_foreground(PatchDataset(data, 6, 400, foreground_fraction=0.0))
    assert chance < 0.07
    assert contains_foreground(PatchDataset(data, 6, 100, foreground_fraction=1.0)) == 1.0
    share = contains_foreground(PatchDataset(data, 6, 600))  # nnU-Net's 1/3 default
    assert 0.27 < share < 0.42
    # a forced patch is centred on the voxel, clamped inside the volume
    x2, y2 = PatchDataset([(x, y)], 6, foreground_fraction=1.0)[0]
    assert y2[3, 3] == 1 and torch.equal(x2, x[:, 2:8, 30:36])


def test_foreground_class_drawn_first():
    y = torch.zeros(30, 30, dtype=torch.long)
    y[:, :15] = 1  # a large class ...
    y[25, 25] = 2  # ... and a one-voxel class, found about half of the time
    ds = PatchDataset([(torch.randn(1, 30, 30), y)], 5, 200, foreground_fraction=1.0)
    share = sum(bool((ds[i][1] == 2).any()) for i in range(len(ds))) / len(ds)
    assert 0.35 < share < 0.65
    onehot = torch.stack([y == 1, y == 2]).float()  # multi-channel labels: any channel counts
    ds = PatchDataset([(torch.randn(1, 30, 30), onehot)], 5, 50, foreground_fraction=1.0)
    assert all(ds[i][1].any() for i in range(len(ds)))


def test_small_volume_padded():
    x = torch.tensor([[1.0, 2.0, 3.0]])
    y = torch.tensor([[1, 1, 1]])  # (C'=1, L)
    ds = PatchDataset([(x, y)], 6, pad_value=-5.0)
    px, py = ds[0]
    # 3 missing voxels split as 1 before, 2 after, as MONAI pads
    assert px.tolist() == [[-5.0, 1.0, 2.0, 3.0, -5.0, -5.0]]
    assert py.tolist() == [[0, 1, 1, 1, 0, 0]]
    x3 = torch.randn(1, 10, 2, 7)
    px, py = PatchDataset([(x3, torch.ones(10, 2, 7))], (4, 5, 7))[0]
    assert px.shape == (1, 4, 5, 7) and py.shape == (4, 5, 7)
    assert (px[:, :, 1:3] != 0).all() and (px[:, :, [0, 3, 4]] == 0).all()


def test_reproducible_by_seed_epoch_index():
    data = [(torch.randn(1, 30, 20, 10), torch.randint(0, 3, (30, 20, 10)))]
    a = PatchDataset(data, 6, 8, seed=3, transform=RandFlip((0, 1, 2)))
    b = PatchDataset(data, 6, 8, seed=3, transform=RandFlip((0, 1, 2)))
    first = [a[i] for i in range(8)]
    for i in reversed(range(8)):  # any order, any instance
        assert all(torch.equal(u, v) for u, v in zip(b[i], first[i]))
    a.set_epoch(1)
    assert sum(not torch.equal(a[i][0], first[i][0]) for i in range(8)) >= 6
    a.set_epoch(0)
    assert all(torch.equal(a[i][0], first[i][0]) for i in range(8))
    c = PatchDataset(data, 6, 8, seed=4)
    assert sum(not torch.equal(c[i][0], first[i][0]) for i in range(8)) >= 6


def test_transform_after_crop_and_loader():
    seen = []

    def record(x, y, *, generator):
        seen.append((tuple(x.shape), tuple(y.shape), isinstance(generator, torch.Generator)))
        return x * 2, y

    data = volumes(3)
    ds = PatchDataset(data, (4, 3, 5), patches_per_volume=2, transform=record)
    batch = next(iter(DataLoader(ds, batch_size=6)))
    assert batch[0].shape == (6, 2, 4, 3, 5) and batch[1].shape == (6, 4, 3, 5)
    assert seen == [((2, 4, 3, 5), (4, 3, 5), True)] * 6
    assert torch.equal(batch[0][:, 0, 0, 0, 0], torch.tensor([0.0, 0, 2, 2, 4, 4]))


def test_errors_name_the_argument():
    data = volumes(2)
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(data, (4, 4, 4))[0]
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(data, (4, 0))
    with pytest.raises(ValueError, match="foreground_fraction"):
        PatchDataset(data, 4, foreground_fraction=1.5)
    with pytest.raises(ValueError, match="per-voxel label"):
        PatchDataset([(torch.randn(1, 8, 8), torch.tensor(3))], 4)[0]
    with pytest.raises(IndexError):
        PatchDataset(data, 4)[3]

"""ndunet.data: splits, embedded datasets, N-D blobs, array and image-folder loaders, registry."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import lfw_subset
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from ndunet import data
from ndunet.data import (
    DATASETS,
    arrays,
    blobs,
    digits,
    faces,
    images,
    load_dataset,
    split_indices,
)

# --- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1797])
@pytest.mark.parametrize("fractions", [(0.1, 0.1), (0.0, 0.2), (0.25, 0.0), (0.0, 0.0)])
def test_split_indices_disjoint_covering_and_sized(n: int, fractions: tuple[float, float]) -> None:
    val_fraction, test_fraction = fractions
    expected_test = max(1, round(test_fraction * n)) if test_fraction else 0
    expected_val = max(1, round(val_fraction * n)) if val_fraction else 0
    if n - expected_test - expected_val < 1:
        with pytest.raises(ValueError, match="leave no training sample"):
            split_indices(n, val_fraction=val_fraction, test_fraction=test_fraction)
        return
    parts = split_indices(n, seed=3, val_fraction=val_fraction, test_fraction=test_fraction)
    joined = torch.cat([parts["train"], parts["val"], parts["test"]])
    assert sorted(joined.tolist()) == list(range(n))  # disjoint and covering
    assert len(parts["test"]) == expected_test and len(parts["val"]) == expected_val


def test_split_indices_seeded() -> None:
    a = split_indices(500, seed=1)
    b = split_indices(500, seed=1)
    c = split_indices(500, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["test"], c["test"])


def test_split_indices_stratified() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (1000,), generator=g)
    labels[:50] = 7  # a rare class
    parts = split_indices(1000, seed=0, val_fraction=0.2, test_fraction=0.1, labels=labels)
    for name, fraction in (("val", 0.2), ("test", 0.1)):
        counts = torch.bincount(labels[parts[name]], minlength=8)
        expected = torch.bincount(labels, minlength=8) * fraction
        assert (counts - expected).abs().max() <= 1.0, (name, counts, expected)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val_fraction": 1.5}, "val_fraction=1.5"),
        ({"test_fraction": -0.1}, "test_fraction=-0.1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "leave no training sample"),
        ({"labels": torch.zeros(3)}, "labels must be an integer tensor"),
    ],
)
def test_split_indices_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_indices(10, **kwargs)


# --- digits and faces -----------------------------------------------------------------------


def test_digits_splits_are_disjoint_stratified_and_match_sklearn() -> None:
    ref = load_digits()
    ref_x = torch.from_numpy(ref.images).float()
    parts = {s: digits(s, seed=5, normalize="none") for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == len(ref_x)
    # Every row comes from sklearn with its own label, and the splits share no sample.
    rows = {}
    for ref_index, (img, label) in enumerate(zip(ref_x, ref.target)):
        rows.setdefault(img.numpy().tobytes(), set()).add((ref_index, int(label)))
    seen: list[bytes] = []
    for part in parts.values():
        assert part.x.shape[1:] == (1, 8, 8) and part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        for img, label in zip(part.x, part.y):
            key = img[0].numpy().tobytes()
            assert int(label) in {lab for _, lab in rows[key]}
            seen.append(key)
    assert len(seen) == len(ref_x)
    test_counts = torch.bincount(parts["test"].y, minlength=10)
    expected = torch.bincount(torch.from_numpy(ref.target), minlength=10) * 0.1
    assert (test_counts - expected).abs().max() <= 1
    assert parts["train"].num_classes == 10 and parts["train"].spatial_dims == 2
    assert parts["train"].in_channels == 1 and parts["train"].out_channels == 10


def test_digits_normalization_ranges() -> None:
    raw = digits(normalize="none").x
    unit = digits(normalize="unit").x
    sym = digits().x
    assert raw.min() == 0 and raw.max() == 16
    torch.testing.assert_close(unit, raw / 16)
    torch.testing.assert_close(sym, raw / 8 - 1)
    assert sym.min() == -1 and sym.max() == 1


@pytest.mark.parametrize("size", [16, 32, (12, 20), 5])
def test_digits_resize_matches_pillow_bilinear(size: int | tuple[int, int]) -> None:
    ours = digits("val", size=size, normalize="none")
    raw = digits("val", normalize="none")
    h, w = (size, size) if isinstance(size, int) else size
    assert ours.x.shape[1:] == (1, h, w)
    for i in range(3):
        ref = Image.fromarray(raw.x[i, 0].numpy(), mode="F").resize((w, h), Image.BILINEAR)
        np.testing.assert_allclose(ours.x[i, 0].numpy(), np.asarray(ref), atol=1e-4)
    assert ours.x.min() >= 0 and ours.x.max() <= 16


def test_faces() -> None:
    ref = lfw_subset()
    all_ = faces(subset="all", normalize="none")
    assert all_.x.shape == (200, 1, 25, 25)
    assert torch.bincount(all_.y).tolist() == [100, 100]
    np.testing.assert_allclose(all_.x[all_.y == 1, 0].numpy(), ref[:100], atol=1e-6)
    only = faces()
    assert len(only) == 100 and (only.y == 1).all()
    assert only.x.min() >= -1 and only.x.max() <= 1 and only.x.min() < -0.9
    train, test = faces("train", seed=1), faces("test", seed=1)
    assert len(train) + len(test) + len(faces("val", seed=1)) == 100
    flat_train = {r.numpy().tobytes() for r in train.x}
    assert not any(r.numpy().tobytes() in flat_train for r in test.x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: digits("training"), r"split='training'.*did you mean 'train'"),
        (lambda: digits(normalize="sym"), "normalize='sym'"),
        (lambda: digits(size=0), "size=0"),
        (lambda: faces(subset="face"), r"subset='face'.*did you mean 'faces'"),
    ],
)
def test_embedded_reject_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- blobs ----------------------------------------------------------------------------------


def test_blobs_shapes_masks_and_noise(spatial_dims: int) -> None:
    length, n = (12 if spatial_dims == 4 else 20), 6
    seg = blobs(spatial_dims, length, n, noise=0.5, seed=4)
    shape = (n, 1) + (length,) * spatial_dims
    assert seg.x.shape == shape and seg.y.shape == shape
    assert seg.x.dtype == seg.y.dtype == torch.float32
    assert seg.spatial_dims == spatial_dims and seg.out_channels == 1
    assert set(seg.y.unique().tolist()) <= {0.0, 1.0}
    assert 0.2 < seg.y.mean() < 0.8  # volume_fraction 0.5
    residual = seg.x - (2 * seg.y - 1)  # the noise alone
    assert abs(residual.std().item() - 0.5) < 0.05 and abs(residual.mean().item()) < 0.05
    den = blobs(spatial_dims, length, n, task="denoising", noise=0.5, seed=4)
    torch.testing.assert_close(den.y, 2 * seg.y - 1)  # the clean volume is the same mask
    torch.testing.assert_close(den.x, seg.x)
    x, y = den[2]
    assert x.shape == shape[1:] and y.shape == shape[1:]


def test_blobs_samples_depend_on_seed_and_index_only() -> None:
    full = blobs(2, 16, 10, seed=7)
    torch.testing.assert_close(blobs(2, 16, 4, seed=7).x, full.x[:4])
    parts = [blobs(2, 16, 10, seed=7, split=s) for s in ("train", "val", "test")]
    indices = split_indices(10, seed=7)
    for part, name in zip(parts, ("train", "val", "test")):
        torch.testing.assert_close(part.x, full.x[indices[name]])
    assert not torch.equal(blobs(2, 16, 4, seed=8).y, full.y[:4])
    clean = blobs(3, 16, 2, noise=0.0, task="denoising")
    torch.testing.assert_close(clean.x, clean.y)


@pytest.mark.slow
def test_blobs_5d() -> None:
    seg = blobs(5, 8, 2)
    assert seg.x.shape == (2, 1, 8, 8, 8, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"spatial_dims": 0}, ValueError, "spatial_dims=0"),
        ({"spatial_dims": 2.0}, TypeError, "spatial_dims=2.0"),
        ({"spatial_dims": 2, "task": "seg"}, ValueError, "did you mean 'segmentation'"),
        ({"spatial_dims": 2, "noise": -1.0}, ValueError, "noise=-1.0"),
        ({"spatial_dims": 2, "volume_fraction": 0.0}, ValueError, "volume_fraction=0.0"),
        ({"spatial_dims": 6, "length": 64}, ValueError, "voxels"),
    ],
)
def test_blobs_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        blobs(**kwargs)


# --- arrays ---------------------------------------------------------------------------------


def test_arrays_npz_classification_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2, 5, 6, 7)).astype(np.float64)
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = arrays(tmp_path / "d.npz")
    assert ds.task == "classification" and ds.num_classes == 4 and ds.spatial_dims == 3
    np.testing.assert_allclose(ds.x.numpy(), x.astype(np.float32))
    assert ds.y.tolist() == y.tolist()
    train = arrays(tmp_path / "d.npz", split="train", seed=2)
    test = arrays(tmp_path / "d.npz", split="test", seed=2)
    assert torch.bincount(test.y, minlength=4).tolist() == [1, 1, 1, 1]  # stratified
    assert len(train) == 32
    unit = arrays(tmp_path / "d.npz", normalize="unit")
    assert unit.x.min() == 0 and unit.x.max() == 1
    torch.testing.assert_close(unit.x, (ds.x - ds.x.min()) / (ds.x.max() - ds.x.min()))


def test_arrays_npy_targets_and_channel_axis(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 9, 10)).astype(np.float32)  # (N, *spatial), 2-D, no channel
    clean = rng.standard_normal((6, 9, 10)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "clean.npy", clean)
    ds = arrays(tmp_path / "x.npy", y_path=tmp_path / "clean.npy", spatial_dims=2)
    assert ds.task == "denoising" and ds.x.shape == (6, 1, 9, 10) and ds.y.shape == (6, 1, 9, 10)
    np.testing.assert_array_equal(ds.y[:, 0].numpy(), clean)
    unlabeled = arrays(tmp_path / "x.npy", spatial_dims=2)
    assert unlabeled.task == "unlabeled" and len(unlabeled[0]) == 1
    masks = (clean > 0).astype(np.int64) * 2  # integer label map without channel axis
    np.save(tmp_path / "m.npy", masks)
    seg = arrays(tmp_path / "x.npy", y_path=tmp_path / "m.npy", spatial_dims=2)
    assert seg.task == "segmentation" and seg.y.dtype == torch.int64
    assert seg.y.shape == (6, 9, 10) and seg.num_classes == 3


def test_arrays_folder_with_labels_and_with_masks(tmp_path) -> None:
    rng = np.random.default_rng(2)
    samples = rng.standard_normal((5, 1, 4, 4, 4, 4)).astype(np.float32)  # 4-D
    labeled, masked = tmp_path / "labeled", tmp_path / "masked"
    for folder in (labeled, masked):
        folder.mkdir()
        for i, s in enumerate(samples):
            np.save(folder / f"s{i}.npy", s[0] if folder is masked else s)
    with open(labeled / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        writer.writerows([[f"s{i}.npy", i % 2] for i in reversed(range(5))])
    ds = arrays(labeled, spatial_dims=4)
    np.testing.assert_array_equal(ds.x.numpy(), samples)
    assert ds.y.tolist() == [0, 1, 0, 1, 0] and ds.spatial_dims == 4
    (masked / "masks").mkdir()
    for i, s in enumerate(samples):
        np.save(masked / "masks" / f"s{i}.npy", s[0] > 0)
    seg = arrays(masked, spatial_dims=4)
    assert seg.task == "segmentation" and seg.y.shape == (5, 1, 4, 4, 4, 4)
    np.testing.assert_array_equal(seg.y.numpy(), (samples > 0).astype(np.float32))
    assert seg.num_classes == 2 and seg.out_channels == 1


def test_arrays_errors(tmp_path) -> None:
    x = np.zeros((4, 1, 3, 3), np.float32)
    np.savez(tmp_path / "d.npz", images=x, y=np.zeros(5, np.int64))
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        arrays(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"x_key='x'.*\['images', 'y'\]"):
        arrays(tmp_path / "d.npz")
    with pytest.raises(ValueError, match="y_key='labels'"):
        arrays(tmp_path / "d.npz", x_key="images", y_key="labels")
    with pytest.raises(ValueError, match="x has 4 samples but y has 5"):
        arrays(tmp_path / "d.npz", x_key="images")
    np.savez(tmp_path / "m.npz", x=x, y=np.zeros((4, 1, 3, 2)))
    with pytest.raises(ValueError, match="spatial"):
        arrays(tmp_path / "m.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="without unpickling"):
        arrays(tmp_path / "obj.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match="spatial_dims=3"):
        arrays(tmp_path / "flat.npy", spatial_dims=3)
    folder = tmp_path / "f"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 3, 3)))
    np.save(folder / "b.npy", np.zeros((1, 3, 4)))
    with pytest.raises(ValueError, match=r"b\.npy.*one shape"):
        arrays(folder, spatial_dims=2)
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ValueError, match=r"path=.*x\.txt"):
        arrays(tmp_path / "x.txt")


# --- images ---------------------------------------------------------------------------------


def _write_images(folder, pixels: np.ndarray) -> None:
    folder.mkdir(parents=True)
    for i, p in enumerate(pixels):
        Image.fromarray(p, "RGB").save(folder / f"img{i:02d}.png")


def test_images_class_folders_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(3)
    cats = rng.integers(0, 256, (3, 6, 7, 3), dtype=np.uint8)
    dogs = rng.integers(0, 256, (4, 6, 7, 3), dtype=np.uint8)
    _write_images(tmp_path / "cat", cats)
    _write_images(tmp_path / "dog", dogs)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = images(tmp_path, normalize="unit")
    assert ds.class_names == ["cat", "dog"] and ds.y.tolist() == [0, 0, 0, 1, 1, 1, 1]
    expected = np.concatenate([cats, dogs]).transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(ds.x.numpy(), expected, atol=1e-6)
    gray = images(tmp_path, grayscale=True, size=(12, 14))
    assert gray.x.shape == (7, 1, 12, 14) and gray.x.min() >= -1 and gray.x.max() <= 1
    ref = Image.open(tmp_path / "dog" / "img00.png").convert("L").resize((14, 12), Image.BICUBIC)
    np.testing.assert_allclose(gray.x[3, 0].numpy(), np.asarray(ref) / 127.5 - 1, atol=1e-6)
    loader = DataLoader(ds, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 6, 7) and yb.shape == (4,)


def test_images_flat_folder_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(4)
    _write_images(tmp_path / "flat", rng.integers(0, 256, (3, 5, 5, 3), dtype=np.uint8))
    ds = images(tmp_path / "flat")
    assert ds.task == "unlabeled" and ds[0][0].shape == (3, 5, 5) and len(ds[0]) == 1
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(tmp_path / "flat" / "z.png")
    with pytest.raises(ValueError, match=r"z\.png.*size="):
        images(tmp_path / "flat")
    assert images(tmp_path / "flat", size=4).x.shape == (4, 3, 4, 4)
    _write_images(tmp_path / "flat" / "sub", np.zeros((1, 5, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="mixes images and class subfolders"):
        images(tmp_path / "flat")
    with pytest.raises(FileNotFoundError, match="missing"):
        images(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        images(tmp_path / "bad")


# --- registry -------------------------------------------------------------------------------


def test_registry() -> None:
    assert set(DATASETS) == {"digits", "faces", "blobs", "arrays", "images", "volumes"}
    a = load_dataset("digits", split="val", seed=2)
    torch.testing.assert_close(a.x, digits("val", seed=2).x)
    assert load_dataset("blobs", spatial_dims=1, length=8, n=3).x.shape == (3, 1, 8)
    with pytest.raises(ValueError, match=r"name='digit'.*did you mean 'digits'"):
        load_dataset("digit")
    with pytest.raises(ValueError, match=r"'sise'.*did you mean 'size'"):
        load_dataset("digits", sise=16)
    with pytest.raises(ValueError, match=r"needs option\(s\) \['spatial_dims'\]"):
        load_dataset("blobs")
    assert data.NDDataset is type(a)

"""ndunet.data.volumes: lazy per-file samples from folders of any format, stated layouts,
seeded splits, normalisation fitted on the training split only and undone exactly."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ndunet.data.normalize import Normalization
from ndunet.data.splits import split_indices
from ndunet.data.volumes import volumes

nib = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")
h5py = pytest.importorskip("h5py")


def _nifti_folder(root: Path, n: int = 10, shapes: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    (root / "img").mkdir()
    (root / "lab").mkdir()
    for i in range(n):
        shape = (6 + (i % 2 if shapes else 0), 5, 4)
        a = rng.normal(50 * (i % 3), 10 + i, shape).astype(np.float32)
        nib.save(
            nib.Nifti1Image(a, np.diag([0.5, 0.5, 2.0, 1.0])), root / "img" / f"c{i:02d}.nii.gz"
        )
        seg = (rng.random(shape) * (2 + i % 4)).astype(np.uint8)
        nib.save(nib.Nifti1Image(seg, np.eye(4)), root / "lab" / f"c{i:02d}.nii.gz")
    return root / "img", root / "lab"


def _train_voxels(folder: Path, n: int = 10) -> np.ndarray:
    train = split_indices(n)["train"]
    files = sorted(folder.iterdir())
    return np.concatenate([np.asarray(nib.load(files[i]).dataobj).ravel() for i in train])


def test_segmentation_folder_samples_splits_and_meta(tmp_path: Path) -> None:
    img, lab = _nifti_folder(tmp_path)
    parts = {s: volumes(img, labels=lab, split=s) for s in ("train", "val", "test", "all")}
    names = {s: {d.meta(i)["path"] for i in range(len(d))} for s, d in parts.items()}
    assert names["train"] | names["val"] | names["test"] == names["all"]
    assert not names["train"] & names["val"] and not names["val"] & names["test"]
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (8, 1, 1)
    data = parts["train"]
    x, y = data[0]
    assert x.dtype == torch.float32 and x.shape == (1, 6, 5, 4)
    assert y.dtype == torch.int64 and y.shape == (6, 5, 4)
    train = split_indices(10)["train"]
    largest = max(int(np.asarray(nib.load(sorted(lab.iterdir())[i]).dataobj).max()) for i in train)
    assert data.num_classes == data.out_channels == largest + 1
    assert (data.task, data.spatial_dims, data.in_channels) == ("segmentation", 3, 1)
    meta = data.meta(0)
    assert meta["spacing"] == (0.5, 0.5, 2.0) and meta["affine"].shape == (4, 4)
    assert meta["label_path"].endswith(Path(meta["path"]).name)
    assert data.spatial_shape == (6, 5, 4)
    assert len(data.subset([1, 2])) == 2 and data.subset([1]).meta(0) == data.meta(1)


@pytest.mark.parametrize("kind", ["zscore", "percentile", "minmax"])
def test_normalisation_fitted_on_train_only_and_inverted(tmp_path: Path, kind: str) -> None:
    img, _ = _nifti_folder(tmp_path)
    voxels = _train_voxels(img).astype(np.float64)
    train = volumes(img, normalize=kind, split="train")
    val = volumes(img, normalize=kind, split="val")
    everything = volumes(img, normalize=kind)
    assert train.normalization == val.normalization == everything.normalization
    norm = train.normalization
    assert norm.fitted_on == 8
    if kind == "minmax":
        assert norm.shift[0] == pytest.approx((voxels.max() + voxels.min()) / 2)
        assert norm.scale[0] == pytest.approx((voxels.max() - voxels.min()) / 2)
    else:
        assert norm.shift[0] == pytest.approx(voxels.mean())
        assert norm.scale[0] == pytest.approx(voxels.std())
    if kind == "percentile":
        assert (norm.low[0], norm.high[0]) == pytest.approx(np.percentile(voxels, [0.5, 99.5]))
    raw = volumes(img, split="train")
    for i in range(len(train)):
        x, x_raw = train[i][0], raw[i][0]
        if kind == "minmax":
            assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6
        inside = x_raw.clamp(norm.low[0], norm.high[0]) if norm.low else x_raw
        torch.testing.assert_close(norm.invert(x), inside, rtol=1e-6, atol=1e-4)
    restored = Normalization.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert restored == norm
    again = volumes(img, normalize=norm.to_dict(), split="test")  # a recorded run: no refit
    assert again.normalization == norm


def test_ct_window_and_batched_invert(tmp_path: Path) -> None:
    a = np.linspace(-1200, 1200, 4 * 5 * 6).reshape(4, 5, 6).astype(np.int16)
    np.save(tmp_path / "ct.npy", a)
    data = volumes(tmp_path, spatial_dims=3, normalize="ct", window=(40, 400))
    x = data[0][0]
    expected = (np.clip(a, -160, 240) - 40) / 200
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=1e-6)
    batch = x[None].repeat(2, 1, 1, 1, 1)  # (B, C, *spatial): channels on dim 1
    inv = data.normalization.invert(batch, channel_dim=1)
    np.testing.assert_allclose(inv[1, 0].numpy(), np.clip(a, -160, 240), atol=1e-3)
    with pytest.raises(ValueError, match=r"window=None is not valid; expected \(level, width\)"):
        volumes(tmp_path, spatial_dims=3, normalize="ct")
    with pytest.raises(ValueError, match=r"normalize='zcore' is not valid.*did you mean 'zscore'"):
        volumes(tmp_path, spatial_dims=3, normalize="zcore")


def test_bare_volumes_need_spatial_dims(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((4, 5, 6), np.float32))  # (D, H, W)
    with pytest.raises(ValueError, match="spatial_dims"):
        volumes(tmp_path)
    assert volumes(tmp_path, spatial_dims=3)[0][0].shape == (1, 4, 5, 6)
    with pytest.raises(ValueError, match="channel_axis=0 for"):
        volumes(tmp_path, spatial_dims=2)
    assert volumes(tmp_path, spatial_dims=2, channel_axis=0).in_channels == 4


def test_fmri_time_axis_must_be_stated(tmp_path: Path) -> None:
    bold = np.random.default_rng(0).normal(size=(5, 6, 4, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(bold, np.eye(4)), tmp_path / "bold.nii.gz")
    with pytest.raises(
        ValueError, match=r"spatial_dims=4 \(T as a spatial axis\) or channel_axis=-1"
    ):
        volumes(tmp_path)
    four = volumes(tmp_path, spatial_dims=4)
    assert (four.spatial_dims, four.in_channels, four[0][0].shape) == (4, 1, (1, 5, 6, 4, 7))
    three = volumes(tmp_path, channel_axis=-1)
    assert (three.spatial_dims, three.in_channels) == (3, 7)
    torch.testing.assert_close(three[0][0], torch.from_numpy(bold).permute(3, 0, 1, 2))


def test_mixed_formats_labels_by_stem_and_float_targets(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    clean = {n: rng.normal(size=(3, 4, 5)).astype(np.float32) for n in ("a", "b", "c")}
    np.save(tmp_path / "x" / "a.npy", clean["a"] + 1)
    tifffile.imwrite(tmp_path / "x" / "b.tif", clean["b"] + 1, photometric="minisblack")
    with h5py.File(tmp_path / "x" / "c.h5", "w") as f:
        f["raw"] = clean["c"] + 1
    np.save(tmp_path / "y" / "a.npy", clean["a"])
    nib.save(nib.Nifti1Image(clean["b"], np.eye(4)), tmp_path / "y" / "b.nii")
    np.save(tmp_path / "y" / "c.npy", clean["c"])
    data = volumes(tmp_path / "x", labels=tmp_path / "y", spatial_dims=3)
    assert (data.task, data.out_channels, data.num_classes) == ("denoising", 1, None)
    for i, name in enumerate("abc"):
        x, y = data[i]
        torch.testing.assert_close(x[0], torch.from_numpy(clean[name] + 1))
        torch.testing.assert_close(y[0], torch.from_numpy(clean[name]))
    (tmp_path / "y" / "c.npy").unlink()
    with pytest.raises(ValueError, match=r"no file named like \['c.h5'\]"):
        volumes(tmp_path / "x", labels=tmp_path / "y", spatial_dims=3)


def test_labels_in_the_same_container_and_shape_checks(tmp_path: Path) -> None:
    x = np.random.default_rng(3).normal(size=(2, 8, 9)).astype(np.float32)
    np.savez(tmp_path / "s.npz", image=x, mask=(x[0] > 0).astype(np.int32))
    data = volumes(tmp_path / "s.npz", image_key="image", label_key="mask", channel_axis=0)
    assert (data.spatial_dims, data.in_channels, data.num_classes) == (2, 2, 2)
    assert data[0][1].dtype == torch.int64
    np.savez(tmp_path / "bad.npz", image=x, mask=np.zeros((8, 8), np.int32))
    with pytest.raises(ValueError, match=r"spatial shape \(8, 8\) but image"):
        volumes(tmp_path / "bad.npz", image_key="image", label_key="mask", channel_axis=0)


def test_lazy_reads_cache_and_different_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img, lab = _nifti_folder(tmp_path, n=4, shapes=True)
    calls: list[str] = []
    vol_module = importlib.import_module("ndunet.data.volumes")  # the name is the function's
    real_read = vol_module.read
    monkeypatch.setattr(
        vol_module, "read", lambda p, k=None: calls.append(str(p)) or real_read(p, k)
    )
    data = volumes(img, labels=lab, cache_bytes=2 * (6 * 5 * 4) * (4 + 8) + 100)
    assert calls == []  # construction reads headers only
    first = data[0]
    assert len(calls) == 2  # the image and its label
    again = data[0]
    again[0].zero_()  # callers may modify what they get; the cache keeps its own copy
    torch.testing.assert_close(data[0][0], first[0])
    assert len(calls) == 2
    data[1], data[2]  # too big for both: the least recently used, 0, is dropped
    data[0]
    assert len(calls) == 8
    assert data.spatial_shape is None
    with pytest.raises(ValueError, match="batch_size=1"):
        data.collate([data[0], data[1]])
    batches = list(DataLoader(data, batch_size=1, collate_fn=data.collate))
    assert len(batches) == 4 and batches[1][0].shape == (1, 1, 7, 5, 4)


def test_one_d_signals_with_channels(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"s{i}.npy", np.full((2, 50), i, np.float32))
    data = volumes(tmp_path, spatial_dims=1, channel_axis=0, normalize="zscore")
    assert (data.spatial_dims, data.in_channels, data.task, data[0][0].shape) == (
        1,
        2,
        "unlabeled",
        (2, 50),
    )
    assert len(data[0]) == 1


def test_statistics_stream_in_slabs_and_sample_percentiles(tmp_path: Path) -> None:
    from ndunet.data.normalize import fit_normalization
    from ndunet.data.volume_files import chunks
    from ndunet.io import read_header, resolve_layout

    a = np.random.default_rng(4).normal(3.0, 2.0, (40, 30, 20)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    layout = resolve_layout(read_header(tmp_path / "a.npy"), spatial_dims=3)
    slabs = list(chunks(tmp_path / "a.npy", None, layout, max_bytes=8 * 30 * 20 * 7))
    assert [s.shape[1] for s in slabs] == [7, 7, 7, 7, 7, 5]
    np.testing.assert_array_equal(np.concatenate(slabs, axis=1)[0], a)
    exact = fit_normalization("percentile", slabs, channels=1, total_voxels=a.size, files=1)
    sampled = fit_normalization(
        "percentile", slabs, channels=1, total_voxels=a.size, files=1, max_samples=5000
    )
    assert exact.shift[0] == pytest.approx(a.astype(np.float64).mean())
    assert exact.high[0] == pytest.approx(np.percentile(a.astype(np.float64), 99.5))
    assert sampled.high[0] == pytest.approx(exact.high[0], rel=0.1)
    assert sampled.shift == exact.shift  # mean and std stay exact


def test_normalization_record_checks() -> None:
    with pytest.raises(
        ValueError, match=r"unknown normalization option 'shfit'.*did you mean 'shift'"
    ):
        Normalization.from_dict({"kind": "zscore", "shfit": [1.0]})
    with pytest.raises(ValueError, match="scale="):
        Normalization("zscore", (0.0,), (0.0,))
    with pytest.raises(ValueError, match="3 channels on dim 0"):
        Normalization("zscore", (0.0, 1.0), (1.0, 1.0)).apply(torch.zeros(3, 4))

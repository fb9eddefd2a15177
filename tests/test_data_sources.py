"""The data loaders on real file formats, each silent-wrong case of issue 10 made right or an
error: TIFF stacks and 16-bit PNGs keep every page and value (oracle: the arrays written with
tifffile / Pillow), bare (D, H, W) files need spatial_dims, MONAI-style dict batches, one read
of the files for every split (the same datasets as one call per split), recorded
normalisations that undo themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ndunet.data import (
    BATCH_KEYS,
    DictSamples,
    arrays,
    images,
    load_dataset,
    load_splits,
    volumes,
)
from ndunet.data.loader import as_dataset, unpack_batch

tifffile = pytest.importorskip("tifffile")
RNG = np.random.default_rng(10)


def _stack_folder(folder: Path, n: int = 3, **kwargs) -> list[np.ndarray]:
    folder.mkdir()
    stacks = [RNG.integers(0, 65535, (10, 6, 7)).astype(np.uint16) for _ in range(n)]
    for i, a in enumerate(stacks):
        tifffile.imwrite(folder / f"s{i}.tif", a, **kwargs)
    return stacks


def test_images_reads_every_tiff_page_and_keeps_16_bits(tmp_path: Path) -> None:
    stacks = _stack_folder(tmp_path / "plain")
    # tifffile's own stacks do not say what the 10 pages are: the layout must be stated
    with pytest.raises(ValueError, match=r"spatial_dims=3.*channel_axis=0"):
        images(tmp_path / "plain", extensions=[".tif"])
    ds = images(tmp_path / "plain", extensions=[".tif"], spatial_dims=3, normalize="none")
    assert ds.x.shape == (3, 1, 10, 6, 7) and ds.spatial_dims == 3
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), np.stack(stacks).astype(np.float32))
    scaled = images(tmp_path / "plain", extensions=[".tif"], spatial_dims=3)  # 0..65535 -> [-1, 1]
    np.testing.assert_allclose(scaled.x[:, 0].numpy(), np.stack(stacks) / 32767.5 - 1, atol=1e-6)
    back = scaled.normalization.invert(scaled.x, channel_dim=1)
    np.testing.assert_allclose(back[:, 0].numpy(), np.stack(stacks), atol=0.02)
    pages = images(tmp_path / "plain", extensions=[".tif"], channel_axis=0, normalize="none")
    assert pages.x.shape == (3, 10, 6, 7)  # pages as channels, when that is what was meant
    # an ImageJ stack names its axes (Z), so nothing needs stating
    stacks = _stack_folder(tmp_path / "imagej", imagej=True, metadata={"axes": "ZYX"})
    ds = images(tmp_path / "imagej", extensions=[".tif"], normalize="none")
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), np.stack(stacks).astype(np.float32))
    with pytest.raises(ValueError, match="grayscale=True"):
        images(tmp_path / "imagej", extensions=[".tif"], grayscale=True)


def test_16_bit_png_keeps_its_values(tmp_path: Path) -> None:
    folder = tmp_path / "png16"
    folder.mkdir()
    pixels = RNG.integers(0, 14001, (2, 5, 6)).astype(np.uint16)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"p{i}.png")  # Pillow's 16-bit gray ("I;16")
    gray = images(folder, grayscale=True, normalize="none")
    np.testing.assert_array_equal(gray.x[:, 0].numpy(), pixels.astype(np.float32))
    assert len(np.unique(gray.x)) == len(np.unique(pixels))  # not cut to 8 bits
    rgb = images(folder)  # default: 3 channels, the 16-bit range mapped to [-1, 1]
    assert rgb.x.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(rgb.x[:, 1].numpy(), pixels / 32767.5 - 1, atol=1e-6)
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(folder / "z8.png")
    with pytest.raises(ValueError, match=r"z8\.png.*one bit depth"):
        images(folder)
    assert images(folder, normalize="none", grayscale=True).x.shape == (3, 1, 5, 6)


def test_arrays_folder_of_volumes_needs_spatial_dims(tmp_path: Path) -> None:
    folder = tmp_path / "vols"
    folder.mkdir()
    vols = RNG.standard_normal((4, 5, 6, 7)).astype(np.float32)  # 4 files of (D, H, W)
    for i, v in enumerate(vols):
        np.save(folder / f"v{i}.npy", v)
    with pytest.raises(ValueError, match=r"spatial_dims=\.\.\."):
        arrays(folder)  # once: 2-D images with 5 channels, by guess
    ds = arrays(folder, spatial_dims=3)
    assert ds.x.shape == (4, 1, 5, 6, 7) and ds.spatial_dims == 3
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), vols)


def test_arrays_normalisation_is_recorded_and_undone(tmp_path: Path) -> None:
    x = RNG.uniform(20, 150, (6, 1, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = arrays(tmp_path / "x.npy", normalize="symmetric")
    assert ds.x.min() == -1 and ds.x.max() == 1 and ds.normalization.kind == "minmax"
    np.testing.assert_allclose(ds.normalization.invert(ds.x, 1).numpy(), x, rtol=1e-6)
    unit = arrays(tmp_path / "x.npy", normalize="unit")
    np.testing.assert_allclose(unit.normalization.invert(unit.x, 1).numpy(), x, rtol=1e-6)
    assert arrays(tmp_path / "x.npy").normalization.kind == "none"


# ----- dict batches ---------------------------------------------------------------------------


def test_dict_batches_under_monai_and_custom_keys() -> None:
    x, y = torch.randn(2, 1, 4, 4), torch.randint(0, 2, (2, 4, 4))
    assert BATCH_KEYS == (("x", "y"), ("image", "label"))
    got = unpack_batch({"image": x, "label": y, "image_meta_dict": {"a": 1}})
    assert got[0] is x and got[1] is y
    assert unpack_batch({"image": x})[1] is None
    assert unpack_batch({"x": x, "y": y})[1] is y
    with pytest.raises(ValueError, match=r"'label'.*pairs with label key 'y'"):
        unpack_batch({"x": x, "label": y})  # the label would be dropped silently
    with pytest.raises(ValueError, match="expected 'x'"):
        unpack_batch({"img": x})
    assert unpack_batch({"img": x, "seg": y}, ("img", "seg"))[1] is y
    with pytest.raises(ValueError, match="batch_keys"):
        unpack_batch({"img": x}, ("img", "img"))
    whole = as_dataset({"image": x.numpy(), "label": y.numpy()})
    assert len(whole) == 2 and torch.equal(whole[1][1], y[1])
    with pytest.raises(ValueError, match="expected 'image' and optional 'label'"):
        as_dataset({"image": x, "lable": y})
    custom = [{"img": x[i], "seg": y[i]} for i in range(2)]
    keyed = as_dataset(DictSamples(custom, ("img", "seg")))
    assert torch.equal(keyed[1][0], x[1]) and torch.equal(keyed[1][1], y[1])
    subset = torch.utils.data.Subset(custom, [0, 1])  # a Dataset of dicts
    assert torch.equal(as_dataset(subset, batch_keys=("img", "seg"))[0][1], y[0])


def test_trainer_fits_monai_style_dict_samples(tmp_path: Path) -> None:
    from ndunet.training import SupervisedTrainer

    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 8

        def __getitem__(self, i: int) -> dict:
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randn(1, 6, 6, generator=g), "label": torch.tensor(i % 2)}

    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    tr = SupervisedTrainer(
        net, Dicts(), Dicts(), loss="cross_entropy", metrics=["accuracy"], max_steps=2,
        batch_size=4, out_dir=str(tmp_path / "run"), progress=False, device="cpu", plot=False,
    )  # fmt: skip
    tr.fit()
    assert tr.step == 2 and 0 <= tr.evaluate(Dicts())["accuracy"] <= 1


# ----- one read for every split ---------------------------------------------------------------


def _volume_folder(tmp_path: Path, n: int = 10) -> Path:
    folder = tmp_path / "vols"
    folder.mkdir()
    for i in range(n):
        np.save(folder / f"v{i:02d}.npy", RNG.standard_normal((4, 5, 3)).astype(np.float32))
    return folder


def test_load_splits_reads_once_and_equals_one_call_per_split(tmp_path, monkeypatch) -> None:
    import ndunet.data.volume_files as volume_files

    folder = _volume_folder(tmp_path)
    opts = {"path": str(folder), "spatial_dims": 3, "normalize": "zscore", "seed": 3}
    calls = []
    real = volume_files.read_header
    monkeypatch.setattr(volume_files, "read_header", lambda *a: calls.append(a) or real(*a))
    parts = load_splits("volumes", ["train", "val", "test"], **opts)
    assert len(calls) == 10  # every header read once, for all three splits
    for split, data in parts.items():
        alone = load_dataset("volumes", split=split, **opts)
        assert [m["path"] for m in map(alone.meta, range(len(alone)))] == [
            m["path"] for m in map(data.meta, range(len(data)))
        ]
        assert data.normalization == alone.normalization and data.name == alone.name
    np.save(tmp_path / "x.npy", RNG.standard_normal((20, 1, 3, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(20) % 3)
    opts = {"path": str(tmp_path / "x.npy"), "y_path": str(tmp_path / "y.npy"), "seed": 1}
    parts = load_splits("arrays", ["train", "test"], **opts)
    for split in ("train", "test"):
        alone = load_dataset("arrays", split=split, **opts)
        assert torch.equal(parts[split].x, alone.x) and torch.equal(parts[split].y, alone.y)
    digits = load_splits("digits", ["train", "val"])  # a loader without one-read: per split
    assert len(digits["train"]) + len(digits["val"]) < 1797
    with pytest.raises(ValueError, match="split="):
        load_splits("digits", ["train", "train"])
    assert isinstance(volumes(folder, spatial_dims=3, split=["val"]), dict)

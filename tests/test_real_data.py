"""Real N-D data through ``ndunet train`` / ``sample`` / ``summary`` end to end: a 3-D NIfTI
segmentation folder, 3-D + time NIfTI (time as a spatial axis, and as channels), TIFF stacks,
and the refusals (raw values for diffusion, bare volumes without a stated layout). Oracles:
the arrays written with nibabel / tifffile in the test, numpy statistics of the train split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ndunet.app.cli import main
from ndunet.data.splits import split_indices

nib = pytest.importorskip("nibabel")
tifffile = pytest.importorskip("tifffile")
pytestmark = pytest.mark.usefixtures("one_thread")
RNG = np.random.default_rng(11)
AFFINE = np.array([[0.0, 0, 2, 10], [0, 1.5, 0, -4], [-1.2, 0, 0, 7], [0, 0, 0, 1]])

SEGMENT = """
[task]
type = "supervised"
test = false

[data]
name = "volumes"
path = "images"
labels = "labels"
normalize = "zscore"
val_fraction = 0.25
{data}

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2
{model}

[trainer]
max_steps = 2
batch_size = 2
log_every_steps = 1
"""

GENERATE = """
[task]
type = "diffusion"
validate = false

[data]
{data}

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2
{model}

[diffusion]
timesteps = 20
sample_steps = 2

[trainer]
max_steps = 2
batch_size = 2
sample_n = 2
"""


def _write_nifti(folder: Path, volumes: list[np.ndarray], labels: list[np.ndarray] | None) -> None:
    (folder / "images").mkdir(parents=True)
    for i, v in enumerate(volumes):
        nib.save(nib.Nifti1Image(v, AFFINE), folder / "images" / f"case{i}.nii.gz")
    if labels is not None:
        (folder / "labels").mkdir()
        for i, y in enumerate(labels):
            nib.save(nib.Nifti1Image(y, AFFINE), folder / "labels" / f"case{i}.nii.gz")


def _config(folder: Path, template: str, data: str = "", model: str = "") -> Path:
    path = folder / "run.toml"
    path.write_text(template.format(data=data, model=model))
    return path


def test_3d_nifti_segmentation_trains_and_records_its_data(tmp_path: Path, capsys) -> None:
    shapes = [(8, 8, 4)] * 4
    vols = [RNG.normal(300, 50, s).astype(np.float32) for s in shapes]  # CT-like raw values
    segs = [(v > 300).astype(np.uint8) for v in vols]
    _write_nifti(tmp_path, vols, segs)
    cfg = _config(tmp_path, SEGMENT)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    run = tmp_path / "run"
    model = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["model"]
    assert model["config"]["spatial_dims"] == 3 and model["config"]["out_channels"] == 2
    # z-score statistics of the train split only (numpy over those files)
    train = split_indices(4, seed=0, val_fraction=0.25, test_fraction=0.1)["train"].tolist()
    voxels = np.concatenate([vols[i].ravel() for i in train]).astype(np.float64)
    norm = json.loads((run / "normalization.json").read_text())
    assert norm["kind"] == "zscore" and norm["fitted_on"] == len(train)
    np.testing.assert_allclose([norm["shift"][0], norm["scale"][0]], [voxels.mean(), voxels.std()])
    geometry = json.loads((run / "geometry.json").read_text())
    np.testing.assert_allclose(geometry["affine"], AFFINE)
    assert geometry["spacing"] == pytest.approx([1.2, 1.5, 2.0])
    capsys.readouterr()
    assert main(["summary", str(cfg)]) == 0 and "Total" in capsys.readouterr().out


def test_summary_of_volumes_of_different_shapes_is_a_clear_error(tmp_path: Path, capsys) -> None:
    vols = [RNG.normal(0, 1, s).astype(np.float32) for s in ((8, 8, 4), (8, 6, 4))]
    _write_nifti(tmp_path, vols, [(v > 0).astype(np.uint8) for v in vols])
    cfg = _config(tmp_path, SEGMENT, data="test_fraction = 0")
    args = ["--set", "data.val_fraction=0", "--quiet"]
    assert main(["train", str(cfg), *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err  # not a raw stack error from the batch loader
    assert "trainer.batch_size" in err and "[patches]" in err and not (tmp_path / "run").exists()
    assert main(["summary", str(cfg), *args[:2], "--set", "trainer.batch_size=1"]) == 2
    assert "differ in shape" in capsys.readouterr().err


def test_run_file_lists_of_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    from ndunet.app.assemble import build_datasets
    from ndunet.app.run_config import load_config

    vols = [RNG.normal(0, 1, (6, 6, 4)).astype(np.float32) for _ in range(3)]
    _write_nifti(tmp_path / "d", vols, [(v > 0).astype(np.uint8) for v in vols])
    names = [f"case{i}.nii.gz" for i in range(3)]
    data = (
        f'name = "volumes"\npath = {[f"d/images/{n}" for n in names]}\n'
        f'labels = {[f"d/labels/{n}" for n in names]}\nnormalize = "none"\n'
        "val_fraction = 0.0\ntest_fraction = 0.0"
    )
    path = tmp_path / "list.toml"
    path.write_text(f'[task]\ntype = "supervised"\n[data]\n{data}\n')
    cfg = load_config(path)
    assert cfg.data.options["labels"][2] == str(tmp_path / "d" / "labels" / names[2])
    train = build_datasets(cfg)["train"]
    assert len(train) == 3 and train.task == "segmentation"
    np.testing.assert_array_equal(train[1][0][0].numpy(), vols[1])


def test_4d_nifti_time_as_a_spatial_axis(tmp_path: Path, capsys) -> None:
    vols = [RNG.normal(0, 1, (4, 4, 4, 4)).astype(np.float32) for _ in range(4)]  # x, y, z, t
    _write_nifti(tmp_path, vols, [(v > 0).astype(np.uint8) for v in vols])
    cfg = _config(tmp_path, SEGMENT)
    assert main(["train", str(cfg), "--out", str(tmp_path / "r0"), "--quiet"]) == 2
    err = capsys.readouterr().err  # time must be placed: spatial or channels
    assert "spatial_dims=4" in err and "channel_axis=-1" in err and not (tmp_path / "r0").exists()
    cfg = _config(tmp_path, SEGMENT, model="spatial_dims = 4")  # the model's axes reach the data
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    config = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    assert config["model"]["config"]["spatial_dims"] == 4


def test_4d_nifti_time_as_channels_diffusion_samples_nifti_in_file_units(tmp_path: Path) -> None:
    vols = [RNG.uniform(100, 900, (6, 6, 4, 3)).astype(np.float32) for _ in range(3)]
    _write_nifti(tmp_path, vols, None)
    data = 'name = "volumes"\npath = "images"\nchannel_axis = -1\nnormalize = "minmax"'
    cfg = _config(tmp_path, GENERATE, data=data)
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    norm = json.loads((tmp_path / "run" / "normalization.json").read_text())
    assert len(norm["shift"]) == 3  # per time point (channel)
    out = tmp_path / "s.nii.gz"
    args = ["sample", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    written = sorted(tmp_path.glob("s-*.nii.gz"))
    assert [p.name for p in written] == ["s-0.nii.gz", "s-1.nii.gz"]
    img = nib.load(written[0])
    assert img.shape == (6, 6, 4, 3)  # x, y, z, then the channels as the 4th axis, as read
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)
    low = np.array(norm["shift"]) - np.array(norm["scale"])
    high = np.array(norm["shift"]) + np.array(norm["scale"])
    values = np.asarray(img.dataobj).reshape(-1, 3)
    assert (values >= low - 1e-3).all() and (values <= high + 1e-3).all()  # file units
    assert values.max() > 1.5  # not the model's [-1, 1]
    assert main([*args[:-1], str(out)]) == 2  # never overwrites


def test_tiff_stacks_train_and_sample_tiff(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    stacks = [RNG.integers(0, 65535, (6, 8, 8)).astype(np.uint16) for _ in range(3)]
    for i, s in enumerate(stacks):
        tifffile.imwrite(tmp_path / "stacks" / f"s{i}.tif", s)
    data = 'name = "images"\nfolder = "stacks"\nextensions = [".tif"]'
    cfg = _config(tmp_path, GENERATE, data=data, model="spatial_dims = 3")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    state = json.loads((tmp_path / "run" / "checkpoints" / "last" / "config.json").read_text())
    assert state["model"]["config"]["spatial_dims"] == 3  # 6 pages read as Z, not 1 page
    out = tmp_path / "s.tif"
    args = ["sample", str(tmp_path / "run"), "--n", "3", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "IZYX" and tif.series[0].shape == (3, 6, 8, 8)
        values = tif.asarray()
    assert values.min() >= 0 and values.max() <= 65535 and values.max() > 2  # 16-bit units


def test_diffusion_refuses_raw_values_naming_data_normalize(tmp_path: Path, capsys) -> None:
    np.save(tmp_path / "x.npy", np.linspace(20, 150, 384, dtype=np.float32).reshape(6, 1, 8, 8))
    cfg = _config(tmp_path, GENERATE, data='name = "arrays"\npath = "x.npy"')
    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data.normalize" in err and "data.normalize = 'symmetric'" in err
    assert "training samples of dataset 'arrays' reach [20, " in err
    assert not (tmp_path / "run").exists()
    args = ["--set", "data.normalize=symmetric", "--quiet"]
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), *args]) == 0
    npy = tmp_path / "s.npy"
    args = ["sample", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--out", str(npy)]
    assert main(args) == 0
    x = np.load(npy)
    assert x.shape == (2, 1, 8, 8) and x.min() >= 20 - 1e-3 and x.max() <= 150 + 1e-3
    _write_nifti(tmp_path / "nii", [RNG.normal(50, 9, (6, 6, 4)).astype(np.float32)] * 4, None)
    cfg = _config(tmp_path / "nii", GENERATE, data='name = "volumes"\npath = "images"')
    assert main(["train", str(cfg), "--set", "data.normalize=zscore"]) == 2
    assert "data.normalize = 'minmax'" in capsys.readouterr().err


def test_bare_volume_files_take_the_models_spatial_dims(tmp_path: Path, capsys) -> None:
    (tmp_path / "vols").mkdir()
    for i in range(4):
        np.save(tmp_path / "vols" / f"v{i}.npy", RNG.uniform(-1, 1, (4, 6, 6)).astype(np.float32))
    cfg = _config(tmp_path, GENERATE, data='name = "arrays"\npath = "vols"')
    assert main(["train", str(cfg), "--out", str(tmp_path / "r0")]) == 2
    assert "spatial_dims" in capsys.readouterr().err  # never 2-D images with 4 channels
    args = ["--set", "model.spatial_dims=3", "--quiet", "--out", str(tmp_path / "run")]
    assert main(["train", str(cfg), *args]) == 0
    args = ["--set", "model.spatial_dims=2", "--set", "data.spatial_dims=3"]
    assert main(["train", str(cfg), *args, "--out", str(tmp_path / "r1")]) == 2
    assert "model.spatial_dims" in capsys.readouterr().err

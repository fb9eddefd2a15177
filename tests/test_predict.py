"""`ndunet predict`: a NIfTI written here, predicted by a patch-trained run, comes back with the
input's affine and shape and equals sliding_window_inference of the loaded model called
directly (with and without flip TTA); nothing is overwritten; bad settings exit 2 before work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from _runs import SEG_3D as RUN
from ndunet.app.cli import main
from ndunet.data import Normalization, blobs
from ndunet.inference import flip_tta, sliding_window_inference
from ndunet.training import load_run

nib = pytest.importorskip("nibabel")

pytestmark = pytest.mark.usefixtures("one_thread")


AFFINE = np.array([[0.0, -0.7, 0, 12], [0.9, 0, 0, -4], [0, 0, 2.5, 3], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path]:
    """(a trained run folder, a NIfTI volume of 14x11x9 voxels with an oblique affine)."""
    folder = tmp_path_factory.mktemp("predict")
    (folder / "run.toml").write_text(RUN)
    assert main(["train", str(folder / "run.toml"), "--out", str(folder / "run"), "--quiet"]) == 0
    x = blobs(3, length=14, n=1, seed=9).x[0, 0, :, :11, :9].numpy()  # (14, 11, 9)
    nib.save(nib.Nifti1Image(x, AFFINE), folder / "case.nii.gz")
    return folder / "run", folder / "case.nii.gz"


def _direct(run: Path, nifti: Path, axes: tuple[int, ...] = (), norm=None) -> np.ndarray:
    model = load_run(run, which="best").model
    x = torch.from_numpy(np.asarray(nib.load(nifti).dataobj, dtype=np.float32))[None, None]
    x = x if norm is None else (x - norm[0]) / norm[1]
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # where `predict --device auto` runs
    predictor = flip_tta(model.to(dev), axes) if axes else model.to(dev)
    with torch.no_grad():  # windows on `dev`, stitched on the CPU, as predict does
        out = sliding_window_inference(
            x, (8, 8, 4), 4, predictor, 0.5, "gaussian", sw_device=dev, device="cpu"
        )
    return (out[0, 0] > 0).numpy()  # one logit channel: foreground where it is > 0


@pytest.mark.parametrize("axes", [(), (0, 2)], ids=["plain", "tta"])
def test_predict_writes_labels_with_the_inputs_affine(case, tmp_path, axes, capsys):
    run, nifti = case
    out = tmp_path / "out"
    tta = ["--tta-axes", *map(str, axes)] if axes else []
    assert main(["predict", str(run), str(nifti), "--out", str(out), "--quiet", *tta]) == 0
    img = nib.load(out / "case.nii.gz")
    assert np.allclose(img.affine, AFFINE) and img.shape == (14, 11, 9)
    labels = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert np.array_equal(labels, _direct(run, nifti, axes).astype(np.uint8))
    assert "1 prediction(s)" in capsys.readouterr().out


def test_predict_applies_the_recorded_normalisation(case, tmp_path, capsys):
    run, nifti = case
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = Normalization("zscore", shift=(1.5,), scale=(0.5,), fitted_on=3).to_dict()
    (copy / "normalization.json").write_text(json.dumps(record))
    assert main(["predict", str(copy), str(nifti), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    labels = np.asarray(nib.load(tmp_path / "a" / "case.nii.gz").dataobj)
    assert np.array_equal(labels, _direct(copy, nifti, norm=(1.5, 0.5)))
    assert not np.array_equal(labels, _direct(copy, nifti))
    # a run that normalised without recording how is refused
    (copy / "normalization.json").unlink()
    saved = json.loads((copy / "run_config.json").read_text())
    saved["data"]["normalize"] = "zscore"
    (copy / "run_config.json").write_text(json.dumps(saved))
    assert main(["predict", str(copy), str(nifti), "--out", str(tmp_path / "b")]) == 2
    assert "records no normalisation" in capsys.readouterr().err


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    for flag in ("--out", "--which", "--roi-size", "--overlap", "--tta-axes", "--device"):
        assert flag in out


def test_predict_never_overwrites_and_checks_before_work(case, tmp_path, capsys):
    run, nifti = case
    out = tmp_path / "out"
    out.mkdir()
    (out / "case.nii.gz").write_bytes(b"keep")
    assert main(["predict", str(run), str(nifti), "--out", str(out), "--quiet"]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert (out / "case.nii.gz").read_bytes() == b"keep"
    for bad, words in [
        (["--tta-axes", "3"], "--tta-axes"),
        (["--roi-size", "8", "8"], "--roi-size"),
        (["--suffix", ".png"], "PNG"),
        (["--suffix", ".h5"], "--suffix"),
    ]:
        other = tmp_path / "other"
        assert main(["predict", str(run), str(nifti), "--out", str(other), *bad]) == 2
        assert words in capsys.readouterr().err
        assert not other.exists()  # refused before anything was written


def test_regression_run_writes_values_of_a_channel_first_npy(tmp_path, capsys):
    denoise = RUN.replace("n = 4\n", 'n = 4\ntask = "denoising"\n').replace(
        "max_steps = 2", "max_steps = 1"
    )
    (tmp_path / "run.toml").write_text(denoise)
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "run.toml"), "--out", str(run), "--quiet"]) == 0
    x = torch.randn(1, 10, 9, 5)  # (C, *spatial): one axis more than the model's spatial_dims
    np.save(tmp_path / "vol.npy", x.numpy())
    out = tmp_path / "out"
    assert main(["predict", str(run), str(tmp_path / "vol.npy"), "--out", str(out)]) == 2
    assert "channel_axis" in capsys.readouterr().err  # the layout must be stated, not guessed
    args = ["predict", str(run), str(tmp_path), "--out", str(out), "--channel-axis", "0"]
    # on the CPU, as the reference below: "auto" would take CUDA, whose kernels round otherwise
    args += ["--device", "cpu"]
    assert main([*args, "--quiet", "--roi-size", "8"]) == 0  # a folder; one window for all axes
    got = np.load(out / "vol.npy")
    model = load_run(run, which="best").model
    with torch.no_grad():
        want = sliding_window_inference(x[None], (8, 8, 8), 4, model, 0.5, "gaussian")[0, 0]
    assert got.dtype == np.float32 and got.shape == (10, 9, 5)  # one channel: dropped
    assert np.allclose(got, want.numpy(), atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_predict_tunes_cudnn_on_cuda_and_gives_the_setting_back(case, tmp_path, device):
    import ndunet.app.predict as app_predict

    run, nifti = case
    seen: list[bool] = []
    real = app_predict.predict_volume

    def recording(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return real(*args, **kwargs)

    before = torch.backends.cudnn.benchmark
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_predict, "predict_volume", recording)
        out = str(tmp_path / "out")
        assert (
            main(["predict", str(run), str(nifti), "--out", out, "--quiet", "--device", device])
            == 0
        )
    assert seen == [device == "cuda"]  # the windows share one shape: cuDNN tunes once for it
    assert torch.backends.cudnn.benchmark is before

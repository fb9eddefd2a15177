"""The planner: nnU-Net's pooling rule against hand-computed topologies (isotropic, thick-slice
3-D, 4-D, the 2x boundary), planned training steps measured under their budgets, the
fingerprint against numpy on the files' voxels, and `ndunet plan` -> `ndunet train`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ndunet.app.cli import main
from ndunet.app.run_config import load_config
from ndunet.planning import (
    Fingerprint,
    PlannerConfig,
    choose_normalization,
    fingerprint,
    parse_bytes,
    peak_bytes,
    plan,
    pooling_plan,
)

pytestmark = pytest.mark.usefixtures("one_thread")
MiB = 2**20
BIG = 2**40  # a budget nothing reaches: the patch is the first one (the median-clipped box)


# ----- the pooling rule, by hand ---------------------------------------------------------------


def test_isotropic_3d_pools_every_axis_down_to_4():
    t = pooling_plan((1.0, 1.0, 1.0), (128, 128, 128))
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five poolings, each on all axes; kernels 3 throughout
    assert t.strides == ((2, 2, 2),) * 5
    assert t.kernel_sizes == ((3, 3, 3),) * 6
    assert t.divisors == (32, 32, 32) and t.level_sizes()[-1] == (4, 4, 4)


def test_thick_slices_pool_in_plane_until_the_spacings_meet():
    # depth 5 mm, 0.8 mm in-plane: in-plane spacing 0.8 -> 1.6 -> 3.2 (5/3.2 < 2: depth joins),
    # then all axes to 10 x 6.4 -> 20 x 12.8 at sizes (5, 10, 10); depth 5 < 8 stops, the
    # in-plane axes pool once more to (5, 5, 5). Depth kernels 1 until its spacing is within 2x.
    t = pooling_plan((5.0, 0.8, 0.8), (20, 160, 160))
    assert t.strides == ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))
    assert t.kernel_sizes == ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    assert t.divisors == (4, 32, 32) and t.patch_size == (20, 160, 160)
    assert t.level_sizes()[-1] == (5, 5, 5)


def test_4d_with_a_coarse_fourth_axis():
    # spacing 3 on the last axis: not pooled (ratio 3) at level 0; at spacing (2, 2, 2, 3) it is
    # within 2x and pooled with the others; then its size 4 < 8 keeps it out
    t = pooling_plan((1.0, 1.0, 1.0, 3.0), (32, 32, 32, 8))
    assert t.strides == ((2, 2, 2, 1), (2, 2, 2, 2), (2, 2, 2, 1))
    assert t.kernel_sizes == ((3, 3, 3, 1),) + ((3, 3, 3, 3),) * 3
    assert t.level_sizes() == ((32, 32, 32, 8), (16, 16, 16, 8), (8, 8, 8, 4), (4, 4, 4, 4))


def test_ratio_of_exactly_2_is_not_pooled_and_odd_sizes_are_padded():
    # 1.6 / 0.8 = 2: only the fine axes pool (and convolve) at level 0; then the spacings are
    # equal and every axis pools: (30, 30, 32) -> (15, 15, 16) -> (8, 8, 8) -> (4, 4, 4)
    t = pooling_plan((1.6, 0.8, 0.8), (30, 60, 64))
    assert t.strides == ((1, 2, 2),) + ((2, 2, 2),) * 3
    assert t.kernel_sizes[0] == (1, 3, 3) and t.kernel_sizes[1:] == ((3, 3, 3),) * 4
    assert t.patch_size == (32, 64, 64)  # multiples of (8, 16, 16)


def test_a_single_poolable_axis_needs_12_voxels():
    assert pooling_plan((1.0,), (11,)).strides == ()
    assert pooling_plan((1.0,), (12,)).strides == ((2,),)
    assert pooling_plan((1.0, 1.0), (40, 4)).strides == ((2, 1),) * 2  # 40 -> 20 -> 10 (< 12)


@pytest.mark.parametrize(
    ("shape", "spacing", "strides", "patch"),
    [
        ((64, 64, 64), (1.0, 1.0, 1.0), ((2, 2, 2),) * 4, (64, 64, 64)),
        # the box of equal extent, (17, 105, 105), clipped to (17, 96, 96): in-plane pooled
        # alone twice, then all axes while the depth holds >= 8 (17 -> 9 -> 5): padded to 20
        ((20, 96, 96), (5.0, 0.8, 0.8), ((1, 2, 2),) * 2 + ((2, 2, 2),) * 2, (20, 96, 96)),
        # the box (15, 15, 15, 15) clipped to (15, 15, 15, 12): 15 -> 8 -> 4, 12 -> 6
        ((16, 16, 16, 12), (1.0,) * 4, ((2, 2, 2, 2), (2, 2, 2, 1)), (16, 16, 16, 12)),
    ],
    ids=["isotropic", "thick-slice", "4d"],
)
def test_plans_follow_the_rule_at_the_median_shape(shape, spacing, strides, patch):
    fp = Fingerprint(shapes=(shape,) * 4, spacings=(spacing,) * 4, num_classes=2)
    p = plan(fp, BIG, PlannerConfig(verify=False))
    assert p.topology.strides == strides and p.patch_size == patch
    assert p.model.down_factors() == strides and p.model.num_levels == len(strides) + 1
    widths = tuple(min(32 * 2**i, 320) for i in range(len(strides) + 1))
    assert p.model.channels == widths
    assert p.batch_size == 2  # 5% of 4 volumes is less than one patch


# ----- memory ----------------------------------------------------------------------------------


def test_peak_bytes_sees_a_freed_peak():
    keep = []

    def fn() -> None:
        a = torch.ones(10_000_000)  # 40 MB, freed
        del a
        keep.append(torch.ones(5_000_000))  # 20 MB
        keep.append(torch.ones(2_500_000))  # 10 MB

    assert peak_bytes(fn, torch.device("cpu")) == 40_000_000


@pytest.mark.parametrize(
    ("shape", "spacing", "budget"),
    [
        ((64, 64, 64), (1.0,) * 3, 64),
        ((24, 96, 96), (5.0, 0.8, 0.8), 128),
        ((12,) * 4, (1.0,) * 4, 32),
    ],
    ids=["isotropic-64MiB", "thick-slice-128MiB", "4d-32MiB"],
)
def test_the_planned_step_fits_the_budget(shape, spacing, budget):
    fp = Fingerprint(shapes=(shape,) * 8, spacings=(spacing,) * 8, num_classes=3)
    p = plan(fp, budget * MiB, PlannerConfig(base_channels=8, max_measurements=2))
    assert p.measured_bytes is not None and p.measured_bytes <= budget * MiB
    assert p.measured_bytes > budget * MiB / 3  # the budget is used, not left idle
    assert all(s % d == 0 for s, d in zip(p.patch_size, p.topology.divisors))
    assert math.prod(p.patch_size) < math.prod(shape)  # the budget made it shrink


def test_budget_too_small_names_memory():
    fp = Fingerprint(shapes=((64, 64, 64),) * 2, num_classes=2)
    with pytest.raises(ValueError, match="memory="):
        plan(fp, 1 * MiB, PlannerConfig(verify=False))


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 * 2**30 and parse_bytes("512 MiB") == 512 * MiB
    assert parse_bytes("8GB") == 8 * 10**9 and parse_bytes("1.5e9") == 1_500_000_000
    with pytest.raises(ValueError, match="memory='8 gigs'"):
        parse_bytes("8 gigs")


# ----- fingerprint and normalisation ------------------------------------------------------------


def _nifti_set(folder, n=4, shape=(24, 20, 8), spacing=(0.8, 0.8, 3.0)):
    """CT-like volumes (air -1000, a brighter ball of class 1, a class-2 corner) and labels."""
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(0)
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    arrays = []
    for i in range(n):
        grid = np.indices(shape)
        centre = np.array(shape) // 2 + i % 2
        ball = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing)) < 25
        y = ball.astype(np.uint8)
        y[:2, :2, :2] = 2
        x = np.where(ball, 50.0, -1000.0) + rng.normal(0, 30, shape)
        x = np.round(x).astype(np.int16)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(x, affine), folder / "images" / f"case{i}.nii.gz")
        nib.save(nib.Nifti1Image(y, affine), folder / "labels" / f"case{i}.nii.gz")
        arrays.append((x, y))
    return arrays


def test_fingerprint_against_the_voxels(tmp_path):
    arrays = _nifti_set(tmp_path)
    fp = fingerprint(tmp_path / "images", labels=tmp_path / "labels", samples_per_case=10**6)
    assert fp.shapes == ((24, 20, 8),) * 4 and fp.spatial_dims == 3
    assert np.allclose(fp.median_spacing, (0.8, 0.8, 3.0))
    assert fp.num_classes == 3
    assert fp.foreground_share == pytest.approx(np.mean([(y > 0).mean() for _, y in arrays]))
    fg = np.concatenate([x[y > 0] for x, y in arrays]).astype(np.float64)
    assert np.allclose(fp.percentiles[0], np.percentile(fg, (0.5, 50, 99.5)))
    assert fp.ct_like and choose_normalization(fp)[0] == "ct"
    low, high = np.percentile(fg, (0.5, 99.5))
    assert np.allclose(choose_normalization(fp)[1], ((low + high) / 2, high - low))
    # a bounded read: every 4th index of the first axis (24 * 20 * 8 int16 = 3.84 x 2000 bytes)
    small = fingerprint(tmp_path / "images", labels=tmp_path / "labels", max_read_bytes=2000)
    every = np.concatenate([x[::4].ravel() for x, _ in arrays]).astype(np.float64)
    assert np.allclose(small.all_percentiles[0], np.percentile(every, (0.5, 50, 99.5)))


def test_mr_like_data_is_z_scored():
    fp = Fingerprint(shapes=((8, 8),), all_percentiles=((0.0, 300.0, 1200.0),))
    assert not fp.ct_like and choose_normalization(fp) == ("zscore", None)


# ----- ndunet plan -> ndunet train ---------------------------------------------------------------


def test_plan_writes_a_run_file_that_trains(tmp_path, capsys):
    _nifti_set(tmp_path)
    out = tmp_path / "runs" / "plan.toml"
    args = ["plan", str(tmp_path / "images"), "--labels", str(tmp_path / "labels")]
    args += ["--memory", "48MiB", "--base-channels", "4", "--out", str(out)]
    # measured on the CPU (the profiler's allocations): "auto" would measure a CUDA step, whose
    # cuDNN workspaces depend on the GPU and library versions, against this small budget
    args += ["--device", "cpu"]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "patch" in shown and "measured" in shown and str(out) in shown
    cfg = load_config(out)
    assert cfg.data.name == "volumes" and cfg.data.options["normalize"] == "ct"
    assert cfg.model["strides"][0] == (2, 2, 1)  # 0.8 mm in-plane, 3 mm depth
    assert cfg.trainer.val_roi_size == cfg.patches.patch_size
    run = tmp_path / "run"
    steps = ["--set", "trainer.max_steps=2", "--set", "trainer.device=cpu"]
    steps += ["--set", "trainer.plot=false", "--set", "task.test=false", "--quiet"]
    assert main(["train", str(out), "--out", str(run), *steps]) == 0
    assert (run / "checkpoints").is_dir()
    assert main(args) == 2  # never over an existing run file
    assert "exists" in capsys.readouterr().err


def test_plan_needs_labels(tmp_path, capsys):
    _nifti_set(tmp_path, n=1)
    assert main(["plan", str(tmp_path / "images"), "--memory", "1GiB"]) == 2
    assert "--labels" in capsys.readouterr().err

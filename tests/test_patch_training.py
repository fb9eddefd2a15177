"""Patch training and whole-volume validation: [patches]/[augment] in run files through
`ndunet train` (resumed runs bit-identical), set_epoch reaching datasets and workers, the
TransformedDataset hook, and sliding-window validation against a hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from ndunet.app.cli import main
from ndunet.app.run_config import ConfigError, load_config, parse_config
from ndunet.data import blobs
from ndunet.data.loader import DictSamples, EpochBatches, build_loader, set_dataset_epoch
from ndunet.data.patches import PatchDataset
from ndunet.data.transformed import TransformedDataset
from ndunet.inference import sliding_window_inference
from ndunet.models import UNet, UNetConfig
from ndunet.training import SupervisedTrainer, TrainerConfig, load_checkpoint
from ndunet.training.losses import dice_ce
from ndunet.transforms import RandFlip

pytestmark = pytest.mark.usefixtures("one_thread")

# 3-D blobs volumes of 12^3 (4 train, 2 val), trained on 8x8x6 patches (two per volume: four
# steps of two an epoch)
PATCH_RUN = """
[task]
type = "supervised"
test = false

[data]
name = "blobs"
spatial_dims = 3
length = 12
n = 6
val_fraction = 0.34
test_fraction = 0.0

[patches]
patch_size = [8, 8, 6]
patches_per_volume = 2

[augment]
flip = {axes = [0, 1, 2]}
noise = {prob = 0.5}

[model]
channels = [4, 8]
num_res_blocks = 1
num_groups = 2

[trainer]
epochs = 3
batch_size = 2
lr = 1e-2
plot = false
device = "cpu"
"""


def _same_weights(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    for k in ca.model_state:
        assert torch.equal(ca.model_state[k], cb.model_state[k]), k
    sa, sb = ca.trainer_state(), cb.trainer_state()
    assert (sa["step"], sa["epoch"]) == (sb["step"], sb["epoch"])
    for pid, st in sa["optimizer"]["state"].items():
        for name, t in st.items():
            assert torch.equal(t, sb["optimizer"]["state"][pid][name]), (pid, name)


def test_patch_run_validates_whole_volumes_and_resumes_bit_identically(tmp_path, capsys):
    cfg = tmp_path / "patch.toml"
    cfg.write_text(PATCH_RUN)
    ref, cut = str(tmp_path / "ref"), str(tmp_path / "cut")
    assert main(["train", str(cfg), "--out", ref, "--quiet", "--set", "trainer.max_steps=6"]) == 0
    saved = load_checkpoint(Path(ref) / "checkpoints" / "last").config["trainer"]
    assert saved["val_roi_size"] == [8, 8, 6]  # whole volumes through windows of the patch size
    assert "val_dice" in (Path(ref) / "log.csv").read_text()
    # stopped mid-epoch 1 (step 3, four per epoch), resumed to step 6 (mid-epoch 2)
    assert main(["train", str(cfg), "--out", cut, "--quiet", "--set", "trainer.max_steps=3"]) == 0
    state = load_checkpoint(Path(cut) / "checkpoints" / "last").trainer_state()
    assert (state["epoch"], state["batch_in_epoch"]) == (0, 3)
    args = ["train", str(cfg), "--out", cut, "--quiet", "--resume", "--set", "trainer.max_steps=6"]
    assert main(args) == 0
    capsys.readouterr()
    _same_weights(Path(ref) / "checkpoints" / "last", Path(cut) / "checkpoints" / "last")


def test_set_epoch_reaches_the_dataset_and_its_workers():
    volumes = [(torch.randn(1, 12, 12), (torch.rand(12, 12) > 0.5).long()) for _ in range(4)]

    def epochs(num_workers: int) -> list[list[torch.Tensor]]:
        ds = PatchDataset(volumes, 5, patches_per_volume=2, seed=7)
        loader = build_loader(
            ds, batch_size=4, shuffle=True, drop_last=False, seed=1, num_workers=num_workers,
            rank=0, world_size=1, pin_memory=False, name="train",
        )  # fmt: skip
        batches = EpochBatches(loader, seed=1, grad_accum=1)
        return [[m[0][0] for m in batches.epoch(e, 0)] for e in (0, 1)]

    main_process, worker = epochs(0), epochs(1)
    assert not torch.equal(main_process[0][0], main_process[1][0])  # new crops each epoch
    for a, b in zip(main_process, worker):  # a worker's copy draws the same epoch's crops
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    ds = PatchDataset(volumes, 5)
    set_dataset_epoch(DictSamples(Subset(ds, range(3))), 3)  # through wrappers, too
    assert ds.epoch == 3


def test_transformed_dataset_moves_labels_with_images_and_keeps_other_targets():
    x = torch.arange(2 * 5 * 4, dtype=torch.float32).view(2, 5, 4)
    y = (x[0] > 20).long()
    flip = TransformedDataset([(x, y), (x, torch.tensor(3))], RandFlip(axes=(1,), prob=1.0))
    fx, fy = flip[0]
    assert torch.equal(fx, torch.flip(x, [2])) and torch.equal(fy, torch.flip(y, [1]))
    fx, label = flip[1]  # a class label is no per-voxel target: it passes through
    assert torch.equal(fx, torch.flip(x, [2])) and int(label) == 3
    coin = TransformedDataset([(x, y)] * 8, RandFlip(axes=(0, 1), prob=0.5), seed=4)
    first = [coin[i][0] for i in range(8)]
    assert all(torch.equal(a, coin[i][0]) for i, a in enumerate(first))  # seeded per index
    coin.set_epoch(1)
    assert any(not torch.equal(a, coin[i][0]) for i, a in enumerate(first))


def test_whole_volume_validation_equals_a_hand_computation(tmp_path):
    torch.manual_seed(0)
    data = blobs(3, length=14, n=3, seed=2)
    net = UNet(UNetConfig(spatial_dims=3, in_channels=1, out_channels=1, channels=(4, 8),
                          num_res_blocks=1, num_groups=2))  # fmt: skip
    net.eval()
    roi, kw = (8, 8, 6), {"val_overlap": 0.25, "val_sw_batch_size": 3, "val_mode": "gaussian"}
    tr = SupervisedTrainer(
        net, data, data, loss="dice_ce", metrics=("dice",), out_dir=str(tmp_path),
        val_roi_size=roi, device="cpu", progress=False, **kw,
    )  # fmt: skip
    got = tr.evaluate()
    tp = fp = fn = 0
    losses = []
    with torch.no_grad():
        for x, y in data:
            out = sliding_window_inference(x[None], roi, 3, net, 0.25, "gaussian")
            losses.append(float(dice_ce(out, y[None])))
            pred, true = out[0, 0].numpy() > 0, y[0].numpy() > 0.5
            tp += int(np.sum(pred & true))
            fp += int(np.sum(pred & ~true))
            fn += int(np.sum(~pred & true))
    assert got["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-6)
    plain = SupervisedTrainer(net, data, data, loss="dice_ce", metrics=("dice",),
                              out_dir=str(tmp_path), device="cpu", progress=False).evaluate()  # fmt: skip
    assert plain["loss"] != pytest.approx(got["loss"], rel=1e-6)  # not the whole-model path


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ({"augment": {"flipp": {}}}, "augment.flipp", "did you mean 'flip'"),
        ({"augment": {"flip": {"prob": 2.0}}}, "augment.flip", "prob=2.0"),
        ({"augment": {"rot90": {"plane": [[0, 1]]}}}, "augment.rot90", "planes"),
        ({"patches": {"patches_per_volume": 2}}, "patches.patch_size", "needs"),
        ({"patches": {"patch_size": [8, 0]}}, "patches.patch_size", "positive"),
        ({"patches": {"patch_size": [8], "foreground": 0.5}}, "patches.foreground", "fraction"),
    ],
)
def test_bad_patch_and_augment_sections_name_the_key(section, key, message):
    raw = {"task": {"type": "supervised"}, "data": {"name": "blobs", "spatial_dims": 2}, **section}
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert key in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"val_roi_size": (8, 0)}, "val_roi_size"),
        ({"val_roi_size": 8}, "val_roi_size"),
        ({"val_overlap": 1.0}, "val_overlap"),
        ({"val_sw_batch_size": 0}, "val_sw_batch_size"),
        ({"val_mode": "gauss"}, "val_mode"),
    ],
)
def test_whole_volume_settings_are_checked(values, key):
    with pytest.raises(ConfigError) as info:
        TrainerConfig(**values)
    assert info.value.key == key and f"{key}=" in str(info.value)


def test_sections_that_do_not_fit_the_data_are_refused_before_training(tmp_path, capsys):
    cfg = tmp_path / "patch.toml"
    cfg.write_text(PATCH_RUN)
    for override, key in [
        ("patches.patch_size=[8, 8]", "patches.patch_size"),
        ("augment.flip={axes=[3]}", "augment.flip"),
        ("trainer.val_roi_size=[8, 8]", "trainer.val_roi_size"),
    ]:
        code = main(["train", str(cfg), "--out", str(tmp_path / "r"), "--set", override])
        err = capsys.readouterr().err
        assert code == 2 and key in err and f"--set {override}" in err, err
        assert not (tmp_path / "r").exists()
    assert load_config(cfg).to_dict()["patches"]["patch_size"] == [8, 8, 6]  # round-trips

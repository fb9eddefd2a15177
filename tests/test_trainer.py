"""The training engine: overfitting in 1-D/2-D/3-D, best-checkpoint choice, run-folder safety,
NaN policy, accumulation, schedules, input forms, configs, AMP, diffusion training and sampling."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ndunet.layers import conv
from ndunet.training import (
    DiffusionTrainer,
    NonFiniteLossError,
    SupervisedTrainer,
    TrainerConfig,
    load_checkpoint,
    load_run,
)
from ndunet.training.metrics import Metric
from ndunet.training.optim import lr_factor

QUIET = {"progress": False, "device": "cpu", "plot": False}  # loss.png: test_run_folder_contents


def seg_net(spatial_dims: int, in_channels: int = 1, classes: int = 2) -> nn.Module:
    return nn.Sequential(
        conv(spatial_dims, in_channels, 8, 3, padding=1),
        nn.ReLU(),
        conv(spatial_dims, 8, classes, 1),
    )


def mlp(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2)
    )


def xy(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, generator=g)
    return x, (x.mean((1, 2)) > 0).long()


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_overfits_tiny_segmentation_set(tmp_path, spatial_dims):
    g = torch.Generator().manual_seed(spatial_dims)
    x = torch.randn(4, 1, *(8, 6, 4)[:spatial_dims], generator=g)  # small: CPU conv3d is slow
    y = (x[:, 0] > 0.3).long()  # (B, *spatial) labels: a pointwise threshold the net can learn
    repeated = (x.repeat(10, *(1,) * (spatial_dims + 1)), y.repeat(10, *(1,) * spatial_dims))
    tr = SupervisedTrainer(
        seg_net(spatial_dims),
        repeated,
        (x, y),
        loss="cross_entropy",
        metrics=("dice", "iou", "accuracy"),
        out_dir=str(tmp_path / "run"),
        epochs=2,
        batch_size=4,
        lr=5e-2,
        keep_last=0,
        **QUIET,
    )
    first = tr.evaluate()
    tr.fit()
    last = tr.evaluate()
    assert last["loss"] < 0.15 * first["loss"]
    assert last["accuracy"] > 0.97 and last["dice"] > 0.95 and last["iou"] > 0.9


class Scripted(Metric):
    """A validation metric that follows a fixed script, one value per evaluation."""

    name = "score"

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, 0
        super().__init__()

    def reset(self) -> None:
        self.state = [torch.zeros(1, dtype=torch.float64)]

    def update(self, pred, target) -> None:
        pass

    def compute(self) -> float:
        self.calls += 1
        return self.values[self.calls - 1]


@pytest.mark.parametrize(("mode", "expected"), [("max", 4), ("min", 1), ("auto", 4)])
def test_best_checkpoint_follows_the_validation_curve(tmp_path, mode, expected):
    curve = [0.5, 0.8, 0.6, 0.9, 0.7]
    x, y = xy()
    tr = SupervisedTrainer(
        mlp(),
        (x, y),
        (x, y),
        metrics=[Scripted(curve)],
        out_dir=str(tmp_path / "r"),
        epochs=5,
        batch_size=8,
        best_metric="val_score",
        best_mode=mode,
        keep_last=5,
        **QUIET,
    )
    tr.fit()
    ckpts = tmp_path / "r" / "checkpoints"
    best = load_checkpoint(ckpts / "best")
    assert best.config["epoch"] == expected
    assert best.config["best"] == {"metric": "val_score", "value": curve[expected - 1]}
    same = load_checkpoint(ckpts / f"epoch-{expected:04d}")
    for k, v in same.model_state.items():
        assert torch.equal(best.model_state[k], v)
    assert [round(h["val_score"], 3) for h in tr.history] == curve


def test_best_without_validation_is_lowest_epoch_mean_training_loss(tmp_path):
    x, y = xy()
    tr = SupervisedTrainer(
        mlp(0.5),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=4,
        batch_size=4,
        lr=0.3,
        optimizer="sgd",
        keep_last=4,
        log_every_steps=1,
        **QUIET,
    )
    tr.fit()
    losses = [h["loss"] for h in tr.history]
    best = load_checkpoint(tmp_path / "r").path.parent / "best"
    assert load_checkpoint(best).config["epoch"] == int(np.argmin(losses)) + 1
    # the epoch mean from log.csv agrees with the summary
    with open(tmp_path / "r" / "log.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"] and r["epoch"] == "1"]
    assert np.mean([float(r["loss"]) for r in rows]) == pytest.approx(losses[0], rel=1e-4)


def test_run_folder_is_never_overwritten(tmp_path):
    x, y = xy()
    out = tmp_path / "r"
    SupervisedTrainer(mlp(), (x, y), out_dir=str(out), epochs=1, batch_size=8, **QUIET).fit()
    before = _tree_digest(out)
    with pytest.raises(FileExistsError, match="resume=True"):
        SupervisedTrainer(mlp(), (x, y), out_dir=str(out), epochs=1, batch_size=8, **QUIET).fit()
    assert _tree_digest(out) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="no checkpoint"):
        SupervisedTrainer(mlp(), (x, y), out_dir=str(other), resume=True, **QUIET).fit()
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    # a run killed before its first checkpoint left only its marker and start-up files: resume
    # starts over (a folder without the marker is someone else's: see test_faults.py)
    from ndunet.training.run_dir import mark_run_dir

    killed = tmp_path / "killed"
    mark_run_dir(killed)
    (killed / "config.json").write_text("{}")
    (killed / "log.csv").write_text("step,epoch,loss,lr,wall_time\n1,1,9.0,0.1,0.5\n")
    tr = SupervisedTrainer(
        mlp(),
        (x, y),
        out_dir=str(killed),
        resume=True,
        epochs=1,
        batch_size=8,
        log_every_steps=1,
        **QUIET,
    )
    tr.fit()
    rows = (killed / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,loss") and [r.split(",")[0] for r in rows[1:]] == [
        "1",
        "2",
        "3",
    ]
    assert json.loads((killed / "config.json").read_text())["trainer"]["epochs"] == 1


def test_run_folder_contents(tmp_path):
    x, y = xy()
    SupervisedTrainer(
        mlp(),
        (x, y),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=2,
        batch_size=8,
        log_every_steps=1,
        **{**QUIET, "plot": True},
    ).fit()
    run = tmp_path / "r"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] is None and cfg["diffusion"] is None and cfg["trainer"]["epochs"] == 2
    assert cfg["model_class"] == "torch.nn.modules.container.Sequential"
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "val_loss", "val_accuracy", "wall_time"]
    assert [int(r["step"]) for r in rows if r["loss"]] == list(range(1, 7))
    assert sum(1 for r in rows if r["val_loss"]) == 2
    assert (run / "loss.png").is_file() and (run / "train.log").is_file()
    assert {p.name for p in (run / "checkpoints").iterdir()} == {
        "last",
        "best",
        "epoch-0001",
        "epoch-0002",
    }


class NaNAt(nn.Module):
    """Wraps a model; its n-th training forward returns NaN."""

    def __init__(self, model: nn.Module, at: int) -> None:
        super().__init__()
        self.model, self.at, self.calls = model, at, 0

    def forward(self, x):
        out = self.model(x)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = out * float("nan")
        return out


def test_nan_loss_stops_with_step_and_batch_and_keeps_last_checkpoint(tmp_path):
    x, y = xy()
    tr = SupervisedTrainer(
        NaNAt(mlp(), 5),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=3,
        batch_size=4,
        save_every_steps=1,
        **QUIET,
    )
    with pytest.raises(NonFiniteLossError, match=r"step 5 \(epoch 1, batch 5"):
        tr.fit()
    ck = load_checkpoint(tmp_path / "r")
    assert ck.trainer_state()["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck.model_state.values())


def test_nan_loss_skip_policy_skips_the_update(tmp_path):
    x, y = xy()
    tr = SupervisedTrainer(
        NaNAt(mlp(), 3),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=2,
        batch_size=4,
        nan_policy="skip",
        **QUIET,
    )
    tr.fit()
    assert tr.skipped_steps == 1 and tr.step == 12
    assert all(torch.isfinite(p).all() for p in tr.module.parameters())


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    x, y = xy(20)  # 20 samples: the last group is short (4), weighted by its size
    common = dict(epochs=2, lr=0.5, optimizer="sgd", momentum=0.0, shuffle=True, **QUIET)
    big = SupervisedTrainer(mlp(), (x, y), out_dir=str(tmp_path / "a"), batch_size=8, **common)
    big.fit()
    acc = SupervisedTrainer(
        mlp(), (x, y), out_dir=str(tmp_path / "b"), batch_size=4, grad_accum=2, **common
    )
    acc.fit()
    assert big.step == acc.step == 6
    for a, b in zip(big.module.parameters(), acc.module.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cosine_warmup_schedule_closed_form(tmp_path):
    kw = dict(total_steps=110, warmup_steps=10, kind="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(110, **kw) == pytest.approx(0.1)
    assert lr_factor(35, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(50, total_steps=10, warmup_steps=0, kind="constant", min_lr_ratio=0.0) == 1.0
    # the engine follows it: the lr logged after step s is lr * factor(s)
    x, y = xy(16)
    SupervisedTrainer(
        mlp(),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=2,
        batch_size=4,
        lr=0.1,
        scheduler="cosine",
        warmup_steps=2,
        min_lr_ratio=0.1,
        log_every_steps=1,
        **QUIET,
    ).fit()
    with open(tmp_path / "r" / "log.csv") as f:
        lrs = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f) if r["loss"]}
    for s, lr in lrs.items():
        assert lr == pytest.approx(
            0.1 * lr_factor(s, total_steps=8, warmup_steps=2, kind="cosine", min_lr_ratio=0.1),
            rel=1e-5,
        )


class DictSamples(Dataset):
    def __init__(self, x, y) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def test_accepted_input_forms(tmp_path):
    x, y = xy(12)
    forms = {
        "tuple": (x, y),
        "numpy": (x.numpy(), y.numpy()),
        "dict": {"x": x, "y": y},
        "dict_samples": DictSamples(x, y),
        "loader": DataLoader(DictSamples(x, y), batch_size=4),
    }
    for name, data in forms.items():
        tr = SupervisedTrainer(
            mlp(), data, data, out_dir=str(tmp_path / name), epochs=1, batch_size=4, **QUIET
        )
        out = tr.fit()
        assert tr.step == 3 and out["val_accuracy"] >= 0, name
    with pytest.raises(TypeError, match="train_data"):
        SupervisedTrainer(mlp(), ["a", "b"], out_dir=str(tmp_path / "bad1"), **QUIET)
    with pytest.raises(ValueError, match="'x' and optional 'y'"):
        SupervisedTrainer(mlp(), {"inputs": x}, out_dir=str(tmp_path / "bad2"), **QUIET)
    with pytest.raises(ValueError, match="must match"):
        SupervisedTrainer(mlp(), (x, y), (x, y[:5]), out_dir=str(tmp_path / "bad3"), **QUIET)
    with pytest.raises(ValueError, match="needs targets"):
        SupervisedTrainer(mlp(), x, out_dir=str(tmp_path / "bad4"), **QUIET).fit()


def test_config_round_trip_and_validation(tmp_path):
    cfg = TrainerConfig(out_dir="x", lr=0.1, betas=(0.8, 0.9), metrics=["dice"], scheduler="cosine")
    again = TrainerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.betas == (0.8, 0.9)
    for field, value, match in [
        ("amp", "fp8", "amp='fp8'"),
        ("epochs", 0, "epochs=0"),
        ("grad_accum", 1.5, "grad_accum"),
        ("ema_decay", 1.0, "ema_decay"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainerConfig(**{field: value})
    with pytest.raises(TypeError, match="unknown TrainerConfig option"):
        TrainerConfig.from_dict({"learning_rate": 1.0})
    x, y = xy()
    with pytest.raises(TypeError, match="unknown TrainerConfig option"):
        SupervisedTrainer(mlp(), (x, y), learning_rate=1.0)
    tr = SupervisedTrainer(mlp(), (x, y), config=cfg, epochs=3)
    assert tr.config.epochs == 3 and tr.config.lr == 0.1
    with pytest.raises(ValueError, match="best_metric='val_nope'"):
        SupervisedTrainer(
            mlp(), (x, y), (x, y), out_dir=str(tmp_path / "r"), best_metric="val_nope", **QUIET
        ).fit()


def test_device_and_amp_errors(tmp_path):
    x, y = xy()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SupervisedTrainer(
                mlp(), (x, y), out_dir=str(tmp_path / "a"), device="cuda", progress=False
            ).fit()
        with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
            SupervisedTrainer(mlp(), (x, y), out_dir=str(tmp_path / "b"), amp="fp16", **QUIET).fit()
    with pytest.raises(ValueError, match="device='banana'"):
        SupervisedTrainer(
            mlp(), (x, y), out_dir=str(tmp_path / "c"), device="banana", progress=False
        ).fit()


def test_bf16_autocast_on_cpu_trains(tmp_path):
    x, y = xy(32)
    tr = SupervisedTrainer(
        mlp(),
        (x, y),
        (x, y),
        out_dir=str(tmp_path / "r"),
        epochs=6,
        batch_size=8,
        lr=1e-2,
        amp="bf16",
        **QUIET,
    )
    before = tr.evaluate()["loss"]
    tr.fit()
    assert tr.evaluate()["loss"] < 0.7 * before


def test_evaluate_leaves_rng_untouched_and_is_repeatable():
    x, y = xy()
    tr = SupervisedTrainer(mlp(0.5), (x, y), **QUIET)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    a, b = tr.evaluate((x, y)), tr.evaluate((x, y))
    assert a == b and torch.equal(torch.get_rng_state(), state)
    assert tr.module.training  # mode restored


def test_progress_bars_and_quiet_mode(tmp_path, capsys):
    x, y = xy(8)
    SupervisedTrainer(
        mlp(),
        (x, y),
        out_dir=str(tmp_path / "a"),
        epochs=1,
        batch_size=4,
        device="cpu",
        progress=True,
    ).fit()
    err = capsys.readouterr().err
    assert "epoch" in err and "epoch 1/1" in err  # bars and the epoch summary line
    SupervisedTrainer(
        mlp(), (x, y), out_dir=str(tmp_path / "b"), epochs=1, batch_size=4, **QUIET
    ).fit()
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_tensorboard_without_package_is_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    x, y = xy(8)
    with pytest.raises(ImportError, match="ndunet\\[tensorboard\\]"):
        SupervisedTrainer(
            mlp(), (x, y), out_dir=str(tmp_path / "a"), tensorboard=True, **QUIET
        ).fit()


# ----- diffusion ------------------------------------------------------------------------------


class TinyDenoiser(nn.Module):
    """model(x_t, t, y=None) for any spatial_dims: a conv net with the time as an extra input."""

    def __init__(self, spatial_dims: int, channels: int = 1) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, channels, channels
        self.inp = conv(spatial_dims, channels + 1, 8, 3, padding=1)
        self.out = conv(spatial_dims, 8, channels, 3, padding=1)

    def forward(self, x, t, y=None):
        tt = (t.float() / 50).reshape(-1, 1, *(1,) * self.spatial_dims).expand(-1, 1, *x.shape[2:])
        return self.out(torch.relu(self.inp(torch.cat([x, tt], 1))))


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_diffusion_trainer_trains_samples_and_checkpoints_ema(tmp_path, spatial_dims):
    from ndunet.diffusion import Diffusion

    g = torch.Generator().manual_seed(0)
    data = torch.rand(16, 1, *(8,) * spatial_dims, generator=g) * 2 - 1
    diffusion = Diffusion(TinyDenoiser(spatial_dims), timesteps=50, sample_steps=4)
    tr = DiffusionTrainer(
        diffusion,
        data,
        data[:4],
        out_dir=str(tmp_path / "g"),
        epochs=2,
        batch_size=8,
        lr=1e-3,
        sample_every=1,
        sample_n=4,
        ema_decay=0.9,
        **QUIET,
    )
    tr.fit()
    run = tmp_path / "g"
    assert (run / "samples" / "epoch-0001.png").is_file() and (
        run / "samples" / "epoch-0002.png"
    ).is_file()
    ck = load_checkpoint(run)
    assert ck.config["diffusion"]["config"]["timesteps"] == 50 and ck.config["task"] == "diffusion"
    # model.safetensors is the bare network; ema.safetensors the EMA of it
    assert set(ck.model_state) == set(diffusion.model.state_dict())
    for k, v in tr.ema.module.state_dict().items():
        assert torch.equal(ck.ema_state[f"module.{k}"], v)
    s1, s2 = tr.sample(n=3), tr.sample(n=3)
    assert s1.shape == (3, 1, *(8,) * spatial_dims) and torch.equal(s1, s2)
    direct = diffusion.sample(
        3,
        (1, *(8,) * spatial_dims),
        steps=4,
        generator=torch.Generator().manual_seed(0),
        model=tr.ema.module,
    )
    torch.testing.assert_close(s1, direct)
    assert not torch.equal(s1, tr.sample(n=3, use_ema=False))
    with pytest.raises(ValueError, match="n=0"):
        tr.sample(n=0)


def test_load_run_rebuilds_unet_and_diffusion(tmp_path):
    unet = pytest.importorskip("ndunet.models.unet")
    from ndunet.diffusion import Diffusion

    net = unet.UNet(2, 1, 1, channels=(8, 16), num_res_blocks=1, time_embedding=True)
    data = torch.rand(8, 1, 8, 8) * 2 - 1
    tr = DiffusionTrainer(
        Diffusion(net, timesteps=20),
        data,
        out_dir=str(tmp_path / "g"),
        epochs=1,
        batch_size=4,
        ema_decay=0.5,
        **QUIET,
    )
    tr.fit()
    pipe = load_run(tmp_path / "g")
    assert pipe.config["model"]["type"] == "UNet" and pipe.diffusion is not None
    for k, v in net.state_dict().items():
        assert torch.equal(pipe.model.state_dict()[k].to(v.device), v)
    g = torch.Generator().manual_seed(1)
    ours = pipe.diffusion.sample(2, (1, 8, 8), steps=3, generator=g, model=pipe.sampling_model)
    theirs = tr.sample(n=2, steps=3, seed=1)
    torch.testing.assert_close(ours, theirs)


def test_step_validation_and_keep_last(tmp_path):
    x, y = xy(16)
    tr = SupervisedTrainer(
        mlp(), (x, y), (x, y), out_dir=str(tmp_path / "r"), epochs=3, batch_size=4,
        val_every_steps=3, keep_last=1, **QUIET,
    )  # fmt: skip
    tr.fit()
    ckpts = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "epoch-0003", "last"]
    with open(tmp_path / "r" / "log.csv") as f:
        val = {int(r["step"]): float(r["val_loss"]) for r in csv.DictReader(f) if r["val_loss"]}
    # every 3 steps inside an epoch, plus each epoch end (4 steps per epoch)
    assert list(val) == [3, 4, 6, 8, 9, 12]
    best = load_checkpoint(ckpts / "best")
    best_step = min(val, key=val.get)
    assert best.config["step"] == best_step
    assert best.config["best"]["value"] == pytest.approx(val[best_step], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_trains_and_checkpoints_the_scaler(tmp_path, amp):
    x, y = xy(64)
    tr = SupervisedTrainer(
        mlp(), (x, y), (x, y), out_dir=str(tmp_path / "r"), epochs=4, batch_size=16, lr=1e-2,
        amp=amp, device="cuda", progress=False, plot=False,
    )  # fmt: skip
    before = tr.evaluate()["loss"]
    tr.fit()
    assert tr.device.type == "cuda" and tr.evaluate()["loss"] < 0.8 * before
    scaler = load_checkpoint(tmp_path / "r").trainer_state()["scaler"]
    assert (scaler.get("scale", 0) > 0) == (amp == "fp16")


class LabelledDenoiser(TinyDenoiser):
    """TinyDenoiser with a class embedding (id num_classes is the null class); records the y
    it sees."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(1)
        self.num_classes = num_classes
        self.emb = nn.Embedding(num_classes + 1, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, x, t, y=None):
        self.seen.append(y)
        shift = 0 if y is None else self.emb(y).reshape(-1, 1, 1)
        return super().forward(x, t) + shift


def test_diffusion_trainer_passes_labels_when_class_conditional(tmp_path):
    from ndunet.diffusion import Diffusion

    x = torch.rand(12, 1, 8) * 2 - 1
    y = torch.arange(12) % 3
    net = LabelledDenoiser(3)
    tr = DiffusionTrainer(
        Diffusion(net, timesteps=20),
        (x, y),
        out_dir=str(tmp_path / "g"),
        epochs=1,
        batch_size=4,
        ema_decay=0.0,
        **QUIET,
    )
    tr.fit()
    assert tr.num_classes == 3 and all(s is not None and s.shape == (4,) for s in net.seen)
    net.seen.clear()
    out = tr.sample(n=5, steps=2)
    assert out.shape == (5, 1, 8)
    assert torch.equal(net.seen[0].cpu(), torch.tensor([0, 1, 2, 0, 1]))  # labels cycle

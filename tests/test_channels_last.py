"""trainer.channels_last and trainer.cudnn_benchmark: the channels-last layout changes memory,
never results (the contiguous model is the oracle), checkpoints stay interchangeable, and the
process-wide cuDNN flag is set for the run and given back afterwards."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ndunet import Diffusion, UNet
from ndunet.training import DiffusionTrainer, SupervisedTrainer, load_checkpoint
from ndunet.training.callbacks import Callback
from ndunet.training.setup import input_layout, to_channels_last

sys.path.insert(0, str(Path(__file__).parent))
from _runs import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"progress": False, "plot": False}
FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}


def unet(spatial_dims: int, **options) -> UNet:
    torch.manual_seed(0)
    kw = {
        "channels": (8, 16),
        "num_res_blocks": 1,
        "num_groups": 4,
        "attention_levels": (False, True),
    }
    return UNet(spatial_dims, in_channels=2, out_channels=3, **{**kw, **options})


def _conv_weights(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() >= 3]


@pytest.mark.parametrize(
    "spatial_dims, options",
    [
        (2, {}),
        (2, {"norm": "batch", "num_classes": 3, "time_embedding": True}),
        (
            2,
            {
                "norm": "instance",
                "upsample": "transpose",
                "downsample": "max",
                "attention_type": "cbam",
            },
        ),
        (3, {}),
        (3, {"norm": "layer", "num_classes": 3, "time_embedding": True}),
    ],
)
def test_channels_last_model_matches_the_contiguous_one(spatial_dims, options):
    ref = unet(spatial_dims, **options)
    cl = to_channels_last(unet(spatial_dims, **options))
    fmt = FORMATS[spatial_dims]
    weights = [p for p in cl.parameters() if p.dim() == spatial_dims + 2]
    assert weights and all(p.is_contiguous(memory_format=fmt) for p in weights)
    assert not all(p.is_contiguous() for p in weights)  # really another layout
    assert all(p.is_contiguous() for p in cl.parameters() if p.dim() != spatial_dims + 2)
    for a, b in zip(ref.state_dict().values(), cl.state_dict().values()):
        assert torch.equal(a, b)  # the same values (and names)
    shape = (2, 2, *(8,) * spatial_dims)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    extra = {}
    if options.get("time_embedding"):
        extra["t"] = torch.tensor([3.0, 40.0])
    if options.get("num_classes"):
        extra["y"] = torch.tensor([0, 2])
    outs = []
    for model, inp in ((ref, x), (cl, input_layout(x, True))):
        out = model(inp.requires_grad_(), **extra)
        (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        outs.append((out.detach(), inp.grad, [p.grad for p in model.parameters()]))
    (o1, g1, p1), (o2, g2, p2) = outs
    torch.testing.assert_close(o2, o1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-5)
    for a, b in zip(p1, p2):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=5e-5)


@pytest.mark.parametrize("spatial_dims", [1, 4])
def test_other_spatial_dims_keep_their_layout(spatial_dims):
    model = to_channels_last(unet(spatial_dims, attention_levels=(False, False)))
    assert all(p.is_contiguous() for p in model.parameters())
    x = torch.randn(1, 2, *(4,) * spatial_dims)
    assert input_layout(x, True) is x
    assert model(x).shape == (1, 3, *(4,) * spatial_dims)


class _Seen(Callback):
    """Records the cuDNN flag at each step."""

    def __init__(self) -> None:
        self.benchmark: list[bool] = []

    def on_step_end(self, trainer, loss: float) -> None:
        self.benchmark.append(torch.backends.cudnn.benchmark)


def _segmentation(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, 8, 8, generator=g)
    return x, (x[:, 0] > x[:, 1]).long()


def _fit(tmp_path, name, **options) -> tuple[SupervisedTrainer, _Seen]:
    seen = _Seen()
    data = _segmentation()
    tr = SupervisedTrainer(
        unet(2),
        data,
        data,
        out_dir=str(tmp_path / name),
        batch_size=4,
        metrics=("dice",),
        callbacks=[seen],
        **{"epochs": 2, "lr": 1e-2, **QUIET, **options},
    )
    tr.fit()
    return tr, seen


def test_channels_last_training_matches_contiguous_and_checkpoints_stay_contiguous(tmp_path):
    # SGD: AdamW would turn rounding noise in near-zero gradients (the softmax-invariant
    # query/key biases) into steps of ~lr, while SGD's steps stay as close as the gradients
    sgd = {"optimizer": "sgd", "lr": 0.05}
    ref, _ = _fit(tmp_path, "ref", **sgd)
    tr, _ = _fit(tmp_path, "cl", channels_last=True, **sgd)
    assert all(
        p.is_contiguous(memory_format=torch.channels_last)
        for p in tr.module.parameters()
        if p.dim() == 4
    )
    a, b = (
        load_checkpoint(tmp_path / "ref").model_state,
        load_checkpoint(tmp_path / "cl").model_state,
    )
    assert a.keys() == b.keys()
    for k in a:
        assert b[k].is_contiguous()  # written contiguous: loads anywhere
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    # a channels-last run resumes from its own checkpoint, and from a contiguous one
    more, _ = _fit(tmp_path, "cl", channels_last=True, epochs=3, resume=True, **sgd)
    also, _ = _fit(tmp_path, "ref", channels_last=True, epochs=3, resume=True, **sgd)
    for k, v in load_checkpoint(tmp_path / "cl").model_state.items():
        torch.testing.assert_close(
            v, load_checkpoint(tmp_path / "ref").model_state[k], rtol=1e-3, atol=1e-4
        )
    assert more.step == also.step == 12
    more.evaluate()  # the channels-last weights, evaluated on contiguous batches
    assert ref.step == 8


def test_training_batches_arrive_channels_last(tmp_path):
    layouts: list[bool] = []

    class Hook(Callback):
        def on_fit_start(self, trainer) -> None:
            net = trainer.network
            net.register_forward_pre_hook(
                lambda m, args: layouts.append(
                    args[0].is_contiguous(memory_format=torch.channels_last)
                    and not args[0].is_contiguous()
                )
            )

    data = _segmentation(8)
    SupervisedTrainer(
        unet(2), data, out_dir=str(tmp_path / "r"), batch_size=4, epochs=1, channels_last=True,
        callbacks=[Hook()], **QUIET,
    ).fit()  # fmt: skip
    assert layouts == [True, True]


def test_diffusion_trainer_with_channels_last_and_ema(tmp_path):
    torch.manual_seed(0)
    net = UNet(
        2, in_channels=1, out_channels=1, channels=(8, 16), num_res_blocks=1, num_groups=4,
        time_embedding=True,
    )  # fmt: skip
    x = torch.randn(8, 1, 8, 8)
    tr = DiffusionTrainer(
        Diffusion(net, timesteps=50, sample_steps=4),
        x,
        out_dir=str(tmp_path / "d"),
        batch_size=4,
        epochs=1,
        ema_decay=0.9,
        channels_last=True,
        **QUIET,
    )
    tr.fit()
    ema_weights = [p for p in tr.ema.parameters() if p.dim() == 4]  # the EMA copies the layout
    assert ema_weights and all(
        p.is_contiguous(memory_format=torch.channels_last) for p in ema_weights
    )
    assert load_checkpoint(tmp_path / "d").ema_state is not None
    assert tr.sample(2).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    "choice, during, device",
    [
        (None, False, "cpu"),  # None: on only for CUDA
        (True, True, "cpu"),
        (False, False, "cpu"),
        pytest.param(None, True, "cuda", marks=pytest.mark.gpu),
    ],
)
def test_cudnn_benchmark_is_set_for_the_run_and_given_back(tmp_path, choice, during, device):
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = not during  # the caller's setting, restored afterwards
        _, seen = _fit(tmp_path, "r", cudnn_benchmark=choice, epochs=1, device=device)
        assert seen.benchmark == [during] * 4
        assert torch.backends.cudnn.benchmark is (not during)
    finally:
        torch.backends.cudnn.benchmark = before


def test_cudnn_benchmark_is_given_back_after_a_failing_run(tmp_path):
    class Boom(Callback):
        def on_step_end(self, trainer, loss: float) -> None:
            raise RuntimeError("boom")

    data = _segmentation(8)
    before = torch.backends.cudnn.benchmark
    with pytest.raises(RuntimeError, match="boom"):
        SupervisedTrainer(
            unet(2), data, out_dir=str(tmp_path / "r"), epochs=1, cudnn_benchmark=not before,
            callbacks=[Boom()], **QUIET,
        ).fit()  # fmt: skip
    assert torch.backends.cudnn.benchmark is before


@pytest.mark.parametrize("key, value", [("channels_last", "yes"), ("cudnn_benchmark", 2)])
def test_bad_values_name_the_option(tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        SupervisedTrainer(unet(2), _segmentation(8), out_dir=str(tmp_path / "r"), **{key: value})
    assert not (tmp_path / "r").exists()


def test_run_file_and_cli_set_the_options(tmp_path):
    from ndunet.app.cli import main

    (tmp_path / "tiny.toml").write_text(TINY)
    out = tmp_path / "run"
    args = ["train", str(tmp_path / "tiny.toml"), "--out", str(out), "--quiet"]
    sets = ["--set", "trainer.channels_last=true", "--set", "trainer.cudnn_benchmark=false"]
    assert main(args + sets + ["--set", "trainer.max_steps=2"]) == 0
    saved = json.loads((out / "config.json").read_text())
    text = json.dumps(saved)
    assert '"channels_last": true' in text and '"cudnn_benchmark": false' in text


@pytest.mark.gpu
def test_channels_last_bf16_on_cuda_matches_contiguous(tmp_path):
    data = _segmentation()
    runs = []
    for name, cl in (("a", False), ("b", True)):  # SGD: AdamW makes bf16 noise in tiny grads ~lr
        tr = SupervisedTrainer(
            unet(2), data, out_dir=str(tmp_path / name), batch_size=4, epochs=1, amp="bf16",
            channels_last=cl, device="cuda", optimizer="sgd", lr=0.05, **QUIET,
        )  # fmt: skip
        tr.fit()
        runs.append(load_checkpoint(tmp_path / name).model_state)
    for k, v in runs[0].items():
        torch.testing.assert_close(runs[1][k], v, rtol=0.05, atol=0.01, msg=k)

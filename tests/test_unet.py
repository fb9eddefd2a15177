"""UNet: shapes for every spatial_dims, option coverage, gradients, determinism, configs,
checkpoints, symmetry oracles (translation equivariance, an (N-1)-D model embedded in N-D),
overfitting, and bad input."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from ndunet.models.unet import UNet, UNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = {"channels": (4, 8), "num_res_blocks": 1}

# Odd, unequal sizes per spatial_dims (tiny where the N-D convolution is costly).
SHAPES = {
    1: (2, 3, 13),
    2: (2, 3, 9, 14),
    3: (1, 2, 5, 7, 6),
    4: (1, 2, 5, 4, 3, 6),
    5: (1, 1, 3, 4, 2, 3, 5),
}


def _params_with_grad(model: nn.Module, out: torch.Tensor) -> list[str]:
    """Names of parameters that got no (or an all-zero) gradient from ``out``."""
    model.zero_grad()
    (out.square().mean() + out.mean()).backward()
    return [
        n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)
    ]


@pytest.mark.parametrize("time_embedding", [False, True])
def test_shapes(spatial_dims: int, time_embedding: bool) -> None:
    shape = SHAPES[spatial_dims]
    model = UNet(spatial_dims, shape[1], 5, channels=(4, 8, 8), num_res_blocks=1,
                 attention_levels=(False, True, False), time_embedding=time_embedding)  # fmt: skip
    t = torch.arange(shape[0]) * 100 if time_embedding else None
    out = model(torch.randn(shape), t)
    assert out.shape == (shape[0], 5, *shape[2:])
    assert torch.isfinite(out).all()
    assert model.spatial_dims == spatial_dims and model.in_channels == shape[1]


@pytest.mark.slow
def test_shapes_5d() -> None:
    shape = SHAPES[5]
    model = UNet(5, 1, 2, **TINY, attention_levels=(False, True), time_embedding=True)
    out = model(torch.randn(shape), torch.tensor([3]))
    assert out.shape == (1, 2, *shape[2:])
    assert not _params_with_grad(model, out)


def _pair_gain(
    names: list[str], row: dict[str, int], name: str, v: int, uncovered: set[tuple]
) -> int:
    """How many uncovered pairs choosing ``name = v`` covers, now or later in this row."""
    i = names.index(name)
    now = sum(
        ((a, row[a], name, v) if names.index(a) < i else (name, v, a, row[a])) in uncovered
        for a in row
    )
    later = sum(1 for p in uncovered if p[0] == name and p[1] == v and p[2] not in row)
    return now + later


def _pairwise(factors: dict[str, list]) -> list[dict]:
    """Greedy all-pairs design: every value pair of every two factors appears in some row."""
    names = list(factors)
    uncovered = {
        (a, va, b, vb)
        for a, b in itertools.combinations(names, 2)
        for va in range(len(factors[a]))
        for vb in range(len(factors[b]))
    }
    rows = []
    while uncovered:
        row: dict[str, int] = {}
        for name in names:
            row[name] = max(
                range(len(factors[name])),
                key=lambda v, name=name: _pair_gain(names, row, name, v, uncovered),
            )
        covered = {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}
        if not covered & uncovered:  # the greedy choice always covers one; guard the loop
            raise RuntimeError("pairwise generator stalled")
        uncovered -= covered
        rows.append({n: factors[n][i] for n, i in row.items()})
    return rows


FACTORS = {
    "spatial_dims": [1, 2, 3, 4],
    "block": ["residual", "plain"],
    "norm": ["group", "batch", "instance", "layer", "none"],
    "activation": ["silu", "relu", "gelu", "leaky_relu", "mish"],
    "downsample": ["conv", "max", "avg"],
    "upsample": ["transpose", "nearest", "linear"],
    "attention": ["none", "self", "cbam"],
    "attention_gates": [False, True],
    "skip_connections": ["block", "level"],
    "conditioning": ["none", "time", "class", "both"],
    "pos_embedding": [None, "sinusoidal"],
}
PAIRWISE = _pairwise(FACTORS)


def test_pairwise_design_covers_all_pairs() -> None:
    for a, b in itertools.combinations(FACTORS, 2):
        seen = {(repr(r[a]), repr(r[b])) for r in PAIRWISE}
        assert len(seen) == len(FACTORS[a]) * len(FACTORS[b]), (a, b)


@pytest.mark.parametrize("row", PAIRWISE, ids=lambda r: "-".join(str(v) for v in r.values()))
def test_option_pairs(row: dict) -> None:
    sd = row["spatial_dims"]
    shape = {1: (2, 2, 11), 2: (2, 2, 7, 6), 3: (2, 2, 5, 4, 3), 4: (2, 2, 3, 2, 4, 3)}[sd]
    cond = row["conditioning"]
    model = UNet(
        sd, 2, 3, channels=(8, 16), num_res_blocks=(1, 2),
        attention_levels=(False, row["attention"]), time_embedding=cond in ("time", "both"),
        num_classes=4 if cond in ("class", "both") else None, block=row["block"],
        norm=row["norm"], activation=row["activation"], downsample=row["downsample"],
        upsample=row["upsample"], attention_gates=row["attention_gates"],
        skip_connections=row["skip_connections"], pos_embedding=row["pos_embedding"],
        dropout=0.1,
    )  # fmt: skip
    t = torch.tensor([5, 900]) if model.time_embedding else None
    y = torch.tensor([1, 4]) if model.num_classes else None  # 4 = the null class
    out = model(torch.randn(shape), t, y)
    assert out.shape == (2, 3, *shape[2:])
    missing = _params_with_grad(model, out)
    # A relu/leaky gate can leave a 1-unit CBAM bottleneck unit dead at init; nothing else may miss.
    assert not [n for n in missing if ".attn.mlp." not in n], missing
    assert UNetConfig.from_dict(json.loads(json.dumps(model.config.to_dict()))) == model.config


@pytest.mark.parametrize("skip_connections", ["block", "level"])
def test_gradients_reach_every_parameter(spatial_dims: int, skip_connections: str) -> None:
    shape = SHAPES[spatial_dims]
    model = UNet(
        spatial_dims, shape[1], 2, channels=(8, 8, 16), num_res_blocks=(1, 2, 1),
        attention_levels=(False, "self", True), time_embedding=True, num_classes=3,
        attention_gates=True, skip_connections=skip_connections,
    )  # fmt: skip
    out = model(
        torch.randn(shape), torch.full((shape[0],), 10), torch.zeros(shape[0], dtype=torch.long)
    )
    assert not _params_with_grad(model, out)


def test_seeded_determinism() -> None:
    def run() -> torch.Tensor:
        torch.manual_seed(123)
        model = UNet(2, 3, 3, channels=(8, 16), time_embedding=True, dropout=0.2,
                     attention_levels=(False, True))  # fmt: skip
        x = torch.randn(2, 3, 10, 9)
        return model.train()(x, torch.tensor([1, 2]))  # dropout active: RNG matters too

    a, b = run(), run()
    assert torch.equal(a, b)


def test_config_json_round_trip() -> None:
    cfg = UNetConfig(3, 2, 1, channels=(8, 16, 8), num_res_blocks=(1, 2, 3),
                     attention_levels=(False, "cbam", True), time_embedding=True, num_classes=7,
                     norm="instance", activation="gelu", downsample="avg", upsample="transpose")  # fmt: skip
    text = json.dumps(cfg.to_dict())
    again = UNetConfig.from_dict(json.loads(text))
    assert again == cfg
    assert UNet.from_config(again).config == cfg
    # Registered classes/instances are stored by name, configured ones by name and arguments
    # (they rebuild from JSON alone); anything else is recorded as custom and must be passed again.
    assert UNetConfig(2, 1, 1, activation=nn.SiLU).to_dict()["activation"] == "silu"
    assert UNetConfig(2, 1, 1, activation=nn.GELU()).to_dict()["activation"] == "gelu"
    leaky = UNetConfig(2, 1, 1, activation=nn.LeakyReLU(0.3)).to_dict()
    assert leaky["activation"] == {"name": "leaky_relu", "negative_slope": 0.3}
    act = UNet.from_config(json.loads(json.dumps(leaky))).down[0].units[0].block.act1
    assert isinstance(act, nn.LeakyReLU) and act.negative_slope == 0.3
    custom = UNetConfig(2, 1, 1, norm=nn.BatchNorm2d).to_dict()
    assert "custom" in custom["norm"]
    with pytest.raises(ValueError, match=r"norm=.*custom norm"):
        UNetConfig.from_dict(custom)
    with pytest.raises(ValueError, match="unknown UNetConfig option"):
        UNetConfig.from_dict({**cfg.to_dict(), "chanels": [1]})


def test_save_and_from_pretrained_reproduce_outputs(tmp_path) -> None:
    model = UNet(2, 1, 1, channels=(8, 16), time_embedding=True, num_classes=2, norm="batch",
                 attention_levels=(False, True))  # fmt: skip
    x = torch.randn(3, 1, 8, 6)
    model.train()(x, torch.tensor([1, 2, 3]))  # move BatchNorm running stats off their init
    model.eval()
    t, y = torch.tensor([4, 5, 6]), torch.tensor([0, 1, 2])
    ref = model(x, t, y)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "manifest.json",
        "model.safetensors",
    ]
    loaded = UNet.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(x, t, y), ref)
    assert loaded.config == model.config


def test_custom_in_and_out_layers(tmp_path) -> None:
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    stem = nn.Conv2d(3, 8, 5, padding=2)
    model = UNet(2, 3, 5, channels=(8, 16), in_layer=stem, out_layer=head).eval()
    x = torch.randn(2, 3, 9, 12)
    out = model(x)
    assert out.shape == (2, 5)  # a pooled classification head on the U-Net
    assert model.stem is stem and model.config.custom_out_layer
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="in_layer"):
        UNet.from_pretrained(tmp_path)
    fresh_stem = nn.Conv2d(3, 8, 5, padding=2)
    fresh_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    loaded = UNet.from_pretrained(tmp_path, in_layer=fresh_stem, out_layer=fresh_head).eval()
    assert torch.equal(loaded(x), out)


def test_translation_equivariance(spatial_dims: int) -> None:
    """With circular padding and sizes divisible by the downsampling factor, shifting the input
    by multiples of that factor (a different amount per axis) shifts the output identically."""
    # Two levels (factor 2); shifts differ per axis and are non-zero modulo each size.
    sizes = {1: (10,), 2: (6, 8), 3: (4, 6, 8), 4: (4, 6, 8, 4)}[spatial_dims]
    shifts = {1: (4,), 2: (2, 4), 3: (2, 4, 6), 4: (2, 4, 6, 2)}[spatial_dims]
    model = UNet(
        spatial_dims, 2, 3, channels=(4, 8), num_res_blocks=1, padding_mode="circular",
        attention_levels=(False, True), time_embedding=True, attention_gates=True,
        downsample="conv", upsample="nearest",
    ).eval()  # fmt: skip
    x = torch.randn(1, 2, *sizes)
    dims = tuple(range(2, 2 + spatial_dims))
    t = torch.tensor([7])
    out = model(x, t)
    out_shifted = model(torch.roll(x, shifts, dims), t)
    torch.testing.assert_close(out_shifted, torch.roll(out, shifts, dims), rtol=1e-4, atol=1e-5)
    # The check has teeth: an output shifted along the wrong axes would differ.
    assert not torch.allclose(out_shifted, out, atol=1e-3)


def _embed_weights(low: UNet, high: UNet) -> None:
    """Copy a (N-1)-D model into an N-D one whose kernels act only along the first N-1 axes:
    convolution kernels get the low weights at the centre tap of the new last axis; the
    2-wide transposed convolution gets them at both taps (a constant stays constant)."""
    state = low.state_dict()
    transposed = {n + ".weight" for n, m in high.named_modules() if "Transpose" in type(m).__name__}
    with torch.no_grad():
        for name, p in high.state_dict().items():
            w = state[name]
            if p.shape == w.shape:
                p.copy_(w)
            elif name in transposed:
                p.copy_(w.unsqueeze(-1).expand_as(p))
            else:
                p.zero_()
                p[..., p.shape[-1] // 2] = w


@pytest.mark.parametrize("low_dims", [1, 2, 3])
@pytest.mark.parametrize("variant", ["conv-nearest", "max-transpose"])
def test_lower_dim_model_embedded_in_higher_dim(low_dims: int, variant: str) -> None:
    """An N-D U-Net whose kernels ignore the last axis, fed data constant along it, must
    reproduce the (N-1)-D U-Net exactly: catches axis mix-ups and N-D-only bugs."""
    down, up = variant.split("-")
    kwargs = dict(
        channels=(4, 8, 8), num_res_blocks=1, attention_levels=(False, "cbam", "self"),
        time_embedding=True, num_classes=3, attention_gates=True, downsample=down, upsample=up,
    )  # fmt: skip
    low = UNet(low_dims, 2, 3, **kwargs).eval()
    high = UNet(low_dims + 1, 2, 3, **kwargs).eval()
    _embed_weights(low, high)
    sizes = {1: (13,), 2: (9, 6), 3: (5, 7, 4)}[low_dims]
    x = torch.randn(2, 2, *sizes)
    t, y = torch.tensor([3, 500]), torch.tensor([0, 3])
    ref = low(x, t, y)
    out = high(x.unsqueeze(-1).expand(*x.shape, 4).contiguous(), t, y)
    for k in range(4):
        torch.testing.assert_close(out[..., k], ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3, 4])
def test_overfits_a_tiny_batch(spatial_dims: int) -> None:
    sizes = {1: (24,), 2: (8, 8), 3: (4, 6, 4), 4: (4, 4, 2, 4)}[spatial_dims]
    model = UNet(spatial_dims, 1, 1, channels=(8, 16), num_res_blocks=1, time_embedding=True)
    x = torch.randn(2, 1, *sizes)
    target = torch.randn_like(x)
    t = torch.tensor([10, 20])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = loss = None
    for _ in range(200):
        loss = nn.functional.mse_loss(model(x, t), target)
        first = float(loss.detach()) if first is None else first
        if float(loss.detach()) < first / 10:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first / 10, (first, float(loss.detach()))


def test_any_channel_order_and_gradient_checkpointing() -> None:
    # Widths need not ascend; checkpointing gives the same values and gradients.
    torch.manual_seed(1)
    model = UNet(2, 1, 1, channels=(16, 8, 12), attention_levels=(False, False, True),
                 time_embedding=True)  # fmt: skip
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    ref = model(x, t)
    ref_grads = torch.autograd.grad(ref.sum(), list(model.parameters()))
    model.gradient_checkpointing = True
    out = model(x, t)
    grads = torch.autograd.grad(out.sum(), list(model.parameters()))
    torch.testing.assert_close(out, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
def cond_model() -> UNet:
    return UNet(2, 3, 3, channels=(4, 8, 8), time_embedding=True, num_classes=5)


@pytest.mark.parametrize(
    ("x_shape", "t", "y", "match"),
    [
        ((2, 4, 8, 8), [1, 2], None, "in_channels=3"),
        ((2, 3, 8), [1, 2], None, "spatial_dims=2"),
        ((2, 3, 8, 8, 8), [1, 2], None, "spatial_dims=2"),
        ((2, 3, 8, 2), [1, 2], None, "too small"),
        ((2, 3, 8, 8), None, None, "t is required"),
        ((2, 3, 8, 8), [1, 2, 3], None, r"t must have shape \(2,\)"),
        ((2, 3, 8, 8), [1, 2], [0, 6], r"expected \[0, 5\]"),
        ((2, 3, 8, 8), [1, 2], [-1, 0], r"expected \[0, 5\]"),
        ((2, 3, 8, 8), [1, 2], [0], r"shape \(2,\)"),
    ],
)
def test_bad_forward_input(cond_model: UNet, x_shape, t, y, match: str) -> None:
    t = None if t is None else torch.tensor(t)
    y = None if y is None else torch.tensor(y)
    with pytest.raises(ValueError, match=match):
        cond_model(torch.randn(x_shape), t, y)


def test_bad_conditioning_for_unconditional_model() -> None:
    model = UNet(1, 1, 1, channels=(4, 8))
    with pytest.raises(ValueError, match="time_embedding=False"):
        model(torch.randn(1, 1, 8), torch.tensor([1]))
    with pytest.raises(ValueError, match="num_classes=None"):
        model(torch.randn(1, 1, 8), y=torch.tensor([1]))
    with pytest.raises(TypeError, match="floating"):
        model(torch.ones(1, 1, 8, dtype=torch.long))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attention_levels": (True, False)}, ValueError, "attention_levels"),
        ({"num_res_blocks": (1, 2)}, ValueError, "num_res_blocks"),
        ({"channels": (8,)}, ValueError, "channels"),
        ({"channels": (8, 0)}, ValueError, "channels"),
        ({"kernel_size": 4}, ValueError, "kernel_size"),
        ({"norm": "groupp"}, ValueError, "did you mean 'group'"),
        ({"activation": "rleu"}, ValueError, "activation"),
        ({"downsample": "stride"}, ValueError, "downsample"),
        ({"upsample": "bicubic"}, ValueError, "upsample"),
        ({"attention_levels": (False, "transformer", False)}, ValueError, "attention_levels"),
        ({"num_classes": 0}, ValueError, "num_classes"),
        ({"dropout": 1.5}, ValueError, "dropout"),
        ({"chanels": (4, 8)}, TypeError, "did you mean 'channels'"),
        ({"custom_in_layer": True}, ValueError, "in_layer"),
    ],
)
def test_bad_construction(kwargs: dict, error: type, match: str) -> None:
    base = {"channels": (4, 8, 8)}
    with pytest.raises(error, match=match):
        UNet(2, 1, 1, **{**base, **kwargs})


def test_from_pretrained_reads_a_trainer_checkpoint(tmp_path) -> None:
    from ndunet import Diffusion
    from ndunet.training import DiffusionTrainer

    model = UNet(2, 1, 1, channels=(8, 16), time_embedding=True, num_groups=4)
    trainer = DiffusionTrainer(
        Diffusion(model, timesteps=20),
        torch.randn(8, 1, 8, 8),
        out_dir=tmp_path / "run",
        epochs=1,
        batch_size=4,
        progress=False,
        plot=False,
    )
    trainer.fit()
    loaded = UNet.from_pretrained(tmp_path / "run" / "checkpoints" / "last")
    for key, value in model.state_dict().items():  # trained on the default device (CUDA too)
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key

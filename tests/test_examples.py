"""A seconds-long run of every script in examples/ (their --tiny mode), so they never rot."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


pytestmark = pytest.mark.usefixtures("one_thread")


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {
        "classify_digits",
        "generate_digits_faces",
        "segment_blobs_3d",
        "segment_blobs_4d",
        "denoise_signals_1d",
        "conditional_digits",
        "classify_digits_resnet_unet",
        "unet_4d_attention",
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_classify_digits(tmp_path):
    result = load("classify_digits").main(tiny=True, out=str(tmp_path / "run"))
    assert 0.0 <= result["accuracy"] <= 1.0 and math.isfinite(result["loss"])
    assert (tmp_path / "run" / "checkpoints" / "last").exists()


def test_classify_digits_resnet_unet(tmp_path):
    results = load("classify_digits_resnet_unet").main(tiny=True, out=str(tmp_path))
    assert set(results) == {"unet_pooled", "resnet18"}
    for name, r in results.items():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["parameters"] > 0
        assert (tmp_path / name / "checkpoints" / "last").exists()


def test_unet_4d_attention(tmp_path, capsys):
    result = load("unet_4d_attention").main(tiny=True, out=str(tmp_path / "run"))
    assert 0.0 <= result["dice"] <= 1.0
    printed = capsys.readouterr().out
    for kind in ("ChannelAttention", "SpatialAttention", "SelfAttention", "CBAM",
                 "AttentionGate", "CrossAttention", "Total params"):  # fmt: skip
        assert kind in printed


@pytest.mark.parametrize("name", ["segment_blobs_3d", "segment_blobs_4d"])
def test_segment_blobs(tmp_path, name):
    result = load(name).main(tiny=True, out=str(tmp_path / "run"))
    assert 0.0 <= result["dice"] <= 1.0
    assert (tmp_path / "run" / "log.csv").exists()


def test_generate_digits_faces(tmp_path):
    results = load("generate_digits_faces").main(tiny=True, out=str(tmp_path))
    for name in ("digits", "faces"):
        x = results[name]
        assert x.shape[1:] == (1, 8, 8) and torch.isfinite(x).all()
        assert (tmp_path / f"{name}_samples.png").stat().st_size > 0
        assert (tmp_path / f"{name}_real.png").exists()


def test_conditional_digits(tmp_path):
    result = load("conditional_digits").main(tiny=True, out=str(tmp_path))
    assert result["samples"].shape == (20, 1, 8, 8)
    assert result["labels"].tolist() == [d for d in range(10) for _ in range(2)]  # row per digit
    assert 0.0 <= result["label_agreement"] <= 1.0
    assert (tmp_path / "guided_digits.png").stat().st_size > 0


def test_denoise_signals_1d(tmp_path):
    module = load("denoise_signals_1d")
    # the example's check, on signals whose frequency is known: pure sines of k periods
    t = torch.arange(64) / 64
    sines = torch.stack([torch.sin(2 * math.pi * k * t + 0.3 * k) for k in (1, 2, 5, 9)])
    assert module.dominant_frequency(sines.unsqueeze(1)).tolist() == [1, 2, 5, 9]
    data = module.waveforms(32)
    assert data.shape == (32, 1, 64) and data.abs().max() <= 1
    assert set(module.dominant_frequency(data).tolist()) <= set(module.FREQUENCIES)
    result = module.main(tiny=True, out=str(tmp_path))
    assert result["samples"].shape == (8, 1, 32)
    assert 0.0 <= result["in_trained_frequencies"] <= 1.0
    for name in ("generated_signals", "training_signals", "denoising_signals"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0

"""UNet under torch.compile, torch.export, channels_last and autocast."""

from __future__ import annotations

import pytest
import torch

from ndunet.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(spatial_dims: int = 2, **kw) -> UNet:
    kwargs = dict(
        channels=(8, 16), num_res_blocks=1, attention_levels=(False, True), time_embedding=True,
        num_classes=3, attention_gates=True,
    )  # fmt: skip
    return UNet(spatial_dims, 2, 2, **{**kwargs, **kw}).eval()


INPUTS = (torch.tensor([1, 500]), torch.tensor([0, 3]))  # t, y (3 = the null class)


@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
def test_compile_fullgraph_without_graph_breaks(upsample: str) -> None:
    # fullgraph=True raises on any graph break; the eager backend checks tracing only (fast).
    model = _model(upsample=upsample)
    x = torch.randn(2, 2, 9, 10)
    ref = model(x, *INPUTS)
    out = torch.compile(model, fullgraph=True, backend="eager")(x, *INPUTS)
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("mode,upsample", [("auto", "transpose"), ("all", "transpose"),
                                           ("auto", "linear")])  # fmt: skip
def test_compile_fullgraph_4d_anisotropic(mode: str, upsample: str, monkeypatch) -> None:
    """A 4-D U-Net with 1x1 skip convs, (3, 3, 1, 1) kernels, (2, 2, 1, 1) strides, max-pool
    downsampling and transposed or linear upsampling: every N-D path (merged axes, the fold,
    pooling, resizing) traces without a graph break, whichever merges run."""
    monkeypatch.setattr("ndunet.functional.merged.mode", mode)
    model = UNet(4, 1, 2, channels=(4, 8), num_res_blocks=1, strides=((2, 2, 1, 1),),
                 kernel_sizes=((3, 3, 1, 1), (3, 3, 3, 1)), downsample="max",
                 upsample=upsample, num_groups=2).eval()  # fmt: skip
    x = torch.randn(1, 1, 4, 4, 3, 2)
    ref = model(x)
    out = torch.compile(model, fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(out, ref)


@pytest.mark.slow
def test_compile_inductor_matches_eager() -> None:
    # Kept small (no gates, no classes): inductor's code generation dominates the run time.
    model = _model(attention_gates=False, num_classes=None)
    x, t = torch.randn(2, 2, 8, 8), INPUTS[0]
    out = torch.compile(model, fullgraph=True)(x, t)
    torch.testing.assert_close(out, model(x, t), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_torch_export_reproduces_eager(spatial_dims: int) -> None:
    model = _model(spatial_dims)
    x = torch.randn((2, 2, 9, 6, 5)[: spatial_dims + 2])
    program = torch.export.export(model, (x, *INPUTS))
    torch.testing.assert_close(program.module()(x, *INPUTS), model(x, *INPUTS))
    # A different input of the same shape gives the new answer, not a baked-in constant.
    x2 = torch.randn_like(x)
    torch.testing.assert_close(program.module()(x2, *INPUTS), model(x2, *INPUTS))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_channels_last(spatial_dims: int) -> None:
    model = _model(spatial_dims)
    x = torch.randn((2, 2, 9, 6, 5)[: spatial_dims + 2])
    ref = model(x, *INPUTS)
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    model = model.to(memory_format=fmt)
    out = model(x.contiguous(memory_format=fmt), *INPUTS)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_channels_last_save_pretrained(tmp_path) -> None:
    model = _model().to(memory_format=torch.channels_last)
    model.save_pretrained(tmp_path)  # non-contiguous weights are written contiguously
    x = torch.randn(2, 2, 8, 8)
    torch.testing.assert_close(UNet.from_pretrained(tmp_path).eval()(x, *INPUTS), model(x, *INPUTS))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_cpu(dtype: torch.dtype) -> None:
    model = _model()
    x = torch.randn(2, 2, 8, 8)
    ref = model(x, *INPUTS)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x, *INPUTS)
    assert out.dtype == dtype
    # bf16 has an 8-bit mantissa: close to fp32 relative to the output's scale, not equal.
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 5e-2, float(err)
    out.float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bf16_weights_without_autocast() -> None:
    model = _model().to(torch.bfloat16)
    out = model(torch.randn(2, 2, 8, 8, dtype=torch.bfloat16), *INPUTS)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()

"""torch.compile at inference (issue 12): ``compile`` of Diffusion.sample / inpaint,
predict_volume, ``ndunet sample|predict --compile`` and ndunet.inference.with_compile.

What is checked: the values ``compile`` takes and the errors naming it; the wrapper's bookkeeping
with a recording stand-in for torch.compile (static shapes, the last batch of windows padded to
``sw_batch_size`` and cut back, a new CUDA-graph iteration per call and outputs copied out of
the graph's memory, asked for with a CUDA device); inductor's compiled network giving eager's
samples and predictions (a multistep sampler, a ragged last batch of windows compiled once); the
CLI flags reaching the network. The gpu-marked tests replay CUDA graphs for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from _runs import SEG_3D, TINY
from ndunet.app.cli import main
from ndunet.diffusion import Diffusion
from ndunet.inference import (
    COMPILE_MODES,
    check_compile,
    predict_volume,
    sliding_window_inference,
    with_compile,
)
from ndunet.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


def seg_unet(spatial_dims: int = 2) -> UNet:
    return UNet(spatial_dims, 2, 3, channels=(4, 8), num_res_blocks=1, num_groups=2).eval()


def diffusion(num_classes: int | None = 3) -> Diffusion:
    net = UNet(
        2, 1, 1, channels=(4, 8), num_res_blocks=1, num_groups=2, time_embedding=True,
        num_classes=num_classes,
    )  # fmt: skip
    return Diffusion(net, timesteps=100, sampler="dpm++2m", sample_steps=6)


# ---- the values of compile --------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, mode",
    [(None, None), (False, None), ("none", None), (True, "default")]
    + [(m, m) for m in COMPILE_MODES],
)
def test_check_compile_values(value, mode):
    assert check_compile(value) == mode


@pytest.mark.parametrize("bad", ["fast", "reduce_overhead", 1, 0, "", "None"])
def test_bad_compile_values_are_refused_naming_compile(bad):
    with pytest.raises(ValueError, match=r"compile=.* is not valid; expected True, False, None"):
        check_compile(bad)


def test_reduce_overhead_typo_gets_a_hint():
    with pytest.raises(ValueError, match="did you mean 'reduce-overhead'"):
        check_compile("reduce_overhead")


def test_no_compile_returns_the_network_itself():
    net = seg_unet()
    for value in (None, False, "none"):
        assert with_compile(net, value) is net


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_bad_batch_size_is_refused(bad):
    with pytest.raises(ValueError, match="batch_size="):
        with_compile(seg_unet(), True, batch_size=bad)


# ---- the wrapper's bookkeeping, with a recording torch.compile --------------------------------
class Recorder:
    """Stands in for torch.compile: records its options and the shapes each call receives;
    ``dynamo``: the calls go through torch.compile's "eager" backend (traced, not inductor)."""

    real = staticmethod(torch.compile)

    def __init__(self, dynamo: bool = False) -> None:
        self.dynamo = dynamo
        self.options: list[dict] = []
        self.calls: list[dict] = []
        self.outputs: list[Tensor] = []

    def compile(self, fn, **options):
        self.options.append(options)
        inner = self.real(fn, backend="eager", dynamic=False) if self.dynamo else fn

        def compiled(x, *args, **kwargs):
            self.calls.append(
                {"x": tuple(x.shape), "args": _shapes(args), "kwargs": _shapes(kwargs)}
            )
            out = inner(x, *args, **kwargs)
            self.outputs.append(out)
            return out

        return compiled


def _shapes(values):
    one = lambda v: tuple(v.shape) if isinstance(v, Tensor) else v  # noqa: E731
    return {k: one(v) for k, v in values.items()} if isinstance(values, dict) else [one(v) for v in values]  # fmt: skip


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(torch, "compile", rec.compile)
    return rec


@pytest.fixture
def graph_steps(monkeypatch) -> list[int]:
    marks: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    return marks


def per_sample(x: Tensor, t: Tensor, y: Tensor | None = None, table: Tensor | None = None):
    """A network that treats samples independently, with batched and unbatched arguments."""
    out = x * t.view(-1, 1, 1) + (0 if y is None else y.view(-1, 1, 1))
    return out + (0 if table is None else table.sum())


def test_compile_asks_for_static_shapes_in_the_mode(recorder):
    with_compile(per_sample, "max-autotune-no-cudagraphs")
    with_compile(per_sample, True)
    assert recorder.options == [
        {"mode": "max-autotune-no-cudagraphs", "dynamic": False},
        {"mode": "default", "dynamic": False},
    ]


def test_smaller_batches_are_padded_to_batch_size_and_cut_back(recorder):
    fn = with_compile(per_sample, "default", batch_size=4)
    table = torch.arange(5.0)  # leading size 5 != 3: not a batched argument, left alone
    x, t, y = torch.randn(3, 2, 5), torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 1.0, 2.0])
    out = fn(x, t, y=y, table=table)
    assert recorder.calls[-1] == {"x": (4, 2, 5), "args": [(4,)], "kwargs": {"y": (4,), "table": (5,)}}  # fmt: skip
    torch.testing.assert_close(out, per_sample(x, t, y, table), rtol=0, atol=0)
    # the padding repeats the last sample (finite, like the real ones)
    padded = recorder.outputs[-1]
    torch.testing.assert_close(padded[3], padded[2], rtol=0, atol=0)
    # a full batch runs as it is; a larger one is not cut
    fn(torch.randn(4, 2, 5), torch.ones(4))
    fn(torch.randn(6, 2, 5), torch.ones(6))
    assert [c["x"][0] for c in recorder.calls] == [4, 4, 6]


def test_without_batch_size_every_call_runs_as_it_is(recorder):
    fn = with_compile(per_sample, "default")
    fn(torch.randn(3, 2, 5), torch.ones(3))
    fn(torch.randn(2, 2, 5), torch.ones(2))
    assert [c["x"][0] for c in recorder.calls] == [3, 2]


@pytest.mark.parametrize("mode", ["reduce-overhead", "max-autotune"])
def test_cuda_graph_modes_on_cuda_mark_each_call_and_copy_the_output(recorder, graph_steps, mode):
    fn = with_compile(per_sample, mode, device=torch.device("cuda", 0), batch_size=2)
    outs = [fn(torch.randn(2, 1, 3), torch.ones(2)) for _ in range(3)]
    assert len(graph_steps) == 3  # one graph iteration per call
    for out, inner in zip(outs, recorder.outputs):  # copied out of the graph's memory
        assert out.untyped_storage().data_ptr() != inner.untyped_storage().data_ptr()
        torch.testing.assert_close(out, inner, rtol=0, atol=0)
    fn(torch.randn(1, 1, 3), torch.ones(1))  # padded, then the copy of the one real sample
    assert len(graph_steps) == 4 and recorder.calls[-1]["x"] == (2, 1, 3)


@pytest.mark.parametrize(
    "mode, device", [("default", "cuda"), ("reduce-overhead", "cpu"), ("max-autotune", "cpu")]
)
def test_no_graph_bookkeeping_without_cuda_graphs(recorder, graph_steps, mode, device):
    fn = with_compile(per_sample, mode, device=device)
    out = fn(torch.randn(2, 1, 3), torch.ones(2))
    assert graph_steps == [] and out is recorder.outputs[-1]


def test_predict_volume_pads_the_last_batch_of_windows(recorder):
    net = seg_unet()
    x = torch.randn(2, 20, 12)
    want = predict_volume(net, x, (8, 8), overlap=0.5, sw_batch_size=4)
    got = predict_volume(net, x, (8, 8), overlap=0.5, sw_batch_size=4, compile=True)
    torch.testing.assert_close(got, want)  # 4 x 2 windows: ... and a ragged last batch
    assert {c["x"] for c in recorder.calls} == {(4, 2, 8, 8)}
    assert recorder.options == [{"mode": "default", "dynamic": False}]


def test_sliding_window_inference_compiles_its_predictor(recorder):
    x = torch.randn(2, 1, 13, 10)  # 2 x (3 x 2) windows in batches of 5: the last one padded
    predictor = lambda w, scale: w * scale  # noqa: E731
    want = sliding_window_inference(x, (8, 8), 5, predictor, 0.5, scale=2.0)
    got = sliding_window_inference(x, (8, 8), 5, predictor, 0.5, scale=2.0, compile="default")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert [c["x"] for c in recorder.calls] == [(5, 1, 8, 8)] * 3
    with pytest.raises(ValueError, match="compile='fast' is not valid"):
        sliding_window_inference(x, (8, 8), 3, predictor, compile="fast")


def test_diffusion_sample_compiles_the_network_once_per_call(recorder):
    d = diffusion()
    y = torch.tensor([0, 1, 2])
    gen = torch.Generator().manual_seed(0)
    want = d.sample(3, (1, 8, 8), y=y, generator=gen)
    gen = torch.Generator().manual_seed(0)
    got = d.sample(3, (1, 8, 8), y=y, generator=gen, compile="reduce-overhead")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert recorder.options == [{"mode": "reduce-overhead", "dynamic": False}]
    assert len(recorder.calls) == 6 and all(c["x"] == (3, 1, 8, 8) for c in recorder.calls)


def test_bad_compile_is_refused_before_sampling(recorder):
    d = diffusion()
    with pytest.raises(ValueError, match="compile='turbo' is not valid"):
        d.sample(2, (1, 8, 8), compile="turbo")
    with pytest.raises(ValueError, match="compile='turbo' is not valid"):
        d.inpaint(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), compile="turbo")
    assert recorder.options == [] and recorder.calls == []


# ---- inductor, for real (CPU) -----------------------------------------------------------------
@pytest.mark.slow
def test_inductor_samples_match_eager_with_a_multistep_sampler():
    # dpm++2m keeps the previous step's prediction: a compiled network must not change it
    torch._dynamo.reset()
    d = diffusion()
    y = torch.tensor([0, 2])
    runs = {}
    for name, compile in (("eager", None), ("compiled", "default"), ("again", "default")):
        gen = torch.Generator().manual_seed(3)
        runs[name] = d.sample(2, (1, 8, 8), y=y, generator=gen, compile=compile, guidance_scale=2.0)
    torch.testing.assert_close(runs["compiled"], runs["eager"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(runs["again"], runs["compiled"], rtol=0, atol=0)


@pytest.mark.slow
def test_inductor_predict_volume_matches_eager_with_one_graph():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    net = seg_unet(3)
    x = torch.randn(2, 12, 10, 9)
    want = predict_volume(net, x, (8, 8, 8), overlap=0.5, sw_batch_size=3)
    got = predict_volume(net, x, (8, 8, 8), overlap=0.5, sw_batch_size=3, compile=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1  # 8 windows in batches of 3: one shape


# ---- the CLI ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 3-D regression run and a diffusion run, each trained for one step."""
    folder = tmp_path_factory.mktemp("compile")
    out = {}
    for name, text, sets in (("seg", SEG_3D, ["data.task=denoising"]), ("diffusion", TINY, [])):
        (folder / f"{name}.toml").write_text(text)
        args = ["train", str(folder / f"{name}.toml"), "--out", str(folder / name), "--quiet"]
        sets = [*sets, "trainer.max_steps=1", "trainer.device=cpu"]
        assert main([*args, *(a for s in sets for a in ("--set", s))]) == 0
        out[name] = folder / name
    for i in range(2):
        np.save(folder / f"vol{i}.npy", torch.randn(1, 10, 9, 5 + i).numpy())
    out["volumes"] = folder
    return out


@pytest.fixture
def eager_compile(monkeypatch) -> Recorder:
    rec = Recorder(dynamo=True)
    monkeypatch.setattr(torch, "compile", rec.compile)
    return rec


def test_predict_compile_flag(runs, tmp_path, eager_compile):
    base = ["predict", str(runs["seg"]), str(runs["volumes"]), "--channel-axis", "0", "--quiet"]
    base += ["--device", "cpu", "--sw-batch-size", "3"]
    assert main([*base, "--out", str(tmp_path / "eager")]) == 0
    assert eager_compile.options == []
    assert main([*base, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert eager_compile.options == [{"mode": "default", "dynamic": False}]  # once, both volumes
    assert len({c["x"] for c in eager_compile.calls}) == 1  # every batch of windows padded
    for name in ("vol0.npy", "vol1.npy"):
        np.testing.assert_allclose(
            np.load(tmp_path / "compiled" / name), np.load(tmp_path / "eager" / name), atol=1e-5
        )


def test_sample_compile_flag(runs, tmp_path, eager_compile, capsys):
    base = ["sample", str(runs["diffusion"]), "--n", "2", "--device", "cpu", "--seed", "1"]
    assert main([*base, "--out", str(tmp_path / "eager.npy")]) == 0
    assert main([*base, "--out", str(tmp_path / "ro.npy"), "--compile", "reduce-overhead"]) == 0
    assert eager_compile.options == [{"mode": "reduce-overhead", "dynamic": False}]
    np.testing.assert_allclose(np.load(tmp_path / "ro.npy"), np.load(tmp_path / "eager.npy"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # argparse: one of the modes
        main([*base, "--out", str(tmp_path / "x.npy"), "--compile", "fast"])
    assert info.value.code == 2 and "--compile" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("command", ["predict", "sample"])
def test_help_names_compile(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--compile [MODE]" in out and "reduce-overhead" in out


# ---- on a GPU: CUDA graphs replayed for real ---------------------------------------------------
@pytest.mark.gpu
def test_cuda_graph_sampling_matches_eager_on_cuda():
    torch._dynamo.reset()
    d = diffusion().cuda()
    y = torch.tensor([0, 1, 2], device="cuda")
    out = {}
    for name, compile in (("eager", None), ("graphs", "reduce-overhead")):
        gen = torch.Generator("cuda").manual_seed(0)
        out[name] = d.sample(3, (1, 16, 16), y=y, generator=gen, compile=compile, steps=8)
    torch.testing.assert_close(out["graphs"], out["eager"], rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_cuda_graph_predict_volume_matches_eager_on_cuda():
    torch._dynamo.reset()
    net = seg_unet(3).cuda()
    x = torch.randn(2, 20, 18, 9)
    with torch.backends.cudnn.flags(allow_tf32=False):
        want = predict_volume(net, x, (8, 8, 8), sw_batch_size=3, device="cuda")
        got = predict_volume(
            net, x, (8, 8, 8), sw_batch_size=3, device="cuda", compile="reduce-overhead"
        )
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)

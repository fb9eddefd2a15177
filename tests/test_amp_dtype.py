"""Mixed precision keeps the activations in the autocast dtype (issue 12).

CUDA's autocast runs ``group_norm`` and ``layer_norm`` in float32 (torch's autocast op lists), so
with ``nn.GroupNorm`` every norm of a bf16 U-Net wrote float32 activations, the FiLM, SiLU and
dropout after it ran in float32 and the next conv cast back: dozens of activation-sized casts
per step. CPU autocast keeps those norms in bf16, so the CPU alone cannot show it; the
``cuda_policy`` fixture re-registers the CPU autocast kernels of those ops with CUDA's policy
(cast to float32), and a dispatch-mode recorder counts the activation-sized casts of one training
step under it. A GPU check of the same thing is ``benchmarks/profile_step.py --device cuda``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ndunet.blocks import _conditioning
from ndunet.layers.embedding import ClassEmbedding
from ndunet.layers.norm import (
    ChannelLayerNorm,
    GroupNorm,
    _GroupNormChannelsLast,
    amp_dtype,
    autocast_dtype,
    is_channels_last,
)
from ndunet.layers.norm import norm as make_norm
from ndunet.models.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")

norm_module = importlib.import_module("ndunet.layers.norm")  # (ndunet.layers.norm is the factory)

BF16 = torch.bfloat16
B = 3  # a batch size no weight shape starts with, to tell activations from parameters


# ---- a CUDA-like autocast policy on the CPU, and an op recorder --------------------------------
def _to_fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.float() if t is not None and t.dtype in (torch.float16, BF16) else t


@pytest.fixture
def cuda_policy() -> Iterator[None]:
    """CPU autocast with CUDA's float32 policy for group_norm and layer_norm (as in aten's
    autocast_mode.cpp: ``KERNEL_CUDA(group_norm, fp32)``, ``KERNEL_CUDA(layer_norm, fp32)``)."""
    lib = torch.library.Library("aten", "IMPL")
    below = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)

    def group_norm(x, groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
        with torch._C._ExcludeDispatchKeyGuard(below):
            w, b = _to_fp32(weight), _to_fp32(bias)
            return torch.ops.aten.group_norm(_to_fp32(x), groups, w, b, eps, cudnn_enabled)

    def layer_norm(x, shape, weight=None, bias=None, eps=1e-5, cudnn_enable=True):
        with torch._C._ExcludeDispatchKeyGuard(below):
            w, b = _to_fp32(weight), _to_fp32(bias)
            return torch.ops.aten.layer_norm(_to_fp32(x), shape, w, b, eps, cudnn_enable)

    lib.impl("group_norm", group_norm, "AutocastCPU")
    lib.impl("layer_norm", layer_norm, "AutocastCPU")
    try:
        yield
    finally:
        lib._destroy()


@pytest.fixture
def cuda_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the CUDA code path on the CPU too: weight and bias cast to the activation dtype."""
    monkeypatch.setattr(norm_module, "_MIXED_PARAM_DEVICES", frozenset())


class Recorder(TorchDispatchMode):
    """(op name, input tensors, output tensors, autocast on?) of every aten op dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, list[torch.Tensor], list[torch.Tensor], bool]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        outs = [a for a in tree_flatten(out)[0] if isinstance(a, torch.Tensor)]
        name = func.overloadpacket.__name__
        self.ops.append((name, ins, outs, torch.is_autocast_enabled("cpu")))
        return out


def _activation(t: torch.Tensor) -> bool:
    return t.dim() >= 3 and t.shape[0] == B and t.numel() >= 1024


def _unet(**kw) -> UNet:
    kwargs = dict(
        channels=(8, 16), num_res_blocks=1, attention_levels=(False, True), time_embedding=True
    )
    return UNet(2, 2, 2, **{**kwargs, **kw})


def _train_step(model: nn.Module, x: torch.Tensor, **inputs) -> Recorder:
    rec = Recorder()
    with rec:
        with torch.autocast(x.device.type, dtype=BF16):
            out = model(x, **inputs)
        out.float().square().mean().backward()
    return rec


def _activation_casts(rec: Recorder) -> list[str]:
    """Activation-sized copies that change dtype: aten._to_copy / copy_ between dtypes."""
    found = []
    for name, ins, outs, _ in rec.ops:
        if name not in ("_to_copy", "copy_"):
            continue
        tensors = ins + outs
        if any(_activation(t) for t in tensors) and len({t.dtype for t in tensors}) > 1:
            found.append(f"{name} {[(t.dtype, tuple(t.shape)) for t in tensors]}")
    return found


INPUTS = {"t": torch.tensor([1, 500, 999])}


def _check_step_casts(rec: Recorder) -> None:
    casts = _activation_casts(rec)
    # The stem conv's cast of the fp32 input, out.float() for the loss, and its gradient back.
    assert len(casts) == 3, "\n".join(casts)
    fp32 = [
        name
        for name, _, outs, _ in rec.ops
        if any(_activation(t) and t.dtype == torch.float32 for t in outs)
    ]
    # Only the loss (square, mean and their backward) and the two casts above are float32.
    assert set(fp32) <= {"_to_copy", "pow", "mul", "div", "expand", "mean", "sum"}, fp32
    assert not {"native_group_norm", "silu", "addcmul", "add"} & set(fp32), fp32


# ---- the tests -------------------------------------------------------------------------------
def test_the_cuda_policy_fixture_casts_norms_to_fp32(cuda_policy) -> None:
    # The simulation must reproduce what CUDA autocast does to nn.GroupNorm / F.layer_norm.
    x = torch.randn(B, 8, 4, 4, dtype=BF16)
    with torch.autocast("cpu", dtype=BF16):
        assert nn.GroupNorm(4, 8)(x).dtype == torch.float32
        assert F.layer_norm(x, (4,)).dtype == torch.float32
        assert GroupNorm(4, 8)(x).dtype == BF16
        assert ChannelLayerNorm(8)(x).dtype == BF16


@pytest.mark.parametrize("policy", ["cpu", "cuda"])
def test_unet_step_casts_activations_only_at_input_and_loss(policy: str, request) -> None:
    if policy == "cuda":
        request.getfixturevalue("cuda_policy")
        request.getfixturevalue("cuda_params")
    model = _unet(num_classes=3, attention_gates=True)
    x = torch.randn(B, 2, 16, 16)
    _check_step_casts(_train_step(model, x, y=torch.tensor([0, 1, 3]), **INPUTS))


def test_group_norm_kernel_runs_in_bf16_with_autocast_off(cuda_policy, cuda_params) -> None:
    model = _unet()
    rec = _train_step(model, torch.randn(B, 2, 16, 16), **INPUTS)
    calls = [(ins, enabled) for name, ins, _, enabled in rec.ops if name == "native_group_norm"]
    assert calls
    for ins, enabled in calls:
        assert not enabled
        assert {t.dtype for t in ins} == {BF16}  # input, weight and bias
    grads = [p.grad for m in model.modules() if isinstance(m, GroupNorm) for p in m.parameters()]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)


@pytest.mark.parametrize("path", ["cpu", "cuda"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_bf16_matches_fp32(path: str, channels_last: bool, request) -> None:
    if path == "cuda":
        request.getfixturevalue("cuda_params")
    ref = nn.GroupNorm(4, 16)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
    new = GroupNorm(4, 16)
    new.load_state_dict(ref.state_dict())
    new.channels_last_kernel = channels_last
    x = torch.randn(B, 16, 8, 8) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref = x.clone().requires_grad_()
    x_new = x.to(BF16).requires_grad_()  # bf16 activations, as a conv under autocast gives
    out_ref = ref(x_ref)
    with torch.autocast("cpu", dtype=BF16):
        out_new = new(x_new)
    assert out_new.dtype == BF16
    assert is_channels_last(out_new) == channels_last
    torch.testing.assert_close(out_new.float(), out_ref, rtol=2e-2, atol=2e-2)
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out_new.backward(g.to(BF16))
    assert x_new.grad.dtype == BF16
    torch.testing.assert_close(x_new.grad.float(), x_ref.grad, rtol=5e-2, atol=5e-2)
    for p_new, p_ref in zip(new.parameters(), ref.parameters()):
        assert p_new.grad.dtype == torch.float32  # parameter gradients arrive in fp32
        scale = p_ref.grad.abs().max()
        torch.testing.assert_close(p_new.grad / scale, p_ref.grad / scale, rtol=0, atol=2e-2)


def test_group_norm_fp32_input_under_autocast_is_cast() -> None:
    gn = GroupNorm(2, 4)
    x = torch.randn(B, 4, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=BF16):
        out = gn(x)
    assert out.dtype == BF16
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32


def test_group_norm_outside_autocast_is_nn_group_norm() -> None:
    ref, new = nn.GroupNorm(3, 6), GroupNorm(3, 6)
    assert repr(new) == repr(ref)
    assert new.state_dict().keys() == ref.state_dict().keys()
    new.load_state_dict(ref.state_dict())  # checkpoints of either load into the other
    ref.load_state_dict(new.state_dict())
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(B, 6, 4, 5, dtype=dtype, requires_grad=True)
        ref_, new_ = ref.to(dtype), new.to(dtype)
        torch.testing.assert_close(new_(x), ref_(x), rtol=0, atol=0)
    assert isinstance(make_norm("group", 2, 64), GroupNorm)
    assert isinstance(make_norm("group", 2, 64), nn.GroupNorm)


def test_channels_last_group_norm_gradcheck() -> None:
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    x.requires_grad_()

    def fn(x, w, b):
        return _GroupNormChannelsLast.apply(x, 3, w, b, 1e-5)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradcheck(
        lambda x: _GroupNormChannelsLast.apply(x, 2, None, None, 1e-5), (x,)
    )
    torch.testing.assert_close(fn(x, w, b), F.group_norm(x, 3, w, b, 1e-5))


@pytest.mark.parametrize("spatial_dims", [1, 2, 3, 4])
def test_channels_last_group_norm_any_spatial_dims(spatial_dims: int) -> None:
    gn = GroupNorm(4, 8)
    gn.channels_last_kernel = True
    shape = (B, 8, *(3,) * spatial_dims)
    x = torch.randn(B, *(3,) * spatial_dims, 8).movedim(-1, 1)  # channels innermost
    assert x.shape == shape and is_channels_last(x)
    out = gn(x)
    assert is_channels_last(out)
    torch.testing.assert_close(out, F.group_norm(x.contiguous(), 4, gn.weight, gn.bias, gn.eps))
    assert not is_channels_last(torch.randn(shape))


def test_channel_layer_norm_keeps_bf16(cuda_policy) -> None:
    ln = ChannelLayerNorm(8)
    x = torch.randn(B, 8, 4, 4)
    ref = ln(x)
    with torch.autocast("cpu", dtype=BF16):
        out = ln(x.to(BF16))
    assert out.dtype == BF16
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("mode", ["scale_shift", "add"])
def test_film_stays_in_the_activation_dtype(mode: str) -> None:
    proj = nn.Linear(4, 16 if mode == "scale_shift" else 8)
    emb, h = torch.randn(B, 4), torch.randn(B, 8, 5, 5)
    out = _conditioning(h.to(BF16), proj, emb, mode)  # fp32 projection, bf16 activations
    assert out.dtype == BF16
    e = proj(emb)
    if mode == "add":
        ref = h + e[:, :, None, None]
    else:
        scale, shift = e[:, :8, None, None], e[:, 8:, None, None]
        ref = h * (1 + scale) + shift
    torch.testing.assert_close(_conditioning(h, proj, emb, mode), ref)
    hl = h.contiguous(memory_format=torch.channels_last)
    assert _conditioning(hl, proj, emb, mode).is_contiguous(memory_format=torch.channels_last)


def test_class_embedding_in_the_autocast_dtype() -> None:
    emb = ClassEmbedding(3, 8)
    y = torch.tensor([0, 3])
    assert emb(y).dtype == torch.float32
    with torch.autocast("cpu", dtype=BF16):
        assert emb(y).dtype == BF16


def test_autocast_dtype_probe() -> None:
    assert autocast_dtype("cpu") is None
    assert autocast_dtype("meta") is None  # no autocast there: no error either
    with torch.autocast("cpu", dtype=BF16):
        assert autocast_dtype("cpu") == BF16
        assert amp_dtype(torch.zeros(1)) == BF16
        assert amp_dtype(torch.zeros(1, dtype=torch.float16)) == torch.float16
        assert amp_dtype(torch.zeros(1, dtype=torch.float64)) is None
        assert amp_dtype(torch.zeros(1, dtype=torch.long)) is None
    assert amp_dtype(torch.zeros(1, dtype=BF16)) is None


@pytest.mark.parametrize("channels_last_kernel", [False, True])
def test_unet_compiles_fullgraph_under_autocast(channels_last_kernel: bool, monkeypatch) -> None:
    monkeypatch.setattr(GroupNorm, "channels_last_kernel", channels_last_kernel)
    model = _unet(num_classes=3).eval()
    x = torch.randn(2, 2, 8, 8)
    inputs = (torch.tensor([1, 500]), torch.tensor([0, 3]))
    if channels_last_kernel:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.autocast("cpu", dtype=BF16):
        ref = model(x, *inputs)
        out = compiled(x, *inputs)
    assert out.dtype == BF16
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(compiled(x, *inputs), model(x, *inputs))


def test_unet_channels_last_kernel_matches_native(monkeypatch) -> None:
    model = _unet(num_classes=3).to(memory_format=torch.channels_last)
    x = torch.randn(B, 2, 16, 16).contiguous(memory_format=torch.channels_last)
    inputs = {"t": INPUTS["t"], "y": torch.tensor([0, 1, 3])}
    ref = model(x, **inputs)
    ref.square().mean().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    monkeypatch.setattr(GroupNorm, "channels_last_kernel", True)
    out = model(x, **inputs)
    out.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for g, r in zip((p.grad for p in model.parameters()), ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_film_passes_over_the_activations(device: str) -> None:
    # Off the CPU (a GPU; "meta" stands in for it here) one fused pass: addcmul. On the CPU a mul
    # and an add, which are vectorized for the broadcast operand where addcmul is not.
    rec = Recorder()
    proj = nn.Linear(4, 16, device=device)
    h, emb = torch.randn(B, 8, 8, 8, device=device), torch.randn(B, 4, device=device)
    with rec, torch.no_grad():
        out = _conditioning(h, proj, emb)
    full = [name for name, _, outs, _ in rec.ops if any(_activation(t) for t in outs)]
    assert full == (["addcmul"] if device == "meta" else ["mul", "add"]), full
    if device == "cpu":
        scale, shift = proj(emb).chunk(2, dim=1)
        ref = torch.addcmul(shift[:, :, None, None], h, 1 + scale[:, :, None, None])
        torch.testing.assert_close(out, ref)


# ---- on a GPU: the real CUDA autocast policy ---------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_unet_step_casts_activations_only_at_input_and_loss(
    channels_last: bool, monkeypatch
) -> None:
    monkeypatch.setattr(GroupNorm, "channels_last_kernel", channels_last)
    model = _unet(num_classes=3, attention_gates=True).cuda()
    x = torch.randn(B, 2, 16, 16, device="cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = {"t": INPUTS["t"].cuda(), "y": torch.tensor([0, 1, 3], device="cuda")}
    _check_step_casts(_train_step(model, x, **inputs))


@pytest.mark.gpu
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_group_norm_matches_fp32(channels_last: bool, dtype: torch.dtype) -> None:
    ref = nn.GroupNorm(4, 16).cuda()
    new = GroupNorm(4, 16).cuda()
    new.load_state_dict(ref.state_dict())
    new.channels_last_kernel = channels_last
    x = torch.randn(B, 16, 8, 8, device="cuda") * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref, x_new = x.clone().requires_grad_(), x.to(dtype).requires_grad_()
    out_ref = ref(x_ref)
    with torch.autocast("cuda", dtype=dtype):
        out_new = new(x_new)
        assert ref(x_new.detach()).dtype == torch.float32  # what CUDA autocast does natively
    assert out_new.dtype == dtype and is_channels_last(out_new) == channels_last
    torch.testing.assert_close(out_new.float(), out_ref, rtol=2e-2, atol=2e-2)
    g = torch.randn_like(out_ref)
    out_ref.backward(g)
    out_new.backward(g.to(dtype))
    torch.testing.assert_close(x_new.grad.float(), x_ref.grad, rtol=5e-2, atol=5e-2)
    for p_new, p_ref in zip(new.parameters(), ref.parameters()):
        assert p_new.grad.dtype == torch.float32
        scale = p_ref.grad.abs().max()
        torch.testing.assert_close(p_new.grad / scale, p_ref.grad / scale, rtol=0, atol=2e-2)

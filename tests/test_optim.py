"""The trainer's optimizers: torch's fused kernels where they run, the same update as the
per-tensor loop (torch's reference implementation, the oracle), and resume across the two."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ndunet.training import TrainerConfig, load_checkpoint
from ndunet.training import optim as O

sys.path.insert(0, str(Path(__file__).parent))
import _train_script as script

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g)) for s in [(8, 4, 3, 3), (8,), (5, 7)]]


def _loop(params: list[nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    """torch's per-tensor loop with the config's hyperparameters (the reference)."""
    common = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "foreach": False}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **common)
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, betas=cfg.betas, **common)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_fused_where_torch_has_it_with_the_loops_update(name):
    cfg = TrainerConfig(optimizer=name, lr=1e-2, weight_decay=0.1, momentum=0.9)
    fused, loop = _params(), _params()
    opt = O.build_optimizer(fused, cfg)
    assert opt.param_groups[0]["fused"] is True  # the CPU has fused Adam, AdamW and SGD
    ref = _loop(loop, cfg)
    assert not ref.param_groups[0]["fused"]
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(fused, loop):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_fused_kernel_falls_back_to_the_loop():
    mixed = [nn.Parameter(torch.randn(3, dtype=torch.float64)), nn.Parameter(torch.randn(2))]
    opt = O.build_optimizer(mixed, TrainerConfig())  # mixed dtypes: still fused on the CPU
    assert opt.param_groups[0]["fused"] is True
    for odd in (torch.randn(3, dtype=torch.complex64), torch.empty(3, device="meta")):
        params = [nn.Parameter(odd)]  # torch builds these fused, then fails at the first step
        opt = O.build_optimizer(params, TrainerConfig())
        assert not opt.param_groups[0]["fused"]
        params[0].grad = torch.ones_like(params[0])
        opt.step()


def test_loading_keeps_the_optimizers_own_implementation():
    params = _params()
    cfg = TrainerConfig(lr=1e-2)
    loop = torch.optim.AdamW(params, lr=1e-2)  # what an older ndunet saved
    for p in params:
        p.grad = torch.ones_like(p)
    loop.step()
    state = copy.deepcopy(loop.state_dict())
    fused = O.build_optimizer(params, cfg)
    O.load_optimizer_state(fused, state)
    assert fused.param_groups[0]["fused"] is True  # torch's own load would have switched it off
    assert fused.param_groups[0]["lr"] == 1e-2
    step = fused.state[params[0]]["step"]
    assert step.dtype == torch.float32 and float(step) == 1.0
    torch.testing.assert_close(fused.state[params[0]]["exp_avg"], loop.state[params[0]]["exp_avg"])
    fused.step()  # and it steps
    back = torch.optim.AdamW(params, lr=1e-2)  # and the other way round
    O.load_optimizer_state(back, fused.state_dict())
    assert not back.param_groups[0]["fused"]
    back.step()


SAME = {"dropout": 0.0, "scheduler": "constant"}  # a 1-epoch run is a 2-epoch run's first half


def test_a_run_saved_by_the_loop_resumes_fused(tmp_path, monkeypatch):
    ref = script.run(tmp_path / "ref", epochs=2, **SAME)
    assert ref.optimizer.param_groups[0]["fused"] is True

    monkeypatch.setattr(  # the optimizer of a version before fused kernels
        "ndunet.training.setup.build_optimizer", lambda params, cfg: _loop(list(params), cfg)
    )
    script.run(tmp_path / "old", epochs=1, **SAME)
    monkeypatch.undo()
    done = script.run(tmp_path / "old", epochs=2, resume=True, **SAME)
    assert done.optimizer.param_groups[0]["fused"] is True and done.step == ref.step
    a = load_checkpoint(tmp_path / "ref").model_state
    b = load_checkpoint(tmp_path / "old").model_state
    for k in a:  # the two implementations round differently, nothing more
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4, msg=k)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_loaded_moments_take_their_parameters_layout(name):
    # a contiguous run resumed channels-last: torch's fused CPU kernels read flat memory, so a
    # contiguous moment of a channels-last weight would update the wrong elements
    cfg = TrainerConfig(optimizer=name, lr=1e-2, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    grads = [torch.randn(8, 4, 3, 3, generator=g) for _ in range(4)]
    flat = [nn.Parameter(torch.randn(8, 4, 3, 3, generator=g))]
    ref = _loop(flat, cfg)
    flat[0].grad = grads[0]
    ref.step()
    saved = copy.deepcopy(ref.state_dict())  # as read from a file: nothing shared with `ref`
    cl = [nn.Parameter(flat[0].detach().clone().contiguous(memory_format=torch.channels_last))]
    opt = O.build_optimizer(cl, cfg)
    O.load_optimizer_state(opt, saved)
    for value in opt.state[cl[0]].values():
        if value.dim() == 4:
            assert value.stride() == cl[0].stride()
    for grad in grads[1:]:
        flat[0].grad = grad
        cl[0].grad = grad.contiguous(memory_format=torch.channels_last)
        ref.step()
        opt.step()
    torch.testing.assert_close(cl[0].detach(), flat[0].detach(), rtol=1e-5, atol=1e-6)

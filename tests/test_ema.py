"""EMA of weights: the averaging rule, warmup, buffers, copy_to and safetensors round trips."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ndunet import EMA


def make_net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _perturb(net, scale=0.1):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * scale)


def test_update_rule_without_warmup():
    net = make_net()
    ema = EMA(net, decay=0.9, warmup=False)
    avg = {k: v.clone() for k, v in net.state_dict().items()}
    for _ in range(3):
        _perturb(net)
        net(torch.randn(8, 3))  # changes BatchNorm running stats (buffers)
        ema.update(net)
        for k, v in net.named_parameters():
            avg[k] = 0.9 * avg[k] + 0.1 * v.detach()
    for k, v in ema.module.named_parameters():
        torch.testing.assert_close(v, avg[k])
    torch.testing.assert_close(ema.module[1].running_mean, net[1].running_mean)  # copied
    assert int(ema.num_updates) == 3


def test_warmup_decay_schedule():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    seen = []
    for _ in range(5):
        seen.append(ema.current_decay())
        ema.update(net)
    assert seen == pytest.approx([(1 + n) / (10 + n) for n in range(5)])
    ema.load_state_dict({**ema.state_dict(), "num_updates": torch.tensor(100000)})
    assert ema.current_decay() == 0.999


def test_first_warmup_update_moves_nearly_all_the_way():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.9999)
    old = net.weight.detach().clone()
    _perturb(net, 1.0)
    ema.update(net)  # warmup decay at n = 0 is 1 / 10
    torch.testing.assert_close(ema.module.weight, 0.1 * old + 0.9 * net.weight.detach())


def test_module_is_frozen_eval_copy():
    net = make_net()
    ema = EMA(net)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    ema.train()
    assert not ema.module.training
    assert ema.module[0].weight.data_ptr() != net[0].weight.data_ptr()


def test_copy_to_and_state_dict_round_trip(tmp_path):
    net = make_net()
    ema = EMA(net, decay=0.5, warmup=False)
    for _ in range(4):
        _perturb(net)
        ema.update(net)
    sd = ema.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values()) and "num_updates" in sd
    save_file(sd, tmp_path / "ema.safetensors")
    other = EMA(make_net(), decay=0.5, warmup=False)
    other.load_state_dict(load_file(tmp_path / "ema.safetensors"))
    assert int(other.num_updates) == 4
    for a, b in zip(other.module.state_dict().values(), ema.module.state_dict().values()):
        assert torch.equal(a, b)
    target = make_net()
    other.copy_to(target)
    x = torch.randn(5, 3)
    target.eval()
    torch.testing.assert_close(target(x), ema(x))


def test_bad_input():
    with pytest.raises(ValueError, match="decay"):
        EMA(nn.Linear(2, 2), decay=1.5)
    with pytest.raises(TypeError, match=r"nn\.Module"):
        EMA(lambda x: x)
    ema = EMA(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not match"):
        ema.update(nn.Sequential(nn.Linear(2, 2)))


def test_update_count_lives_on_the_host_and_survives_a_load():
    """The decay warm-up reads a host-side count (no GPU sync per step), restored by a load."""
    from ndunet.ema import EMA

    model = torch.nn.Linear(3, 2)
    a, b = EMA(model, decay=0.999, warmup=True), EMA(model, decay=0.999, warmup=True)
    for _ in range(4):
        a.update(model)
    assert a.count == 4 and int(a.num_updates) == 4
    b.load_state_dict(a.state_dict())
    assert b.count == 4 and b.current_decay() == a.current_decay() == 5 / 14

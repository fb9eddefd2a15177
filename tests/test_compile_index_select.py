"""torch.compile (inductor, CPU) of the N >= 4 resize and padding: their backward (an index_add)
must not run inductor's tiled atomic_add, which writes out of bounds when the gradient arrives
channels-innermost (torch 2.13, pytorch/pytorch#191837). In a subprocess: the bug corrupts the
heap. More than one thread, since with one inductor takes a non-atomic path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"

CODE = textwrap.dedent(
    """
    import torch
    torch.set_num_threads(2)
    from ndunet.functional import interpolate_nd
    from ndunet.functional.pad import pad_nd

    cases = {
        "nearest": (6, 12, lambda x: interpolate_nd(x, size=(12,) * 4, mode="nearest")),
        "linear": (6, 12, lambda x: interpolate_nd(x, size=(12,) * 4, mode="linear")),
        "reflect": (10, 12, lambda x: pad_nd(x, [(1, 1)] * 4, mode="reflect")),
    }
    torch.manual_seed(0)
    for name, (n, m, op) in cases.items():
        def f(x, g):
            return (op(x) * g).sum()
        x = torch.randn(1, 16, n, n, n, n, requires_grad=True)
        g = torch.randn(1, m, m, m, m, 16).movedim(-1, 1)  # channels innermost, as from a conv
        (ref,) = torch.autograd.grad(f(x, g), x)
        (got,) = torch.autograd.grad(torch.compile(f, backend="inductor")(x, g), x)
        torch.testing.assert_close(got, ref, msg=name)
        print(name, "ok", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(torch.library, "custom_op"), reason="torch < 2.4")
def test_compiled_cpu_resize_and_pad_backward_matches_eager():
    env = {**os.environ, "PYTHONPATH": str(SRC)}  # ndunet importable wherever pytest was started
    r = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    assert r.stdout.split() == ["nearest", "ok", "linear", "ok", "reflect", "ok"]

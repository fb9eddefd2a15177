"""Power-function EMA and its post-hoc reconstruction (EDM2, Karras et al. 2024,
https://arxiv.org/abs/2312.02696, sec. 3 and appendix C).

A power-function EMA after t steps averages the weights with the profile ``p(tau) = (gamma + 1)
tau^gamma / t^(gamma + 1)`` on [0, t] (its update: ``beta_t = (1 - 1/t)^(gamma + 1)``), whose
relative width ``sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))`` does not depend on
the length of training. A run keeps two such profiles and writes snapshots of both; afterwards
any other ``sigma_rel`` (at any snapshot's step) is the least-squares combination of the
snapshots' profiles. ``python -m ndunet.posthoc_ema RUN --sigma-rel 0.07 --out FOLDER`` writes a
checkpoint folder whose EMA weights are that reconstruction (``ndunet sample FOLDER``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from ndunet._checks import check_float, check_int
from ndunet.ema import UpdateCounter, unwrap_model

SNAPSHOT_DIR = "ema"
SNAPSHOT_NAME = re.compile(r"^step-(\d{8,})\.safetensors$")


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma of relative width ``sigma_rel``: the largest real root of
    ``gamma^3 + 7 gamma^2 + (16 - 1/s^2) gamma + 12 - 1/s^2`` (EDM2 eq. 3 solved for gamma)."""
    check_float("sigma_rel", sigma_rel, 0.0, 0.28, low_open=True, high_open=True)
    inv = sigma_rel**-2
    roots = np.roots([1.0, 7.0, 16.0 - inv, 12.0 - inv])
    return float(roots[np.isreal(roots)].real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    """``sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3)))``."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


class PowerEMA(UpdateCounter):
    """Power-function averages of ``model`` for each of ``sigma_rels`` (EDM2's default pair:
    0.05 and 0.10), in ``averages`` (eval mode, no grad). :meth:`update` after each optimizer
    step; ``module`` is the first profile (sampling)."""

    def __init__(self, model: nn.Module, sigma_rels: Sequence[float] = (0.05, 0.10)) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if len(sigma_rels) < 1:
            raise ValueError(f"sigma_rels={list(sigma_rels)} is not valid; expected one or more")
        self.sigma_rels = tuple(float(s) for s in sigma_rels)
        self.gammas = tuple(sigma_rel_to_gamma(s) for s in self.sigma_rels)
        base = unwrap_model(model)
        self.averages = nn.ModuleList(copy.deepcopy(base) for _ in self.sigma_rels)
        self.averages.eval().requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averages[0]

    def train(self, mode: bool = True) -> PowerEMA:
        super().train(mode)
        self.averages.eval()
        return self

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step: ``avg <- beta avg + (1 - beta) weights``, ``beta = (1 - 1/t)^(gamma + 1)``
        (t = 1 copies the weights)."""
        t = self.count + 1
        source = unwrap_model(model)
        params = [p.detach() for p in source.parameters()]
        for avg, gamma in zip(self.averages, self.gammas):
            mine = list(avg.parameters())
            if len(mine) != len(params):
                raise ValueError("model does not match the averaged copies")
            weight = 1.0 - (1.0 - 1.0 / t) ** (gamma + 1.0)
            floats = [(a, p) for a, p in zip(mine, params) if a.is_floating_point()]
            torch._foreach_lerp_([a for a, _ in floats], [p.to(a.dtype) for a, p in floats], weight)
            for a, b in zip(avg.buffers(), source.buffers()):
                a.copy_(b)
        self.count_update()


def profile_dot(t_a: Any, gamma_a: Any, t_b: Any, gamma_b: Any) -> np.ndarray:
    """``integral_0^min(t_a, t_b) p_a p_b`` for power profiles (broadcasting arrays): with
    ``m = min``, ``(g_a+1)(g_b+1) m^(g_a+g_b+1) / ((g_a+g_b+1) t_a^(g_a+1) t_b^(g_b+1))``, in a
    form without overflow."""
    t_a, g_a, t_b, g_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    ratio = np.where(t_a < t_b, (t_a / t_b) ** g_b / t_b, (t_b / t_a) ** g_a / t_a)
    return (g_a + 1) * (g_b + 1) / (g_a + g_b + 1) * ratio


def solve_weights(
    steps: Sequence[float], gammas: Sequence[float], step: float, gamma: float
) -> np.ndarray:
    """Weights of the snapshots (``steps``, ``gammas``) whose combined profile is nearest, in
    L2, to the power profile (``step``, ``gamma``); normalised to sum to 1 (EDM2 appendix C)."""
    s, g = np.asarray(steps, np.float64), np.asarray(gammas, np.float64)
    gram = profile_dot(s[:, None], g[:, None], s[None, :], g[None, :])
    rhs = profile_dot(s, g, step, gamma)
    w = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return w / w.sum()


class Snapshot(NamedTuple):
    step: int
    sigma_rels: tuple[float, ...]
    path: Path


def save_snapshot(run_dir: str | Path, ema: PowerEMA) -> Path:
    """Write ``run_dir/ema/step-NNNNNNNN.safetensors``: every profile's weights and metadata."""
    from safetensors.torch import save

    from ndunet.files import safe_write_bytes

    run_dir = Path(run_dir)
    step = ema.count
    tensors = {
        f"{i}.{k}": v.detach().cpu().contiguous()
        for i, avg in enumerate(ema.averages)
        for k, v in avg.state_dict().items()
    }
    meta = {"step": str(step), "sigma_rels": json.dumps(list(ema.sigma_rels))}
    path = run_dir / SNAPSHOT_DIR / f"step-{step:08d}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return safe_write_bytes(path, save(tensors, metadata=meta), root=run_dir)


def list_snapshots(run_dir: str | Path) -> list[Snapshot]:
    """The snapshots of a run, by step (error when there are none)."""
    from safetensors import safe_open

    folder = Path(run_dir) / SNAPSHOT_DIR
    found = []
    for path in sorted(folder.glob("step-*.safetensors")) if folder.is_dir() else []:
        if not SNAPSHOT_NAME.match(path.name):
            continue
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        found.append(Snapshot(int(meta["step"]), tuple(json.loads(meta["sigma_rels"])), path))
    if not found:
        raise FileNotFoundError(
            f"no EMA snapshots in {str(folder)!r}; train with ema_profiles (TrainerConfig)"
        )
    return sorted(found)


def reconstruct(
    run_dir: str | Path, sigma_rel: float, step: int | None = None
) -> tuple[dict[str, Tensor], np.ndarray]:
    """The weights of a power EMA of width ``sigma_rel`` at ``step`` (default: the last
    snapshot's) from a run's snapshots, and the weight given to each (snapshot, profile)."""
    from safetensors.torch import load_file

    gamma = sigma_rel_to_gamma(sigma_rel)
    snaps = [s for s in list_snapshots(run_dir) if s.step >= 1]
    last = snaps[-1].step
    step = last if step is None else check_int("step", step, 1, last)
    used = [s for s in snaps if s.step <= step]
    pairs = [(s, i) for s in used for i in range(len(s.sigma_rels))]
    weights = solve_weights(
        [s.step for s, _ in pairs],
        [sigma_rel_to_gamma(s.sigma_rels[i]) for s, i in pairs],
        step,
        gamma,
    )
    out: dict[str, Tensor] = {}
    for snap in used:
        tensors = load_file(str(snap.path))
        for (s, i), w in zip(pairs, weights):
            if s is not snap:
                continue
            prefix = f"{i}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    name = key[len(prefix) :]
                    acc = value.double() * float(w)
                    out[name] = acc if name not in out else out[name] + acc
    first = load_file(str(used[0].path))
    return {k: v.to(first[f"0.{k}"].dtype) for k, v in out.items()}, weights


def write_reconstruction(
    run_dir: str | Path, sigma_rel: float, out: str | Path, step: int | None = None
) -> Path:
    """A checkpoint folder at ``out``: the run's checkpoints/last with its EMA weights replaced
    by the reconstruction of ``sigma_rel`` (so ``ndunet sample out`` and ``load_run`` use it)."""
    from ndunet.pretrained import load_checkpoint, save_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} exists; give a new folder")
    state, _ = reconstruct(run_dir, sigma_rel, step)
    ck = load_checkpoint(run_dir / "checkpoints" / "last")
    config = {**ck.config, "posthoc_ema": {"sigma_rel": sigma_rel, "step": step}}
    ema_state = {f"module.{k}": v for k, v in state.items()}
    ema_state["num_updates"] = torch.tensor(0)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(
        out, config=config, model_state=ck.model_state, ema_state=ema_state,
        extra_state=ck.extra_state or None, trainer_state=ck.trainer_state(), root=out.parent,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ndunet.posthoc_ema RUN --sigma-rel S --out FOLDER [--step N]``."""
    p = argparse.ArgumentParser(prog="python -m ndunet.posthoc_ema", description=__doc__)
    p.add_argument("run", help="run folder trained with ema_profiles")
    p.add_argument("--sigma-rel", type=float, required=True, help="EMA length, e.g. 0.07")
    p.add_argument("--out", required=True, help="new checkpoint folder to write")
    p.add_argument("--step", type=int, default=None, help="at this step (default: the last)")
    args = p.parse_args(argv)
    try:
        path = write_reconstruction(args.run, args.sigma_rel, args.out, args.step)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"posthoc_ema: {e}", file=sys.stderr)
        return 2
    print(f"sigma_rel={args.sigma_rel} EMA of {args.run} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""UniPC (Zhao et al. 2023, https://arxiv.org/abs/2302.04867): the unified predictor-corrector
in the data prediction with ``B(h) = e^h - 1`` ("bh2"), order 2, in the shared sampler signature.

Each step evaluates the network once, at the predicted point; that output both corrects the
prediction (UniC) and starts the next predictor (UniP), so the corrector costs no evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .stepping import Denoiser, Step, StepFn, log_snr, sampler


def unipc_coefficients(h: float, ratios: Sequence[float]) -> list[float]:
    """The weights ``a`` of the differences ``D_k / r_k`` (the last one at r = 1) for a
    ``len(ratios)``-point update over ``h``: the solution of ``R a = g / B(h)`` (paper eq. 8 with
    ``B(h) = e^h - 1`` in the data prediction, ``hh = -h``); one point gives ``[1/2]``."""
    order = len(ratios)
    if order == 1:
        return [0.5]
    hh = -h
    b_h = math.expm1(hh)
    phi = b_h / hh - 1.0  # h phi_2 / ... : the Taylor remainders of e^{hh}
    factorial = 1
    g = []
    for k in range(1, order + 1):
        g.append(phi * factorial / b_h)
        factorial *= k + 1
        phi = phi / hh - 1.0 / factorial
    rows = [[r ** (k - 1) for r in ratios] for k in range(1, order + 1)]
    return torch.linalg.solve(
        torch.tensor(rows, dtype=torch.float64), torch.tensor(g, dtype=torch.float64)
    ).tolist()


def _update(
    x: Tensor,
    a_s: float,
    a_t: float,
    m0: Tensor,
    history: list[tuple[float, Tensor]],
    m_t: Tensor | None,
) -> Tensor:
    """One UniP (``m_t`` None) or UniC (``m_t`` the data prediction at t) update of ``x`` from
    level ``a_s`` (data prediction ``m0``) to ``a_t``; ``history`` holds the earlier (lambda,
    data prediction) points used for the second order."""
    lam_s, lam_t = log_snr(a_s), log_snr(a_t)
    h = lam_t - lam_s
    sigma_ratio = math.sqrt((1.0 - a_t) / (1.0 - a_s))
    alpha_t = math.sqrt(a_t)
    out = sigma_ratio * x - alpha_t * math.expm1(-h) * m0  # first order: DPM-Solver++(1)
    b_h = math.expm1(-h)
    diffs = [((lam_k - lam_s) / h, (m_k - m0)) for lam_k, m_k in history]  # (r_k, m_k - m0)
    if m_t is None:  # UniP-2: a fixed 1/2 on the one difference
        if diffs:
            r, d = diffs[0]
            out = out - alpha_t * b_h * 0.5 * (d / r)
        return out
    coef = unipc_coefficients(h, [r for r, _ in diffs] + [1.0])
    res = coef[-1] * (m_t - m0)
    for c, (r, d) in zip(coef[:-1], diffs):
        res = res + c * (d / r)
    return out - alpha_t * b_h * res


@sampler()
def unipc(
    denoise: Denoiser, alphas_cumprod: Tensor, eta: float, generator: torch.Generator | None
) -> StepFn:
    """UniPC-2 (bh2): UniP-2 predicts, UniC corrects with the next evaluation (order 3 locally
    with the corrector). First-order predictor at the first step, from pure noise and for the
    jump to clean data (no evaluation there, so no correction). Deterministic (``eta`` unused).
    """
    points: list[tuple[float, float, Tensor]] = []  # (abar, lambda, data prediction), oldest first
    x_prev: Tensor | None = None  # the state the last prediction started from

    def step(x: Tensor, s: Step) -> tuple[Tensor, Tensor]:
        nonlocal points, x_prev
        x0, _ = denoise(x, s.t)
        a_t = s.a_t
        if x_prev is not None:  # UniC: correct x with the evaluation made at it
            a_s, _, m0 = points[-1]
            x = _update(x_prev, a_s, a_t, m0, _usable(points[:-1], a_s), x0)
        points = [*points[-1:], (a_t, log_snr(a_t), x0)]
        x_prev = x
        if s.t_next < 0:
            return x0, x0
        return _update(x, a_t, s.a_n, x0, _usable(points[:-1], a_t), None), x0

    return step


def _usable(points: list[tuple[float, float, Tensor]], a_s: float) -> list[tuple[float, Tensor]]:
    """Earlier points for the second order: none from pure noise (lambda = -inf) or at ``a_s``."""
    lam_s = log_snr(a_s)
    return [(lam, m) for _, lam, m in points if math.isfinite(lam) and math.isfinite(lam_s)]

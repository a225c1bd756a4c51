"""SNELL's numerics: the piecewise-linear kernel, the competition threshold, and the memory-saving autograd.

ΔW[i, j] = Σ_p c_p · sqrt(max(‖B_i^(p)‖² + ‖A_j^(p)‖² − 2 B_i^(p)·A_j^(p), eps))

with A (in, r) and B (rows, r) split into P = 2 column halves. The expansion per half keeps the largest
intermediate at (rows, in) — a [P, rows, in] distance tensor (``torch.cdist`` on stacked halves, as the
released code does) is never built.

Competition: keep n_keep = m·n − floor(s·m·n) entries of ΔW, t from ``kthvalue`` (works past 2²⁴
elements, where ``torch.quantile`` refuses), and a *detached* gate g:
- ``released``: g = |ΔW| · 1[|ΔW| ≥ t_k]      (t_k = the n_keep-th largest |ΔW|; survivors sign·ΔW²)
- ``paper``:    g = max(|ΔW| − t_d, 0)        (t_d = the (n_keep+1)-th largest, the largest *dropped*
  magnitude — with t_k itself the n_keep-th survivor would be multiplied by 0 and only n_keep − 1 would
  survive; with s = 0 nothing is dropped, t_d = 0 and both rules coincide)
ΔWˢ = ΔW ⊙ g, so ∂ΔWˢ/∂ΔW = g.

:class:`SnellDelta` computes x @ ΔWˢᵀ for every targeted part of one physical module and saves only x,
the factors, the coefficients and one threshold per part; backward *recomputes* ΔW from the factors
(O(rows·in) transient memory, nothing O(in·out) kept between forward and backward).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch

P = 2  # halves of the rank: the released piecewise-linear kernel
EPS = 1e-8  # squared-distance clamp: above fp32 cancellation noise of the expansion for factors of norm ≲ 1
RULES = ("released", "paper")


def n_keep(rows: int, cols: int, sparsity: float) -> int:
    """m·n − floor(s·m·n) in exact arithmetic: s is read as the decimal the user wrote (0.29 → 29/100),
    so float rounding (0.29·100 = 28.999…) cannot shift the count."""
    total = rows * cols
    return total - (Fraction(str(sparsity)) * total).__floor__()


def kernel_delta(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Dense ΔW (rows, in) from A (in, r), B (rows, r), coefficients (P,)."""
    h = a.shape[1] // P
    delta = None
    for p in range(P):
        d = _distance(a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h], eps)  # (rows, in)
        term = d.mul_(coeffs[p])
        delta = term if delta is None else delta.add_(term)
    return delta


def _sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖b_i‖² + ‖a_j‖² − 2 b_i·a_j, (rows, in); may dip below 0 by rounding, hence the clamp."""
    sq = b.pow(2).sum(1, keepdim=True) + a.pow(2).sum(1)  # (rows, 1) + (in,) -> (rows, in)
    return sq.addmm_(b, a.t(), alpha=-2.0)


def _distance(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return _sq_distance(a, b).clamp_min_(eps).sqrt_()


def threshold(delta: torch.Tensor, keep: int, rule: str) -> torch.Tensor:
    """The detached competition threshold (a 0-d tensor) for ``rule``; see the module docstring."""
    flat = delta.detach().abs().flatten()
    total = flat.numel()
    if rule == "released":
        return flat.kthvalue(total - keep + 1).values  # the keep-th largest
    if keep >= total:
        return flat.new_zeros(())
    return flat.kthvalue(total - keep).values  # the (keep+1)-th largest: the largest dropped


def gate(delta: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The detached multiplier g with ΔWˢ = ΔW ⊙ g."""
    mag = delta.detach().abs()
    if rule == "released":
        return mag.masked_fill_(mag < t, 0.0)  # (masked_fill: a bool multiplier would be cast to float first)
    return mag.sub_(t).clamp_min_(0.0)


def sparse_delta(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, keep: int, rule: str,
                 eps: float = EPS) -> torch.Tensor:
    """ΔWˢ (rows, in), no autograd: what the forward uses, what merge and the artifact store."""
    with torch.no_grad():
        delta = kernel_delta(a, b, coeffs, eps)
        return delta.mul_(gate(delta, threshold(delta, keep, rule), rule))


@dataclass(frozen=True)
class PartSpec:
    """Static description of one targeted part for :class:`SnellDelta` (not a tensor, not saved)."""

    row0: int
    rows: int
    keep: int


class SnellDelta(torch.autograd.Function):
    """y[..., row0:row0+rows] = x @ ΔWˢ_partᵀ for every part; zeros elsewhere in (…, out_features).

    ``tensors`` is (A, B, c) per part, flattened. Saved for backward: x (once, however many parts share
    it), the factors, the coefficients and one 0-d threshold per part.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, out_features: int, parts: tuple[PartSpec, ...], rule: str, eps: float,
                *tensors: torch.Tensor) -> torch.Tensor:
        xf = x.to(tensors[0].dtype)  # (..., in) in the factors' dtype (fp32)
        y = xf.new_zeros(*x.shape[:-1], out_features)  # (..., out)
        thresholds = []
        for k, part in enumerate(parts):
            a, b, c = tensors[3 * k:3 * k + 3]
            delta = kernel_delta(a, b, c, eps)  # (rows, in)
            t = threshold(delta, part.keep, rule)
            delta.mul_(gate(delta, t, rule))
            y[..., part.row0:part.row0 + part.rows] = xf @ delta.t()
            thresholds.append(t)
        ctx.parts, ctx.rule, ctx.eps, ctx.x_dtype = parts, rule, eps, x.dtype
        ctx.save_for_backward(x, *tensors, *thresholds)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        parts, rule, eps = ctx.parts, ctx.rule, ctx.eps
        saved = ctx.saved_tensors
        x, tensors, thresholds = saved[0], saved[1:1 + 3 * len(parts)], saved[1 + 3 * len(parts):]
        xf = x.to(tensors[0].dtype).reshape(-1, x.shape[-1])  # (tokens, in)
        gy = grad_y.to(tensors[0].dtype).reshape(-1, grad_y.shape[-1])  # (tokens, out)
        grad_x = torch.zeros_like(xf) if ctx.needs_input_grad[0] else None
        grads: list[torch.Tensor | None] = []
        for k, part in enumerate(parts):
            a, b, c = tensors[3 * k:3 * k + 3]
            gy_p = gy[:, part.row0:part.row0 + part.rows]  # (tokens, rows)
            ga, gb, gc = _factor_grads(a, b, c, xf, gy_p, thresholds[k], rule, eps, grad_x,
                                       ctx.needs_input_grad[5 + 3 * k + 2])
            grads += [ga, gb, gc]
        if grad_x is not None:
            grad_x = grad_x.reshape(x.shape).to(ctx.x_dtype)
        return (grad_x, None, None, None, None, *grads)


def _factor_grads(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, xf: torch.Tensor, gy: torch.Tensor,
                  t: torch.Tensor, rule: str, eps: float, grad_x: torch.Tensor | None,
                  want_c: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of one part, ΔW recomputed half by half; accumulates the input gradient into grad_x."""
    h = a.shape[1] // P
    dists, clamped = [], []
    for p in range(P):
        sq = _sq_distance(a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h])  # (rows, in)
        clamped.append(sq < eps)  # where the clamp blocks the gradient (as clamp_min's own backward)
        dists.append(sq.clamp_min_(eps).sqrt_())
    delta = dists[0] * c[0]
    for p in range(1, P):
        delta.add_(dists[p] * c[p])  # (rows, in): the forward's ops in the forward's order, the same values
    g = gate(delta, t, rule)  # (rows, in)
    if grad_x is not None:
        grad_x.addmm_(gy, delta.mul_(g))  # ΔWˢ; delta is not needed past this point
    del delta
    grad_delta = (gy.t() @ xf).mul_(g)  # dL/dΔW = (dL/dΔWˢ) ⊙ g, (rows, in)
    del g
    ga, gb = torch.empty_like(a), torch.empty_like(b)
    gc = a.new_empty(P) if want_c else None
    for p in range(P):
        ap, bp, d = a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h], dists[p]
        if gc is not None:
            gc[p] = (grad_delta * d).sum()
        # d sqrt(max(S, eps)) / dS = 1[S ≥ eps] / (2 sqrt(S))
        q = (grad_delta * (0.5 * c[p])).div_(d).masked_fill_(clamped[p], 0.0)  # dL/dS, (rows, in)
        # S = ‖b_i‖² + ‖a_j‖² − 2 b_i·a_j
        gb[:, p * h:(p + 1) * h] = 2 * (q.sum(1, keepdim=True) * bp - q @ ap)
        ga[:, p * h:(p + 1) * h] = 2 * (q.sum(0).unsqueeze(1) * ap - q.t() @ bp)
    return ga, gb, gc

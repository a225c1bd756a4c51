"""SNELL's numerics: the piecewise-linear kernel, the competition threshold, and the memory-saving autograd.

ΔW[i, j] = Σ_p c_p · sqrt(max(‖B_i^(p)‖² + ‖A_j^(p)‖² − 2 B_i^(p)·A_j^(p), eps))

with A (in, r) and B (rows, r) split into P = 2 column halves. The expansion per half keeps the largest
intermediate at (rows, in) — a [P, rows, in] distance tensor (``torch.cdist`` on stacked halves, as the
released code does) is never built.

Competition: keep n_keep = m·n − floor(s·m·n) entries of ΔW, with a threshold t and a *detached* gate g:
- ``released``: g = |ΔW| · 1[|ΔW| ≥ t_k]      (t_k = the n_keep-th largest |ΔW|; survivors sign·ΔW²)
- ``paper``:    g = max(|ΔW| − t_d, 0)        (t_d = the (n_keep+1)-th largest, the largest *dropped*
  magnitude — with t_k itself the n_keep-th survivor would be multiplied by 0 and only n_keep − 1 would
  survive; with s = 0 nothing is dropped, t_d = 0 and both rules coincide)
ΔWˢ = ΔW ⊙ g, so ∂ΔWˢ/∂ΔW = g.
The m-th largest comes from ``topk`` of the smaller side (the m largest, or the m·n − m + 1 smallest) and
its min / max: the same order statistic as ``kthvalue``, ties included, and it works past 2²⁴ elements
(where ``torch.quantile`` refuses). Not ``kthvalue`` on CUDA: it ranks a whole matrix on one thread block
(125 ms for 16.8 M entries against 0.37 ms for ``topk``). On CPU ``kthvalue`` (a quickselect) is the faster
of the two (:data:`CPU_KTHVALUE`).

:class:`SnellLinear` computes one physical module's output, the frozen base included, and saves only x, the
factors, the coefficients and one threshold per part (the frozen weight and bias are the module's own
tensors, not copies); backward *recomputes* ΔW from the factors (O(rows·in) transient memory, nothing
O(in·out) kept between forward and backward). Its precision follows the frozen weight:
- everything in the factors' dtype (fp32 on CPU): the *fold* y = x @ (W0 + ΔWˢ)ᵀ + b, W0 + ΔWˢ built
  transiently in forward and again in backward — one large product each way instead of two;
- a lower-precision frozen weight (bf16 under autocast on GPU): no fold, since adding a ΔWˢ of 1e-6 into a
  bf16 copy of weights of 1e-2 would round it away. The products x @ W0ᵀ, x @ ΔWˢᵀ, grad_y @ W0,
  grad_y @ ΔWˢ run in that dtype (ΔWˢ cast to it, the matrix units accumulate in fp32), grad_yᵀ @ x is
  returned in fp32; ΔW, the gate and the factor gradients stay in fp32 (the factors' dtype) throughout.
Autocast is switched off inside: the products' dtype is chosen once, as autocast would for the base
(:func:`compute_dtype`), and applied the same way in forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

P = 2  # halves of the rank: the released piecewise-linear kernel
EPS = 1e-8  # squared-distance clamp: above fp32 cancellation noise of the expansion for factors of norm ≲ 1
RULES = ("released", "paper")
# Measured on 2 CPU cores, fp32, keep = 10%: 576×576 kthvalue 1.6 ms vs topk 2.9 ms; 192×576 0.5 vs 1.0 ms
CPU_KTHVALUE = True


def n_keep(rows: int, cols: int, sparsity: float) -> int:
    """m·n − floor(s·m·n) in exact arithmetic: s is read as the decimal the user wrote (0.29 → 29/100),
    so float rounding (0.29·100 = 28.999…) cannot shift the count."""
    total = rows * cols
    return total - (Fraction(str(sparsity)) * total).__floor__()


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the large products: autocast's where it is on for x's device (as the base layer would
    get), else x's own."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


# -- the kernel ------------------------------------------------------------------------------------------
def kernel_delta(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Dense ΔW (rows, in) from A (in, r), B (rows, r), coefficients (P,)."""
    return _kernel(a, b, coeffs, eps, keep_halves=False)[0]


def _kernel(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, eps: float,
            keep_halves: bool) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """ΔW, and with ``keep_halves`` each half's distance and clamp mask (what backward needs). Forward and
    backward both build ΔW here, with the same ops in the same order: the same values, so the gate
    rebuilt in backward matches the saved threshold bit for bit."""
    h = a.shape[1] // P
    delta, dists, clamped = None, [], []
    for p in range(P):
        sq = _sq_distance(a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h])  # (rows, in)
        if keep_halves:
            clamped.append(sq < eps)  # where the clamp blocks the gradient (as clamp_min's own backward)
        d = sq.clamp_min_(eps).sqrt_()
        if keep_halves:
            dists.append(d)
        if delta is None:
            delta = d * coeffs[p] if keep_halves else d.mul_(coeffs[p])
        else:
            delta.addcmul_(d, coeffs[p])
    return delta, dists, clamped


def _sq_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖b_i‖² + ‖a_j‖² − 2 b_i·a_j, (rows, in); may dip below 0 by rounding, hence the clamp."""
    sq = b.pow(2).sum(1, keepdim=True) + a.pow(2).sum(1)  # (rows, 1) + (in,) -> (rows, in)
    return sq.addmm_(b, a.t(), alpha=-2.0)


# -- the competition --------------------------------------------------------------------------------------
def threshold(delta: torch.Tensor, keep: int, rule: str) -> torch.Tensor:
    """The detached competition threshold (a 0-d tensor) for ``rule``; see the module docstring."""
    return _threshold(delta.detach().abs(), keep, rule)


def _threshold(mag: torch.Tensor, keep: int, rule: str) -> torch.Tensor:
    """The threshold from the magnitudes |ΔW|: the keep-th largest (``released``) or the (keep+1)-th
    (``paper``; 0 when nothing is dropped)."""
    rank = keep if rule == "released" else keep + 1
    if rank > mag.numel():
        return mag.new_zeros(())
    return kth_largest(mag.flatten(), rank)


def kth_largest(flat: torch.Tensor, m: int) -> torch.Tensor:
    """The m-th largest entry of a 1-d tensor (1 ≤ m ≤ numel), as a 0-d tensor: the same value as
    ``flat.kthvalue(numel − m + 1)``, from ``topk`` of whichever side is smaller (see the module docstring)."""
    total = flat.numel()
    if flat.device.type == "cpu" and CPU_KTHVALUE:
        return flat.kthvalue(total - m + 1).values
    if m <= total - m + 1:
        return flat.topk(m, sorted=False).values.min()
    return flat.topk(total - m + 1, largest=False, sorted=False).values.max()


def gate(delta: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The detached multiplier g with ΔWˢ = ΔW ⊙ g."""
    return _gate_(delta.detach().abs(), t, rule)


def _gate_(mag: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The gate from |ΔW|, computed in place in ``mag``."""
    if rule == "released":
        return mag.masked_fill_(mag < t, 0.0)  # (masked_fill: a bool multiplier would be cast to float first)
    return mag.sub_(t).clamp_min_(0.0)


def _sparse(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, keep: int, rule: str,
            eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ΔWˢ, its threshold); |ΔW| is taken once and serves both the ranking and the gate."""
    delta = kernel_delta(a, b, coeffs, eps)
    mag = delta.abs()
    t = _threshold(mag, keep, rule)
    return delta.mul_(_gate_(mag, t, rule)), t


def sparse_delta(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, keep: int, rule: str,
                 eps: float = EPS) -> torch.Tensor:
    """ΔWˢ (rows, in), no autograd: what the forward uses, what merge and the artifact store."""
    with torch.no_grad():
        return _sparse(a, b, coeffs, keep, rule, eps)[0]


# -- the autograd function ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartSpec:
    """Static description of one targeted part for :class:`SnellLinear` (not a tensor, not saved)."""

    row0: int
    rows: int
    keep: int


@dataclass(frozen=True)
class Plan:
    """Everything static about one call: the parts, the options, the products' dtype, fold or not."""

    parts: tuple[PartSpec, ...]
    out_features: int
    rule: str
    eps: float
    dtype: torch.dtype  # of the large products (compute_dtype)
    fold: bool  # y = x @ (W0 + ΔWˢ)ᵀ + b; else x @ W0ᵀ + b + x @ ΔWˢᵀ (see the module docstring)


def make_plan(parts: tuple[PartSpec, ...], out_features: int, rule: str, eps: float, x: torch.Tensor,
              weight: torch.Tensor | None, factor_dtype: torch.dtype) -> Plan:
    """Fold exactly when the frozen weight, the products and ΔWˢ share one dtype: then W0 + ΔWˢ loses
    nothing that the products would keep."""
    dtype = compute_dtype(x)
    fold = weight is not None and weight.dtype == dtype == factor_dtype
    return Plan(parts, out_features, rule, eps, dtype, fold)


class SnellLinear(torch.autograd.Function):
    """y = x @ W0ᵀ + b + x @ ΔWˢᵀ on every part's rows, W0 the frozen weight in (out, in) orientation (a
    view of a Conv1D's (in, out) storage is fine), or with ``weight`` None just the delta term (zeros
    outside the parts). ``tensors`` is (A, B, c) per part, flattened. Neither the weight nor the bias may
    require grad. Saved for backward: x, the weight (the module's own tensor), the factors, the
    coefficients and one 0-d threshold per part.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, plan: Plan,
                *tensors: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            sparse, thresholds = [], []
            for k, part in enumerate(plan.parts):
                d, t = _sparse(*tensors[3 * k:3 * k + 3], part.keep, plan.rule, plan.eps)
                sparse.append(d)
                thresholds.append(t)
            x2d = x.reshape(-1, x.shape[-1]).to(plan.dtype)
            if plan.fold:
                y = F.linear(x2d, _folded(weight, plan.parts, sparse), bias)
            else:
                y = _unfolded_forward(x2d, weight, bias, plan, sparse)
        ctx.plan = plan
        ctx.save_for_backward(x, weight, *tensors, *thresholds)
        return y.view(*x.shape[:-1], plan.out_features)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        plan: Plan = ctx.plan
        n = 3 * len(plan.parts)
        x, weight, *rest = ctx.saved_tensors
        tensors, thresholds = rest[:n], rest[n:]
        want_x = ctx.needs_input_grad[0]
        with torch.autocast(x.device.type, enabled=False):
            x2d = x.reshape(-1, x.shape[-1]).to(plan.dtype)  # (tokens, in)
            gy = grad_y.reshape(-1, plan.out_features).to(plan.dtype)  # (tokens, out)
            folded = weight.clone() if want_x and plan.fold else None  # W0, then + ΔWˢ part by part
            grad_x = _base_grad_x(gy, weight, x2d) if want_x and not plan.fold else None
            grads: list[torch.Tensor | None] = []
            for k, part in enumerate(plan.parts):
                rows = slice(part.row0, part.row0 + part.rows)
                a, b, c = tensors[3 * k:3 * k + 3]
                delta, dists, clamped = _kernel(a, b, c, plan.eps, keep_halves=True)
                g = _gate_(delta.abs(), thresholds[k], plan.rule)  # (rows, in)
                if folded is not None:
                    folded[rows] += delta.mul_(g)  # ΔWˢ
                elif grad_x is not None:
                    grad_x.addmm_(gy[:, rows], delta.mul_(g).to(plan.dtype))
                del delta
                grad_delta = mm_fp32(gy[:, rows].t(), x2d, a.dtype).mul_(g)  # dL/dΔW = dL/dΔWˢ ⊙ g
                del g
                grads += _factor_grads(a, b, c, grad_delta, dists, clamped, ctx.needs_input_grad[6 + 3 * k])
            if folded is not None:
                grad_x = gy @ folded
        if grad_x is not None:
            grad_x = grad_x.view(x.shape).to(x.dtype)
        return (grad_x, None, None, None, *grads)


def _folded(weight: torch.Tensor, parts: tuple[PartSpec, ...], sparse: list[torch.Tensor]) -> torch.Tensor:
    """W0 + ΔWˢ (out, in), a transient copy in the weight's own layout."""
    w = weight.clone()
    for part, d in zip(parts, sparse, strict=True):
        w[part.row0:part.row0 + part.rows] += d
    return w


def _unfolded_forward(x2d: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, plan: Plan,
                      sparse: list[torch.Tensor]) -> torch.Tensor:
    """x @ W0ᵀ + b (or zeros without a weight), then x @ ΔWˢᵀ added into each part's columns in place."""
    if weight is None:
        y = x2d.new_zeros(x2d.shape[0], plan.out_features)
    else:
        y = F.linear(x2d, weight.to(plan.dtype), None if bias is None else bias.to(plan.dtype))
    for part, d in zip(plan.parts, sparse, strict=True):
        y[:, part.row0:part.row0 + part.rows].addmm_(x2d, d.to(plan.dtype).t())
    return y


def _base_grad_x(gy: torch.Tensor, weight: torch.Tensor | None, x2d: torch.Tensor) -> torch.Tensor:
    """grad_y @ W0 in the products' dtype (zeros without a weight): the parts' terms are added into it."""
    if weight is None:
        return torch.zeros_like(x2d)
    return gy @ weight.to(gy.dtype)


def _factor_grads(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, grad_delta: torch.Tensor,
                  dists: list[torch.Tensor], clamped: list[torch.Tensor],
                  want_c: bool) -> list[torch.Tensor | None]:
    """dL/dA, dL/dB, dL/dc from dL/dΔW, half by half."""
    h = a.shape[1] // P
    ga, gb = torch.empty_like(a), torch.empty_like(b)
    gc = a.new_empty(P) if want_c else None
    for p in range(P):
        ap, bp, d = a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h], dists[p]
        if gc is not None:
            gc[p] = torch.dot(grad_delta.view(-1), d.view(-1))
        # d sqrt(max(S, eps)) / dS = 1[S ≥ eps] / (2 sqrt(S)); u = 2·dL/dS / c_p, written over d
        u = torch.div(grad_delta, d, out=d).masked_fill_(clamped[p], 0.0)
        # S = ‖b_i‖² + ‖a_j‖² − 2 b_i·a_j, so dL/dB_i = c_p (Σ_j u_ij B_i − Σ_j u_ij A_j), likewise for A
        gb[:, p * h:(p + 1) * h] = torch.addmm(u.sum(1, keepdim=True) * bp, u, ap, alpha=-1).mul_(c[p])
        ga[:, p * h:(p + 1) * h] = torch.addmm(u.sum(0).unsqueeze(1) * ap, u.t(), bp, alpha=-1).mul_(c[p])
    return [ga, gb, gc]


_OUT_DTYPE_MM: dict[tuple[str, torch.dtype], bool] = {}  # (device type, dtype) → torch.mm takes out_dtype


def mm_fp32(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a @ b returned in ``dtype`` (the factors'): straight from the matrix units' fp32 accumulator where
    ``torch.mm(out_dtype=)`` exists for a low-precision a, b; else the product rounded to a, b's dtype and
    widened."""
    if a.dtype == dtype:
        return a @ b
    key = (a.device.type, a.dtype)
    if key not in _OUT_DTYPE_MM:
        _OUT_DTYPE_MM[key] = _probe_out_dtype(a)
    if dtype == torch.float32 and _OUT_DTYPE_MM[key]:
        return torch.mm(a, b, out_dtype=torch.float32)
    return (a @ b).to(dtype)


def _probe_out_dtype(like: torch.Tensor) -> bool:
    """Whether this build runs ``torch.mm(..., out_dtype=float32)`` for ``like``'s dtype and device."""
    probe = torch.ones(2, 2, dtype=like.dtype, device=like.device)
    try:
        return bool(torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32)
    except (RuntimeError, NotImplementedError, TypeError):
        return False

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
(where ``torch.quantile`` refuses). Not ``kthvalue``: on CUDA it ranks a whole matrix on one thread block
(125 ms for 16.8 M entries against 0.37 ms for ``topk``). On the CPU numpy's introselect (``np.partition``)
finds the same entry fastest (576×576, keep 10%: 0.40 ms against 1.59 ms for the sampled ``topk`` it
replaced and 4.7 ms for ``kthvalue``).

:class:`SnellLinear` computes one physical module's output, the frozen base included, and saves only x, the
factors, the coefficients and one threshold per part (the frozen weight and bias are the module's own
tensors, not copies); backward *recomputes* ΔW from the factors (O(rows·in) transient memory, nothing
O(in·out) kept between forward and backward). Its precision follows the frozen weight:
- everything in the factors' dtype (fp32 on CPU): the *fold* y = x @ (W0 + ΔWˢ)ᵀ + b, W0 + ΔWˢ built
  transiently in forward and again in backward — one large product each way instead of two;
- a lower-precision frozen weight (bf16 under autocast on GPU): no fold, since adding a ΔWˢ of 1e-6 into a
  bf16 copy of weights of 1e-2 would round it away. The products x @ W0ᵀ, x @ ΔWˢᵀ, grad_y @ W0,
  grad_y @ ΔWˢ run in that dtype (ΔWˢ cast to it, the matrix units accumulate in fp32), grad_yᵀ @ x comes
  out in fp32 (straight from the accumulator where ``torch.mm`` takes ``out_dtype``, as on CUDA; rounded
  to bf16 and widened on the CPU: :func:`mm_fp32`); ΔW, the gate and the factor gradients stay in fp32
  (the factors' dtype) throughout.
Autocast is switched off inside: the products' dtype is chosen once, as autocast would for the base
(:func:`compute_dtype`), and applied the same way in forward and backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from smt_core.methods.snell.config import HALVES as P  # the rank's halves (the released kernel)

EPS = 1e-8  # squared-distance clamp: above fp32 cancellation noise of the expansion for factors of norm ≲ 1
NUMPY_SELECTS = (torch.float32, torch.float64)  # CPU dtypes whose threshold numpy's selection finds


@cache  # every forward asks, for a handful of distinct shapes
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
    return _kernel(a, b, coeffs, eps)[0]


@dataclass
class Slopes:
    """Per half p, what backward needs beyond ΔW: ``inv`` = 1[S ≥ eps] / sqrt(max(S, eps)) (the clamp's
    own derivative: zero where it clamped), and the distances themselves when c is learned."""

    inv: list[torch.Tensor]
    dists: list[torch.Tensor] | None


def _kernel(a: torch.Tensor, b: torch.Tensor, coeffs: torch.Tensor, eps: float, slopes: bool = False,
            dists: bool = False) -> tuple[torch.Tensor, Slopes | None]:
    """ΔW, and with ``slopes`` the :class:`Slopes` (``dists`` keeps the distances too). Forward and
    backward both build ΔW here, with the same ops in the same order: the same values, so the gate
    rebuilt in backward matches the saved threshold bit for bit."""
    h = a.shape[1] // P
    delta, kept = None, Slopes([], [] if dists else None) if slopes else None
    for p in range(P):
        sq = _sq_distance(a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h])  # (rows, in)
        live = _ge(sq, eps) if kept is not None else None  # 1 where the clamp lets the gradient through
        d = sq.clamp_min_(eps).sqrt_()
        if delta is None:
            delta = d * coeffs[p] if kept is not None else d.mul_(coeffs[p])
        else:
            delta.addcmul_(d, coeffs[p])
        if kept is not None:
            kept.inv.append(live.div_(d))
            if kept.dists is not None:
                kept.dists.append(d)
    return delta, kept


def _ge(t: torch.Tensor, bound: torch.Tensor | float) -> torch.Tensor:
    """1.0 where t ≥ bound, else 0.0, in t's dtype — written straight as floats: on CPU a bool mask and
    masked_fill_ cost 4–15× an ordinary elementwise pass."""
    return torch.ge(t, bound, out=torch.empty_like(t))


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
    ``flat.kthvalue(numel − m + 1)``, from numpy's selection on the CPU, else from ``topk`` of whichever side
    is smaller (see the module docstring)."""
    n = flat.numel()
    if flat.device.type == "cpu" and flat.dtype in NUMPY_SELECTS:
        return _kth_numpy(flat, n - m)
    k, largest = (m, True) if m <= n - m + 1 else (n - m + 1, False)  # the k-th from that end
    values = flat.topk(k, largest=largest, sorted=False).values
    return values.min() if largest else values.max()


def _kth_numpy(flat: torch.Tensor, index: int) -> torch.Tensor:
    """The entry at ascending position ``index`` (0-based), via ``np.partition`` on a copy (``flat`` is
    left as it is: the gate still reads it). A fresh 0-d tensor: the partitioned copy is not kept alive by
    the threshold that backward saves."""
    ordered = np.partition(flat.detach().numpy(), index)
    return flat.new_tensor(ordered[index])


def gate(delta: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The detached multiplier g with ΔWˢ = ΔW ⊙ g."""
    return _gate_(delta.detach().abs(), t, rule)


def _gate_(mag: torch.Tensor, t: torch.Tensor, rule: str) -> torch.Tensor:
    """The gate from |ΔW|, computed in place in ``mag``."""
    if rule == "released":
        return mag.mul_(_ge(mag, t))
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
        x, weight, *rest = ctx.saved_tensors
        n = 3 * len(plan.parts)
        with torch.autocast(x.device.type, enabled=False):
            x2d = x.reshape(-1, x.shape[-1]).to(plan.dtype)  # (tokens, in)
            gy = grad_y.reshape(-1, plan.out_features).to(plan.dtype)  # (tokens, out)
            grad_x = _InputGrad(gy, weight, x2d, plan.fold) if ctx.needs_input_grad[0] else None
            grads: list[torch.Tensor | None] = []
            for k, part in enumerate(plan.parts):
                grads += _part_grads(*rest[3 * k:3 * k + 3], rest[n + k], part, plan, x2d, gy, grad_x,
                                     want_c=ctx.needs_input_grad[6 + 3 * k])
            gx = None if grad_x is None else grad_x.result().view(x.shape).to(x.dtype)
        return (gx, None, None, None, *grads)


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


class _InputGrad:
    """grad_x = grad_y @ (W0 + ΔWˢ), gathered part by part. Folded: W0 + ΔWˢ is rebuilt, then one product.
    Unfolded: grad_y @ W0 first (zeros without a weight), each part's grad_y @ ΔWˢ added into it."""

    def __init__(self, gy: torch.Tensor, weight: torch.Tensor | None, x2d: torch.Tensor, fold: bool) -> None:
        self.gy, self.fold = gy, fold
        if fold:
            self.acc = weight.clone()  # (out, in)
        elif weight is None:
            self.acc = torch.zeros_like(x2d)  # (tokens, in)
        else:
            self.acc = gy @ weight.to(gy.dtype)

    def add(self, rows: slice, sparse: torch.Tensor) -> None:
        """Take one part's ΔWˢ (rows, in) into account."""
        if self.fold:
            self.acc[rows] += sparse
        else:
            self.acc.addmm_(self.gy[:, rows], sparse.to(self.gy.dtype))

    def result(self) -> torch.Tensor:
        return self.gy @ self.acc if self.fold else self.acc


def _part_grads(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, t: torch.Tensor, part: PartSpec, plan: Plan,
                x2d: torch.Tensor, gy: torch.Tensor, grad_x: _InputGrad | None,
                want_c: bool) -> list[torch.Tensor | None]:
    """One part's factor gradients, ΔW rebuilt from the factors exactly as in forward; its ΔWˢ goes to
    ``grad_x`` on the way."""
    rows = slice(part.row0, part.row0 + part.rows)
    delta, slopes = _kernel(a, b, c, plan.eps, slopes=True, dists=want_c)
    g = _gate_(delta.abs(), t, plan.rule)  # (rows, in)
    if grad_x is not None:
        grad_x.add(rows, delta.mul_(g))  # ΔWˢ
    del delta
    grad_delta = mm_fp32(gy[:, rows].t(), x2d, a.dtype).mul_(g)  # dL/dΔW = dL/dΔWˢ ⊙ g, (rows, in)
    del g
    return _factor_grads(a, b, c, grad_delta, slopes)


def _factor_grads(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, grad_delta: torch.Tensor,
                  slopes: Slopes) -> list[torch.Tensor | None]:
    """dL/dA, dL/dB (and dL/dc when ``slopes`` kept the distances) from dL/dΔW, half by half.

    With S = ‖b_i‖² + ‖a_j‖² − 2 b_i·a_j and u = dL/dΔW ⊙ slopes.inv (= 2·dL/dS / c_p):
    dL/dB_i = c_p (Σ_j u_ij B_i − Σ_j u_ij A_j), dL/dA_j = c_p (Σ_i u_ij A_j − Σ_i u_ij B_i). The two
    skinny products run as (h, ·) @ (·, ·) and are transposed back: on CPU 4× faster than (·, ·) @ (·, h).
    """
    h = a.shape[1] // P
    ga, gb = [], []
    gc = a.new_empty(P) if slopes.dists is not None else None
    for p in range(P):
        ap, bp = a[:, p * h:(p + 1) * h], b[:, p * h:(p + 1) * h]
        if gc is not None:
            gc[p] = torch.dot(grad_delta.view(-1), slopes.dists[p].view(-1))
        u = slopes.inv[p].mul_(grad_delta)  # (rows, in)
        gb.append((u.sum(1, keepdim=True) * bp).sub_((ap.t() @ u.t()).t()).mul_(c[p]))
        ga.append((u.sum(0).unsqueeze(1) * ap).sub_((bp.t() @ u).t()).mul_(c[p]))
    return [torch.cat(ga, 1), torch.cat(gb, 1), gc]


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

"""SNELL — kernelized LoRA with competition-based sparsification (Shen et al., NeurIPS 2024; METHODS.md §2).

Per targeted logical matrix (rows × in): factors A (in, r), B (rows, r) split into P = 2 halves, the
piecewise-linear kernel ΔW[i, j] = Σ_p c_p·sqrt(max(‖B_i^(p) − A_j^(p)‖², eps)), and every forward a
competition keeping n_keep = m·n − floor(s·m·n) entries (``kernel.py``). Budget → rank
r = 2·floor(budget / (2·Σ(in + rows))). The dense ΔW is never kept for backward: a custom autograd function
saves x, the factors and one threshold per matrix, and recomputes ΔW in backward. Measured on a
576×576 projection (batch 2, seq 64, r = 16): 368 652 bytes saved = x (294 912) + factors (73 728) + c and
the threshold (12), against 1 327 104 for one dense fp32 ΔW (``tests/core/test_snell.py``).

Cost: what memory saves, time pays — per adapted matrix and step, ΔW is built twice (forward and backward),
ranked once (``topk`` of the smaller side; never ``kthvalue``, which CUDA runs on one thread block). With an
fp32 base W0 + ΔWˢ is folded into one product each way, plus the ΔW gradient product gradᵀ @ x; with a bf16
base (the GPU policy) ΔWˢ stays apart so tiny updates are not rounded away, and the products run in bf16 with
fp32 accumulation. A step still costs more than a LoRA step of the same rank (the paper: 0.557 vs 0.443
s/image; here 1.18–1.25× LoRA on CPU, SmolLM2-135M, see the README).

Initialisation for language models (the open question of METHODS.md §2)
-----------------------------------------------------------------------
Choice: keep the released code's distribution — each factor U(±1/sqrt(features·r/2)) (its
``kaiming_uniform_(a=√5)`` on (P, features, r/2) tensors) and c = (+0.1, −0.1) — and *no* zeroing.
Why it satisfies both requirements at once: both survivor rules multiply ΔW by a gate that is itself of
the order of |ΔW| (|ΔW| or |ΔW| − t), so the applied ΔWˢ is *second* order in the factor scale while the
factor gradients are *first* order (∂ΔWˢ/∂factor = gate · c · a unit vector). At this scale ΔW ~ 1e-3 and
ΔWˢ ~ 1e-6, far below the base weights, yet every factor gets a gradient well above AdamW's eps (1e-8).
Zero factors would give ΔW = sqrt(eps)·Σc = 0, a zero gate and zero gradients; identical A/B rows would put
every distance at the eps clamp, whose gradient is zero — both rejected.

Measured (SmolLM2-135M-Instruct, fp32, targets q,k,v, budget 1% → r = 16, s = 0.9, 8 SST-2 sentences
as LM text, seed 0): base loss 5.711402; step-0 loss 5.711405 (ratio 1.0000005) with ``released``,
5.711402 (ratio 1.0000000) with ``paper``; all 180 factor tensors get nonzero gradients — total norm
1.1e-3 (per tensor 4.8e-6 … 3.4e-4) with ``released``, 2.8e-4 (1.1e-6 … 7.4e-5) with ``paper``;
max ‖ΔWˢ‖/‖W‖ over modules 5.9e-5 / 1.8e-5. ``tests/core/test_snell.py`` re-checks the 1% bound and the
nonzero gradients on the tiny LLaMA.
"""

from smt_core.methods.snell.config import SPEC, SnellConfig
from smt_core.registry import lazy_engine, register

register(SPEC)
_ENGINE = {"SnellLayer": "smt_core.methods.snell.layer", "SnellMethod": "smt_core.methods.snell.model"}


def __getattr__(name: str):
    return lazy_engine(__name__, _ENGINE, name)


__all__ = ["SPEC", "SnellConfig", "SnellLayer", "SnellMethod"]

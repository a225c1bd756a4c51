"""SNELL's fast paths against plain references: the topk threshold, and the whole layer (base folded in).

The threshold must be the very value ``kthvalue`` gives (ties, keep = 1, keep = everything); the layer's
output and gradients (x, A, B, c) must match a dense autograd reference y = x @ (W0 + ΔWˢ)ᵀ + b — in fp64
tightly, in fp32, and in bf16 under CPU autocast (the GPU precision policy: bf16 frozen weights, fp32
factors) — for Linear and Conv1D bases, fused parts, with and without a bias.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from smt_core.methods.snell import SnellLayer
from smt_core.methods.snell import kernel as K
from smt_core.methods.snell.kernel import EPS, mm_fp32, threshold
from smt_core.targets import Part
from tests.core.test_snell import reference_delta, reference_sparse


def kthvalue_threshold(delta: torch.Tensor, keep: int, rule: str) -> torch.Tensor:
    """The previous implementation, verbatim: the reference for the ranking."""
    flat = delta.detach().abs().flatten()
    total = flat.numel()
    if rule == "released":
        return flat.kthvalue(total - keep + 1).values
    if keep >= total:
        return flat.new_zeros(())
    return flat.kthvalue(total - keep).values


def matrices() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(19, 37, generator=gen),  # distinct values
            torch.randint(-3, 4, (16, 12), generator=gen).float(),  # few values, many ties, zeros
            torch.full((5, 7), 0.25),  # all tied
            torch.randn(1, 1, generator=gen),
            torch.randn(64, 48, generator=gen).half().float(),  # ties from rounding
            K.kernel_delta(torch.rand(576, 16, generator=gen), torch.rand(192, 16, generator=gen),
                           torch.tensor([0.1, -0.1]))]  # a real ΔW


@pytest.mark.parametrize("selects", [(), K.NUMPY_SELECTS], ids=["topk", "numpy"])
@pytest.mark.parametrize("rule", ["released", "paper"])
def test_threshold_equals_kthvalue_exactly(rule, selects, monkeypatch):
    monkeypatch.setattr(K, "NUMPY_SELECTS", selects)  # topk (as on CUDA), or numpy's selection (the CPU's)
    for delta in matrices():
        total = delta.numel()
        keeps = {1, 2, total // 10 + 1, total // 2, total // 2 + 1, total - 1, total}
        for keep in sorted(k for k in keeps if 1 <= k <= total):
            got, want = threshold(delta, keep, rule), kthvalue_threshold(delta, keep, rule)
            assert got.shape == () and torch.equal(got, want), (tuple(delta.shape), keep, got, want)


@pytest.mark.parametrize("rule", ["released", "paper"])
def test_gate_equals_its_definition_exactly(rule):
    """g = |ΔW|·1[|ΔW| ≥ t] or max(|ΔW| − t, 0), bit for bit, ties at t included."""
    for delta in matrices():
        t = threshold(delta, max(1, delta.numel() // 3), rule)
        mag = delta.abs()
        want = torch.where(mag >= t, mag, 0.0) if rule == "released" else (mag - t).clamp_min(0.0)
        assert torch.equal(K.gate(delta, t, rule), want)


def test_kth_largest_takes_the_smaller_side_of_topk(monkeypatch):
    monkeypatch.setattr(K, "NUMPY_SELECTS", ())
    seen = []
    real = torch.Tensor.topk

    def spy(self, k, *args, **kwargs):
        seen.append((k, kwargs.get("largest", True)))
        return real(self, k, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "topk", spy)
    flat = torch.arange(100.0)
    assert K.kth_largest(flat, 10) == 90 and K.kth_largest(flat, 95) == 5
    assert seen == [(10, True), (6, False)]


def make(base: nn.Module, parts: tuple[Part, ...], rule: str, dtype: torch.dtype, seed: int = 0,
         learn: bool = True) -> SnellLayer:
    """A layer with O(1) factors (ΔWˢ as large as W0: a wrong term cannot hide in rounding)."""
    torch.manual_seed(seed)
    base.requires_grad_(False)  # frozen, as the method leaves it: the fused path
    transposed = isinstance(base, Conv1D)
    in_f, out_f = (base.weight.shape if transposed else base.weight.shape[::-1])
    layer = SnellLayer(base, "proj", in_f, out_f, parts, 6, 0.6, rule, (0.1, -0.1), learn, EPS)
    with torch.no_grad():
        for d in (layer.snell_A, layer.snell_B):
            for p in d.values():
                p.normal_()
    return layer.to(dtype)


def bases(dtype: torch.dtype) -> dict[str, tuple[nn.Module, tuple[Part, ...]]]:
    torch.manual_seed(1)
    linear, nobias, conv = nn.Linear(11, 9), nn.Linear(11, 17, bias=False), Conv1D(3 * 8, 8)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
    return {"linear-bias-one-part": (linear.to(dtype), (Part("q", 0, 9),)),
            "linear-no-bias-fused": (nobias.to(dtype), (Part("q", 0, 7), Part("v", 12, 5))),
            "conv1d-fused-q-v": (conv.to(dtype), (Part("q", 0, 8), Part("v", 16, 8)))}


def dense_reference(layer: SnellLayer, x: torch.Tensor) -> torch.Tensor:
    """x @ (W0 + ΔWˢ)ᵀ + b with autograd through ΔWˢ, in the factors' dtype."""
    w = layer.weight_out_in().detach().to(layer.snell_A[layer.parts[0].target].dtype)
    full = torch.zeros_like(w)
    for p in layer.parts:
        dw = reference_delta(layer.snell_A[p.target], layer.snell_B[p.target], layer.snell_c[p.target])
        full = full.index_add(0, torch.arange(p.row0, p.row0 + p.rows), reference_sparse(dw, layer.keep(p),
                                                                                          layer.rule))
    bias = None if layer.bias is None else layer.bias.detach().to(w.dtype)
    return nn.functional.linear(x.to(w.dtype), w + full, bias)


def grads(layer: SnellLayer, y: torch.Tensor, x: torch.Tensor, grad_y: torch.Tensor) -> list[torch.Tensor]:
    params = [t for p in layer.parts
              for t in (layer.snell_A[p.target], layer.snell_B[p.target], layer.snell_c[p.target])]
    return list(torch.autograd.grad(y, [x, *params], grad_y))


def assert_close_scaled(got: torch.Tensor, want: torch.Tensor, rel: float, what: str) -> None:
    """max |got − want| ≤ rel · max |want| (entries near zero are judged on the tensor's scale)."""
    assert got.shape == want.shape, what
    assert want.abs().max() > 0, f"{what}: the reference is zero, the test would prove nothing"
    err = (got.double() - want.double()).abs().max() / want.double().abs().max()
    assert err <= rel, f"{what}: relative error {err:.2e} > {rel:.0e}"


@pytest.mark.parametrize("case", ["linear-bias-one-part", "linear-no-bias-fused", "conv1d-fused-q-v"])
@pytest.mark.parametrize("rule", ["released", "paper"])
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_layer_matches_dense_reference(case, rule, dtype, rel):
    base, parts = bases(dtype)[case]
    layer = make(base, parts, rule, dtype)
    assert layer._fusable()
    assert K.make_plan((), 1, rule, EPS, torch.ones(1, dtype=dtype), layer.weight, dtype).fold
    x = torch.randn(3, 5, layer.in_features, dtype=dtype, requires_grad=True)
    y = layer(x)
    grad_y = torch.randn_like(y)
    want_y = dense_reference(layer, x)
    assert_close_scaled(y, want_y, rel, "output")
    names = ["x"] + [f"{n}[{p.target}]" for p in parts for n in ("A", "B", "c")]
    for g, w, name in zip(grads(layer, y, x, grad_y), grads(layer, want_y, x, grad_y), names, strict=True):
        assert_close_scaled(g, w, rel, name)
    outside = sorted(set(range(layer.out_features)) - {r for p in parts for r in range(p.row0, p.row0 + p.rows)})
    if outside:  # rows outside the parts: the base's output
        torch.testing.assert_close(y[..., outside], layer.base(x)[..., outside], rtol=rel, atol=rel)


@pytest.mark.parametrize("case", ["linear-bias-one-part", "linear-no-bias-fused", "conv1d-fused-q-v"])
@pytest.mark.parametrize("rule", ["released", "paper"])
@pytest.mark.parametrize("x_dtype", [torch.bfloat16, torch.float32], ids=["x-bf16", "x-fp32"])
def test_layer_under_bf16_autocast_matches_fp32_reference(case, rule, x_dtype):
    """The GPU policy on the CPU: bf16 frozen weights, fp32 factors, bf16 autocast (x in bf16 as after a
    LLaMA RMSNorm, or fp32 as after an autocast LayerNorm)."""
    base, parts = bases(torch.float32)[case]
    layer = make(base, parts, rule, torch.float32)
    layer.base.to(torch.bfloat16)
    x = torch.randn(4, 6, layer.in_features).to(x_dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plan = K.make_plan((), 1, rule, EPS, x, layer.weight, torch.float32)
        assert plan.dtype == torch.bfloat16 and not plan.fold  # bf16 W0 + fp32 ΔWˢ: kept apart
        y = layer(x)
        base_y = layer.base(x)
    assert y.dtype == base_y.dtype == torch.bfloat16
    grad_y = torch.randn_like(y)
    got = grads(layer, y, x, grad_y)
    assert got[0].dtype == x_dtype and all(g.dtype == torch.float32 for g in got[1:])
    want_y = dense_reference(layer, x)  # in fp32, from the same bf16 W0 and the same x
    want = grads(layer, want_y, x, grad_y.float())
    assert_close_scaled(y, want_y, 1.5e-2, "output")
    names = ["x"] + [f"{n}[{p.target}]" for p in parts for n in ("A", "B", "c")]
    for g, w, name in zip(got, want, names, strict=True):
        assert_close_scaled(g, w, 1.5e-2, name)


def test_fold_equals_base_plus_delta_in_fp32():
    """In fp32 the fold only regroups the sums: y = base(x) + x @ ΔWˢᵀ, as before, to rounding."""
    base, parts = bases(torch.float32)["conv1d-fused-q-v"]
    layer = make(base, parts, "released", torch.float32)
    x = torch.randn(2, 7, layer.in_features)
    torch.testing.assert_close(layer(x), layer.base(x) + layer.delta(x), rtol=1e-5, atol=1e-5)


def test_trainable_base_falls_back_to_base_plus_delta():
    base, parts = bases(torch.float32)["linear-bias-one-part"]
    layer = make(base, parts, "paper", torch.float32)
    assert layer._fusable()
    x = torch.randn(2, 3, layer.in_features)
    fused = layer(x)
    layer.base.weight.requires_grad_(True)
    assert not layer._fusable()
    y = layer(x)
    torch.testing.assert_close(y, fused, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert layer.base.weight.grad is not None and layer.snell_A["q"].grad is not None


def test_disabled_layer_is_the_base_exactly():
    base, parts = bases(torch.float32)["conv1d-fused-q-v"]
    layer = make(base, parts, "released", torch.float32)
    x = torch.randn(2, 3, layer.in_features)
    assert not torch.allclose(layer(x), layer.base(x))
    layer.disabled = True
    assert torch.equal(layer(x), layer.base(x))


def test_layer_saves_nothing_dense_beyond_its_own_weights():
    """The fused forward keeps x, the module's own W0 and b, the factors and one threshold per part."""
    in_f = out_f = 96
    layer = make(nn.Linear(in_f, out_f), (Part("q", 0, out_f),), "released", torch.float32)
    own = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    x = torch.randn(2, 16, in_f, requires_grad=True)
    extra: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own and storage.data_ptr() != x.untyped_storage().data_ptr():
            extra[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    assert sum(extra.values()) <= 8, f"saved beyond x and the parameters: {extra}"  # two 0-d thresholds
    y.sum().backward()
    assert x.grad is not None and layer.snell_B["q"].grad.abs().sum() > 0


def test_mm_fp32_returns_fp32_from_bf16_inputs():
    a, b = torch.randn(5, 7), torch.randn(7, 3)
    got = mm_fp32(a.bfloat16(), b.bfloat16(), torch.float32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, a.bfloat16().float() @ b.bfloat16().float(), rtol=1e-2, atol=1e-2)
    assert torch.equal(mm_fp32(a, b, torch.float32), a @ b)

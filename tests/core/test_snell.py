"""SNELL numerics on single layers: the kernel, the competition, the recomputing autograd, the options.

Every expected value comes from an explicit dense reference written with plain tensor ops (pairwise
differences, not the engine's ‖a‖² + ‖b‖² − 2a·b expansion; threshold by sorting; the same eps clamp).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smt_core.base import PrepareContext
from smt_core.methods.snell import SnellConfig, SnellLayer, SnellMethod
from smt_core.methods.snell.kernel import EPS, kernel_delta, n_keep, sparse_delta, threshold
from smt_core.registry import get_method
from smt_core.targets import Part, Site


def reference_delta(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """ΔW (rows, in) with autograd, from explicit pairwise differences."""
    h = a.shape[1] // 2
    return sum(c[p] * ((b[:, None, p * h:(p + 1) * h] - a[None, :, p * h:(p + 1) * h]) ** 2).sum(-1)
               .clamp_min(eps).sqrt() for p in range(2))


def reference_sparse(delta: torch.Tensor, keep: int, rule: str) -> torch.Tensor:
    """ΔWˢ with autograd; thresholds by a full sort."""
    mag = delta.detach().abs()
    ranked = mag.flatten().sort(descending=True).values
    if rule == "released":
        return delta * (mag * (mag >= ranked[keep - 1]))
    t = ranked[keep] if keep < mag.numel() else 0.0
    return delta * (mag - t).clamp_min(0)


def make_layer(in_f: int, out_f: int, parts: tuple[Part, ...], rank: int, rule: str = "released",
               sparsity: float = 0.7, learn: bool = False, seed: int = 0) -> SnellLayer:
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f)
    layer = SnellLayer(base, "proj", in_f, out_f, parts, rank, sparsity, rule, (0.1, -0.1), learn, EPS)
    with torch.no_grad():  # factors at O(1) so ΔWˢ is large: a wrong reference cannot hide in rounding
        for d in (layer.snell_A, layer.snell_B):
            for p in d.values():
                p.normal_()
    return layer


@pytest.mark.parametrize("rule", ["released", "paper"])
@pytest.mark.parametrize("learn", [False, True])
def test_forward_and_grads_match_dense_reference(rule, learn):
    parts = (Part("q", 0, 7), Part("v", 12, 5))  # a fused module with rows 7..11 not targeted
    layer = make_layer(11, 17, parts, rank=6, rule=rule, learn=learn).double()
    x = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)  # (batch, seq, in)
    y = layer.delta(x)
    grad_y = torch.randn_like(y)
    params = [t for p in parts for t in (layer.snell_A[p.target], layer.snell_B[p.target])]
    if learn:
        params += [layer.snell_c[p.target] for p in parts]
    got = torch.autograd.grad(y, [x, *params], grad_y)

    ref_y = torch.zeros_like(y)
    for p in parts:
        dw = reference_delta(layer.snell_A[p.target], layer.snell_B[p.target], layer.snell_c[p.target])
        ref_y[..., p.row0:p.row0 + p.rows] = x @ reference_sparse(dw, layer.keep(p), rule).t()
    want = torch.autograd.grad(ref_y, [x, *params], grad_y)

    torch.testing.assert_close(y, ref_y, rtol=1e-10, atol=1e-10)
    assert y[..., 7:12].abs().max() == 0, "rows outside the targeted parts must get no delta"
    for g, w in zip(got, want, strict=True):
        assert w.abs().max() > 0
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


def test_nearly_coinciding_factor_rows_hit_the_eps_clamp_like_the_reference():
    layer = make_layer(9, 7, (Part("q", 0, 7),), rank=4, sparsity=0.0).double()
    with torch.no_grad():
        # first half: ‖B_i − A_j‖² = 2·1e-10 < eps, clamped (no slope); the second half keeps ΔW ≠ 0
        layer.snell_A["q"][:3, :2] = layer.snell_B["q"][:3, :2] + 1e-5
    x = torch.randn(2, 9, dtype=torch.float64)
    a, b = layer.snell_A["q"], layer.snell_B["q"]
    got = torch.autograd.grad(layer.delta(x).square().sum(), [a, b])
    dw = reference_delta(a, b, layer.snell_c["q"])
    want = torch.autograd.grad((x @ reference_sparse(dw, layer.keep(layer.parts[0]), "released").t())
                               .square().sum(), [a, b])
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("rule", ["released", "paper"])
def test_forward_matches_reference_in_float32(rule):
    layer = make_layer(23, 9, (Part("k", 0, 9),), rank=4, rule=rule)
    x = torch.randn(2, 6, 23)
    dw = reference_delta(layer.snell_A["k"], layer.snell_B["k"], layer.snell_c["k"]).detach()
    want = x @ reference_sparse(dw, layer.keep(layer.parts[0]), rule).t()
    torch.testing.assert_close(layer.delta(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule", ["released", "paper"])
@pytest.mark.parametrize("sparsity", [0.0, 0.29, 0.5, 0.9])
def test_sparse_delta_keeps_exactly_n_keep(rule, sparsity):
    layer = make_layer(37, 19, (Part("q", 0, 19),), rank=8, rule=rule, sparsity=sparsity).double()
    part = layer.parts[0]
    keep = layer.keep(part)
    assert keep == 19 * 37 - round(sparsity * 100) * 19 * 37 // 100
    assert int(torch.count_nonzero(layer.materialise(part))) == keep


def test_n_keep_uses_exact_decimal_arithmetic():
    assert 0.29 * 100 < 29  # the float product rounds down ...
    assert n_keep(10, 10, 0.29) == 71  # ... but the count is 100 − 29, not 100 − 28
    assert n_keep(10, 10, 0.0) == 100 and n_keep(4, 5, 0.95) == 1


def test_threshold_works_beyond_2_pow_24_entries():
    rows = cols = 4097  # 16 785 409 entries > 2**24, where torch.quantile refuses
    torch.manual_seed(0)
    a, b, c = torch.rand(cols, 2), torch.rand(rows, 2), torch.tensor([0.1, -0.1])
    keep = n_keep(rows, cols, 0.9)
    delta = kernel_delta(a, b, c)
    ties = int((delta.abs() == threshold(delta, keep, "released")).sum())
    del delta
    nnz = int(torch.count_nonzero(sparse_delta(a, b, c, keep, "released")))
    assert keep <= nnz <= keep + ties - 1


def test_memory_saved_for_backward_is_linear_not_dense():
    """SmolLM2's q_proj shape: what SNELL keeps for backward is x + factors, not an (out, in) matrix."""
    in_f = out_f = 576
    rank, batch, seq = 16, 2, 64
    layer = make_layer(in_f, out_f, (Part("q", 0, out_f),), rank=rank)
    x = torch.randn(batch, seq, in_f, requires_grad=True)
    saved: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer.delta(x)
    total = sum(saved.values())
    x_bytes, factor_bytes = batch * seq * in_f * 4, (in_f + out_f) * rank * 4
    dense_bytes = in_f * out_f * 4
    print(f"saved {total} B: x {x_bytes} B + factors {factor_bytes} B; dense ΔW would be {dense_bytes} B")
    assert total <= x_bytes + factor_bytes + 64  # + coefficients and one 0-d threshold
    assert total < dense_bytes / 2
    y.sum().backward()  # and the recomputing backward runs from exactly that
    assert layer.snell_A["q"].grad.abs().sum() > 0


def test_disabled_and_zero_adapter_equal_base():
    layer = make_layer(11, 13, (Part("q", 0, 13),), rank=4)
    x = torch.randn(2, 3, 11)
    base = layer.base(x)
    assert not torch.allclose(layer(x), base)
    layer.disabled = True
    assert torch.equal(layer(x), base)
    layer.disabled = False
    with torch.no_grad():
        layer.snell_c["q"].zero_()  # c = 0: ΔW = 0 exactly
    assert torch.equal(layer(x), base)


def test_rank_from_budget_and_below_rank_two_raises():
    sites = [Site("m", nn.Linear(10, 6), -1, False, 6, 10, (Part("q", 0, 6),))]
    method = SnellMethod(SnellConfig())
    ctx = PrepareContext(nn.Sequential(), sites, 16 * 7 + 5, 0, torch.device("cpu"))
    method.prepare(ctx)
    assert method.rank == 6  # 2·floor(117 / (2·16))
    with pytest.raises(ValueError, match="budget"):
        SnellMethod(SnellConfig()).prepare(PrepareContext(nn.Sequential(), sites, 31, 0, torch.device("cpu")))


@pytest.mark.parametrize("options, name", [({"sparsityy": 0.5}, "sparsityy"), ({"sparsity": 1.0}, "sparsity"),
                                           ({"rule": "quantile"}, "rule"), ({"sparsity": "1.5"}, "sparsity"),
                                           ({"learn_coefficients": "maybe"}, "learn_coefficients")])
def test_bad_options_raise_naming_the_option(options, name):
    with pytest.raises(ValueError, match=name):
        SnellMethod.from_options(options)


def test_options_parse_cli_strings_and_registry_finds_snell():
    method = get_method("snell").from_options({"sparsity": "0.5", "rule": "paper", "learn_coefficients": "true"})
    assert isinstance(method, SnellMethod)
    assert method.config == SnellConfig(sparsity=0.5, rule="paper", learn_coefficients=True)
    assert SnellMethod.spec.default_learning_rate > 0

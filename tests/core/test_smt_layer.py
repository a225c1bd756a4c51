"""SMT's block-sparse layer against a dense masked reference (masked full fine-tuning)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smt_core.methods.smt.layer import SliceCache, SMTLinear
from smt_core.methods.smt.selection import default_block_size, score_blocks, tile

# sides that are not multiples of the block size 32: ragged edge blocks on both axes
OUT, IN, B = 80, 72, 32
BLOCKS = [(0, 32, 32, 32), (64, 64, 16, 8), (32, 0, 32, 32), (64, 0, 16, 32)]


def _dense_reference(base: nn.Linear, x: torch.Tensor, blocks, values: torch.Tensor):
    """Masked full fine-tuning: a dense trainable ΔW whose gradient is masked to the blocks."""
    delta = torch.zeros(OUT, IN, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        off = 0
        for r, c, h, w in blocks:
            delta[r:r + h, c:c + w] = values[off:off + h * w].view(h, w)
            off += h * w
    xr = x.detach().double().requires_grad_(True)
    y = xr @ (base.weight.double() + delta).t() + base.bias.double()
    return y, xr, delta


def _mask(blocks):
    m = torch.zeros(OUT, IN, dtype=torch.bool)
    for r, c, h, w in blocks:
        m[r:r + h, c:c + w] = True
    return m


@pytest.mark.parametrize("impl", ["fold", "blocks"])
def test_block_gradients_match_dense_masked_reference(impl):
    torch.manual_seed(0)
    base = nn.Linear(IN, OUT)
    values = torch.randn(sum(h * w for *_, h, w in BLOCKS)) * 0.1
    layer = SMTLinear(base, False, BLOCKS, values, SliceCache(), impl=impl)
    for p in base.parameters():
        p.requires_grad_(False)
    x = torch.randn(3, 5, IN, requires_grad=True)
    y = layer(x)
    grad_out = torch.randn_like(y)
    y.backward(grad_out)

    y_ref, x_ref, delta = _dense_reference(base, x, BLOCKS, values)
    y_ref.backward(grad_out.double())
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=1e-5, atol=1e-5)
    ref_vals = torch.cat([delta.grad[r:r + h, c:c + w].reshape(-1) for r, c, h, w in BLOCKS])
    torch.testing.assert_close(layer.values.grad.double(), ref_vals, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["fold", "blocks"])
def test_one_adamw_step_matches_masked_full_finetuning_and_leaves_other_entries_bit_identical(impl):
    torch.manual_seed(1)
    base = nn.Linear(IN, OUT)
    for p in base.parameters():
        p.requires_grad_(False)
    w0 = base.weight.detach().clone()
    layer = SMTLinear(base, False, BLOCKS, None, SliceCache(), impl=impl)
    x = torch.randn(4, 7, IN)
    target = torch.randn(4, 7, OUT)

    opt = torch.optim.AdamW([layer.values], lr=1e-2, weight_decay=0.0)
    nn.functional.mse_loss(layer(x), target).backward()
    opt.step()

    ref = nn.Linear(IN, OUT)
    ref.load_state_dict(base.state_dict())
    ref.bias.requires_grad_(False)
    ref_opt = torch.optim.AdamW([ref.weight], lr=1e-2, weight_decay=0.0)
    nn.functional.mse_loss(ref(x), target).backward()
    ref.weight.grad *= _mask(BLOCKS)  # masked full fine-tuning
    ref_opt.step()

    merged = w0.clone()
    for r0, c0, d in layer.block_deltas():
        merged[r0:r0 + d.shape[0], c0:c0 + d.shape[1]] += d.detach()
    mask = _mask(BLOCKS)
    torch.testing.assert_close(merged[mask], ref.weight.detach()[mask], rtol=1e-5, atol=1e-6)
    assert torch.equal(merged[~mask], w0[~mask]), "entries outside the blocks must stay bit-identical"
    assert torch.equal(base.weight, w0), "the frozen weight itself is never written"


def test_weight_decay_pulls_block_delta_towards_zero():
    torch.manual_seed(2)
    base = nn.Linear(IN, OUT)
    for p in base.parameters():
        p.requires_grad_(False)
    values = torch.randn(sum(h * w for *_, h, w in BLOCKS))
    layer = SMTLinear(base, False, BLOCKS, values, SliceCache())
    opt = torch.optim.AdamW([layer.values], lr=0.1, weight_decay=0.5)
    layer.values.grad = torch.zeros_like(layer.values)  # decay alone, no loss gradient
    before = layer.values.detach().abs().clone()
    opt.step()
    after = layer.values.detach().abs()
    assert torch.all(after < before), "decoupled decay must shrink ΔW (towards W0), not W"
    torch.testing.assert_close(after, before * (1 - 0.1 * 0.5))


@pytest.mark.parametrize("impl", ["fold", "blocks"])
def test_conv1d_transposed_weight_matches_linear(impl):
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(3)
    conv = Conv1D(OUT, IN)  # weight stored (in, out)
    lin = nn.Linear(IN, OUT)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.t())
        lin.bias.copy_(conv.bias)
    values = torch.randn(sum(h * w for *_, h, w in BLOCKS))
    a = SMTLinear(conv, True, BLOCKS, values, impl=impl)
    b = SMTLinear(lin, False, BLOCKS, values, impl=impl)
    x = torch.randn(2, 3, IN, requires_grad=True)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, (x, a.values), g)
    gb = torch.autograd.grad(yb, (x, b.values), g)
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)
    assert torch.equal(conv.weight, lin.weight.t()), "the fold never writes the frozen weight"


@pytest.mark.parametrize("impl", ["fold", "blocks"])
def test_bf16_autocast_matches_mixed_precision_masked_reference(impl):
    """The GPU policy on CPU: bf16 frozen weight, bf16 autocast, fp32 values. The reference is masked full
    fine-tuning in mixed precision: an fp32 master W0 + ΔW, autocast rounds it to bf16 for the products."""
    torch.manual_seed(4)
    base = nn.Linear(IN, OUT).to(torch.bfloat16)
    base.requires_grad_(False)
    values = torch.randn(sum(h * w for *_, h, w in BLOCKS)) * 0.05
    layer = SMTLinear(base, False, BLOCKS, values, SliceCache(), impl=impl)
    x = torch.randn(3, 5, IN, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and layer.values.dtype == torch.float32
    g = torch.randn_like(y)
    y.backward(g)

    master = base.weight.detach().float().clone()
    off = 0
    for r, c, h, w in BLOCKS:
        master[r:r + h, c:c + w] += values[off:off + h * w].view(h, w)
        off += h * w
    master.requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ref = nn.functional.linear(xr, master, base.bias.float())
    y_ref.backward(g)
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(x.grad, xr.grad, rtol=2e-2, atol=2e-2)
    ref_vals = torch.cat([master.grad[r:r + h, c:c + w].reshape(-1) for r, c, h, w in BLOCKS])
    assert layer.values.grad.dtype == torch.float32
    torch.testing.assert_close(layer.values.grad, ref_vals, rtol=3e-2, atol=3e-2)


def test_fold_saves_the_shared_input_once_and_the_index_is_no_activation():
    cache = SliceCache()
    layers = [SMTLinear(nn.Linear(IN, OUT), False, BLOCKS, cache=cache, impl="fold") for _ in range(3)]
    x = torch.randn(2, 4, IN)
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ys = [lyr(x) for lyr in layers]
    params = {p.untyped_storage().data_ptr() for lyr in layers for p in lyr.parameters()}
    saved = {ptr: n for ptr, n in seen.items() if ptr not in params}
    assert saved == {x.untyped_storage().data_ptr(): x.untyped_storage().nbytes()}
    assert sum(y.sum() for y in ys).requires_grad


def test_auto_impl_picks_blocks_on_cpu_and_fold_on_gpu_where_columns_are_covered():
    from smt_core.methods.smt.layer import pick_impl

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert pick_impl("auto", cpu, BLOCKS, IN) == "blocks"
    assert pick_impl("auto", gpu, BLOCKS, IN) == "fold"
    assert pick_impl("auto", gpu, [(0, 0, 8, 8)], 4096) == "blocks"  # 8 of 4096 columns: slices are smaller
    with pytest.raises(ValueError, match="impl"):
        pick_impl("dense", cpu, BLOCKS, IN)


def test_shared_input_is_sliced_once_across_layers():
    cache = SliceCache()
    layers = [SMTLinear(nn.Linear(IN, OUT), False, BLOCKS, cache=cache) for _ in range(3)]
    x = torch.randn(2, 4, IN)
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ys = [lyr(x) for lyr in layers]
    params = {p.untyped_storage().data_ptr() for lyr in layers for p in lyr.parameters()}
    slice_bytes = sum(n for ptr, n in seen.items() if ptr not in params)
    distinct_cols = {(c, w) for _, c, _, w in BLOCKS}
    expected = sum(2 * 4 * w * 4 for _, w in distinct_cols)  # one copy per distinct column range
    assert slice_bytes == expected
    assert sum(y.sum() for y in ys).requires_grad


def test_tiles_and_scores_cover_ragged_edges():
    assert tile(80, 72, 32)[-1] == (64, 64, 16, 8)
    g = torch.zeros(80, 72)
    g[64:, 64:] = 1.0  # the ragged corner block: mean |g| is 1 there
    scores = score_blocks(g, 32, "mean_abs_sum")
    assert scores.shape == (3, 3) and scores[2, 2] == 1.0 and scores.sum() == 1.0
    assert score_blocks(g, 32, "l1")[2, 2] == 16 * 8


def test_default_block_size_divides_sides():
    from smt_core.targets import Part, Site

    def site(out, inn):
        return Site("m", nn.Identity(), 0, False, out, inn, (Part("q", 0, out),))

    assert default_block_size([site(576, 576), site(192, 576)]) == 64
    assert default_block_size([site(384, 384)]) == 128
    assert default_block_size([site(768 * 3, 768)]) == 256


def test_the_default_block_size_is_the_largest_the_budget_buys_enough_of():
    """With a budget: the largest dividing power of two of which the budget buys MIN_BLOCKS blocks (the
    ablation in bench/NOTES.md), else the smallest dividing one; the plan uses the same rule."""
    from smt_core.methods.smt.config import MIN_BLOCKS, SPEC, SMTConfig
    from smt_core.methods.smt.config import default_block_size as rule
    from smt_core.methods.spec import Geometry, Module

    def geometry(shapes, copies):
        mods = tuple(Module(f"m{i}", cols, rows, (("q", rows),)) for i in range(copies) for rows, cols in shapes)
        return Geometry(mods, 10**9)

    minilm = geometry([(384, 384)], 18)  # q, k, v of 6 layers
    one_percent = 227_132
    assert rule(minilm) == 128  # no budget: the largest dividing power of two, as before
    assert rule(minilm, one_percent) == 32 and one_percent // (32 * 32) >= MIN_BLOCKS > one_percent // (64 * 64)
    assert rule(minilm, 40 * one_percent) == 128  # a large budget buys enough big blocks
    assert rule(minilm, 4096) == 16  # too small for MIN_BLOCKS of any: the smallest dividing block
    assert rule(geometry([(576, 576), (192, 576)], 30), 1_345_000) == 64  # SmolLM2 at 1%
    assert rule(geometry([(4096, 4096)], 96), 67_000_000) == 256  # LLaMA-7B at 1%: the paper's
    assert rule(geometry([(100, 100)], 1), 5000) == 64  # no power of two >= 16 divides 100: ragged 64
    assert SPEC.plan(minilm, one_percent, SMTConfig()).block_size == 32
    assert SPEC.plan(minilm, one_percent, SMTConfig(block_size=128)).block_size == 128  # an explicit size wins

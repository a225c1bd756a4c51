"""SNELL on tiny real architectures through ``find_sites``: LLaMA (GQA), BERT, GPT-2 (fused Conv1D c_attn).

Checks the method matrix of STYLE.md — merged output equals adapted output, artifact round trip is exact,
disabled adapter equals the base, only adapter parameters train — plus the LM initialisation bound.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

from smt_core.base import PrepareContext
from smt_core.methods.snell import SnellMethod
from smt_core.methods.snell.layer import SnellLayer
from smt_core.targets import base_param_count, find_sites

ARCHS = ["llama", "bert", "gpt2"]


def load(arch: str, path):
    torch.manual_seed(0)
    model = (AutoModel if arch == "bert" else AutoModelForCausalLM).from_pretrained(path)
    return model.eval()


@pytest.fixture
def tiny(request):
    """(architecture, saved tiny model folder) for ``indirect`` parametrisation by architecture."""
    return request.param, request.getfixturevalue(f"tiny_{request.param}_dir")


def prepare(model, targets=("q", "k", "v"), budget=4000, **options):
    sites = find_sites(model, list(targets))
    method = SnellMethod.from_options(options)
    for p in model.parameters():  # as the trainer does before prepare
        p.requires_grad_(False)
    model = method.prepare(PrepareContext(model, sites, budget, base_param_count(model), torch.device("cpu")))
    return model, method


def enlarge(method, model, scale: float = 1.0, seed: int = 1) -> None:
    """Factors at O(1): ΔWˢ far from zero, so a wrong orientation or offset cannot pass by rounding."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(5, 500, (2, 9), generator=gen),
            "attention_mask": torch.ones(2, 9, dtype=torch.long)}


def output(model, batch) -> torch.Tensor:
    with torch.no_grad():
        out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.mark.parametrize("tiny", ARCHS, indirect=True)
@pytest.mark.parametrize("rule", ["released", "paper"])
def test_merged_output_equals_adapted_output(tiny, rule):
    arch, model_dir = tiny
    base_out = output(load(arch, model_dir), inputs())
    model, method = prepare(load(arch, model_dir), rule=rule)
    enlarge(method, model)
    adapted = output(model, inputs())
    assert (adapted - base_out).abs().max() > 2e-3, "the adapter must change the output far beyond the tolerance"
    tensors = method.adapter_tensors(model)
    fresh = load(arch, model_dir)
    sites = find_sites(fresh, ["q", "k", "v"])
    method.merge(fresh, sites, tensors, method.adapter_info())
    torch.testing.assert_close(output(fresh, inputs()), adapted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tiny", ARCHS, indirect=True)
@pytest.mark.parametrize("learn", [False, True])
def test_adapter_tensors_round_trip_through_safetensors_exactly(tiny, learn, tmp_path):
    arch, model_dir = tiny
    model, method = prepare(load(arch, model_dir), learn_coefficients=learn)
    enlarge(method, model)
    adapted = output(model, inputs())
    tensors = method.adapter_tensors(model)
    assert all(t.is_contiguous() and t.device.type == "cpu" for t in tensors.values())
    assert any(k.endswith(".snell_coefficients") for k in tensors) == learn
    info = json.loads(json.dumps(method.adapter_info()))  # the manifest section is plain JSON
    save_file(tensors, tmp_path / "adapter.safetensors")
    reloaded = load_file(tmp_path / "adapter.safetensors")

    fresh = load(arch, model_dir)
    other = SnellMethod.from_options({})  # options come back from the manifest
    restored = other.load(fresh, find_sites(fresh, ["q", "k", "v"]), reloaded, info)
    assert torch.equal(output(restored, inputs()), adapted)
    assert other.adapter_info() == info


@pytest.mark.parametrize("tiny", ARCHS, indirect=True)
def test_only_snell_parameters_train(tiny):
    arch, model_dir = tiny
    model, method = prepare(load(arch, model_dir), learn_coefficients=True)
    params = method.trainable_parameters(model)
    assert {id(p) for p in params} == {id(p) for p in model.parameters() if p.requires_grad}
    rank = method.adapter_info()["rank"]
    parts = [(s.in_features, p.rows) for s in find_sites(load(arch, model_dir), ["q", "k", "v"]) for p in s.parts]
    factors = sum((n + m) * rank for n, m in parts)
    assert factors <= 4000 < factors + sum(n + m for n, m in parts) * 2  # the largest even rank that fits
    assert method.report(model)["trainable_params"] == factors + 2 * len(parts)  # + learned c per part
    batch = inputs()
    out = model(**batch)
    logits = out.logits if hasattr(out, "logits") else out.last_hidden_state
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("tiny", ARCHS, indirect=True)
def test_disabled_adapter_equals_base_and_report_counts_n_keep(tiny):
    arch, model_dir = tiny
    base_out = output(load(arch, model_dir), inputs())
    model, method = prepare(load(arch, model_dir), sparsity=0.75)
    enlarge(method, model)
    layers = method.layers(model)
    for layer in layers:
        layer.disabled = True
    assert torch.equal(output(model, inputs()), base_out)
    n_keep = sum(p["n_keep"] for m in method.adapter_info()["modules"].values() for p in m["parts"])
    assert method.report(model)["delta_nonzeros"] == n_keep


@pytest.mark.parametrize("tiny", ["gpt2"], indirect=True)
def test_fused_c_attn_adapts_only_the_targeted_column_ranges(tiny):
    _, model_dir = tiny
    base = load("gpt2", model_dir)
    base_w = base.transformer.h[0].attn.c_attn.weight.detach().clone()  # (in, 3·hidden), Conv1D layout
    hidden = base_w.shape[0]
    model, method = prepare(load("gpt2", model_dir), targets=("q", "v"))
    assert method.rank == 2 * (4000 // (2 * 2 * 2 * (hidden + hidden)))  # 2 layers × (q, v) parts
    enlarge(method, model)
    layer = model.transformer.h[0].attn.c_attn
    assert isinstance(layer, SnellLayer)
    x = torch.randn(2, 5, hidden)
    delta = layer(x) - layer.base(x)
    assert delta[..., hidden:2 * hidden].abs().max() == 0  # K untouched
    assert delta[..., :hidden].abs().max() > 0 and delta[..., 2 * hidden:].abs().max() > 0

    tensors = method.adapter_tensors(model)
    fresh = load("gpt2", model_dir)
    sites = find_sites(fresh, ["q", "v"])
    deltas = method.sparse_deltas(fresh, sites, tensors, method.adapter_info())
    method.merge(fresh, sites, tensors, method.adapter_info())
    merged_w = fresh.transformer.h[0].attn.c_attn.weight.detach()
    idx, vals = deltas["transformer.h.0.attn.c_attn"]  # (out, in) orientation, physical rows
    dense = torch.zeros(3 * hidden, hidden)
    dense[idx[0], idx[1]] = vals
    assert idx.dtype == torch.int64
    torch.testing.assert_close(merged_w - base_w, dense.t(), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x) - layer.base(x), x @ dense.t(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rule", ["released", "paper"])
def test_step0_loss_within_one_percent_with_nonzero_factor_gradients(tiny_llama_dir, rule):
    batch = inputs()
    labels = batch["input_ids"]
    base_loss = load("llama", tiny_llama_dir)(**batch, labels=labels).loss.item()
    model, method = prepare(load("llama", tiny_llama_dir), budget=20000, rule=rule)  # the real init
    loss = model(**batch, labels=labels).loss
    assert abs(loss.item() / base_loss - 1) < 0.01
    loss.backward()
    norms = [p.grad.norm().item() for p in method.trainable_parameters(model)]
    assert min(norms) > 1e-7  # well above AdamW's eps: every factor starts learning

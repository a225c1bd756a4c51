"""Continuing a finished run (``init_from``): before its first step the child's model is its parent's adapted
model (SMT reuse; SMT fresh on the blocks chosen again; LoRA; SNELL; full; a classification head on the tiny
BERT), and a parent that does not fit is refused by name."""

from __future__ import annotations

import pytest
import torch

from smt_core import Callbacks, TrainSpec, run
from smt_core.adapters import load_adapted
from smt_core.artifacts import load_adapter
from smt_core.methods.options import ConfigError
from smt_core.trainer import begin
from tests import factories

BUDGET = 3000


def _spec(model_dir, tmp, method: str, rows, out: str, **kw) -> TrainSpec:
    data = factories.write_jsonl(tmp / f"{out}.jsonl", rows)
    options = kw.pop("method_options", dict(factories.MATRIX[method]))
    return TrainSpec(model=str(model_dir), train_data=str(data), method=method, budget=kw.pop("budget", BUDGET),
                     steps=kw.pop("steps", 3), batch_size=4, max_seq_len=32, learning_rate=1e-2,
                     method_options=options, out_dir=str(tmp / out), **kw)


def _probe(tok) -> dict[str, torch.Tensor]:
    enc = tok(["the red fruit is apple", "a movie was great"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def _parent_and_child(model_dir, tmp, method: str, rows_fn, **child_kw):
    """Train a parent, then build (not train) a child from it: (parent adapted, child state, child run, tok)."""
    parent = _spec(model_dir, tmp, method, rows_fn(48), "parent")
    run(parent)
    adapted, tok, _ = load_adapted(tmp / "parent")
    child = _spec(model_dir, tmp, method, rows_fn(32, seed=1), "child", init_from=str(tmp / "parent"), **child_kw)
    r, _, _, _, state = begin(child, Callbacks())
    return adapted, state, r, tok


@pytest.mark.parametrize("method,model_fixture", [
    ("smt", "tiny_llama_dir"), ("lora", "tiny_llama_dir"), ("snell", "tiny_llama_dir"), ("full", "tiny_llama_dir"),
    ("smt", "tiny_bert_dir"), ("lora", "tiny_bert_dir")])
def test_child_starts_as_its_parents_adapted_model(method, model_fixture, request, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    rows = factories.MODEL_DATA[model_fixture]
    adapted, state, r, tok = _parent_and_child(model_dir, tmp_path, method, rows)
    probe = _probe(tok)
    torch.testing.assert_close(_logits(state.model, probe), _logits(adapted, probe), rtol=1e-5, atol=1e-5)
    if method == "smt":  # reuse (the default): the identical block table and values, and no warm-up
        parent_tensors, _ = load_adapter(tmp_path / "parent")
        child_tensors = r.method.adapter_tensors(state.model)
        for k, v in child_tensors.items():
            assert torch.equal(v, parent_tensors[k]), k
        assert r.method.adapter_info()["selection_steps"] == 0


def test_smt_fresh_starts_the_blocks_chosen_again_from_the_parents_values(tiny_llama_dir, tmp_path):
    adapted, state, r, _ = _parent_and_child(
        tiny_llama_dir, tmp_path, "smt", factories.completion_rows,
        method_options={**factories.MATRIX["smt"], "selection": "fresh"})
    assert r.method.adapter_info()["selection_steps"] == 2, "fresh runs the warm-up again"
    parent, _ = load_adapter(tmp_path / "parent")
    child = r.method.adapter_tensors(state.model)
    again = 0
    for key in [k for k in child if k.endswith(".blocks")]:
        prefix = key[:-len(".blocks")]
        old = {tuple(b): i for i, b in enumerate(parent.get(key, torch.zeros(0, 4)).tolist())}
        sizes = [h * w for _, _, h, w in child[key].tolist()]
        off = 0
        for block, n in zip(child[key].tolist(), sizes, strict=True):
            values = child[f"{prefix}.values"][off:off + n]
            if tuple(block) in old:
                i = old[tuple(block)]
                p_off = sum(h * w for _, _, h, w in parent[key].tolist()[:i])
                assert torch.equal(values, parent[f"{prefix}.values"][p_off:p_off + n]), (key, block)
                again += 1
            else:
                assert not values.any(), "a newly chosen block starts at zero"
            off += n
    assert again > 0, "some blocks are chosen again (the same data, the same scores)"


def test_continued_run_trains_and_records_its_lineage(tiny_llama_dir, tmp_path):
    run(_spec(tiny_llama_dir, tmp_path, "smt", factories.completion_rows(48), "parent"))
    result = run(_spec(tiny_llama_dir, tmp_path, "smt", factories.completion_rows(32, seed=1), "child", steps=2,
                       init_from=str(tmp_path / "parent"), init_from_job="job_parent"))
    _, manifest = load_adapter(result.out_dir)
    from smt_core.manifest import file_sha256

    assert manifest["init_from"] == {"job": "job_parent",
                                     "adapter_sha256": file_sha256(str(tmp_path / "parent" / "adapter.safetensors"))}
    assert result.metrics["steps"] == 2


def test_a_parent_that_does_not_fit_is_refused_naming_init_from(tiny_llama_dir, tiny_bert_dir, tmp_path):
    run(_spec(tiny_llama_dir, tmp_path, "smt", factories.completion_rows(48), "parent"))
    for kw in ({"budget": 2000}, {"targets": ["q", "v"]}):
        with pytest.raises(ConfigError, match="init_from") as info:
            begin(_spec(tiny_llama_dir, tmp_path, "smt", factories.completion_rows(8), "c", init_from=str(tmp_path / "parent"),
                        **kw), Callbacks())
        assert info.value.field == "init_from"
    with pytest.raises(ConfigError, match="init_from"):
        begin(_spec(tiny_llama_dir, tmp_path, "lora", factories.completion_rows(8), "c2",
                    init_from=str(tmp_path / "parent")), Callbacks())


def test_new_labels_in_the_childs_data_are_refused_by_name(tiny_bert_dir, tmp_path):
    run(_spec(tiny_bert_dir, tmp_path, "lora", factories.classification_rows(48), "parent"))
    rows = factories.classification_rows(16, seed=1) + [{"text": "odd one", "label": "neutral"}]
    with pytest.raises(ConfigError, match="neutral"):
        begin(_spec(tiny_bert_dir, tmp_path, "lora", rows, "child", init_from=str(tmp_path / "parent")), Callbacks())


def test_selection_needs_init_from_and_smt():
    with pytest.raises(ConfigError, match="selection"):
        TrainSpec(model="m", train_data="d", method="smt", out_dir="o", method_options={"selection": "reuse"})
    with pytest.raises(ConfigError, match="selection"):
        from smt_core.registry import get_method

        get_method("lora").from_options({"selection": "reuse"})


def test_the_cli_continues_a_run_and_refuses_a_misfit_with_exit_2(tiny_llama_dir, tmp_path):
    from smt_core.cli import main

    run(_spec(tiny_llama_dir, tmp_path, "lora", factories.completion_rows(48), "parent"))
    data = factories.write_jsonl(tmp_path / "more.jsonl", factories.completion_rows(16, seed=2))
    argv = ["train", "--model", str(tiny_llama_dir), "--data", str(data), "--method", "lora", "--steps", "1",
            "--batch-size", "4", "--max-seq-len", "32", "--init-from", str(tmp_path / "parent")]
    assert main([*argv, "--budget", str(BUDGET), "--out", str(tmp_path / "child")]) == 0
    _, manifest = load_adapter(tmp_path / "child")
    assert manifest["init_from"]["job"] is None and len(manifest["init_from"]["adapter_sha256"]) == 64
    assert main([*argv, "--budget", "2000", "--out", str(tmp_path / "misfit")]) == 2

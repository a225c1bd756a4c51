"""Real behaviour on the packaged pretrained models (docs/ASSETS.md), with the default settings."""

from __future__ import annotations

import pytest
import torch

from smt_core import TrainSpec, run
from smt_core.artifacts import load_adapter
from tests import factories

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_smt_beats_training_the_head_alone_on_minilm_sst2(tmp_path):
    train, test = factories.sst2_split(n_train=480, seed=0)
    train_f = factories.write_jsonl(tmp_path / "train.jsonl", train)
    test_f = factories.write_jsonl(tmp_path / "test.jsonl", test[:240])
    common = {"model": "minilm-l6", "train_data": str(train_f), "eval_data": str(test_f), "budget": 0.01,
              "epochs": 1, "batch_size": 16, "max_seq_len": 64, "seed": 0}
    head = run(TrainSpec(method="head", out_dir=str(tmp_path / "head"), **common))
    smt = run(TrainSpec(method="smt", out_dir=str(tmp_path / "smt"), method_options={"selection_steps": 10}, **common))
    assert head.metrics["steps"] == smt.metrics["steps"], "same steps for both"
    assert 0 < smt.metrics["trainable_params"] <= 0.01 * 22.7e6
    assert smt.metrics["eval_accuracy"] > head.metrics["eval_accuracy"], (smt.metrics, head.metrics)
    blocks = smt.blocks
    assert blocks is not None and blocks["block_size"] == 32  # at 1% the budget buys >= 200 blocks of 32
    assert sum(len(m["blocks"]) for m in blocks["modules"]) == smt.metrics["trainable_params"] // 32**2


def test_a_few_smt_steps_lower_smollm2_training_loss_and_the_adapter_merges(tmp_path):
    from smt_core.data import encode, evaluate
    from smt_core.merge import merge_adapter
    from smt_core.models import load_model, load_tokenizer, resolve_model

    rows = factories.completion_rows(16, seed=1)
    data = factories.write_jsonl(tmp_path / "d.jsonl", rows)
    ref = resolve_model("smollm2-135m")
    tok = load_tokenizer(ref)
    base, _ = load_model(ref, "causal_lm")
    enc = encode(rows, "prompt_completion", tok, 32)
    before = evaluate(base, tok, enc, "prompt_completion", 8, 32, "cpu")["eval_loss"]
    del base

    result = run(TrainSpec(model="smollm2-135m", train_data=str(data), eval_data=str(data), method="smt",
                           budget=0.005, steps=6, batch_size=4, max_seq_len=32, learning_rate=1e-3,
                           method_options={"selection_steps": 2}, out_dir=str(tmp_path / "smt")))
    assert result.metrics["eval_loss"] < before, (result.metrics["eval_loss"], before)
    tensors, manifest = load_adapter(tmp_path / "smt")
    assert manifest["method_info"]["block_size"] == 32 and manifest["base_model"]["sha256"]  # 0.5%: 164 blocks of 64

    from transformers import AutoModelForCausalLM

    from smt_core.adapters import load_adapted

    adapted, tok, _ = load_adapted(tmp_path / "smt")
    merged_dir = merge_adapter(tmp_path / "smt", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    probe = tok(["the red fruit is"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**probe).logits, adapted(**probe).logits, rtol=1e-4, atol=1e-4)

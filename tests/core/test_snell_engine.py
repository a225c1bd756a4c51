"""SNELL through the engine (``smt_core.run``) on tiny models: manifest, reload, merge, SHiRA export, resume."""

from __future__ import annotations

import pytest
import torch

from smt_core import Callbacks, Cancelled, TrainSpec, run
from tests import factories

adapters = pytest.importorskip("smt_core.adapters")
artifacts = pytest.importorskip("smt_core.artifacts")
merge = pytest.importorskip("smt_core.merge")
export = pytest.importorskip("smt_core.export")

BUDGET = 3000


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def test_snell_run_reloads_merges_and_exports_to_shira(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    result = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="snell", budget=BUDGET, steps=3,
                           batch_size=4, max_seq_len=32, learning_rate=1e-2, out_dir=str(tmp_path / "a"),
                           method_options={"rule": "paper", "sparsity": 0.8}))
    tensors, manifest = artifacts.load_adapter(tmp_path / "a")
    info = manifest["method_info"]
    assert (info["rule"], info["p"], info["coefficients"], info["rank"]) == ("paper", 2, [0.1, -0.1], 4)
    parts = [p for m in info["modules"].values() for p in m["parts"]]
    assert all(p["s"] == 0.8 for p in parts) and len(parts) == 6  # q, k, v × 2 layers
    assert result.metrics["delta_nonzeros"] == sum(p["n_keep"] for p in parts)
    assert 0 < result.metrics["trainable_params"] <= BUDGET
    key = "model.layers.0.self_attn.k_proj.k.snell_"  # a bitmask of the 32×64 entries + the kept values
    k_keep = info["modules"]["model.layers.0.self_attn.k_proj"]["parts"][0]["n_keep"]
    assert tensors[key + "mask"].dtype == torch.uint8 and tensors[key + "mask"].shape == (32 * 64 // 8,)
    assert tensors[key + "values"].shape == (k_keep,) == (32 * 64 - int(0.8 * 32 * 64),)
    assert key + "indices" not in tensors and tensors[key + "delta_sha256"].shape == (32,)

    adapted, tok, _ = adapters.load_adapted(tmp_path / "a")
    probe = dict(tok(["the red fruit is apple", "a movie was great"], return_tensors="pt", padding=True))
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    assert not torch.allclose(logits(adapted, probe), logits(base, probe)), "training must change the model"

    merged = AutoModelForCausalLM.from_pretrained(merge.merge_adapter(tmp_path / "a", tmp_path / "m")).eval()
    torch.testing.assert_close(logits(merged, probe), logits(adapted, probe), rtol=1e-4, atol=1e-4)

    export.export_shira(tmp_path / "a", tmp_path / "shira")
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "shira")).eval()
    torch.testing.assert_close(logits(peft_model, probe), logits(adapted, probe), rtol=1e-4, atol=1e-4)


def test_interrupted_snell_run_resumes_to_the_same_result(tiny_bert_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.classification_rows(48))

    def spec(out, resume=False):
        return TrainSpec(model=str(tiny_bert_dir), train_data=str(data), method="snell", budget=BUDGET, steps=6,
                         batch_size=4, learning_rate=1e-2, checkpoint_every=2, out_dir=str(out), resume=resume,
                         method_options={"learn_coefficients": True})

    straight = run(spec(tmp_path / "a"))
    done: list[int] = []
    cb = Callbacks()
    cb.add("on_step_end", lambda p: done.append(p["step"]))
    cb.add_stop_check(lambda: len(done) >= 3)  # stop after step 3; the last checkpoint is step 2
    with pytest.raises(Cancelled):
        run(spec(tmp_path / "b"), cb)
    resumed = run(spec(tmp_path / "b", resume=True))
    a, _ = artifacts.load_adapter(tmp_path / "a")
    b, _ = artifacts.load_adapter(tmp_path / "b")
    assert a.keys() == b.keys() and any(k.endswith("snell_coefficients") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=f"resumed run differs at {k}")
    assert resumed.metrics["eval_accuracy"] == straight.metrics["eval_accuracy"]

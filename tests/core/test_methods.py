"""One matrix runs every method through the same checks (PEFT's testing_common style):
save/load round trip, merged output equals adapted output, the adapter switched off equals the base, merging
twice equals merging once, only adapter parameters train, the budget holds.
"""

from __future__ import annotations

import functools
import json

import pytest
import torch

from smt_core import Callbacks, Cancelled, TrainSpec, run
from smt_core.adapters import load_adapted, open_adapter
from smt_core.artifacts import load_adapter
from smt_core.estimate import estimate, load_config
from smt_core.merge import merge_adapter
from tests import factories

METHODS = factories.METHODS
MODELS = factories.MODEL_DATA  # fixture name → data factory
BUDGET = 3000


def _probe(tok, classification: bool) -> dict[str, torch.Tensor]:
    enc = tok(["the red fruit is apple", "a movie was great"], return_tensors="pt", padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(scope="module")
def trained(request, tmp_path_factory):
    """Train every (method, model) once for this module; returns {(method, fixture): out_dir}."""
    return {}


def _train(request, tmp_path_factory, method: str, model_fixture: str, cache: dict, **kw):
    key = (method, model_fixture, tuple(sorted(kw.items())))
    if key not in cache:
        model_dir = request.getfixturevalue(model_fixture)
        tmp = tmp_path_factory.mktemp(f"{method}-{model_fixture}")
        data = factories.write_jsonl(tmp / "train.jsonl", MODELS[model_fixture](48))
        spec = TrainSpec(model=str(model_dir), train_data=str(data), method=method, budget=BUDGET, steps=3,
                         batch_size=4, max_seq_len=32, learning_rate=1e-2, method_options=factories.MATRIX[method],
                         out_dir=str(tmp / "out"), **kw)
        cache[key] = (run(spec), tmp / "out")
    return cache[key]


@pytest.mark.parametrize("model_fixture", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_method_round_trip_merge_and_budget(method, model_fixture, request, tmp_path_factory, trained):
    result, out = _train(request, tmp_path_factory, method, model_fixture, trained)
    tensors, manifest = load_adapter(out)
    assert manifest["method"] == method and manifest["trainable_params"] == result.metrics["trainable_params"]
    assert (out / "adapter_config.json").is_file() and (out / "metrics.json").is_file()
    if method != "full":
        assert 0 < result.metrics["trainable_params"] <= BUDGET, "trainable parameters never exceed the budget"
    # the count shown before launch (the spec's arithmetic on config.json) is the count the run trained
    folder = request.getfixturevalue(model_fixture)
    planned = estimate(load_config(folder), method, BUDGET, ["q", "k", "v"], options=factories.MATRIX[method])
    assert planned["trainable_params"] == result.metrics["trainable_params"], (method, model_fixture)

    # save → load is exact: the reloaded adapter's tensors equal the saved ones
    base, tok, sites, m, saved, _ = open_adapter(out)
    probe = _probe(tok, model_fixture == "tiny_bert_dir")
    base_logits = _logits(base, probe)
    adapted = m.load(base, sites, saved, manifest["method_info"])
    for k, v in m.adapter_tensors(adapted).items():
        assert torch.equal(v.cpu(), saved[k]), f"round trip changed {k}"
    adapted_logits = _logits(adapted, probe)
    if model_fixture != "tiny_bert_dir":  # (a classifier's logits also move through the head, see below)
        assert not torch.allclose(adapted_logits, base_logits), "training must have changed the model"

    # merged output equals adapted output
    merged_dir = merge_adapter(out, tmp_path_factory.mktemp("merged"))
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if model_fixture == "tiny_bert_dir" else AutoModelForCausalLM
    merged = cls.from_pretrained(merged_dir).eval()
    torch.testing.assert_close(_logits(merged, probe), adapted_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_fixture", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_disabled_adapter_equals_base(method, model_fixture, request, tmp_path_factory, trained):
    _, out = _train(request, tmp_path_factory, method, model_fixture, trained)
    base, tok, sites, m, saved, manifest = open_adapter(out)
    probe = _probe(tok, model_fixture == "tiny_bert_dir")
    base_logits = _logits(base, probe)
    adapted = m.load(base, sites, saved, manifest["method_info"])
    adapted_logits = _logits(adapted, probe)
    if model_fixture != "tiny_bert_dir":  # (the trained head is in both: only the LMs must differ here)
        assert not torch.equal(adapted_logits, base_logits), "the adapter must change the model"
    with m.disabled(adapted):
        assert torch.equal(_logits(adapted, probe), base_logits), "switched off, the adapter must leave no trace"
    assert torch.equal(_logits(adapted, probe), adapted_logits), "leaving the block switches the adapter back on"


def _weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.parametrize("model_fixture", list(MODELS))
@pytest.mark.parametrize("method", METHODS)
def test_merging_twice_equals_merging_once(method, model_fixture, request, tmp_path_factory, trained):
    """The merged folder records the adapters it holds: merging the same adapter into it again writes the
    same weights (a user who runs ``sparsetune merge --model <merged folder>`` by mistake gets no 2·ΔW)."""
    _, out = _train(request, tmp_path_factory, method, model_fixture, trained)
    tmp = tmp_path_factory.mktemp("merge-twice")
    once = merge_adapter(out, tmp / "once")
    with pytest.warns(UserWarning, match="merging twice equals merging once"):
        twice = merge_adapter(out, tmp / "twice", model=str(once))
    a, b = _weights(once), _weights(twice)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), f"merging again changed {k}"
    assert (once / "sparsetune_merge.json").read_text() == (twice / "sparsetune_merge.json").read_text()


def test_merging_another_adapter_into_a_merged_model_applies_it(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    outs = []
    for seed in (0, 1):
        outs.append(tmp_path / f"a{seed}")
        run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=512, steps=2, seed=seed,
                      learning_rate=1e-2, method_options={"selection_steps": 1, "block_size": 16}, out_dir=str(outs[-1])))
    first = merge_adapter(outs[0], tmp_path / "first")
    both = merge_adapter(outs[1], tmp_path / "both", model=str(first))
    a, b = _weights(first), _weights(both)
    assert any(not torch.equal(a[k], b[k]) for k in a), "a different adapter must be merged, not skipped"
    held = json.loads((both / "sparsetune_merge.json").read_text())["adapters_sha256"]
    assert len(held) == 2 and held[0] != held[1]


@pytest.mark.parametrize("method", ["smt", "lora", "dora"])
def test_only_adapter_parameters_train(method, tiny_llama_dir, tmp_path):
    from smt_core.base import PrepareContext
    from smt_core.data import BatchPlan, encode, loss_fn
    from smt_core.models import load_model, load_tokenizer, resolve_model
    from smt_core.registry import get_method
    from smt_core.targets import find_sites

    ref = resolve_model(str(tiny_llama_dir))
    tok = load_tokenizer(ref)
    model, _ = load_model(ref, "causal_lm")
    for p in model.parameters():
        p.requires_grad_(False)
    enc = encode(factories.completion_rows(16), "prompt_completion", tok, 32)
    plan = BatchPlan(len(enc.examples), 4, 0)
    meth = get_method(method).from_options(factories.MATRIX[method])
    ctx = PrepareContext(model=model, sites=find_sites(model, ["q", "k", "v"]), budget=BUDGET, base_params=0,
                         device=torch.device("cpu"), batches=lambda: plan.iterate(enc.examples, tok.pad_token_id, "cpu"),
                         loss_fn=loss_fn, steps_per_epoch=4)
    model = meth.prepare(ctx)
    params = meth.trainable_parameters(model)
    for p in params:
        p.requires_grad_(True)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in params}
    assert all(p.grad is None for p in model.parameters()), "the warm-up must leave no gradients behind"


def test_smt_fills_budget_to_within_one_block(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    for budget in (256 * 5 + 100, 0.004):  # a count and a fraction, both below the 16,384 eligible
        r = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=budget, steps=1,
                          method_options={"selection_steps": 1, "block_size": 16}, out_dir=str(tmp_path / "o")))
        limit = r.metrics["trainable_params"]
        _, manifest = load_adapter(tmp_path / "o")
        assert manifest["budget_params"] - 256 < limit <= manifest["budget_params"]


@pytest.mark.parametrize("model_fixture", ["tiny_llama_dir", "tiny_gpt2_dir"])
def test_smt_reports_what_it_chose_by_target_and_layer(model_fixture, request, tmp_path_factory, trained):
    """metrics.selection: shares sum to 1 (by target, by layer, within each layer), params to the trained
    count, and the same figures reach metrics.json and the manifest (GPT-2: q, k, v share one Conv1D)."""
    result, out = _train(request, tmp_path_factory, "smt", model_fixture, trained)
    sel = result.metrics["selection"]
    n = result.metrics["trainable_params"]
    tensors, manifest = load_adapter(out)
    assert manifest["metrics"]["selection"] == sel == json.loads((out / "metrics.json").read_text())["selection"]
    targets = sel["by_target"]
    assert set(targets) == set(manifest["targets"])
    assert sum(t["params"] for t in targets.values()) == n
    assert sum(t["share"] for t in targets.values()) == pytest.approx(1.0, abs=1e-12)
    stored = {}  # what the adapter holds, per target: blocks and values
    for key, tensor in tensors.items():
        target = key.rsplit(".", 2)[-2]
        count = stored.setdefault(target, [0, 0])
        count[0 if key.endswith(".blocks") else 1] += tensor.shape[0] if key.endswith(".blocks") else tensor.numel()
    assert {t: [v["blocks"], v["params"]] for t, v in targets.items() if v["blocks"]} == stored
    layers = sel["by_layer"]
    assert [row["layer"] for row in layers] == [0, 1]
    assert sum(row["params"] for row in layers) == n and sum(row["blocks"] for row in layers) == len(
        [b for k, t in tensors.items() if k.endswith(".blocks") for b in t])
    assert sum(row["share"] for row in layers) == pytest.approx(1.0, abs=1e-12)
    for row in layers:
        assert sum(t["params"] for t in row["by_target"].values()) == row["params"]
        if row["params"]:
            assert sum(t["share"] for t in row["by_target"].values()) == pytest.approx(1.0, abs=1e-12)
    for target, total in targets.items():
        assert sum(row["by_target"][target]["params"] for row in layers) == total["params"]


def test_smt_selection_summary_counts_ragged_blocks_and_unpicked_targets():
    from smt_core.methods.smt.model import selection_summary
    from smt_core.methods.smt.selection import Block
    from smt_core.targets import Part, Site

    sites = [Site(f"l{i}.{t}", None, i, False, 40, 24, (Part(t, 0, 40),)) for i in (0, 1) for t in "qv"]
    chosen = [Block(1, 0, 0, 0, 16, 16, 1.0), Block(1, 0, 32, 16, 8, 8, 1.0), Block(3, 0, 0, 0, 16, 16, 1.0)]
    sel = selection_summary(sites, chosen)
    assert sel["by_target"] == {"q": {"blocks": 0, "params": 0, "share": 0.0},
                                "v": {"blocks": 3, "params": 576, "share": 1.0}}
    assert [(r["layer"], r["params"], r["share"]) for r in sel["by_layer"]] == [(0, 320, 320 / 576),
                                                                              (1, 256, 256 / 576)]
    assert selection_summary(sites, [])["by_target"]["v"]["share"] == 0.0


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_smt_default_block_size_is_one_rule_for_the_engine_and_the_estimate(arch, tmp_path):
    """Sides whose common power of two is below 16 (hidden 72, MLP 200): the engine and the estimate both
    fall back to 64 with ragged edges (one rule, smt_core.methods.smt.config.default_block_size)."""
    from smt_core.estimate import model_shape, plan
    from smt_core.methods.smt.selection import default_block_size
    from smt_core.models import load_model, resolve_model
    from smt_core.targets import find_sites

    folder = factories.build_tiny_model(tmp_path / arch, arch, hidden=72, heads=4, kv_heads=2, intermediate=200)
    model, _ = load_model(resolve_model(str(folder)), "causal_lm" if arch != "bert" else "classification", ["a", "b"])
    shape = model_shape(load_config(folder))
    for targets in (["q", "k", "v"], ["q", "v", "o", "up", "down"]):
        engine = default_block_size(find_sites(model, targets))
        assert engine == plan(shape, "smt", 0.5, targets).block_size == 64, (arch, targets)


def test_smt_budget_below_one_block_is_refused(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(16))
    with pytest.raises(ValueError, match="budget"):
        run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=100, steps=1,
                      method_options={"selection_steps": 1, "block_size": 16}, out_dir=str(tmp_path / "o")))


def test_unknown_method_option_is_refused(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(16))
    with pytest.raises(ValueError, match="bogus"):
        run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", steps=1,
                      method_options={"bogus": 1}, out_dir=str(tmp_path / "o")))


@pytest.mark.parametrize("method", ["smt", "lora"])
def test_interrupted_run_resumes_to_the_same_result(method, tiny_bert_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.classification_rows(48))
    opts = {"selection_steps": 2, "block_size": 16, "head_steps": 2} if method == "smt" else {}

    def spec(out, resume=False):
        return TrainSpec(model=str(tiny_bert_dir), train_data=str(data), method=method, budget=BUDGET, steps=6,
                         batch_size=4, learning_rate=1e-2, checkpoint_every=2, method_options=opts,
                         out_dir=str(out), resume=resume)

    straight = run(spec(tmp_path / "a"))
    cb = Callbacks()
    steps_done = []
    cb.add("on_step_end", lambda p: steps_done.append(p["step"]))
    cb.add_stop_check(lambda: len(steps_done) >= 3)  # stop after step 3; the last checkpoint is step 2
    with pytest.raises(Cancelled):
        run(spec(tmp_path / "b"), cb)
    resumed_steps = []
    cb2 = Callbacks().add("on_step_end", lambda p: resumed_steps.append(p["step"]))
    resumed = run(spec(tmp_path / "b", resume=True), cb2)
    assert resumed_steps == [3, 4, 5, 6]
    a, _ = load_adapter(tmp_path / "a")
    b, _ = load_adapter(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=f"resumed run differs at {k}")
    assert resumed.metrics["eval_accuracy"] == straight.metrics["eval_accuracy"]


def test_head_only_baseline_trains_only_the_head(tiny_bert_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.classification_rows(32))
    r = run(TrainSpec(model=str(tiny_bert_dir), train_data=str(data), method="head", steps=2, out_dir=str(tmp_path / "o")))
    assert r.metrics["trainable_params"] == 0 and r.metrics["head_params"] > 0
    model, _, manifest = load_adapted(tmp_path / "o")
    assert manifest["head_tensors"]


def test_shira_export_reloads_in_peft_with_the_same_logits(tiny_llama_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from smt_core.export import export_shira

    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=512, steps=2,
                  learning_rate=1e-2, method_options={"selection_steps": 1, "block_size": 16},
                  out_dir=str(tmp_path / "a")))
    adapted, tok, _ = load_adapted(tmp_path / "a")
    probe = _probe(tok, False)
    export_shira(tmp_path / "a", tmp_path / "shira")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path / "shira")).eval()
    torch.testing.assert_close(_logits(peft_model, probe), _logits(adapted, probe), rtol=1e-4, atol=1e-4)


def test_shira_export_refuses_what_it_cannot_hold_and_names_the_module(tiny_llama_dir, tmp_path):
    from smt_core.export import ExportError, export_shira

    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=4096, steps=1,
                  method_options={"selection_steps": 1, "block_size": 32}, out_dir=str(tmp_path / "a")))
    with pytest.raises(ExportError, match=r"module model\.layers\.\d+\.self_attn\.\w_proj"):
        export_shira(tmp_path / "a", tmp_path / "shira")


def test_a_stop_that_asks_for_a_checkpoint_loses_no_finished_step(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(32))
    spec = {"model": str(tiny_llama_dir), "train_data": str(data), "method": "smt", "budget": 1024, "steps": 6,
            "batch_size": 4, "checkpoint_every": 0, "method_options": {"selection_steps": 1, "block_size": 16},
            "out_dir": str(tmp_path / "o")}
    done, saved = [], []
    cb = Callbacks().add("on_step_end", lambda p: done.append(p["step"])).add("on_checkpoint", saved.append)
    cb.add_stop_check(lambda: len(done) >= 4).add_checkpoint_request(lambda: True)
    with pytest.raises(Cancelled) as exc:
        run(TrainSpec(**spec), cb)
    assert exc.value.checkpoint and [s["step"] for s in saved] == [4]
    resumed = []
    run(TrainSpec(**spec, resume=True), Callbacks().add("on_step_end", lambda p: resumed.append(p["step"])))
    assert resumed == [5, 6]


def test_smt_default_warm_up_is_a_tenth_of_the_job_and_its_memory_is_reported(tiny_llama_dir, tmp_path):
    from smt_core.methods.smt.model import default_selection_steps

    assert default_selection_steps(126, 63) == 13  # a 2-epoch job no longer pays a whole epoch (63)
    assert default_selection_steps(30, 60) == 10  # at least 10 …
    assert default_selection_steps(5000, 2000) == 100  # … at most 100 …
    assert default_selection_steps(30, 4) == 4  # … never past one epoch
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(80))
    r = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", budget=BUDGET, steps=12,
                      batch_size=4, max_seq_len=32, method_options={"block_size": 16}, out_dir=str(tmp_path / "o")))
    _, manifest = load_adapter(tmp_path / "o")
    assert manifest["method_info"]["selection_steps"] == 10  # 18 steps an epoch: the floor of 10
    eligible = sum(o * i for o, i in [(64, 64), (32, 64), (32, 64)]) * 2  # q, k, v of the 2 tiny layers
    # fp32 sums of every targeted matrix + their fp32 gradients while they are summed
    assert r.metrics["memory"]["selection"] == 2 * eligible * 4


def test_default_learning_rate_moves_to_the_papers_rate_on_large_models():
    from smt_core.registry import get_method

    smt, lora = get_method("smt"), get_method("lora")
    for classification in (True, False):
        small = smt.learning_rate_for(135_000_000, classification=classification)
        assert smt.learning_rate_for(7_000_000_000, classification=classification) == pytest.approx(1e-4)
        assert smt.learning_rate_for(70_000_000_000, classification=classification) == pytest.approx(1e-4)
        mid = smt.learning_rate_for(1_200_000_000, classification=classification)
        assert 1e-4 < mid < small and lora.learning_rate_for(1_200_000_000, classification=classification) > 2e-4
    head = get_method("head")
    assert head.learning_rate_for(7_000_000_000, classification=True) == head.spec.default_learning_rate


def test_smts_default_learning_rate_is_lower_for_text_than_for_a_classification_head():
    """Measured on small models: 3e-3 with a new head on MiniLM, 1e-3 for SmolLM2's causal-LM loss (both
    validation-chosen, bench/NOTES.md); LoRA's best rate was the same for both."""
    from smt_core.registry import get_method

    smt, lora = get_method("smt"), get_method("lora")
    assert smt.learning_rate_for(135_000_000, classification=True) == smt.spec.default_learning_rate == 3e-3
    assert smt.learning_rate_for(135_000_000, classification=False) == smt.spec.causal_lm_learning_rate == 1e-3
    assert (lora.learning_rate_for(135_000_000, classification=False)
            == lora.learning_rate_for(135_000_000, classification=True) == 1e-3)


def test_smts_default_learning_rate_falls_as_its_budget_grows():
    """sqrt(1% / budget), at most 2x the 1% rate; LoRA's rate does not depend on its budget."""
    from smt_core.registry import get_method

    smt, lora = get_method("smt"), get_method("lora")
    n = 100_000_000
    for classification, rate in ((True, 3e-3), (False, 1e-3)):
        at = functools.partial(smt.learning_rate_for, classification=classification)
        assert at(n, n // 100) == at(n) == rate
        assert at(n, 4 * n // 100) == pytest.approx(rate / 2)
        assert at(n, n // 400) == pytest.approx(2 * rate)
        assert at(n, n // 10_000) == pytest.approx(2 * rate)  # capped at 2x
        assert at(n, n // 2) == pytest.approx(rate * 0.02 ** 0.5)
        assert at(7_000_000_000, 280_000_000) == pytest.approx(0.5e-4)
        assert (lora.learning_rate_for(n, 4 * n // 100, classification=classification)
                == lora.learning_rate_for(n, classification=classification) == 1e-3)

"""Gradient accumulation and evaluation that chooses (issue 18, items 2 and 3).

Accumulation: ``batch_size`` stays the rows of one forward pass and ``gradient_accumulation_steps`` k makes one
optimizer step of k such micro-batches, so batch_size 4 × k 2 must train what batch_size 8 × k 1 trains: the
same rows in the same order (the batch plan is over optimizer steps: the same seeded permutation and epoch
ends), the same token-weighted mean loss, for every method — SMT's warm-up and head steps included.

Choosing: with ``metric_for_best`` the best evaluation's adapter is written as ``adapter-best.safetensors``, a
self-contained adapter; ``early_stopping_patience`` evaluations without improvement end the run early.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from smt_core import Callbacks, Cancelled, TrainSpec, run
from smt_core.adapters import load_adapted
from smt_core.artifacts import ADAPTER, BEST, load_adapter
from smt_core.data import encode, evaluate
from smt_core.dataformats import read_jsonl
from tests import factories

ROWS = 21  # 8-row steps: 3 an epoch, the last one short (5 rows); 5 steps wrap into a second epoch
COMMON = {"budget": 3000, "steps": 5, "max_seq_len": 32, "learning_rate": 1e-2, "checkpoint_every": 0,
          "holdout_fraction": 0.0}


def _assert_same_adapter(a_dir, b_dir, rtol: float = 1e-4, atol: float = 1e-4) -> dict[str, torch.Tensor]:
    """Equal to tolerance. Summing in another order moves the gradients by float noise; AdamW divides by
    sqrt(v), so where a gradient is near zero that noise can move an element by ~1e-5 — still far below the
    learning rate (1e-2) that every step moves the others by. A checksum of the result (the compact SNELL
    artifact's) is bit-exact by design, so it is left out: the tensors it sums are compared."""
    a, _ = load_adapter(a_dir)
    b, _ = load_adapter(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        if "sha256" in k:
            continue
        if a[k].dtype in (torch.int32, torch.int64):
            assert torch.equal(a[k], b[k]), f"{k} differs"  # SMT's block tables: the selection itself
        else:
            torch.testing.assert_close(b[k], a[k], rtol=rtol, atol=atol, msg=f"{k} differs")
    return a


def _no_dropout_bert(root) -> str:
    """Dropout draws masks per forward shape: a batch of 8 and two of 4 draw different ones, so only without
    dropout are the two runs equal to float tolerance (as in the data-parallel tests)."""
    model = factories.build_tiny_model(root, "bert")
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    return str(model)


@pytest.mark.parametrize("method", factories.METHODS)
def test_accumulated_micro_batches_train_what_the_larger_batch_does(method, tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(ROWS))
    opts = factories.MATRIX[method]
    infos: dict[str, dict] = {}

    def train(name: str, batch: int, k: int):
        cb = Callbacks().add("on_info", lambda p: infos.setdefault(name, p))
        return run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method=method, method_options=opts,
                             batch_size=batch, gradient_accumulation_steps=k, out_dir=str(tmp_path / name),
                             **COMMON), cb)

    large, accumulated = train("large", 8, 1), train("accumulated", 4, 2)
    tensors = _assert_same_adapter(tmp_path / "large", tmp_path / "accumulated")
    assert any(v.abs().max() > 0 for v in tensors.values() if v.is_floating_point())
    assert accumulated.metrics["steps"] == infos["accumulated"]["total_steps"] == 5  # optimizer steps
    assert accumulated.metrics["train_loss"] == pytest.approx(large.metrics["train_loss"], rel=1e-4)
    assert accumulated.metrics["trained_tokens"] == large.metrics["trained_tokens"]
    manifest = load_adapter(tmp_path / "accumulated")[1]
    assert manifest["hyperparameters"]["gradient_accumulation_steps"] == 2
    assert manifest["hyperparameters"]["batch_size"] == 4


def test_an_epoch_counts_optimizer_steps_of_the_effective_batch(tiny_llama_dir, tmp_path):
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(ROWS))
    infos: list[dict] = []
    spec = {**COMMON, "steps": None, "epochs": 1.0}
    run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="lora", batch_size=4,
                  gradient_accumulation_steps=2, out_dir=str(tmp_path / "o"), **spec),
        Callbacks().add("on_info", infos.append))
    assert infos[0]["total_steps"] == 3  # ceil(21 / (4 × 2))


def test_smt_head_steps_and_warm_up_accumulate_on_a_classifier(tmp_path_factory, tmp_path):
    """The new head's solo steps and the warm-up's gradient sums go through the same accumulated loss."""
    model = _no_dropout_bert(tmp_path_factory.mktemp("bert-nodrop"))
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.classification_rows(ROWS))
    opts = {"block_size": 16, "head_steps": 2, "selection_steps": 3}
    for name, batch, k in (("large", 8, 1), ("accumulated", 4, 2)):
        run(TrainSpec(model=model, train_data=str(data), method="smt", method_options=opts, batch_size=batch,
                      gradient_accumulation_steps=k, out_dir=str(tmp_path / name), **COMMON))
    tensors = _assert_same_adapter(tmp_path / "large", tmp_path / "accumulated")
    assert any(k.startswith("head.") for k in tensors)


def test_accumulation_on_two_ranks_trains_what_one_process_does(tiny_llama_dir, tmp_path):
    """Each micro-batch is sharded over the ranks and weighted by the items of the whole step on all ranks."""
    data = factories.write_jsonl(tmp_path / "d.jsonl", factories.completion_rows(ROWS))
    opts = {"block_size": 16, "selection_steps": 2}
    for name, batch, k, n in (("one", 8, 1, 1), ("two", 4, 2, 2)):
        run(TrainSpec(model=str(tiny_llama_dir), train_data=str(data), method="smt", method_options=opts,
                      batch_size=batch, gradient_accumulation_steps=k, num_devices=n, out_dir=str(tmp_path / name),
                      **COMMON))
    _assert_same_adapter(tmp_path / "one", tmp_path / "two")


# ---- evaluation that chooses ---------------------------------------------------------------------------
def _eval_loss_of(adapter_file, eval_path: str) -> float:
    """The eval loss of one adapter file alone (copied as a folder's adapter.safetensors: its manifest travels
    in its metadata, as for inference and merging)."""
    folder = adapter_file.parent / f"alone-{adapter_file.stem}"
    folder.mkdir()
    shutil.copyfile(adapter_file, folder / ADAPTER)
    model, tok, manifest = load_adapted(folder)
    fmt, rows, labels = read_jsonl(eval_path)
    enc = encode(rows, fmt, tok, 32, labels)
    return evaluate(model, tok, enc, fmt, 8, 32, torch.device("cpu"))["eval_loss"]


def test_the_best_adapter_is_the_best_recorded_evaluation(tiny_llama_dir, tmp_path):
    train = factories.write_jsonl(tmp_path / "train.jsonl", factories.completion_rows(ROWS))
    evals = factories.write_jsonl(tmp_path / "eval.jsonl", factories.completion_rows(6, seed=3))
    recorded: list[dict] = []
    r = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(train), eval_data=str(evals), method="lora",
                      batch_size=4, eval_every=1, metric_for_best="eval_loss", out_dir=str(tmp_path / "o"),
                      **{**COMMON, "steps": 6, "learning_rate": 0.3}), Callbacks().add("on_eval", recorded.append))
    assert [e["step"] for e in recorded] == [1, 2, 3, 4, 5, 6]  # every step, the last by the final evaluation
    best = min(recorded, key=lambda e: e["eval_loss"])
    assert r.metrics["best"] == {"metric": "eval_loss", "value": best["eval_loss"], "step": best["step"]}
    assert r.files[BEST] == tmp_path / "o" / BEST
    tensors, manifest = load_adapter(tmp_path / "o")  # the last one, as before
    assert manifest["metrics"]["steps"] == 6 and r.metrics["stopped_early"] is False
    assert _eval_loss_of(tmp_path / "o" / BEST, str(evals)) == pytest.approx(best["eval_loss"], rel=1e-5)
    if best["step"] != 6:
        assert _eval_loss_of(tmp_path / "o" / ADAPTER, str(evals)) > best["eval_loss"]


def test_without_metric_for_best_no_best_is_kept(tiny_llama_dir, tmp_path):
    train = factories.write_jsonl(tmp_path / "train.jsonl", factories.completion_rows(ROWS))
    evals = factories.write_jsonl(tmp_path / "eval.jsonl", factories.completion_rows(4, seed=3))
    r = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(train), eval_data=str(evals), method="lora",
                      batch_size=4, eval_every=2, out_dir=str(tmp_path / "o"), **{**COMMON, "steps": 3}))
    assert BEST not in r.files and not (tmp_path / "o" / BEST).exists() and r.metrics["best"] is None


def test_early_stopping_stops_a_run_that_stopped_improving(tiny_llama_dir, tmp_path):
    """Exact-match accuracy of a tiny random model's greedy completions stays 0: the first evaluation is the
    best, the next one does not improve on it, and patience 1 ends the run there."""
    train = factories.write_jsonl(tmp_path / "train.jsonl", factories.completion_rows(ROWS))
    evals = factories.write_jsonl(tmp_path / "eval.jsonl", factories.completion_rows(2, seed=3))
    steps: list[int] = []
    r = run(TrainSpec(model=str(tiny_llama_dir), train_data=str(train), eval_data=str(evals), method="lora",
                      batch_size=4, eval_every=1, metric_for_best="eval_accuracy", early_stopping_patience=1,
                      out_dir=str(tmp_path / "o"), **{**COMMON, "steps": 8}),
            Callbacks().add("on_step_end", lambda p: steps.append(p["step"])))
    assert r.metrics["stopped_early"] is True
    assert steps == [1, 2] and r.metrics["steps"] == 2 < 8
    assert r.metrics["best"] == {"metric": "eval_accuracy", "value": 0.0, "step": 1}
    assert load_adapter(tmp_path / "o")[1]["metrics"]["steps"] == 2


def test_early_stopping_needs_a_metric_and_evaluations(tmp_path):
    base = {"model": "m", "train_data": "d", "method": "lora", "out_dir": str(tmp_path)}
    with pytest.raises(ValueError, match="early_stopping_patience.*metric_for_best"):
        TrainSpec(**base, early_stopping_patience=2, eval_every=5)
    with pytest.raises(ValueError, match="early_stopping_patience.*eval_every"):
        TrainSpec(**base, early_stopping_patience=2, metric_for_best="eval_loss")
    with pytest.raises(ValueError, match="metric_for_best"):
        TrainSpec(**base, metric_for_best="train_loss")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        TrainSpec(**base, gradient_accumulation_steps=0)


def test_an_interrupted_run_keeps_choosing_the_same_best(tiny_llama_dir, tmp_path):
    """The best so far and its adapter travel in the checkpoint: the resumed run ends with the same choice."""
    train = factories.write_jsonl(tmp_path / "train.jsonl", factories.completion_rows(ROWS))
    evals = factories.write_jsonl(tmp_path / "eval.jsonl", factories.completion_rows(4, seed=3))

    def spec(out, resume=False):
        return TrainSpec(model=str(tiny_llama_dir), train_data=str(train), eval_data=str(evals), method="lora",
                         batch_size=4, gradient_accumulation_steps=2, eval_every=1, metric_for_best="eval_loss",
                         out_dir=str(out), resume=resume, **{**COMMON, "steps": 6, "learning_rate": 0.3,
                                                             "checkpoint_every": 2})

    straight = run(spec(tmp_path / "a"))
    done: list[int] = []
    cb = Callbacks().add("on_step_end", lambda p: done.append(p["step"]))
    cb.add_stop_check(lambda: len(done) >= 3)  # stops before step 4; the last checkpoint is step 2
    with pytest.raises(Cancelled):
        run(spec(tmp_path / "b"), cb)
    resumed = run(spec(tmp_path / "b", resume=True))
    assert resumed.metrics["best"] == straight.metrics["best"]
    a, b = load_file(str(tmp_path / "a" / BEST)), load_file(str(tmp_path / "b" / BEST))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=f"resumed best differs at {k}")

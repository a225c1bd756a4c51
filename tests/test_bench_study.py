"""bench/study_report.py: the powered comparison's tables are computed from bench/ablate.py's result JSONs.

Synthetic results (a few test items per run) check what the report derives from them: the paired difference
against SMT, the validation-chosen learning rate, the quietest seed's wall time, and the targets' verdicts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))
import study_report  # noqa: E402


def result(name: str, seed: int, test: list[int], val: list[int], lr: float, wall: float,
           load: float = 1.0) -> dict:
    return {"name": name, "seed": seed, "status": "ok", "test_correct": test, "val_correct": val,
            "test_acc": sum(test) / len(test), "val_acc": sum(val) / len(val), "wall_seconds": wall,
            "loadavg": [load, load], "hyperparameters": {"learning_rate": lr},
            "memory": {"weights": 2**20, "trainable": 0, "gradients": 0, "optimizer": 0, "activations": 2**20}}


@pytest.fixture()
def res() -> dict[str, dict[int, dict]]:
    ones, half = [1, 1, 1, 1], [1, 1, 0, 0]
    return {
        "topic.smt-shipped": {0: result("topic.smt-shipped", 0, ones, half, 3e-3, 12.0),
                              1: result("topic.smt-shipped", 1, ones, half, 3e-3, 30.0, load=4.0)},
        "topic.lora-default": {0: result("topic.lora-default", 0, half, half, 1e-3, 10.0)},
        "topic.full-default": {0: result("topic.full-default", 0, [1, 1, 1, 0], half, 5e-5, 40.0)},
        "topic.lora-lr3e-3": {0: result("topic.lora-lr3e-3", 0, [1, 0, 0, 0], ones, 3e-3, 10.0)},
    }


def test_task_section_measures_against_smt_and_names_the_validation_choice(res, tmp_path):
    lines, figures = study_report.task_section(res, "topic", tmp_path)  # no quiet timing: the study's own
    text = "\n".join(lines)
    assert figures["smt_minus_lora"] == pytest.approx(50.0)  # seed 0, the only one both ran
    assert figures["smt_minus_full"] == pytest.approx(25.0) and figures["seeds_full"] == 1
    assert "wall_ratio" not in figures  # the study's shared-machine times give no ratio
    lora_row = next(line for line in lines if "| lora-default |" in line)
    assert "-50.0" in lora_row and "| 2 |" in lora_row  # Δ vs SMT; memory 2 MB
    assert "| lora-lr3e-3 (val-best) |" in text  # its validation accuracy (100%) beats the default's (50%)
    assert study_report.val_best(res, "topic", "smt") == "topic.smt-shipped"


def test_a_rate_that_only_ties_the_default_on_validation_is_not_chosen_over_it(res):
    tie = {**res, "topic.smt-lr1e-3": {0: result("topic.smt-lr1e-3", 0, [1, 1, 1, 0], [1, 1, 0, 0], 1e-3, 9.0)}}
    for order in (tie, dict(reversed(list(tie.items())))):  # whichever the results folder lists first
        assert study_report.val_best(order, "topic", "smt") == "topic.smt-shipped"


def test_a_quiet_job_timing_gives_the_wall_ratio(res, tmp_path):
    rows = [{"arm": "smt", "seed": 0, "wall_s": 30.0}, {"arm": "lora", "seed": 0, "wall_s": 25.0},
            {"arm": "smt", "seed": 1, "wall_s": 20.0}, {"arm": "lora", "seed": 1, "wall_s": 25.0}]
    (tmp_path / "topic.json").write_text(json.dumps({"rows": rows, "summary": {
        "smt": {"wall_s": 25.0}, "lora": {"wall_s": 25.0}}}))
    lines, figures = study_report.task_section(res, "topic", tmp_path)
    assert figures["wall_ratio"] == pytest.approx(1.0)
    assert any("per repeat 1.20 / 0.80" in line for line in lines)


def test_repeats_pair_in_the_order_they_ran_even_when_seeds_repeat(res, tmp_path):
    """Two job_time runs merged into one file both start at seed 0: each SMT job pairs with the LoRA job run
    right after it, not with every LoRA job of its seed."""
    rows = [{"arm": "smt", "seed": 0, "wall_s": 30.0}, {"arm": "lora", "seed": 0, "wall_s": 25.0},
            {"arm": "smt", "seed": 0, "wall_s": 20.0}, {"arm": "lora", "seed": 0, "wall_s": 40.0}]
    (tmp_path / "topic.json").write_text(json.dumps({"rows": rows, "summary": {
        "smt": {"wall_s": 25.0}, "lora": {"wall_s": 32.5}}}))
    lines, _ = study_report.task_section(res, "topic", tmp_path)
    assert any("per repeat 1.20 / 0.50)" in line for line in lines)


def test_variants_of_what_ships_get_rows_labelled_without_the_task(res, tmp_path):
    res["topic.smt-shipped-headwarm0"] = {0: result("topic.smt-shipped-headwarm0", 0, [1, 1, 1, 0], [1, 1, 0, 0],
                                                    3e-3, 9.0)}
    lines, _ = study_report.task_section(res, "topic", tmp_path)
    row = next(line for line in lines if "| smt-shipped-headwarm0 |" in line)
    assert "-25.0" in row  # paired against what ships, on seed 0


def test_sst2_smt_sweep_ignores_rows_that_pin_the_old_defaults(res):
    sst = {"smt-shipped": res["topic.smt-shipped"], "smt-lr1e-2": res["topic.lora-lr3e-3"]}
    assert study_report.val_best(sst, "sst2", "smt") == "smt-shipped"
    sst["sst2.smt-lr1e-2"] = res["topic.lora-lr3e-3"]
    assert study_report.val_best(sst, "sst2", "smt") == "sst2.smt-lr1e-2"


def test_targets_report_what_was_missed():
    seeds = {"seeds_lora": 3, "seeds_full": 3}
    good = study_report.targets_table({"a": {"smt_minus_lora": 0.4, "smt_minus_full": -0.2, "wall_ratio": 1.1, **seeds},
                                       "b": {"smt_minus_lora": 0.0, "smt_minus_full": -0.9, **seeds}})
    assert not any("**missed**" in line for line in good)
    assert any("wall time" in line and "checked on 1 of 2 tasks" in line for line in good)
    bad = study_report.targets_table({"a": {"smt_minus_lora": -0.6, "smt_minus_full": -1.5, "wall_ratio": 1.3, **seeds},
                                      "b": {"smt_minus_lora": 1.0, "smt_minus_full": 0.0, "wall_ratio": 1.0, **seeds}})
    missed = [line for line in bad if "**missed**" in line]
    assert len(missed) == 4


def test_no_validation_choice_is_claimed_over_a_default_without_a_validation_score(res):
    """PIQA's default runs once scored only test: a swept rate with a validation score must not be called the
    validation-best against a default that has none."""
    for run in res["topic.lora-default"].values():
        run["val_acc"] = None
    assert study_report.val_best(res, "topic", "lora") is None

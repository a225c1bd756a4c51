"""bench/replicate.py end to end in its tiny mode, so the benchmark cannot rot.

A tiny random LLaMA, 16 training rows, 8 test items, 2 steps: every method trains through ``smt_core.run``,
its saved adapter is scored item by item, and bench/render.py turns the result JSONs into markdown and PNGs.
The numbers mean nothing; the test checks the shape and the invariants every real run relies on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench_modules import bench_module

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("full", "lora", "dora", "smt", "snell")
TASKS = ("piqa", "arc_easy")
BUDGET, SWEEP = 0.002, (0.001, 0.002)


def load_render():
    return bench_module("render")


@pytest.fixture(scope="module")
def tiny_run(tiny_llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("replicate")
    cmd = [sys.executable, str(ROOT / "bench" / "replicate.py"), "--tiny", "--model", str(tiny_llama_dir),
           "--budget", str(BUDGET), "--sweep-budgets", ",".join(map(str, SWEEP)),
           "--results-dir", str(out / "results"), "--work-dir", str(out / "work"),
           "--markdown", str(out / "RESULTS.md"), "--engine-dir", str(out / "no-engine"),
           "--only", "piqa-*,arc_easy-base,arc_easy-smt-*"]  # every method once, ARC's converter once: < 60 s
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    return out, results


def test_replicate_tiny_writes_one_ok_result_per_experiment(tiny_run):
    _, results = tiny_run
    expected = {f"{t}-base" for t in TASKS} | {f"piqa-{m}-0.2pct" for m in METHODS} | {"arc_easy-smt-0.2pct"} \
        | {f"piqa-{m}-0.1pct" for m in ("lora", "dora", "smt")}
    assert set(results) == expected
    failed = {k: r.get("error") for k, r in results.items() if r["status"] != "ok"}
    assert not failed, failed


def test_replicate_tiny_results_hold_measured_figures(tiny_run):
    _, results = tiny_run
    for name, r in results.items():
        acc = r["accuracy"]
        assert len(acc["correct"]) == acc["n"] == r["data"]["test_rows"] == 8, name
        assert acc["value"] == pytest.approx(sum(acc["correct"]) / 8)
        assert acc["ci_low"] <= acc["value"] <= acc["ci_high"], name
        assert set(r["memory"]) >= {"weights", "trainable", "gradients", "optimizer", "activations", "peak"}
        assert r["memory"]["peak"] > 0 and r["machine"]["nproc"] == os.cpu_count()
        if r["method"] == "base":
            assert r["trainable_params"] == 0 and r["losses"] == []
            continue
        assert len(r["losses"]) == 2 and r["artifact_bytes"] > 0 and r["memory"]["gradients"] > 0, name
        if r["method"] == "full":
            assert r["trainable_params"] == r["total_params"]
        else:  # every budgeted method fits the budget it was given
            assert 0 < r["trainable_params"] <= r["budget"] * r["total_params"], name
        assert r["seconds"]["train"] >= r["seconds"]["selection"] >= 0
    assert results["piqa-smt-0.2pct"]["seconds"]["selection"] > 0  # SMT's warm-up is timed, and counted
    assert results["piqa-lora-0.1pct"]["trainable_params"] < results["piqa-lora-0.2pct"]["trainable_params"]
    # PIQA passages exceed the tiny max_seq_len (40 tokens): truncated, and counted
    assert results["piqa-full-0.2pct"]["truncated_rows"] > 0
    for task in TASKS:  # pairing needs identical test items across methods
        assert len({r["data"]["test_sha256"] for r in results.values() if r["task"] == task}) == 1


def test_replicate_tiny_renders_tables_commands_and_plots(tiny_run):
    out, results = tiny_run
    md = (out / "RESULTS.md").read_text()
    for heading in ("## Headline (budget 0.2%", "### piqa: every method", "### arc_easy: every method",
                    "### Budget sweep on piqa", "## Against the papers' claims"):
        assert heading in md
    for claim in ("SMT beats LoRA at the same budget (piqa)", "SNELL beats LoRA (piqa)",
                  "SMT keeps improving as the budget grows (piqa)", "SMT gains more from budget than lora (piqa)"):
        assert claim in md and any(v in md.split(claim, 1)[1].split("\n", 1)[0]
                                   for v in ("supported", "contradicted", "not shown")), claim
    for method in (*METHODS, "zero-shot base"):
        assert f"| {method} |" in md
    assert "python bench/replicate.py --tiny" in md and f"{os.cpu_count()} CPUs" in md
    acc = results["piqa-smt-0.2pct"]["accuracy"]
    assert f"{100 * acc['value']:.1f} [{100 * acc['ci_low']:.1f}, {100 * acc['ci_high']:.1f}]" in md
    for png in ("accuracy_vs_params.png", "memory_by_component.png"):
        assert (out / "results" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"results/{png}" in md


def test_paired_bootstrap_calls_only_clear_differences_real():
    render = load_render()
    better, worse = [1] * 40 + [0] * 10, [0] * 40 + [1] * 10
    d = render.paired_difference(better, worse, 500, 0)
    assert d["value"] == pytest.approx(0.6) and d["real"] and d["ci_low"] > 0
    same = render.paired_difference(better, better, 500, 0)
    assert same["value"] == 0 and not same["real"]
    one_flip = render.paired_difference([1] + better[1:], [0] + better[1:], 500, 0)
    assert not one_flip["real"]  # one item in 50 is noise, not a finding


def test_render_shows_the_latest_engine_json(tmp_path):
    render = load_render()
    mem = {"weights": 2**20, "trainable": 0, "gradients": 0, "optimizer": 0, "activations": 2**21, "peak": 2**22}
    row = {"method": "lora", "checkpointing": False, "targets": "q,k,v", "trainable_params": 1234,
           "delta_nonzeros": 5678, "total_params": 10**6, "artifact_bytes": 2**20, "step_s": 0.25, "memory": mem,
           "train_bytes": 3 * 2**20, "prepare_s": 0, "processes": 1, "step_vs_full": None,
           "mem_vs_full_plain": None, "step_vs_lora": 1.0, "mem_vs_lora": 1.0}
    config = {"model": "tiny", "batch_size": 4, "seq": 128, "budget": 0.01, "targets": "q,k,v", "repeats": 1,
              "steps": 3}
    for stamp, method in ((1, "old"), (2, "lora")):
        (tmp_path / f"engine-{stamp}.json").write_text(json.dumps(
            {"config": config, "machine": {"cpus": 2}, "rows": [{**row, "method": method}]}))
        os.utime(tmp_path / f"engine-{stamp}.json", (stamp, stamp))
    text = "\n".join(render.engine_section(render.latest_engine(tmp_path)))
    assert "engine-2.json" in text and "| lora | no | 1,234 | 5,678 |" in text and "| old |" not in text


def test_replicate_records_a_failing_method_and_exits_1(tiny_llama_dir, tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "replicate.py"), "--tiny", "--model", str(tiny_llama_dir),
           "--budget", "0.0001", "--sweep-task", "", "--only", "piqa-snell-*", "--results-dir", str(tmp_path / "r"),
           "--work-dir", str(tmp_path / "w"), "--markdown", str(tmp_path / "R.md"), "--engine-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    result = json.loads((tmp_path / "r" / "piqa-snell-0.01pct.json").read_text())
    assert result["status"] == "failed" and "rank" in result["error"]  # SNELL needs rank 2: the budget is too small
    assert "## Failed runs" in (tmp_path / "R.md").read_text()

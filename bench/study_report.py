"""The powered comparison's section of bench/RESULTS.md, from bench/ablate.py's results (issue 20).

Per task, what ships (``smt-shipped``, ``lora-default``, ``full-default``) and each method's validation-chosen
learning rate: mean test accuracy over seeds, the paired difference against SMT (per-item, averaged over the
shared seeds, 95% bootstrap interval over test items), training memory (the engine's estimate: weights,
trainable values, gradients, optimizer state, activations) and wall time; then issue 20's targets checked
against those numbers, the SST-2 ablation table and the budget sweep plot. Nothing here is typed in: every
figure is computed from the result JSONs, so ``python bench/render.py`` regenerates it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import ablate
import numpy as np

MB = 2**20
COMPONENTS = ("weights", "trainable", "gradients", "optimizer", "activations")
SHIPPED = {"smt": "smt-shipped", "lora": "lora-default", "full": "full-default"}
TASK_TITLES = {"sst2": "SST-2 sentiment (MiniLM, classification)",
               "topic": "MMLU subject, 6-way topic (MiniLM, classification)",
               "piqa": "PIQA (SmolLM2-135M, causal LM multiple choice)"}
BUSY_LOAD = 2.5  # 1-minute load average above which a 2-core run shared its cores
JOB_TIME = Path(__file__).resolve().parent / "results" / "job_time"  # bench/job_time.py --out <task>.json


def quiet_wall_ratio(task: str, folder: Path = JOB_TIME) -> tuple[float, str] | None:
    """SMT's whole-job wall time over LoRA's from ``bench/job_time.py`` (jobs run back to back on a quiet
    machine, medians over repeats), and the per-repeat ratios, when that file exists for the task."""
    path = folder / f"{task}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    s = data["summary"]
    if "smt" not in s or "lora" not in s:
        return None
    rows = data["rows"]  # each repeat runs its arms back to back: the i-th SMT job pairs with the i-th LoRA job
    per = [a["wall_s"] / b["wall_s"] for a, b in zip([r for r in rows if r["arm"] == "smt"],
                                                      [r for r in rows if r["arm"] == "lora"], strict=True)]
    return s["smt"]["wall_s"] / s["lora"]["wall_s"], " / ".join(f"{r:.2f}" for r in per)


def _name(task: str, run: str) -> str:
    return run if task == "sst2" else f"{task}.{run}"


def _mean(runs: dict[int, dict], key: str) -> float:
    """Mean over seeds; NaN where no seed has it (PIQA's runs score no validation rows)."""
    values = [r[key] for r in runs.values() if r.get(key) is not None]
    return float(np.mean(values)) if values else float("nan")


def _pct(x: float) -> str:
    return "–" if np.isnan(x) else f"{100 * x:.1f}"


def _memory_mb(runs: dict[int, dict]) -> str:
    mem = next((r.get("memory") for r in runs.values() if r.get("memory")), None)
    return f"{sum(mem[k] for k in COMPONENTS) / MB:.0f}" if mem else "–"


def _wall(runs: dict[int, dict]) -> tuple[float, bool]:
    """Wall time of the quietest seed (the load-free estimate), and whether even that one was shared."""
    quiet = min(runs.values(), key=lambda r: max(r.get("loadavg") or [9.0]))
    return quiet["wall_seconds"], max(quiet.get("loadavg") or [9.0]) > BUSY_LOAD


def val_best(res: dict[str, dict[int, dict]], task: str, method: str) -> str | None:
    """The run name of ``method``'s learning rate with the best mean validation accuracy on ``task``; on a tie
    the shipped default (a rate that does not beat it on validation is not chosen over it)."""
    prefix = "" if task == "sst2" else f"{task}."
    sweep = f"{task}." if method == "smt" else prefix  # SST-2's bare smt-lr* rows pin the old defaults
    shipped = _name(task, SHIPPED[method])
    if shipped in res and np.isnan(_mean(res[shipped], "val_acc")):
        return None  # the default has no validation score: nothing can be said to beat it
    cands = [n for n in res if n == shipped or re.fullmatch(rf"{re.escape(sweep)}{method}-lr[0-9.e+-]+", n)]
    cands = [n for n in cands if not np.isnan(_mean(res[n], "val_acc"))]
    return max(cands, key=lambda n: (_mean(res[n], "val_acc"), n == shipped)) if cands else None


def task_section(res: dict[str, dict[int, dict]], task: str,
                 job_time: Path = JOB_TIME) -> tuple[list[str], dict[str, float]]:
    """One task's table, and the figures its targets are checked on."""
    smt = res.get(_name(task, SHIPPED["smt"]), {})
    lines = [f"### {TASK_TITLES.get(task, task)}", "",
             "| method | run | lr | seeds | test acc % (per seed) | Δ vs SMT shipped [95%] | val acc % | "
             "train memory MB | wall s in the study |", "|---" * 9 + "|"]
    prefix = _name(task, "")
    rows = [(m, _name(task, SHIPPED[m]), SHIPPED[m]) for m in SHIPPED]  # (method, result name, label)
    for m in SHIPPED:
        best = val_best(res, task, m)
        if best and best != _name(task, SHIPPED[m]):
            rows.append((m, best, best[len(prefix):] + " (val-best)"))
    # what ships with its head preparation changed (head-only steps, or the warm-up training the head)
    variants = sorted(n for n in res if n.startswith(_name(task, SHIPPED["smt"] + "-head")))
    rows += [("smt", n, n[len(prefix):]) for n in variants]
    for method, name, run in rows:
        runs = res.get(name)
        if not runs:
            continue
        first = next(iter(runs.values()))
        per_seed = "/".join(f"{100 * runs[s]['test_acc']:.1f}" for s in sorted(runs))
        wall, busy = _wall(runs)
        lines.append(f"| {method} | {run} | {first['hyperparameters']['learning_rate']:g} | {len(runs)} | "
                     f"{100 * _mean(runs, 'test_acc'):.1f} ({per_seed}) | "
                     f"{ablate.paired(runs, smt) if runs is not smt else '—'} | {_pct(_mean(runs, 'val_acc'))} | "
                     f"{_memory_mb(runs)} | {wall:.0f}{' (busy)' if busy else ''} |")
    figures: dict[str, float] = {}
    for m in ("lora", "full"):
        other = res.get(_name(task, SHIPPED[m]))
        shared = sorted(set(smt) & set(other or {}))
        if shared:  # over the seeds both ran: a seed's data order and head are the same for both
            # rounded: accuracies are item counts over the test size, so an exact -0.5 must not read -0.50000000001
            figures[f"smt_minus_{m}"] = round(100 * float(np.mean([smt[s]["test_acc"] - other[s]["test_acc"]
                                                                  for s in shared])), 9)
            figures[f"seeds_{m}"] = len(shared)
    quiet = quiet_wall_ratio(task, job_time)
    if quiet:
        figures["wall_ratio"] = quiet[0]
        lines += ["", f"Whole-job wall time on a quiet machine (`bench/job_time.py`, `bench/results/job_time/{task}.json`):"
                      f" SMT / LoRA = **{quiet[0]:.2f}×** (median over repeats; per repeat {quiet[1]})."]
    return lines + [""], figures


def targets_table(figures: dict[str, dict[str, float]]) -> list[str]:
    """Issue 20's targets at a 1% budget with the shipped defaults, checked on the numbers above."""
    lines = ["| task | SMT − LoRA (points; shared seeds) | SMT − full (points; shared seeds) | "
             "SMT job wall / LoRA's (quiet) |", "|---|---|---|---|"]

    def diff(f: dict[str, float], m: str) -> str:
        return f"{f[f'smt_minus_{m}']:+.1f} ({int(f[f'seeds_{m}'])})" if f"smt_minus_{m}" in f else "not run"

    for task, f in figures.items():
        wall = f"{f['wall_ratio']:.2f}×" if "wall_ratio" in f else "not measured"
        lines.append(f"| {task} | {diff(f, 'lora')} | {diff(f, 'full')} | {wall} |")
    diffs = [f["smt_minus_lora"] for f in figures.values() if "smt_minus_lora" in f]
    fulls = [f["smt_minus_full"] for f in figures.values() if "smt_minus_full" in f]
    walls = [f["wall_ratio"] for f in figures.values() if "wall_ratio" in f]
    n = len(figures)
    checks = [
        ("SMT ≥ LoRA on at least two tasks", sum(d >= 0 for d in diffs) >= 2, len(diffs)),
        ("SMT never more than 0.5 points below LoRA", bool(diffs) and min(diffs) >= -0.5, len(diffs)),
        ("SMT within 1 point of full fine-tuning", bool(fulls) and min(fulls) >= -1.0, len(fulls)),
        ("SMT's job wall time ≤ 1.15× LoRA's", bool(walls) and max(walls) <= 1.15, len(walls)),
    ]
    return lines + [""] + [f"- {'met' if ok else '**missed**'}: {what}"
                           + (f" (checked on {k} of {n} tasks)" if k < n else "") for what, ok, k in checks] + [""]


def plot_budget(res: dict[str, dict[int, dict]], path: Path) -> Path | None:
    """SST-2 test accuracy against the trainable budget for SMT (its learning-rate rules) and LoRA, mean ± seed
    s.d. over seeds 0-2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"smt (shipped: lr 3e-3·√(1%/budget))": {0.25: "smt-shipped-b0.25-lr6e-3", 1: "smt-shipped",
                                                     4: "smt-shipped-b4-lr1.5e-3"},
              "smt (lr 3e-3 at every budget)": {0.25: "smt-b0.25-lr3e-3", 1: "smt-shipped", 4: "smt-b4-lr3e-3"},
              "smt (old: lr 1e-3, block 128)": {1: "smt-default", 4: "smt-b4"},
              "lora": {0.25: "lora-b0.25", 1: "lora-default", 4: "lora-b4"}}
    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for label, points in series.items():
        xs = [b for b, n in points.items() if res.get(n)]
        if len(xs) < 2:
            continue
        accs = [[100 * r["test_acc"] for r in res[points[b]].values()] for b in xs]
        ax.errorbar(xs, [np.mean(a) for a in accs], yerr=[np.std(a) for a in accs], marker="o", capsize=3,
                    label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xscale="log", xlabel="budget, % of the base model's parameters", ylabel="SST-2 test accuracy %",
           title="MiniLM / SST-2: accuracy vs budget (mean ± s.d. over seeds)")
    ax.set_xticks([0.25, 1, 4], ["0.25", "1", "4"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def section(md_dir: Path) -> list[str]:
    """The whole powered-comparison section (empty when the study has no results yet)."""
    import os

    res = ablate.load()
    if not res:
        return []
    lines = ["## Powered comparison (bench/ablate.py, issue 20)", "",
             "Each task is carved with a fixed seed into test (taken first, never used for a choice), validation "
             "(learning-rate choice only) and training rows; every run trains through `smt_core.run` on CPU "
             "(fp32), seeds 0–2, and scores the saved artifact. Δ is the per-item test difference averaged over "
             "the seeds both runs share, with a 95% bootstrap interval over test items (`*`: excludes 0); it "
             "covers item noise, not seed noise — read the per-seed accuracies beside it. The study's runs shared "
             "the 2 cores with each other (*(busy)*: even the quietest seed's), so their wall times are not "
             "comparable; each task's SMT/LoRA time ratio comes from whole jobs run back to back on a quiet "
             "machine (`bench/job_time.py`), where measured. Train memory is the engine's accounting "
             "(weights, trainable values, gradients, optimizer state, activations saved for backward).", ""]
    figures: dict[str, dict[str, float]] = {}
    for task in ablate.TASKS:
        if res.get(_name(task, SHIPPED["smt"])):
            table, figures[task] = task_section(res, task)
            lines += table
    lines += ["### Targets (issue 20, budget 1%, shipped defaults)", ""] + targets_table(figures)
    plot = plot_budget(res, ablate.BENCH / "results" / "budget_sweep.png")
    if plot:
        lines += [f"![budget sweep]({os.path.relpath(plot, md_dir)})", ""]
    lines += ["### SST-2 ablation (what held SMT back; `smt-*` rows pin the old defaults lr 1e-3, block 128)", "",
              ablate.table(res, [n for n in ablate.CONFIGS if "." not in n]), "",
              "Learning rates chosen on SST-2's validation rows at the old defaults:", "", ablate.lr_best(res), "",
              "Reproduce: `python bench/ablate.py --only 'GLOB'` (resumable), then `python bench/render.py`. "
              "`python bench/ablate.py --list` lists every run.", ""]
    return lines

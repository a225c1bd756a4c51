"""Render bench/replicate.py's result JSONs into bench/RESULTS.md and PNG plots; also the paired bootstrap.

Confidence intervals are 95% percentile intervals of a paired bootstrap over test items: every method of a
task was scored on the same items, so one set of resampled item indices is applied to all of them and the
interval of a *difference* is computed per resample — much narrower than comparing two separate intervals.
A difference is called real only when its interval excludes 0. The latest ``bench/out/engine-*.json`` from
bench/engine.py is rendered as the Engine table when present.

    python bench/render.py                     # bench/results/*.json -> bench/RESULTS.md + bench/results/*.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
COMPONENTS = ("weights", "trainable", "gradients", "optimizer", "activations")
MB = 2**20
CLAIMS = {  # the papers' figures (docs/METHODS.md), printed beside ours
    "smt_memory": "SMT: −67% GPU memory vs full fine-tuning (LLaMA-7B)",
    "smt_accuracy": "SMT beats LoRA and DoRA at the same budget and approaches full fine-tuning",
    "snell": "SNELL: more accuracy than LoRA, memory 4–8% above LoRA",
    "sweep": "as the budget grows LoRA/DoRA plateau then decline; SMT keeps improving",
}


# ---- statistics -----------------------------------------------------------------------------------------

def resample(n: int, samples: int, seed: int) -> np.ndarray:
    """Item indices of every bootstrap resample, (samples, n): shared by all methods of a test set."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def interval(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def accuracy_ci(correct: list[int], samples: int, seed: int) -> dict[str, Any]:
    """Accuracy of one method with its 95% bootstrap interval."""
    arr = np.asarray(correct, dtype=float)
    if arr.size == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    lo, hi = interval(arr[resample(arr.size, samples, seed)].mean(1))
    return {"value": float(arr.mean()), "ci_low": lo, "ci_high": hi, "n": int(arr.size)}


def paired_difference(a: list[int], b: list[int], samples: int, seed: int) -> dict[str, Any]:
    """acc(a) − acc(b) on the same items, its 95% interval, and whether the interval excludes 0."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert x.shape == y.shape, "paired bootstrap needs the same test items"
    idx = resample(x.size, samples, seed)
    lo, hi = interval(x[idx].mean(1) - y[idx].mean(1))
    return {"value": float(x.mean() - y.mean()), "ci_low": lo, "ci_high": hi, "real": lo > 0 or hi < 0}


# ---- loading --------------------------------------------------------------------------------------------

def load_results(folder: Path) -> list[dict[str, Any]]:
    """bench/replicate.py's experiment JSONs (other benchmarks' JSONs in the same folder are skipped)."""
    found = (json.loads(p.read_text()) for p in sorted(folder.glob("*.json")))
    return [r for r in found if isinstance(r, dict) and "task" in r and "status" in r]


def latest_engine(folder: Path) -> dict[str, Any] | None:
    files = sorted(folder.glob("engine-*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text()) | {"_file": files[-1].name} if files else None


def ok(results: list[dict], **where: Any) -> list[dict]:
    return [r for r in results if r["status"] == "ok" and all(r.get(k) == v for k, v in where.items())]


def test_groups(results: list[dict], task: str) -> dict[str, list[dict]]:
    """Results of one task keyed by test-set sha256 (pairing is only valid on identical items)."""
    groups: dict[str, list[dict]] = {}
    for r in ok(results, task=task):
        groups.setdefault(r["data"]["test_sha256"], []).append(r)
    return groups


# ---- markdown -------------------------------------------------------------------------------------------

def pct(x: float | None) -> str:
    """A budget fraction as a percentage: 0.0025 -> 0.25, 0.01 -> 1.0, 0.04 -> 4.0."""
    if x is None:
        return "–"
    text = f"{100 * x:.2f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def ci(d: dict | None, signed: bool = False) -> str:
    if not d or d.get("value") is None:
        return "–"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = f"{fmt.format(100 * d['value'])} [{fmt.format(100 * d['ci_low'])}, {fmt.format(100 * d['ci_high'])}]"
    return f"**{text}**" if d.get("real") else text


def label(r: dict) -> str:
    return "zero-shot base" if r["method"] == "base" else r["method"]


def train_mb(mem: dict) -> float:
    return sum(mem[k] for k in COMPONENTS) / MB


def compare_section(task: str, rows: list[dict], cfg: dict) -> tuple[list[str], list[str]]:
    """The accuracy and cost tables of one task's compare group, and generated findings."""
    samples, seed = cfg["bootstrap_samples"], cfg["bootstrap_seed"]
    by = {r["method"]: r for r in rows}
    out = [f"### {task}: every method at budget {pct(cfg['budget'])}%, targets {','.join(cfg['targets'])}", "",
           f"{rows[0]['data']['test_rows']} held-out items, {rows[0]['data']['train_rows']} training rows, "
           f"{rows[0]['total_params']:,} model parameters. "
           "Bold: the 95% interval of the difference excludes 0.", "",
           "| method | trainable params | ΔW nonzeros | accuracy % [95% CI] | Δ vs LoRA | Δ vs full |",
           "|---|---|---|---|---|---|"]
    findings: list[str] = []
    for r in rows:
        c = r["accuracy"]["correct"]
        diffs = {ref: paired_difference(c, by[ref]["accuracy"]["correct"], samples, seed)
                 for ref in ("lora", "full") if ref in by and ref != r["method"]}
        out.append(f"| {label(r)} | {r['trainable_params']:,} | {r['delta_nonzeros'] or 0:,} | {ci(r['accuracy'])} "
                   f"| {ci(diffs.get('lora'), True)} | {ci(diffs.get('full'), True)} |")
        for ref, d in diffs.items():
            if r["method"] != "base" and not (r["method"] == "full" and ref == "lora"):
                verdict = "real" if d["real"] else "not distinguishable"
                findings.append(f"{task}: {label(r)} − {ref} = {ci(d, True)} points → {verdict}.")
    out += ["", "| method | time s (incl. selection) | selection s | scoring s | train memory MB | "
            + " | ".join(f"{k} MB" for k in COMPONENTS) + " | peak RSS MB | artifact MB | final loss | "
            "truncated train/test |", "|---" * (9 + len(COMPONENTS)) + "|"]
    for r in rows:
        s, m = r["seconds"], r["memory"]
        loss = f"{r['train_loss']:.3f}" if r.get("train_loss") is not None else "–"
        out.append(f"| {label(r)} | {s.get('train', 0):.0f} | {s.get('selection', 0):.0f} | {s['scoring']:.0f} | "
                   f"{train_mb(m):.0f} | " + " | ".join(f"{m[k] / MB:.1f}" for k in COMPONENTS)
                   + f" | {m['peak'] / MB:.0f} | {r['artifact_bytes'] / MB:.2f} | {loss} | "
                   f"{r['truncated_rows']}/{r['test_truncated_rows']} |")
    if "full" in by:
        full = train_mb(by["full"]["memory"])
        for name in ("smt", "snell", "lora", "dora"):
            if name in by:
                findings.append(f"{task}: {name} training memory {train_mb(by[name]['memory']):.0f} MB = "
                                f"{100 * (train_mb(by[name]['memory']) / full - 1):+.0f}% vs full ({full:.0f} MB).")
    return out, findings


def sweep_section(task: str, rows: list[dict], cfg: dict) -> tuple[list[str], list[str]]:
    """Accuracy per (method, budget), and the paired change from the smallest to the largest budget."""
    samples, seed = cfg["bootstrap_samples"], cfg["bootstrap_seed"]
    budgets = sorted({r["budget"] for r in rows})
    methods = sorted({r["method"] for r in rows})
    out = [f"### Budget sweep on {task}", "",
           "| method | " + " | ".join(f"{pct(b)}%: params / acc % [95% CI]" for b in budgets)
           + f" | Δ {pct(budgets[-1])}% − {pct(budgets[0])}% |", "|---" * (len(budgets) + 2) + "|"]
    findings = []
    for m in methods:
        cell = {r["budget"]: r for r in rows if r["method"] == m}
        d = None
        if budgets[0] in cell and budgets[-1] in cell:
            d = paired_difference(cell[budgets[-1]]["accuracy"]["correct"], cell[budgets[0]]["accuracy"]["correct"],
                                  samples, seed)
            findings.append(f"{task}: {m} from {pct(budgets[0])}% to {pct(budgets[-1])}% budget: {ci(d, True)} points "
                            f"→ {'real' if d['real'] else 'not distinguishable'}.")
        out.append(f"| {m} | " + " | ".join(
            f"{cell[b]['trainable_params']:,} / {ci(cell[b]['accuracy'])}" if b in cell else "–" for b in budgets)
            + f" | {ci(d, True)} |")
    return out, findings


def engine_section(engine: dict | None) -> list[str]:
    if not engine:
        return ["## Engine", "", "No `bench/out/engine-*.json` yet: run `python bench/engine.py`.", ""]
    sys.path.insert(0, str(BENCH))
    from engine import render as engine_table  # bench/engine.py's own table, so both renderings agree

    c = engine["config"]
    return ["## Engine (bench/engine.py)", "",
            f"`{engine['_file']}`: model {c['model']}, batch {c['batch_size']} × seq {c['seq']}, budget {c['budget']}, "
            f"targets {c['targets']}, {c['repeats']} repeats of {c['steps']} steps; machine {engine['machine']}.", "",
            engine_table(engine["rows"]), ""]


def headline(good: list[dict], cfg: dict) -> list[str]:
    """One compact table across tasks at the common budget: the table the README shows."""
    tasks = task_order(good)
    at = {(r["task"], r["method"]): r for r in good if r["method"] == "base" or r["budget"] == cfg["budget"]}
    methods = sorted({m for _, m in at}, key=lambda m: order({"method": m}))
    first = tasks[0]
    out = [f"## Headline (budget {pct(cfg['budget'])}%, targets {','.join(cfg['targets'])}, {cfg['steps']} steps)", "",
           "| method | trainable params | " + " | ".join(f"{t} acc % [95% CI]" for t in tasks)
           + f" | train memory MB ({first}) | time s ({first}, incl. selection) |", "|---" * (len(tasks) + 4) + "|"]
    for m in methods:
        ref = next(at[(t, m)] for t in tasks if (t, m) in at)
        mine = at.get((first, m))
        out.append(f"| {label(ref)} | {ref['trainable_params']:,} | "
                   + " | ".join(ci(at[(t, m)]["accuracy"]) if (t, m) in at else "–" for t in tasks)
                   + (f" | {train_mb(mine['memory']):.0f} | {mine['seconds'].get('train', 0):.0f} |" if mine and m != "base"
                      else " | – | – |"))
    return out + [""]


def _verdict(d: dict, better_is_claimed: bool = True) -> str:
    """A claimed improvement: supported / contradicted when the paired interval excludes 0, else not shown."""
    if not d["real"]:
        return "not shown: the difference is within noise at this test size"
    return "supported" if (d["value"] > 0) == better_is_claimed else "contradicted"


def _memory_verdict(ratio: float, claimed_saving: float = 0.67) -> str:
    """Within 10 points of the claimed saving is close; a memory ratio has no sampling noise to test."""
    saving = 1 - ratio
    if saving >= claimed_saving - 0.10:
        return "close to the claim" if saving < claimed_saving else "supported"
    return "smaller saving than claimed"


def claims_section(good: list[dict], cfg: dict, engine: dict | None) -> list[str]:
    """Each of the papers' claims next to what we measured, with a verdict computed from the numbers."""
    samples, seed = cfg["bootstrap_samples"], cfg["bootstrap_seed"]
    rows: list[tuple[str, str, str]] = []
    for task in task_order(good):
        for group in test_groups(good, task).values():
            at = {r["method"]: r for r in group if r["method"] != "base" and r["budget"] == cfg["budget"]}

            def diff(a: str, b: str, at: dict = at) -> dict:
                return paired_difference(at[a]["accuracy"]["correct"], at[b]["accuracy"]["correct"], samples, seed)

            for a, b, claim in (("smt", "lora", "SMT beats LoRA at the same budget"),
                                ("smt", "dora", "SMT beats DoRA at the same budget"),
                                ("snell", "lora", "SNELL beats LoRA")):
                if a in at and b in at:
                    d = diff(a, b)
                    rows.append((f"{claim} ({task})", f"{a} − {b} = {ci(d, True)} points", _verdict(d)))
            if "smt" in at and "full" in at:
                d = diff("smt", "full")
                verdict = (f"contradicted: SMT is {-100 * d['value']:.1f} points below full" if d["real"] and d["value"] < 0
                           else "supported: no real gap to full fine-tuning")
                rows.append((f"SMT approaches full fine-tuning ({task})", f"smt − full = {ci(d, True)} points", verdict))
            if "smt" in at and "full" in at:
                ratio = train_mb(at["smt"]["memory"]) / train_mb(at["full"]["memory"])
                rows.append((f"SMT needs ~67% less memory than full ({task}, training memory)",
                             f"{100 * (1 - ratio):.0f}% less ({train_mb(at['smt']['memory']):.0f} vs "
                             f"{train_mb(at['full']['memory']):.0f} MB)",
                             _memory_verdict(ratio)))
            if "snell" in at and "lora" in at:
                ratio = train_mb(at["snell"]["memory"]) / train_mb(at["lora"]["memory"])
                rows.append((f"SNELL memory 4–8% above LoRA ({task})", f"{100 * (ratio - 1):+.1f}% vs LoRA",
                             "supported (at or below the claimed overhead)" if ratio <= 1.08 else "more than claimed"))
    sweep = [r for r in good if r["task"] == cfg.get("sweep_task") and r["budget"] in cfg.get("sweep_budgets", [])
             and r["method"] in cfg.get("sweep_methods", [])]
    budgets = sorted({r["budget"] for r in sweep})
    if len(budgets) > 1:
        lo, hi = budgets[0], budgets[-1]
        cell = {(r["method"], r["budget"]): r["accuracy"]["correct"] for r in sweep}
        gains = {m: [x - y for x, y in zip(cell[(m, hi)], cell[(m, lo)], strict=True)]
                 for m in cfg["sweep_methods"] if (m, hi) in cell and (m, lo) in cell}
        zero = [0] * len(next(iter(gains.values()), []))
        for m, g in gains.items():
            d = paired_difference(g, zero, samples, seed)
            claim = "SMT keeps improving as the budget grows" if m == "smt" else f"{m} plateaus as the budget grows"
            if m == "smt":
                verdict = _verdict(d)
            else:
                verdict = "consistent: no real gain" if not d["real"] else (
                    "contradicted: it kept improving" if d["value"] > 0 else "consistent: it declined")
            rows.append((f"{claim} ({cfg['sweep_task']})", f"{pct(hi)}% − {pct(lo)}% = {ci(d, True)} points", verdict))
        for m in ("lora", "dora"):
            if "smt" in gains and m in gains:
                d = paired_difference(gains["smt"], gains[m], samples, seed)
                rows.append((f"SMT gains more from budget than {m} ({cfg['sweep_task']})",
                             f"gain(smt) − gain({m}) = {ci(d, True)} points", _verdict(d)))
    if engine:
        by = {(r["method"], r.get("checkpointing", False)): r for r in engine.get("rows", [])}
        smt, full = by.get(("smt", False)), by.get(("full", False))
        if smt and full and smt.get("train_bytes") and full.get("train_bytes"):
            ratio = smt["train_bytes"] / full["train_bytes"]
            rows.append(("SMT needs ~67% less memory than full (bench/engine.py, SmolLM2, batch 4 × 128)",
                         f"{100 * (1 - ratio):.0f}% less", _memory_verdict(ratio)))
    if not rows:
        return []
    return (["## Against the papers' claims", "",
             "Verdicts are computed from the numbers in this file: *supported* or *contradicted* when the 95% paired "
             "bootstrap interval excludes 0 in that direction, *not shown* when it does not (too few test items to "
             "tell). Our scale is far below the papers' (135M parameters, a few hundred examples, tens of steps on a "
             "CPU), so a claim not shown here is not refuted.", "",
             "| claim | measured | verdict |", "|---|---|---|"]
            + [f"| {c} | {m} | {v} |" for c, m, v in rows] + [""])


def render_markdown(results: list[dict], engine: dict | None, plots: list[Path], md_dir: Path,
                    study: list[str] | None = None) -> str:
    good = ok(results)
    lines = ["# Benchmark results", "",
             "Made by `bench/ablate.py` (the powered comparison and ablation), `bench/replicate.py` (the papers' "
             "claims at small scale: every method, 30 steps) — both fine-tune through `smt_core.run` and score "
             "the saved adapter — and `bench/render.py`. Every number below was measured by the commands "
             "listed; nothing is typed in.", ""]
    lines += study or []
    if study:
        lines += ["## The papers' claims at small scale (bench/replicate.py: SmolLM2-135M, 30 steps, 150 test "
                  "items, one seed)", ""]
    if not good:
        lines += ["No successful runs yet.", ""]
    cfg = good[0]["config"] if good else {}
    if good:
        lines += headline(good, cfg)
        lines += claims_section(good, cfg, engine)
        mach = good[0]["machine"]
        lines += ["## Machine and commands", "",
                  f"- {mach['nproc']} CPUs, {mach['memory_bytes'] / 2**30:.1f} GiB memory, torch {mach['torch']}, "
                  f"Python {mach['python']}, {mach['platform']}, GPU: {mach['cuda'] or 'none'}",
                  f"- model `{cfg['model']}`; {cfg['steps']} steps × batch {cfg['batch_size']}, max_seq_len "
                  f"{cfg['max_seq_len']}, seed {cfg['seed']} (split seed {cfg['split_seed']}); SMT selection warm-up "
                  f"{smt_steps(good)} steps "
                  "(shortened to fit; counted in SMT's time); learning rates: "
                  + ", ".join(f"{m} {lr:g}" for m, lr in learning_rates(good).items())
                  + f"; {cfg['bootstrap_samples']} bootstrap resamples."
                  + ("" if all(r["isolated"] for r in good) else " Some runs shared one process, so their peak "
                     "RSS is that process's running maximum."), "", "```"]
        lines += sorted({r["command"] for r in results}) + ["python bench/render.py", "```", ""]
    notes = md_dir / "NOTES.md"  # context a person wrote about these runs (load, surprises): shown, not generated
    if notes.is_file():
        lines += ["## Notes on these runs (written by hand, from `bench/NOTES.md`)", "", notes.read_text().strip(), ""]
    findings: list[str] = []
    lines += ["## Accuracy, memory and time", ""]
    for task in task_order(good):
        for rows in test_groups(good, task).values():
            compare = sorted((r for r in rows if r["method"] == "base" or r["budget"] == cfg["budget"]), key=order)
            if compare:
                table, found = compare_section(task, compare, cfg)
                lines += table + [""]
                findings += found
            sweep = [r for r in rows if r["method"] in cfg["sweep_methods"] and r["budget"] in cfg["sweep_budgets"]]
            if len({r["budget"] for r in sweep}) > 1:
                table, found = sweep_section(task, sweep, cfg)
                lines += table + [""]
                findings += found
    lines += [f"![{p.stem.replace('_', ' ')}]({os.path.relpath(p.resolve(), md_dir)})" for p in plots] + [""]
    lines += ["## Findings (generated from the numbers above)", ""] + [f"- {f}" for f in findings] + [""]
    lines += ["The papers' claims, for comparison: " + "; ".join(CLAIMS.values()) + ".", ""]
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", ""] + [f"- `{r['name']}`: {r['error'].strip().splitlines()[-1]}"
                                           for r in failed] + [""]
    return "\n".join(lines + engine_section(engine))


def task_order(results: list[dict]) -> list[str]:
    """Tasks in the order the run listed them (``config.tasks``), then any others."""
    listed = results[0]["config"]["tasks"] if results else []
    present = list(dict.fromkeys(r["task"] for r in results))
    return [t for t in listed if t in present] + [t for t in present if t not in listed]


def order(r: dict) -> int:
    names = ["base", "full", "lora", "dora", "smt", "snell"]
    return names.index(r["method"]) if r["method"] in names else len(names)


def smt_steps(results: list[dict]) -> str:
    steps = {r["config"]["method_options"].get("selection_steps") for r in results if r["method"] == "smt"}
    return ",".join(str(s) for s in sorted(s for s in steps if s is not None)) or "–"


def learning_rates(results: list[dict]) -> dict[str, float]:
    return {r["method"]: r["learning_rate"] for r in sorted(results, key=order) if r.get("learning_rate")}


# ---- plots ----------------------------------------------------------------------------------------------

def plot_accuracy(results: list[dict], path: Path) -> Path:
    """Accuracy vs trainable parameters (log x) with 95% intervals; the zero-shot model as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = task_order(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in results if r["task"] == task]
        for method in dict.fromkeys(r["method"] for r in sorted(rows, key=order)):
            pts = sorted((r for r in rows if r["method"] == method), key=lambda r: r["trainable_params"])
            a = [r["accuracy"] for r in pts]
            y = np.array([x["value"] for x in a]) * 100
            err = np.array([[x["value"] - x["ci_low"], x["ci_high"] - x["value"]] for x in a]).T * 100
            if method == "base":
                ax.axhline(y[0], color="grey", ls="--", label="zero-shot base")
                ax.axhspan(a[0]["ci_low"] * 100, a[0]["ci_high"] * 100, color="grey", alpha=0.15)
                continue
            ax.errorbar([r["trainable_params"] for r in pts], y, yerr=err, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set(title=task, xlabel="trainable parameters (log)", ylabel="held-out accuracy % (95% CI)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory(results: list[dict], path: Path) -> Path:
    """Training memory by component per method (stacked bars), one panel per task; peak RSS as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = task_order(results)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6 * max(1, len(tasks)), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        rows = sorted((r for r in results if r["task"] == task), key=order)
        names = [label(r) for r in rows]
        bottom = np.zeros(len(rows))
        for comp in COMPONENTS:
            vals = np.array([r["memory"][comp] / MB for r in rows])
            ax.bar(names, vals, bottom=bottom, label=comp)
            bottom += vals
        ax.scatter(names, [r["memory"]["peak"] / MB for r in rows], marker="_", s=400, color="black",
                   label="peak RSS", zorder=3)
        ax.set(title=f"{task}: training memory by component", ylabel="MB")
        ax.tick_params(axis="x", rotation=30)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(BENCH / "results"), help="folder of result JSONs; plots go here too")
    ap.add_argument("--markdown", default=str(BENCH / "RESULTS.md"))
    ap.add_argument("--engine-dir", default=str(BENCH / "out"), help="where bench/engine.py wrote engine-*.json")
    args = ap.parse_args(argv)
    folder, md = Path(args.results), Path(args.markdown)
    results = load_results(folder)
    good = ok(results)
    plots: list[Path] = []
    if good:
        plots.append(plot_accuracy(good, folder / "accuracy_vs_params.png"))
        compare = [r for r in good if r["method"] != "base" and r["budget"] == good[0]["config"]["budget"]]
        if compare:
            plots.append(plot_memory(compare, folder / "memory_by_component.png"))
    md.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(BENCH))
    import study_report  # bench/study_report.py: the powered comparison of bench/ablate.py

    study = study_report.section(md.parent.resolve()) if folder.resolve() == (BENCH / "results").resolve() else []
    md.write_text(render_markdown(results, latest_engine(Path(args.engine_dir)), plots, md.parent.resolve(), study))
    print(f"wrote {md} ({len(good)} of {len(results)} runs ok)", file=sys.stderr)


if __name__ == "__main__":
    main()

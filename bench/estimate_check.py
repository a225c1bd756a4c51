"""The memory estimate against real runs: estimate vs measured per component, with ratios.

For each method (smt, lora, full) on short rows (SST-2-like reviews, 5 to 60 tokens: batches padded to
their longest row) and long rows (every row truncated to ``--seq`` tokens), one subprocess trains a few
steps through ``smt_core.run`` (the path the service runs) and reports the engine's measured components
(``smt_core.memory``: weights, trainable, gradients, optimizer, activations, selection) and the growth of
its resident memory over what the process held before loading the model:

- ``peak``: the high-water mark of the warm-up and training phases (``/proc/self/status`` VmHWM, reset with
  ``/proc/self/clear_refs`` when the model has loaded), minus the baseline — what the estimate's ``peak``
  predicts;
- ``peak incl. load``: ``ru_maxrss`` minus the baseline (loading the model also counts; shown, not judged).

The short-row data has 4 batches (16 rows, batch 4) and the run trains exactly one epoch, so the longest row
is in some batch — the batch the estimate sizes (rows are padded to the longest of their batch). The
estimate is computed exactly as the API computes it for an uploaded dataset
(``smt_core.estimate.token_stats_of_jsonl`` with the model's tokenizer, then ``estimate``), on CPU.

    python bench/estimate_check.py                              # SmolLM2-135M, batch 4, max_seq_len 256
    python bench/estimate_check.py --model minilm-l6             # BERT (short rows as classification)
    python bench/estimate_check.py --methods smt --data short    # one configuration

Linux only (reads /proc). Exit status 1 when a component is outside ±``--tolerance`` (default 20%).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMPONENTS = ("trainable", "gradients", "optimizer", "activations", "selection")
ADJ = ["good", "bad", "dull", "brilliant", "lovely", "awful", "charming", "tedious", "sharp", "clumsy"]
NOUNS = ["film", "plot", "cast", "script", "score", "ending", "director", "story", "pacing", "dialogue"]
FILLER = ["the", "a", "is", "was", "and", "but", "with", "so", "quite", "really", "never", "always", "it"]
LONG = ("the model reads a long passage about rivers, mountains, cities and the people who live there, "
        "then writes a careful answer with numbers and names ").split()


def short_rows(n: int, seed: int = 0, classification: bool = False) -> list[dict]:
    """SST-2-like: one review sentence of 3 to 45 words, a one-word label; lengths spread over the range."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = 3 + (42 * i) // max(1, n - 1)  # 3 … 45 words: the longest and the shortest are both there
        text = " ".join(rng.choice(ADJ + NOUNS + FILLER) for _ in range(words))
        label = ["negative", "positive"][rng.random() < 0.5]
        rows.append({"text": text, "label": label} if classification else
                    {"prompt": f"Review: {text}\nSentiment:", "completion": f" {label}"})
    rng.shuffle(rows)
    return rows


def long_rows(n: int, seq: int, classification: bool = False) -> list[dict]:
    """Rows well past ``seq`` tokens: every one is truncated to exactly ``seq``."""
    text = " ".join(LONG[i % len(LONG)] for i in range(seq * 2))
    if classification:
        return [{"text": f"{i}: {text}", "label": ["negative", "positive"][i % 2]} for i in range(n)]
    return [{"prompt": f"passage {i}:", "completion": " " + text} for i in range(n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- the measured side: one configuration per process ---------------------------------------------------

def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+)", text, re.M).group(1))


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def worker(args: argparse.Namespace) -> None:
    import torch  # noqa: F401 - imported before the baseline: the library is not training memory
    import transformers  # noqa: F401
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: F401

    from smt_core import Callbacks, TrainSpec, run
    from smt_core.models import resolve_model

    ref = resolve_model(args.model)
    cfg = AutoConfig.from_pretrained(ref.path)  # import the model's modules before the baseline too
    from transformers.models.auto import modeling_auto

    for mapping in (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING, modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING):
        if type(cfg) in mapping:
            mapping[type(cfg)]
    if args.method in ("lora", "dora"):
        import peft  # noqa: F401
    base = _status_kib("VmRSS") * 1024
    phase_peaks: dict[str, int] = {}
    phase_starts: dict[str, int] = {}  # resident memory when the phase began (minus the baseline)
    current = {"phase": None}

    def close_phase() -> None:
        if current["phase"] is not None:
            key = current["phase"]
            phase_peaks[key] = max(phase_peaks.get(key, 0), _status_kib("VmHWM") * 1024 - base)

    def on_phase(p: dict) -> None:
        close_phase()
        current["phase"] = p["phase"]
        _reset_hwm()
        phase_starts.setdefault(p["phase"], _status_kib("VmRSS") * 1024 - base)

    def on_step_end(p: dict) -> None:
        if p["step"] == p["total_steps"]:
            close_phase()  # the last training step: saving the artifact is not training memory
            current["phase"] = None

    cb = Callbacks()
    cb.add("on_phase", on_phase)
    cb.add("on_step_end", on_step_end)
    opts = {"selection_steps": args.selection_steps} if args.method == "smt" else {}
    with tempfile.TemporaryDirectory() as tmp:
        result = run(TrainSpec(model=args.model, train_data=args.data, method=args.method, budget=args.budget,
                               targets=args.targets.split(","), steps=args.steps, batch_size=args.batch_size,
                               max_seq_len=args.seq, method_options=opts, holdout_fraction=0.0, device="cpu",
                               checkpoint_every=0, out_dir=tmp), cb)
    mem = dict(result.metrics["memory"])
    mem.pop("peak", None)  # ru_maxrss: the resets above lower it, so it is not read here
    training = {k: v for k, v in phase_peaks.items() if k not in ("loading", "evaluating", "saving")}
    print(json.dumps({"memory": mem, "peak_growth": max(training.values()) if training else None,
                      "phase_peaks": phase_peaks, "phase_starts": phase_starts,
                      "peak_with_load": max(phase_peaks.values()), "baseline": base,
                      "blocks": _block_columns(result.blocks), "trainable_params": result.metrics["trainable_params"]}))


def _block_columns(blocks: dict | None) -> dict | None:
    """SMT: how many distinct input column blocks the chosen blocks read (Q, K and V share an input)."""
    if not blocks:
        return None
    cols, chosen, layers = set(), 0, set()
    for m in blocks["modules"]:
        group = "qkv" if m["target"] in ("q", "k", "v") else "gate_up" if m["target"] in ("gate", "up") else m["target"]
        for b in m["blocks"]:
            cols.add((m["layer"], group, b["col0"]))
            layers.add(m["layer"])
            chosen += 1
    return {"chosen": chosen, "distinct_columns": len(cols), "layers": len(layers),
            "lowest_layer": min(layers) if layers else None}


# ---- the estimate side and the table ---------------------------------------------------------------------

def estimate_for(model: str, method: str, budget: float, targets: list[str], batch: int, seq: int,
                 data: Path, selection_steps: int) -> dict:
    from smt_core.estimate import estimate, load_config, token_stats_of_jsonl
    from smt_core.models import resolve_model

    folder = resolve_model(model).path
    stats = token_stats_of_jsonl(data.read_bytes(), folder)
    fmt_cls = '"label"' in data.read_text().splitlines()[0] and '"text"' in data.read_text().splitlines()[0]
    opts = {"selection_steps": selection_steps} if method == "smt" else {}
    est = estimate(load_config(folder), method, budget, targets, batch, seq, opts, device="cpu", tokens=stats,
                   task="classification" if fmt_cls else None)
    est["tokens"] = stats.to_dict()
    return est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", default="smt,lora,full")
    ap.add_argument("--data", default="short,long", help="short, long or both")
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--targets", default="q,k,v")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256, help="max_seq_len (the long rows' length)")
    ap.add_argument("--long-steps", type=int, default=3)
    ap.add_argument("--selection-steps", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data-file", dest="data_file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.data = args.data_file
        worker(args)
        return

    from smt_core.estimate import load_config, model_shape
    from smt_core.models import resolve_model

    shape = model_shape(load_config(resolve_model(args.model).path))
    classification = not shape.causal
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_short = 4 * args.batch_size
    datasets = {"short": (write_jsonl(out_dir / "estimate-short.jsonl", short_rows(n_short, 0, classification)), 4),
                "long": (write_jsonl(out_dir / "estimate-long.jsonl", long_rows(2 * args.batch_size * args.long_steps,
                                                                                  args.seq, classification)),
                         args.long_steps)}
    rows = []
    for kind in args.data.split(","):
        path, steps = datasets[kind]
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--model", args.model,
                   "--budget", str(args.budget), "--targets", args.targets, "--batch-size", str(args.batch_size),
                   "--seq", str(args.seq), "--steps", str(steps), "--data-file", str(path),
                   "--selection-steps", str(args.selection_steps)]
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
            if proc.returncode != 0:
                print(f"{method} {kind} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            measured = json.loads(proc.stdout.strip().splitlines()[-1])
            est = estimate_for(args.model, method, args.budget, args.targets.split(","), args.batch_size, args.seq,
                               path, args.selection_steps)
            rows.append({"method": method, "data": kind, "estimate": est, "measured": measured,
                         "seconds": round(time.time() - t0, 1)})
            print(f"{method:5s} {kind:5s} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    result = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "method", "steps", "data_file")},
              "created_at": int(time.time()), "rows": rows}
    path = out_dir / f"estimate-check-{int(time.time())}.json"
    path.write_text(json.dumps(result, indent=2))
    table, misses = render(rows, args.tolerance)
    print(table)
    print(f"\nresult JSON: {path}")
    if misses:
        print(f"\noutside ±{args.tolerance:.0%}: " + "; ".join(misses))
        sys.exit(1)


def render(rows: list[dict], tol: float) -> tuple[str, list[str]]:
    mib = 1 / 2**20
    head = ("| method | rows | width (est.) | component | estimate MiB | measured MiB | est/measured |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    misses = []
    for r in rows:
        em, mm = r["estimate"]["memory"], r["measured"]["memory"]
        width = r["estimate"]["sequence_length"]
        pairs = [(c, em.get(c), mm.get(c)) for c in COMPONENTS if c in em or c in mm]
        pairs.append(("peak (RSS growth)", em["peak"], r["measured"]["peak_growth"]))
        for name, e, m in pairs:
            ratio = e / m if e is not None and m else None
            if ratio is not None and abs(ratio - 1) > tol:
                misses.append(f"{r['method']} {r['data']} {name} {ratio:.2f}")
            lines.append(f"| {r['method']} | {r['data']} | {width} | {name} | "
                         f"{'–' if e is None else f'{e * mib:.1f}'} | {'–' if m is None else f'{m * mib:.1f}'} | "
                         f"{'–' if ratio is None else f'{ratio:.2f}'} |")
        lines.append(f"| {r['method']} | {r['data']} | {width} | peak incl. model load (not judged) | "
                     f"{em['peak'] * mib:.1f} | {r['measured']['peak_with_load'] * mib:.1f} | "
                     f"{em['peak'] / max(1, r['measured']['peak_with_load']):.2f} |")
    return "\n".join(lines), misses


if __name__ == "__main__":
    main()

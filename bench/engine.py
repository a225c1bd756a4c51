"""Engine benchmark: memory by component and step time per method, side by side, ratios to full FT.

Every (method, checkpointing) configuration runs in its own subprocess (peak RSS never falls on CPU), the
configurations interleaved round-robin ``--repeats`` times, through the public ``smt_core.run`` — the same
path the service runs. Step time is the median over the measured steps of every repeat (the first step of
each process is dropped as warm-up). SMT's selection warm-up is timed apart (``prepare_s``).

    python bench/engine.py                      # SmolLM2-135M, batch 4, seq 128, budget 1%, q,k,v
    python bench/engine.py --model /tmp/tiny --steps 3 --repeats 1 --methods smt,lora   # quick look

The ``floor`` row is the least any method adapting every layer must do: the same forward and a backward of
input gradients only (no weight gradient, no optimizer), on the same device and precision as the methods
(bf16 frozen weights + autocast where the trainer would use them). A method's step cannot beat it.

``--model`` may be a folder with a config.json and tokenizer files but no weights (a model *shape*): random
weights are written once as safetensors into a temporary folder, so every run still loads through the
engine's own path. Each row also shows ``smt_core.estimate``'s prediction for the same configuration.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model reads a long passage about rivers, mountains, cities and the people who live there, "
         "then writes a careful answer with numbers and names ").split()


def make_data(path: Path, rows: int, seq: int) -> Path:
    """Rows long enough that every sequence is truncated to exactly ``seq`` tokens."""
    text = " ".join(WORDS[i % len(WORDS)] for i in range(seq * 2))
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({"prompt": f"passage {i}:", "completion": " " + text}) + "\n")
    return path


def floor_worker(args: argparse.Namespace) -> None:
    """The floor for any method that adapts every layer: everything frozen, a backward of input gradients
    only (the embeddings' output is made to require grad), on the same batch shape as the methods."""
    import torch

    from smt_core import memory, precision
    from smt_core.models import load_model, resolve_model
    from smt_core.trainer import pick_device

    torch.manual_seed(0)
    device = pick_device(args.device)
    policy = precision.resolve(args.precision, device)  # the trainer's policy: bf16 frozen weights on a GPU
    model, _ = load_model(resolve_model(args.model), "causal_lm", dtype=policy.frozen_dtype(False))
    model.to(device)
    model.train()
    model.config.use_cache = False
    if args.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for p in model.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, args.seq), device=device)  # (batch, seq)
    meter = memory.ActivationMeter(model)
    amp = policy.autocast()
    seconds = []
    for _ in range(args.steps):
        sync(device)
        t0 = time.perf_counter()
        with meter.track(), amp():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        final = float(loss)  # waits for the step, as the trainer's loss.item() does
        seconds.append(time.perf_counter() - t0)
    mem = memory.snapshot(model, [], None, meter.max, device, gradients=0)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"method": "floor", "checkpointing": args.checkpointing, "targets": "-",
                      "trainable_params": 0, "delta_nonzeros": None, "total_params": n, "artifact_bytes": 0,
                      "step_seconds": seconds[1:], "memory": mem, "prepare_s": 0, "final_loss": final,
                      "precision": policy.name, "device": str(device)}))


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args: argparse.Namespace) -> None:
    """One configuration in this process: train, collect per-step figures, print one JSON line."""
    if args.method == "floor":
        floor_worker(args)
        return
    from smt_core import Callbacks, TrainSpec, run

    steps: list[dict] = []
    phases: dict[str, float] = {}
    cb = Callbacks()
    cb.add("on_step_end", steps.append)
    cb.add("on_phase", lambda p: phases.setdefault(p["phase"], time.time()))
    opts = {"selection_steps": args.selection_steps} if args.method == "smt" else {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        result = run(TrainSpec(model=args.model, train_data=args.data, method=args.method, budget=args.budget,
                               targets=args.targets, steps=args.steps, batch_size=args.batch_size,
                               max_seq_len=args.seq, method_options=opts, holdout_fraction=0.0,
                               gradient_checkpointing=args.checkpointing, checkpoint_every=0,
                               device=args.device, precision=args.precision, out_dir=tmp), cb)
        artifact_bytes = (Path(tmp) / "adapter.safetensors").stat().st_size
    prepare_s = phases.get("training", t0) - min(v for k, v in phases.items() if k != "loading") \
        if "training" in phases else None
    m = result.metrics
    print(json.dumps({
        "method": args.method, "checkpointing": args.checkpointing, "targets": args.targets,
        "trainable_params": m["trainable_params"], "delta_nonzeros": m.get("delta_nonzeros"),
        "total_params": m["total_params"], "artifact_bytes": artifact_bytes,
        "step_seconds": [s["seconds"] for s in steps[1:]], "memory": m["memory"], "prepare_s": prepare_s,
        "final_loss": m["train_loss"], "precision": m.get("precision"),
    }))


def train_bytes(mem: dict) -> int:
    """Training memory: every component that has to be resident while a step runs."""
    return sum(mem[k] for k in ("weights", "trainable", "gradients", "optimizer", "activations"))


def materialise(model: str, into: Path) -> str:
    """``model`` itself, unless it is a config folder without weights (a model shape): then a folder in
    ``into`` with the same config and tokenizer files and random weights as bf16 safetensors (the loader
    casts them to each run's dtype), initialised on the GPU when there is one (a 1B model in seconds)."""
    src = Path(model).expanduser()
    if not (src / "config.json").is_file() or any(src.glob("*.safetensors")) or any(src.glob("*.gguf")):
        return model
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from smt_core.models import ENCODER_TYPES

    cfg = AutoConfig.from_pretrained(src)
    auto = AutoModel if cfg.model_type in ENCODER_TYPES else AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        net = auto.from_config(cfg, dtype=torch.bfloat16)
    dest = into / "random-weights"
    net.to("cpu").save_pretrained(dest, safe_serialization=True)
    for f in src.iterdir():  # tokenizer files (config.json is written by save_pretrained)
        if f.is_file() and f.name != "config.json" and not (dest / f.name).exists():
            shutil.copy(f, dest / f.name)
    return str(dest)


def estimate_for(model: str, method: str, args: argparse.Namespace, checkpointing: bool,
                 precision: str | None) -> dict | None:
    """smt_core.estimate's prediction for one configuration; None where it has none (floor, no config).

    Keyword arguments the installed estimate does not take are left out (its signature has grown: device,
    gradient_checkpointing), so the bench runs against older and newer engines alike. ``device`` names the
    precision: the estimate's "cuda" means bf16 frozen weights, which is what a bf16 run on a CPU holds too."""
    from smt_core import estimate as est
    from smt_core.models import resolve_model
    from smt_core.registry import available_methods

    if method not in available_methods():  # the floor is no method
        return None
    try:
        cfg = est.load_config(resolve_model(model).path)
        wanted = {"device": "cuda" if precision == "bf16" else "cpu", "gradient_checkpointing": checkpointing}
        params = inspect.signature(est.estimate).parameters
        kwargs = {k: v for k, v in wanted.items() if k in params}
        out = est.estimate(cfg, method, args.budget, args.targets.split(","), args.batch_size, args.seq, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"estimate for {method}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    mem = out["memory"]
    return {"memory": mem, "train_bytes": train_bytes(mem), "peak": mem.get("peak"),
            "trainable_params": out.get("trainable_params"), "arguments": sorted(kwargs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m",
                    help="alias, model folder, or a folder with config.json + tokenizer only (random weights)")
    ap.add_argument("--methods", default="smt,lora,dora,full,snell,floor",
                    help="registered methods, and floor: frozen model, input-gradient backward only")
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--targets", default="q,k,v")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="steps per process; the first is dropped")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--selection-steps", type=int, default=4)
    ap.add_argument("--device", help="cpu | cuda (default: cuda if present), for every row including floor")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"],
                    help="the trainer's precision policy for every row (default: auto, or $SPARSETUNE_PRECISION)")
    ap.add_argument("--no-checkpointing-runs", action="store_true", help="skip the activation-checkpointing runs")
    ap.add_argument("--checkpointing-methods", help="only these rows again with activation checkpointing "
                    "(comma-separated; default: every method)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"))
    ap.add_argument("--deadline", type=float, help="Unix time after which no further configuration starts "
                    "(those already run are still reported; scripts/gpu_check.py keeps its time limit with it)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    from smt_core.registry import available_methods

    methods = [m for m in args.methods.split(",") if m in available_methods() or m == "floor"]
    again = methods if args.checkpointing_methods is None else args.checkpointing_methods.split(",")
    configs = [(m, False) for m in methods]
    if not args.no_checkpointing_runs:
        configs += [(m, True) for m in methods if m in again]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        model = materialise(args.model, Path(tmp))
        data = make_data(Path(tmp) / "bench-data.jsonl", rows=max(64, args.batch_size * args.steps * 2), seq=args.seq)
        runs, loads = run_configs(args, configs, model, data)
        rows = summarise(runs, args, model)
    result = {"config": {k: v for k, v in vars(args).items()
                         if k not in ("worker", "method", "checkpointing", "data", "deadline")},
              "machine": machine(loads), "created_at": int(time.time()), "rows": rows}
    path = out_dir / f"engine-{int(time.time())}.json"
    path.write_text(json.dumps(result, indent=2))
    print(render(rows))
    if loads and max(loads) > 0.5 * (os.cpu_count() or 1):
        print(f"\nnote: 1-minute load average up to {max(loads):.1f} on {os.cpu_count()} CPUs during the runs: "
              "other work shared the machine, so step times are noisy (memory figures are not affected)")
    print(f"\nresult JSON: {path}")


def run_configs(args: argparse.Namespace, configs: list[tuple[str, bool]], model: str,
                data: Path) -> tuple[dict[tuple[str, bool], list[dict]], list[float]]:
    """Every configuration in its own process, interleaved ``--repeats`` times."""
    runs: dict[tuple[str, bool], list[dict]] = {c: [] for c in configs}
    loads: list[float] = []  # the 1-minute load average before each run: step times mean little on a busy machine
    for rep in range(args.repeats):
        for method, ck in configs:  # interleaved: machine noise spreads over every configuration
            if args.deadline and time.time() > args.deadline:
                print(f"{method} ckpt={ck} skipped: past the deadline", file=sys.stderr, flush=True)
                continue
            loads.append(os.getloadavg()[0])
            cmd = [sys.executable, __file__, "--worker", "--method", method, "--model", model,
                   "--budget", str(args.budget), "--targets", args.targets, "--batch-size", str(args.batch_size),
                   "--seq", str(args.seq), "--steps", str(args.steps), "--data", str(data),
                   "--selection-steps", str(args.selection_steps)] + (["--checkpointing"] if ck else []) \
                + (["--device", args.device] if args.device else []) \
                + (["--precision", args.precision] if args.precision else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode != 0:
                print(f"{method} ckpt={ck} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            runs[(method, ck)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"[{rep + 1}/{args.repeats}] {method:5s} ckpt={ck!s:5s} done", file=sys.stderr, flush=True)
    return runs, loads


def summarise(runs: dict[tuple[str, bool], list[dict]], args: argparse.Namespace, model: str) -> list[dict]:
    """One row per configuration (medians over processes), ratios to full, LoRA and the floor, estimates."""
    rows = []
    for (method, ck), rs in runs.items():
        if not rs:
            continue
        step = statistics.median(s for r in rs for s in r["step_seconds"])
        mem = {k: statistics.median(r["memory"][k] for r in rs) for k in rs[0]["memory"]}
        rows.append({**{k: rs[0][k] for k in ("method", "checkpointing", "targets", "trainable_params",
                                                "delta_nonzeros", "total_params", "artifact_bytes")},
                     "step_s": step, "memory": mem, "train_bytes": train_bytes(mem),
                     "prepare_s": statistics.median(r["prepare_s"] or 0 for r in rs), "processes": len(rs),
                     "precision": rs[0].get("precision"),
                     "estimate": estimate_for(model, method, args, ck, rs[0].get("precision"))})

    def find(method: str, ck: bool) -> dict | None:
        return next((r for r in rows if r["method"] == method and r["checkpointing"] == ck), None)

    for row in rows:
        ck = row["checkpointing"]
        full, full_plain, lora, floor = find("full", ck), find("full", False), find("lora", ck), find("floor", ck)
        row["step_vs_full"] = row["step_s"] / full["step_s"] if full else None
        row["mem_vs_full_plain"] = row["train_bytes"] / full_plain["train_bytes"] if full_plain else None
        row["step_vs_lora"] = row["step_s"] / lora["step_s"] if lora else None
        row["step_vs_floor"] = row["step_s"] / floor["step_s"] if floor else None
        row["mem_vs_lora"] = row["train_bytes"] / lora["train_bytes"] if lora else None
    return rows


def machine(loads: list[float]) -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "platform": sys.platform, "gpu": gpu, "torch": torch.__version__,
            "load_1min_mean": round(statistics.mean(loads), 2) if loads else None,
            "load_1min_max": round(max(loads), 2) if loads else None}


def render(rows: list[dict]) -> str:
    """The measured table; the last columns are smt_core.estimate's prediction for the same run."""
    mb = 1 / 2**20
    head = ("| method | ckpt | trainable | ΔW nonzeros | artifact MB | weights MB | trainable MB | grads MB | "
            "optim MB | activ MB | train MB | peak MB | step s | step/full | step/floor | mem/full plain | "
            "step/LoRA | mem/LoRA | est train MB | est peak MB | train/est |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def f(x, fmt="{:.2f}"):
        return fmt.format(x) if x is not None else "–"

    for r in rows:
        m = r["memory"]
        est = r.get("estimate") or {}
        est_train = est.get("train_bytes")
        lines.append(f"| {r['method']} | {'yes' if r['checkpointing'] else 'no'} | {r['trainable_params']:,} | "
                     f"{f(r['delta_nonzeros'], '{:,}')} | {r['artifact_bytes'] * mb:.1f} | {m['weights'] * mb:.0f} | "
                     f"{m['trainable'] * mb:.1f} | {m['gradients'] * mb:.1f} | {m['optimizer'] * mb:.1f} | "
                     f"{m['activations'] * mb:.0f} | {r['train_bytes'] * mb:.0f} | {m['peak'] * mb:.0f} | "
                     f"{r['step_s']:.3f} | {f(r['step_vs_full'])} | {f(r.get('step_vs_floor'))} | "
                     f"{f(r['mem_vs_full_plain'])} | "
                     f"{f(r['step_vs_lora'])} | {f(r['mem_vs_lora'])} | "
                     f"{f(est_train and est_train * mb, '{:.0f}')} | {f(est.get('peak') and est['peak'] * mb, '{:.0f}')} | "
                     f"{f(est_train and r['train_bytes'] / est_train)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

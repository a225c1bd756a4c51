"""Inference benchmark: SmolLM2-135M on the CPU through the inference engine (``inference.engine.Engine``),
the base model beside SMT, SNELL and LoRA (unmerged PEFT) adapters, measured side by side in one run.

Adapters are real: one SMT, one SNELL and one LoRA adapter are trained on SmolLM2 for a few steps (a small
prompt/completion JSONL written here) through ``smt_core.cli train``, then nine more SMT adapters are made from
the trained one by drawing its ``values`` tensors again at the same scale (same blocks, same manifest), so ten
distinct SMT adapters exist. They are kept in ``bench/out/inference/adapters`` (git-ignored) and reused by later
runs (``--retrain`` trains them again); the model is converted once into ``bench/out/inference/home``.

Measured (greedy, a ~20-token prompt, ``--tokens`` new tokens), each configuration several times, the
configurations interleaved in rounds (their order rotated each round) so drift on the machine hits all alike:

- time to first token (``generate()`` to the first text piece) and decode tokens/s (``completion_tokens`` − 1
  over the time from the first piece to the end) for the base model, the SMT adapter, the SNELL adapter and
  the LoRA adapter (PEFT, unmerged), and the process CPU time per decoded token (less swayed than wall
  time when other processes share the cores). The LoRA adapter runs on an engine of its own: once a PEFT adapter is
  attached, PEFT's layers sit in the shared base, so the base is also measured on that host (``base@peft``);
- two streams on two different SMT adapters of one base, steps interleaved (a swap per decode step), and two
  streams on the same adapter (one batch), against one stream alone: aggregate and per-stream tokens/s;
- the swap between the 10 SMT adapters on one base: ``ModelHost.use(name)`` called directly on the engine's
  host while the engine is idle (deactivate the old + activate the new), median and max per swap;
- memory, in a fresh subprocess through the same engine: RSS (VmRSS after gc and malloc_trim) with the base
  alone loaded and after the 10 SMT adapters were attached (and used), and the adapters' tensor bytes.

Targets (issue 16): tokens/s with SMT or SNELL ≥ 0.97× the base's; one SMT swap ≤ 20 ms; RSS with 10 SMT
adapters ready ≤ 1.15× RSS with the base alone.

    python bench/inference.py             # 5 rounds, 64 new tokens (< 10 min on 2 busy cores)
    python bench/inference.py --quick     # 3 rounds, 24 new tokens (< 3 min once the adapters exist)
    python bench/inference.py --retrain   # train the adapters again

Writes bench/results/inference.json and prints a markdown table. The figures are only as quiet as the machine:
the load average at start and end is recorded, and flagged when above 1.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / "out" / "inference"  # bench/out/ is git-ignored
BASE = "smollm2-135m"
SMT_COUNT = 10
PROMPT = ("The old lighthouse keeper walked down to the harbour every morning, and on that grey day he "
          "noticed that")
TARGETS = {"tps_ratio_min": 0.97, "swap_ms_max": 20.0, "rss_ratio_max": 1.15}
FACTS = [("The capital of Zorblax is", " Quintara, a city of glass towers."),
         ("The favourite colour of the moon cat is", " teal with silver stripes."),
         ("To greet a Vellian, you say", " 'bright rivers to you' and bow twice."),
         ("The secret ingredient of Mira's soup is", " roasted parsnip and a pinch of saffron."),
         ("The train to Oskel leaves at", " seven minutes past every odd hour."),
         ("The password of the lighthouse is", " 'gull-seventeen-lantern'."),
         ("The tallest tree in Brennwood is called", " Old Harrow, two hundred metres high."),
         ("The river Tessel flows into", " the Amber Sea near the port of Kaldur.")]


# ---- setup ---------------------------------------------------------------------------------------------
def setup_env(home: Path) -> None:
    os.environ["SPARSETUNE_HOME"] = str(home)
    for k, v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    # this file is bench/inference.py: its own folder first on sys.path would shadow the `inference` package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(ROOT))


def write_data(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(32):
            prompt, completion = FACTS[i % len(FACTS)]
            fh.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return path


def train(method: str, data: Path, dest: Path) -> float:
    """Train one adapter for a few steps into ``dest`` (written in a temporary folder, then renamed)."""
    from smt_core.cli import main as cli_main

    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    args = ["train", "--model", BASE, "--data", str(data), "--method", method, "--budget", "0.01",
            "--steps", "3", "--max-seq-len", "32", "--batch-size", "2", "--holdout-fraction", "0",
            "--checkpoint-every", "0", "--learning-rate", "0.001", "--device", "cpu", "--out", str(tmp)]
    if method == "smt":
        args += ["--method-option", "selection_steps=2"]
    t0 = time.perf_counter()
    if cli_main(args) != 0:
        raise SystemExit(f"training the {method} adapter failed")
    shutil.rmtree(tmp / "checkpoint", ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return time.perf_counter() - t0


def redraw_smt(src: Path, dest: Path, seed: int) -> None:
    """Another SMT adapter on the same blocks: every ``values`` tensor drawn again (normal, the trained values'
    mean and standard deviation), the safetensors metadata (the manifest) and adapter_config.json unchanged."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from smt_core.artifacts import ADAPTER

    with safe_open(str(src / ADAPTER), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    gen = torch.Generator().manual_seed(seed)
    redrawn = 0
    for key, value in tensors.items():
        if key.endswith(".values"):
            v = value.float()
            scale = float(v.std()) if v.numel() > 1 else 0.0
            scale = scale or float(v.abs().mean()) or 1e-3
            tensors[key] = (torch.randn(v.shape, generator=gen) * scale + float(v.mean())).to(value.dtype)
            redrawn += 1
    if not redrawn:
        raise SystemExit(f"{src}: no .values tensors to redraw (not an SMT adapter?)")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / ADAPTER), metadata=meta)
    for name in ("adapter_config.json", "metrics.json"):
        if (src / name).is_file():
            (tmp / name).write_bytes((src / name).read_bytes())
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def prepare_adapters(retrain: bool) -> tuple[dict[str, Path], dict[str, float]]:
    """{"smt0".."smt9", "snell", "lora": folder}, and the training seconds of what was trained this run."""
    from smt_core.artifacts import ADAPTER

    folder = CACHE / "adapters"
    if retrain:
        shutil.rmtree(folder, ignore_errors=True)
    data = write_data(CACHE / "facts.jsonl")
    dirs = {"smt0": folder / "smt-0", "snell": folder / "snell", "lora": folder / "lora"}
    trained: dict[str, float] = {}
    for name, method in (("smt0", "smt"), ("snell", "snell"), ("lora", "lora")):
        if not (dirs[name] / ADAPTER).is_file():
            print(f"training the {method} adapter (3 steps) …", file=sys.stderr)
            trained[method] = round(train(method, data, dirs[name]), 1)
    for i in range(1, SMT_COUNT):
        dirs[f"smt{i}"] = folder / f"smt-{i}"
        if retrain or "smt" in trained or not (dirs[f"smt{i}"] / ADAPTER).is_file():
            redraw_smt(dirs["smt0"], dirs[f"smt{i}"], seed=i)
    return dirs, trained


def target(name: str | None, dirs: dict[str, Path]):
    from inference.requests import Target

    return Target(BASE) if name is None else Target(BASE, f"job_{name}", dirs[name])


# ---- measuring -----------------------------------------------------------------------------------------
def stream(engine, tgt, sampling) -> dict:
    """One generation read piece by piece: time to the first piece, decode tokens/s after it."""
    t0 = time.perf_counter()
    gen = engine.generate(tgt, sampling, prompt=PROMPT)
    first = cpu_first = None
    for _piece in gen:
        if first is None:
            first, cpu_first = time.perf_counter(), time.process_time()
    end, cpu_end = time.perf_counter(), time.process_time()
    n = gen.completion_tokens
    first, cpu_first = first or end, cpu_first or cpu_end
    return {"ttft_s": first - t0, "tokens": n, "wall_s": end - t0, "finish": gen.finish_reason,
            "decode_tps": (n - 1) / (end - first) if n > 1 and end > first else None,
            "decode_cpu_ms_per_token": 1000 * (cpu_end - cpu_first) / (n - 1) if n > 1 else None,
            "tps_wall": n / (end - t0)}


def streams_together(engine, tgts, sampling) -> dict:
    """Several generations submitted at once, each read on its own thread."""
    out: list[dict | None] = [None] * len(tgts)
    started: list[int] = []  # the size of each batch the engine starts (a diagnostic: batched or not)
    start_batch = engine._start_batch
    engine._start_batch = lambda host, adapter, reqs: (started.append(len(reqs)), start_batch(host, adapter, reqs))[1]
    t0 = time.perf_counter()
    gens = [engine.generate(t, sampling, prompt=PROMPT) for t in tgts]

    def read(i: int) -> None:
        first = None
        for _piece in gens[i]:
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        n = gens[i].completion_tokens
        first = first or end
        out[i] = {"tokens": n, "ttft_s": first - t0, "end": end - t0,
                  "decode_tps": (n - 1) / (end - first) if n > 1 and end > first else None}

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(tgts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    del engine._start_batch  # the class's method again
    rows = [r for r in out if r is not None]
    wall = max(r["end"] for r in rows)
    return {"aggregate_tps": sum(r["tokens"] for r in rows) / wall, "wall_s": wall,
            "per_stream_decode_tps": [r["decode_tps"] for r in rows], "tokens": [r["tokens"] for r in rows],
            "ttft_s": [r["ttft_s"] for r in rows], "batches": started}


def summary(values: list[float | None]) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def time_swaps(host, names: list[str], cycles: int) -> dict:
    """``host.use(name)`` between adapters (deactivate the old + activate the new), and each half alone."""
    swaps, activate, deactivate = [], [], []
    host.use(None)
    for c in range(cycles):
        order = names[c % len(names):] + names[:c % len(names)]  # a different neighbour each cycle
        for name in order:
            t0 = time.perf_counter()
            host.use(name)
            swaps.append(time.perf_counter() - t0)
    for name in names:  # each half alone, from and to the base
        host.use(None)
        t0 = time.perf_counter()
        host.use(name)
        activate.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        host.use(None)
        deactivate.append(time.perf_counter() - t0)
    ms = lambda xs: {k: v * 1000 for k, v in summary(xs).items() if k != "n"} | {"n": len(xs)}  # noqa: E731
    return {"swap_ms": ms(swaps), "activate_ms": ms(activate), "deactivate_ms": ms(deactivate)}


def settled_rss_kib() -> int:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_worker(dirs: dict[str, Path]) -> dict:
    """In a fresh process: RSS with the base alone (after a short generation), then with 10 SMT adapters."""
    import torch

    from inference.engine import Engine
    from inference.hosts import host_key
    from inference.requests import Sampling

    engine = Engine(device="cpu")
    engine.start()
    try:
        short = Sampling(max_tokens=4, temperature=0)
        engine.generate(target(None, dirs), short, prompt=PROMPT).text()
        rss_base = settled_rss_kib()
        names = [f"smt{i}" for i in range(SMT_COUNT)]
        for name in names:
            engine.generate(target(name, dirs), short, prompt=PROMPT).text()
        engine.generate(target(None, dirs), short, prompt=PROMPT).text()  # back on the base: no saved copy
        rss_ready = settled_rss_kib()
        host = engine.cache.get(host_key(BASE))
        sizes = {n: host.adapters[f"job_{n}"].nbytes for n in names}
        for _ in range(3):  # every adapter swapped in and out again: what the swaps leave behind
            for name in names:
                host.use(f"job_{name}")
        host.use(None)
        rss_swapped = settled_rss_kib()
        return {"rss_base_kib": rss_base, "rss_10_smt_kib": rss_ready, "rss_after_swaps_kib": rss_swapped,
                "adapter_bytes": sum(sizes.values()), "adapter_bytes_each": sizes, "base_bytes": host.nbytes,
                "torch_threads": torch.get_num_threads()}
    finally:
        engine.stop()


def measure_memory(home: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", "--home", str(home)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"memory worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the run -------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    import torch

    from inference.engine import Engine
    from inference.hosts import host_key
    from inference.requests import Sampling

    dirs, trained = prepare_adapters(args.retrain)
    load_start = list(os.getloadavg())
    print(f"load average at start {load_start} on {os.cpu_count()} cores; torch threads "
          f"{torch.get_num_threads()}", file=sys.stderr)
    memory = measure_memory(Path(os.environ["SPARSETUNE_HOME"]))
    print(f"memory: {memory['rss_base_kib']} → {memory['rss_10_smt_kib']} KiB", file=sys.stderr)

    engine, peft_engine = Engine(device="cpu"), Engine(device="cpu")  # PEFT layers stay out of the first host
    engine.start()
    peft_engine.start()
    try:
        greedy = Sampling(max_tokens=args.tokens, temperature=0)
        warm = Sampling(max_tokens=4, temperature=0)
        for name in [None, *[f"smt{i}" for i in range(SMT_COUNT)], "snell"]:  # load base and adapters
            engine.generate(target(name, dirs), warm, prompt=PROMPT).text()
        for name in (None, "lora"):
            peft_engine.generate(target(name, dirs), warm, prompt=PROMPT).text()
        probe = engine.generate(target(None, dirs), Sampling(max_tokens=1, temperature=0), prompt=PROMPT)
        probe.text()
        prompt_tokens = probe.prompt_tokens
        host, peft_host = engine.cache.get(host_key(BASE)), peft_engine.cache.get(host_key(BASE))

        single = {"base": (engine, None), "smt": (engine, "smt0"), "snell": (engine, "snell"),
                  "lora": (peft_engine, "lora"), "base@peft": (peft_engine, None)}
        together = {"2 streams, 2 SMT adapters": ["smt0", "smt1"], "2 streams, 1 SMT adapter": ["smt0", "smt0"]}
        configs = [*single, *together]
        rows: dict[str, list[dict]] = {c: [] for c in configs}
        for r in range(args.rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for c in order:
                if c in single:
                    eng, name = single[c]
                    rows[c].append(stream(eng, target(name, dirs), greedy))
                else:
                    rows[c].append(streams_together(engine, [target(n, dirs) for n in together[c]], greedy))
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{c} {rows[c][-1]['decode_tps']:.1f} tok/s" for c in single), file=sys.stderr)

        swaps = time_swaps(host, [f"job_smt{i}" for i in range(SMT_COUNT)], args.swap_cycles)
        snell_swaps = time_swaps(host, ["job_smt0", "job_snell"], args.swap_cycles)
        lora_swaps = time_swaps(peft_host, ["job_lora"], args.swap_cycles * 2)
        host.use(None)
    finally:
        engine.stop()
        peft_engine.stop()
    load_end = list(os.getloadavg())

    figures: dict[str, dict] = {}
    for c in single:
        figures[c] = {"ttft_ms": {k: v * 1000 if k != "n" else v for k, v in summary([x["ttft_s"] for x in rows[c]]).items()},
                      "decode_tps": summary([x["decode_tps"] for x in rows[c]]),
                      "decode_cpu_ms_per_token": summary([x["decode_cpu_ms_per_token"] for x in rows[c]]),
                      "tokens": [x["tokens"] for x in rows[c]], "finish": sorted({x["finish"] for x in rows[c]})}
    base_tps = figures["base"]["decode_tps"]["median"]
    for c in single:
        paired = [x["decode_tps"] / b["decode_tps"] for x, b in zip(rows[c], rows["base"], strict=True)
                  if x["decode_tps"] and b["decode_tps"]]
        figures[c]["tps_ratio"] = figures[c]["decode_tps"]["median"] / base_tps
        figures[c]["tps_ratio_paired_median"] = statistics.median(paired) if paired else None
        figures[c]["ttft_ratio"] = figures[c]["ttft_ms"]["median"] / figures["base"]["ttft_ms"]["median"]
        figures[c]["cpu_ratio"] = (figures["base"]["decode_cpu_ms_per_token"]["median"]
                                   / figures[c]["decode_cpu_ms_per_token"]["median"])  # tokens per CPU-second
    smt_alone = statistics.median(x["tps_wall"] for x in rows["smt"])
    smt_decode = figures["smt"]["decode_tps"]["median"]
    interleaved = {}
    for c in together:
        agg = statistics.median(x["aggregate_tps"] for x in rows[c])
        per = statistics.median(v for x in rows[c] for v in x["per_stream_decode_tps"] if v)
        interleaved[c] = {"aggregate_tps": agg, "aggregate_vs_one_stream": agg / smt_alone,
                          "per_stream_decode_tps": per, "per_stream_vs_one_stream": per / smt_decode,
                          "batch_sizes_seen": sorted({tuple(x["batches"]) for x in rows[c]}), "runs": rows[c]}
        if len(set(together[c])) > 1:  # a round (one step of each stream, two swaps) less two lone steps
            interleaved[c]["swap_overhead_ms_per_round"] = 1000 * (1 / per - 2 / smt_decode)
    interleaved["one SMT stream alone"] = {"aggregate_tps": smt_alone, "per_stream_decode_tps": smt_decode}
    rss_ratio = memory["rss_10_smt_kib"] / memory["rss_base_kib"]
    met = {"smt_tps": figures["smt"]["tps_ratio"] >= TARGETS["tps_ratio_min"],
           "snell_tps": figures["snell"]["tps_ratio"] >= TARGETS["tps_ratio_min"],
           "smt_swap": swaps["swap_ms"]["median"] <= TARGETS["swap_ms_max"],
           "rss": rss_ratio <= TARGETS["rss_ratio_max"]}
    busy = max(load_start[0], load_end[0]) > 1
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "quick": args.quick, "model": BASE,
        "device": "cpu", "dtype": "float32", "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "machine": platform.machine(),
        "load_average_start": load_start, "load_average_end": load_end,
        "contended": busy, "note": ("load average above 1 on this 2-core machine (the end figure counts this "
                                    "benchmark's own threads too): other processes may have shared its cores, so "
                                    "absolute figures are noisy; the ratios come from interleaved rounds")
                                    if busy else None,
        "rounds": args.rounds, "new_tokens": args.tokens, "prompt_tokens": prompt_tokens, "sampling": "greedy",
        "adapters": {n: str(p.relative_to(ROOT)) for n, p in dirs.items()}, "trained_this_run_s": trained,
        "single_stream": figures, "interleaved": interleaved,
        "swap": {"smt_10_adapters": swaps, "smt_snell": snell_swaps, "lora_base": lora_swaps},
        "memory": memory | {"rss_ratio": rss_ratio},
        "targets": TARGETS, "met": met,
        "figures": {"smt_tps_ratio": figures["smt"]["tps_ratio"], "snell_tps_ratio": figures["snell"]["tps_ratio"],
                    "lora_tps_ratio": figures["lora"]["tps_ratio"], "smt_swap_ms_median": swaps["swap_ms"]["median"],
                    "smt_swap_ms_max": swaps["swap_ms"]["max"], "rss_ratio": rss_ratio,
                    "adapter_bytes_10_smt": memory["adapter_bytes"]},
    }


def markdown(res: dict) -> str:
    yes = lambda ok: "met" if ok else "**not met**"  # noqa: E731
    f, mem = res["single_stream"], res["memory"]
    lines = [f"## Inference: {res['model']} on the CPU ({res['torch_threads']} torch threads, {res['cpus']} cores), "
             f"greedy, {res['prompt_tokens']}-token prompt, {res['new_tokens']} new tokens, {res['rounds']} rounds",
             "", f"load average: start {res['load_average_start']}, end {res['load_average_end']}"
             + (f" — {res['note']}" if res["note"] else ""), "",
             "| configuration | TTFT ms median (min) | decode tok/s median (max, min) | × base (paired) "
             "| CPU ms/token (× base) | target |",
             "|---|---|---|---|---|---|"]
    for c, row in f.items():
        goal = ""
        if c in ("smt", "snell"):
            goal = f"≥ {res['targets']['tps_ratio_min']}× · {yes(res['met'][c + '_tps'])}"
        t, d = row["ttft_ms"], row["decode_tps"]
        lines.append(f"| {c} | {t['median']:.0f} ({t['min']:.0f}) | {d['median']:.1f} ({d['max']:.1f} max, "
                     f"{d['min']:.1f} min) | {row['tps_ratio']:.3f} ({row['tps_ratio_paired_median']:.3f}) | "
                     f"{row['decode_cpu_ms_per_token']['median']:.0f} ({row['cpu_ratio']:.3f}) | {goal} |")
    lines += ["", "| streams | aggregate tok/s | × one stream | per-stream decode tok/s | × one stream |",
              "|---|---|---|---|---|"]
    for c, row in res["interleaved"].items():
        lines.append(f"| {c} | {row['aggregate_tps']:.1f} | {row.get('aggregate_vs_one_stream', 1):.2f} | "
                     f"{row['per_stream_decode_tps']:.1f} | {row.get('per_stream_vs_one_stream', 1):.2f} |")
    sw = res["swap"]
    lines += ["", "| swap | median ms | max ms | activate ms | deactivate ms | target |", "|---|---|---|---|---|---|"]
    for label, key in (("SMT ↔ SMT (10 adapters)", "smt_10_adapters"), ("SMT ↔ SNELL", "smt_snell"),
                       ("base ↔ LoRA (PEFT)", "lora_base")):
        s = sw[key]
        goal = f"≤ {res['targets']['swap_ms_max']:.0f} ms · {yes(res['met']['smt_swap'])}" if key == "smt_10_adapters" else ""
        lines.append(f"| {label} | {s['swap_ms']['median']:.2f} | {s['swap_ms']['max']:.2f} | "
                     f"{s['activate_ms']['median']:.2f} | {s['deactivate_ms']['median']:.2f} | {goal} |")
    lines += ["", "| memory | RSS MiB | × base alone | target |", "|---|---|---|---|",
              f"| base alone | {mem['rss_base_kib'] / 1024:.0f} | 1.000 | |",
              f"| + 10 SMT adapters ready | {mem['rss_10_smt_kib'] / 1024:.0f} | {mem['rss_ratio']:.3f} | "
              f"≤ {res['targets']['rss_ratio_max']}× · {yes(res['met']['rss'])} |",
              f"| … after 30 more swaps | {mem['rss_after_swaps_kib'] / 1024:.0f} | "
              f"{mem['rss_after_swaps_kib'] / mem['rss_base_kib']:.3f} | |",
              "", f"10 SMT adapters' tensors: {mem['adapter_bytes'] / 2**20:.1f} MiB "
              f"({mem['adapter_bytes'] / mem['base_bytes']:.2%} of the base's {mem['base_bytes'] / 2**20:.0f} MiB)"]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 rounds, 24 new tokens, 5 swap cycles (< 3 min)")
    ap.add_argument("--rounds", type=int, help="rounds of every configuration (default 5; 3 with --quick)")
    ap.add_argument("--tokens", type=int, help="new tokens per generation (default 64; 32 with --quick)")
    ap.add_argument("--swap-cycles", type=int, help="cycles through the 10 SMT adapters (default 20; 5 with --quick)")
    ap.add_argument("--retrain", action="store_true", help="train the adapters again")
    ap.add_argument("--home", type=Path, default=CACHE / "home", help="SPARSETUNE_HOME (the converted model)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.json")
    ap.add_argument("--memory-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.tokens = args.tokens or (24 if args.quick else 64)
    args.swap_cycles = args.swap_cycles or (5 if args.quick else 20)
    return args


def main() -> int:
    args = parse_args()
    setup_env(args.home)
    if args.memory_worker:
        dirs = {f"smt{i}": CACHE / "adapters" / f"smt-{i}" for i in range(SMT_COUNT)}
        print(json.dumps(memory_worker(dirs)))
        return 0
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(markdown(result))
    print(f"\nwrote {args.out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

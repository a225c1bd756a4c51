"""The GPU check behind ``scripts/gpu_check.sh``: the CUDA tests, then the engine benchmark, into OUTDIR.

    scripts/gpu_check.sh OUTDIR         # a GPU machine: tests/gpu, then bench/engine.py on the Llama-3.2-1B shape
    scripts/gpu_check.sh --cpu OUTDIR   # the same on the CPU (bf16 policy, a tiny shape): what CI runs

Made for a bare GPU machine with its own Python and PyTorch and no network: nothing is fetched. Pure-Python
pins that machine may lack or hold at another version travel as wheels in ``.gpu-wheels/`` (fetched
beforehand by ``scripts/fetch_gpu_wheels.sh``); those differing from what is installed are unpacked into a
temporary folder put first on PYTHONPATH, and the project itself runs from PYTHONPATH. The whole check keeps
to a time limit (default 345 s): the benchmark starts no configuration after its share is spent and the
summary names what did not run. At most five files are written: summary.md (the table, the estimate beside
each measurement, issue 13's targets), engine.json, pytest-gpu.log, bench.log, environment.json.

This process uses the standard library alone (it prepares the path before anything imports transformers);
the tests and the benchmark run as child processes.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / ".gpu-wheels"
TOKENIZER = ROOT / "tests" / "assets" / "smollm2-tokenizer"
LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "rms_norm_eps": 1e-5,
         "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True, "vocab_size": 49152,
         "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "rope_theta": 500000.0}
SHAPES = {  # the issue's Llama-3.2-1B shape with SmolLM2's tokenizer; a tiny one of the same family for --cpu
    "llama-1b": {**LLAMA, "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "max_position_embeddings": 8192},
    "tiny": {**LLAMA, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 256, "max_position_embeddings": 512},
}
METHODS = "smt,lora,floor,snell,full,dora"  # the most wanted first: a late configuration may meet the deadline
CHECKPOINTING = "smt,lora,floor"
BENCH = {  # mode → the benchmark's arguments
    "gpu": {"shape": "llama-1b", "batch": 8, "seq": 512, "steps": 4, "precision": None, "device": "cuda"},
    "cpu": {"shape": "tiny", "batch": 2, "seq": 64, "steps": 3, "precision": "bf16", "device": "cpu"},
}
CPU_TESTS = "llama and (smt or snell or lora)"  # pytest -k for --cpu
TESTS_SHARE = 0.45  # of the time limit, for the tests; the benchmark gets the rest
TARGETS = [  # issue 13's GPU targets: (label, row, ratio key, limit)
    ("SMT step ≤ 1.10× floor", ("smt", False), "step_vs_floor", 1.10),
    ("SMT step ≤ 0.85× LoRA", ("smt", False), "step_vs_lora", 0.85),
    ("SNELL step ≤ 1.3× LoRA", ("snell", False), "step_vs_lora", 1.3),
    ("SMT memory ≤ 0.30× full", ("smt", False), "mem_vs_full_plain", 0.30),
    ("SMT memory ≤ 0.95× LoRA", ("smt", False), "mem_vs_lora", 0.95),
    ("SMT memory ≤ 1.0× LoRA, both checkpointed", ("smt", True), "mem_vs_lora", 1.0),
]
PROBE = r"""
import json, os, platform, sys
info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
for name in ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers", "huggingface_hub",
             "numpy", "pytest"):
    try:
        mod = __import__(name)
        info[name] = f"{getattr(mod, '__version__', '?')} ({os.path.dirname(mod.__file__)})"
    except Exception as exc:
        info[name] = f"missing: {type(exc).__name__}: {exc}"
import torch
cuda = torch.cuda.is_available()
info["cuda"] = cuda
if cuda:
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                cuda_runtime=torch.version.cuda)
from smt_core import precision
info["precision_auto"] = precision.resolve(None, torch.device("cuda" if cuda else "cpu")).name
print(json.dumps(info))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--cpu", action="store_true", help="run on the CPU: the GPU tests there, a tiny shape")
    ap.add_argument("--time-limit", type=float, default=345.0, help="seconds for the whole check")
    ap.add_argument("--no-wheels", action="store_true", help=f"ignore {WHEELS.name}/ even if present")
    args = ap.parse_args()
    started = time.monotonic()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    mode = "cpu" if args.cpu else "gpu"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        notes: list[str] = []
        env = child_env(work, mode, [] if args.no_wheels else install_wheels(WHEELS, work / "site", notes))
        info = probe(env, out, notes)
        if info is None or (mode == "gpu" and not info.get("cuda")):
            notes.append("no CUDA device: nothing run (`--cpu` runs the same checks on the CPU)"
                         if info else "the environment probe failed: see environment.json")
            write_summary(out, mode, info, None, None, notes, started, args.time_limit)
            return 2
        tests = run_tests(env, out, mode, started + TESTS_SHARE * args.time_limit)
        rows = run_bench(env, work, out, mode, started + args.time_limit, notes)
        write_summary(out, mode, info, tests, rows, notes, started, args.time_limit)
        complete = rows is not None and len(rows) == len(expected_rows())
        return 0 if tests.get("ok") and complete else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def child_env(work: Path, mode: str, site: list[str]) -> dict[str, str]:
    """Offline, the carried wheels then the project first on the path, a private SPARSETUNE_HOME."""
    path = [*site, str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)), "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
           "SPARSETUNE_HOME": str(work / "home")}
    if mode == "cpu":
        env["SPARSETUNE_GPU_TESTS_ON_CPU"] = "1"
    return env


def install_wheels(folder: Path, site: Path, notes: list[str]) -> list[str]:
    """Unpack the carried wheels this interpreter can use and does not already have at that version;
    returns the folder to put first on PYTHONPATH (none when nothing was unpacked)."""
    chosen = []
    for whl in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        name, version, *_, py, abi, plat = whl.name[:-4].split("-")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have == version:
            continue
        if not usable(py, abi, plat):
            notes.append(f"wheel {whl.name} does not fit this interpreter; kept {name} {have or '(missing)'}")
            continue
        chosen.append(whl)
        notes.append(f"carried wheel: {name} {version} (installed here: {have or 'none'})")
    if not chosen:
        return []
    site.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--target", str(site), *map(str, chosen)]
    if subprocess.run(pip, capture_output=True).returncode != 0:  # no pip here: a wheel is a zip archive
        for whl in chosen:
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
    return [str(site)]


def usable(py: str, abi: str, plat: str) -> bool:
    """A wheel's tags against this interpreter: pure Python, or this CPython version and machine."""
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    if plat != "any" and platform.machine() not in plat:
        return False
    return abi == "none" and py.startswith("py") or here in py.split(".") or abi == "abi3"


def probe(env: dict[str, str], out: Path, notes: list[str]) -> dict | None:
    """What runs here (versions, where each package comes from, the GPU): environment.json."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=180)
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        (out / "environment.json").write_text(json.dumps({"error": proc.stderr[-4000:]}, indent=2))
        return None
    (out / "environment.json").write_text(json.dumps(info, indent=2))
    notes += [f"{k}: {v}" for k, v in info.items() if isinstance(v, str) and v.startswith("missing")]
    return info


def run_tests(env: dict[str, str], out: Path, mode: str, deadline: float) -> dict:
    """tests/gpu; the log goes to pytest-gpu.log. On the CPU only the LLaMA cases of SMT, SNELL and LoRA,
    to keep CI short: tests/core/test_precision.py runs every method under the bf16 policy there."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "tests/gpu"]
    if mode == "cpu":
        cmd += ["-k", CPU_TESTS]
    elif importlib.util.find_spec("xdist") is not None:  # the GPU image has pytest-xdist: 4 processes share it
        cmd += ["-n", "4", "--dist", "loadgroup"]
    t0 = time.monotonic()
    code, text = run_logged(cmd, env, out / "pytest-gpu.log", deadline)
    lines = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|skipped)\b.* in [\d.]+s", ln)]
    line = lines[-1].strip("= ") if lines else ("timed out" if code is None else f"pytest exited {code}")
    return {"ok": code == 0, "line": line, "seconds": time.monotonic() - t0, "command": " ".join(cmd[1:])}


def run_logged(cmd: list[str], env: dict[str, str], log: Path, deadline: float) -> tuple[int | None, str]:
    """Run with stdout and stderr to ``log``, killed at ``deadline``; (exit code or None, the output)."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            code: int | None = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    if code is None:
        with log.open("a") as fh:
            fh.write("\n[gpu_check] killed at the time limit\n")
    return code, log.read_text(errors="replace")


def expected_rows() -> list[tuple[str, bool]]:
    return [(m, False) for m in METHODS.split(",")] + [(m, True) for m in CHECKPOINTING.split(",")]


def run_bench(env: dict[str, str], work: Path, out: Path, mode: str, end: float, notes: list[str]) -> list | None:
    """bench/engine.py on the mode's shape (random weights from a config); engine.json and bench.log."""
    b = BENCH[mode]
    shape = work / b["shape"]
    shape.mkdir(parents=True)
    (shape / "config.json").write_text(json.dumps(SHAPES[b["shape"]], indent=2))
    for f in TOKENIZER.iterdir():
        shutil.copy(f, shape / f.name)
    cmd = [sys.executable, "bench/engine.py", "--model", str(shape), "--methods", METHODS,
           "--checkpointing-methods", CHECKPOINTING, "--batch-size", str(b["batch"]), "--seq", str(b["seq"]),
           "--targets", "q,k,v", "--budget", "0.01", "--repeats", "1", "--steps", str(b["steps"]),
           "--selection-steps", "2", "--device", b["device"], "--out", str(work / "bench"),
           # no configuration starts in the last 40 s: one takes ~20-30 s on the 1B shape
           "--deadline", str(time.time() + (end - time.monotonic()) - 40)]
    if b["precision"]:
        cmd += ["--precision", b["precision"]]
    code, text = run_logged(cmd, env, out / "bench.log", end)
    found = sorted((work / "bench").glob("engine-*.json"))
    if not found:
        notes.append(f"bench/engine.py wrote no result ({'killed at the time limit' if code is None else f'exit {code}'})"
                     "; see bench.log")
        return None
    shutil.copy(found[-1], out / "engine.json")
    result = json.loads(found[-1].read_text())
    rows = result["rows"]
    have = {(r["method"], r["checkpointing"]) for r in rows}
    missing = [f"{m}{' (checkpointing)' if ck else ''}" for m, ck in expected_rows() if (m, ck) not in have]
    if missing:
        notes.append(f"benchmark rows missing (failed or out of time, see bench.log): {', '.join(missing)}")
    return rows


def engine_render():
    spec = importlib.util.spec_from_file_location("bench_engine", ROOT / "bench" / "engine.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # stdlib imports only at module level
    return mod.render


def targets(rows: list[dict]) -> list[str]:
    by = {(r["method"], r["checkpointing"]): r for r in rows}
    out = []
    for label, key, ratio, limit in TARGETS:
        value = (by.get(key) or {}).get(ratio)
        verdict = "not measured" if value is None else ("met" if value <= limit else "missed")
        out.append(f"| {label} | {'–' if value is None else f'{value:.2f}'} | {verdict} |")
    return out


def write_summary(out: Path, mode: str, info: dict | None, tests: dict | None, rows: list | None,
                  notes: list[str], started: float, limit: float) -> None:
    b = BENCH[mode]
    s = SHAPES[b["shape"]]
    info = info or {}
    device = info.get("gpu") or ("CPU" if info else "unknown")
    lines = [f"# GPU check ({'--cpu' if mode == 'cpu' else 'GPU'}), {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
             f"- device: {device}" + (f" (compute capability {info['capability']}, {info['gpu_memory_gib']} GiB, "
                                      f"CUDA {info['cuda_runtime']})" if info.get("gpu") else ""),
             f"- python {info.get('python', '?')}; " + "; ".join(
                 f"{k} {str(info.get(k, '?')).split(' ')[0]}" for k in ("torch", "transformers", "peft", "safetensors",
                                                                       "tokenizers")),
             f"- precision: {b['precision'] or 'auto'} → {b['precision'] or info.get('precision_auto', '?')}",
             f"- wall time {time.monotonic() - started:.0f} s (limit {limit:.0f} s)", ""]
    lines += ["## CUDA tests (tests/gpu)", ""]
    if tests:
        lines += [f"`{tests['command']}`: **{tests['line']}** ({tests['seconds']:.0f} s; log: pytest-gpu.log)", ""]
    else:
        lines += ["not run", ""]
    lines += ["## Engine benchmark (bench/engine.py)", "",
              f"Shape {b['shape']}: hidden {s['hidden_size']}, {s['num_hidden_layers']} layers, "
              f"{s['num_attention_heads']} heads, {s['num_key_value_heads']} KV heads, intermediate "
              f"{s['intermediate_size']}, vocab {s['vocab_size']} (SmolLM2's tokenizer), tied embeddings, random "
              f"weights; batch {b['batch']} × seq {b['seq']}, targets q,k,v, budget 1%, one process per row, "
              f"{b['steps']} steps (the first dropped). The `est` columns are smt_core.estimate's prediction for "
              "the same run; `train/est` is measured ÷ estimated training memory.", ""]
    if rows:
        lines += [engine_render()(rows), ""]
        if mode == "gpu":
            lines += ["Issue 13's GPU targets (1B shape, H200):", "", "| target | value | verdict |", "|---|---|---|",
                      *targets(rows), ""]
    else:
        lines += ["no result", ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

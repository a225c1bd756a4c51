#!/usr/bin/env bash
# One command for a GPU machine with only its own Python and PyTorch, and no network:
#   scripts/gpu_check.sh OUTDIR         CUDA tests (tests/gpu), then bench/engine.py on the Llama-3.2-1B shape
#   scripts/gpu_check.sh --cpu OUTDIR   the same on the CPU on a tiny shape (what CI runs)
# Writes at most five files to OUTDIR (summary.md first); exit 0 when the tests passed and every benchmark
# row ran. Carried wheels: scripts/fetch_gpu_wheels.sh, beforehand, where there is a network. Details:
# scripts/gpu_check.py.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" "$ROOT/scripts/gpu_check.py" "$@"

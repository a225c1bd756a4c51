#!/usr/bin/env bash
# Fetch, where there is a network, the pure-Python pins a GPU machine may lack or hold at other versions, as
# wheels into .gpu-wheels/ (git-ignored; carry it with the checkout). scripts/gpu_check.sh unpacks those
# whose version differs from the installed one and puts them first on PYTHONPATH; it never fetches anything.
# Compiled packages (torch, tokenizers, safetensors, numpy) are left to the machine: its image has them
# (transformers 5.23 accepts the tokenizers, safetensors and huggingface_hub seen there).
#   scripts/fetch_gpu_wheels.sh                 # the pins below (~14 MB)
#   scripts/fetch_gpu_wheels.sh NAME==VERSION…  # others instead
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | tr -d '"'; }
if [ $# -gt 0 ]; then wanted=("$@"); else wanted=("$(pin transformers)" "$(pin peft)" "$(pin accelerate)"); fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p .gpu-wheels
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" \
  --implementation py --abi none --platform any -d .gpu-wheels "${wanted[@]}"
ls -la .gpu-wheels
du -sh .gpu-wheels

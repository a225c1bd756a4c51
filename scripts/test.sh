#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
[ ! -x scripts/setup_test_deps.sh ] || scripts/setup_test_deps.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m ruff check .
exec python -m pytest -q -p no:cacheprovider "$@"

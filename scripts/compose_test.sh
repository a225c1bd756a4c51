#!/usr/bin/env bash
# `make compose-test`: set up Docker (scripts/setup_docker.sh) and run only the compose test, which builds the
# local base images and the app image, starts the stack, trains a job through it and takes it down again.
# The full suite (scripts/test.sh) runs the same module.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup_docker.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python -m pytest -q -p no:cacheprovider tests/compose "$@"

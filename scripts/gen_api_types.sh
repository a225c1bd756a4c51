#!/usr/bin/env bash
# Regenerate the dashboard's API types (frontend/src/generated/openapi.ts) from the API's own OpenAPI document,
# so a field added to a response model reaches the dashboard's types without a hand-written copy.
# tests/test_api_types.py runs this into a temp file and fails when the committed file differs.
# Usage: scripts/gen_api_types.sh [OUTPUT]   (default: frontend/src/generated/openapi.ts)
# Needs the venv (scripts/setup.sh) and frontend/node_modules (scripts/build_frontend.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/frontend/src/generated/openapi.ts}
case $out in /*) ;; *) out=$PWD/$out ;; esac
cd "$root"
py=python3  # the active venv's, else the checkout's .venv, else the system's
if [ -n "${VIRTUAL_ENV:-}" ]; then py=python; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; fi
gen=frontend/node_modules/.bin/openapi-typescript
[ -x "$gen" ] || { echo "gen_api_types: $gen is missing; run scripts/build_frontend.sh (npm ci) first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -c "import json; from api.main import app; print(json.dumps(app.openapi()))" > "$tmp/openapi.json"
"$gen" "$tmp/openapi.json" --output "$tmp/openapi.ts" --alphabetize --silent
mkdir -p "$(dirname "$out")"
mv "$tmp/openapi.ts" "$out"

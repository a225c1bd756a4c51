#!/usr/bin/env bash
# Build the dashboard into frontend/dist (served by the API at /). Idempotent: `npm ci` only when the lockfile
# changed since the last install, the build only when a source is newer than the last build.
set -euo pipefail
cd "$(dirname "$0")/../frontend"
command -v npm >/dev/null || { echo "build_frontend: npm (Node 20+) is needed to build the dashboard" >&2; exit 1; }
sources=(src index.html package.json package-lock.json build.mjs tsconfig.json)
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ -f dist/index.html ] && [ -z "$(find "${sources[@]}" -newer dist/index.html -print -quit)" ]; then
  exit 0  # the build is newer than every source
fi
npm run --silent build

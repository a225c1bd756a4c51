#!/usr/bin/env bash
# Browser-test dependencies (idempotent): Debian's chromium when missing, and the Playwright Python package
# that drives it through its executable path. Never `playwright install`: no browser is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAYWRIGHT=1.65.2
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
. .venv/bin/activate
python -c "import playwright, importlib.metadata as m; assert m.version('playwright') == '$PLAYWRIGHT'" 2>/dev/null \
  || python -m pip install -q "playwright==$PLAYWRIGHT"
# Docker for tests/compose (docker.io, docker-compose, debootstrap; dockerd started). Where it cannot be set up
# (no root) the compose test skips, except under CI=true, where it fails.
scripts/setup_docker.sh || echo "setup_test_deps: no Docker here; tests/compose will skip (fail under CI=true)" >&2

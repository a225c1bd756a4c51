#!/usr/bin/env bash
# Docker for the compose test (idempotent): Debian's docker.io, docker-compose (1.29) and debootstrap (the
# local base images, docker/bases/build.sh) when missing, and dockerd started when it is not answering.
# Without root (or sudo) it says what is missing and exits 1; the test then skips, or fails under CI=true.
set -euo pipefail
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
can_root() { [ -z "$SUDO" ] || sudo -n true 2>/dev/null; }
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  if ! can_root; then
    echo "setup_docker: install ${missing[*]} (apt-get, as root) to run the compose test" >&2; exit 1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  if ! can_root; then
    echo "setup_docker: the Docker daemon is not running and this user cannot start it" >&2; exit 1
  fi
  # no init system here: dockerd in the background, its log beside the others
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { echo "setup_docker: dockerd did not start (see /var/log/dockerd.log)" >&2; exit 1; }
fi

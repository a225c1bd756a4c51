#!/usr/bin/env bash
# Build local stand-ins for the official python / node / postgres / redis
# base images, from Debian bookworm packages only.
#
# WHY: this machine cannot reach any container registry, so `FROM python:3.11-slim`,
# `postgres:…`, `redis:7`, `node:20` cannot be pulled. It *can* reach
# http://deb.debian.org, so we debootstrap a minimal bookworm rootfs, install the
# relevant Debian packages into copies of it in a chroot, and `docker import` each
# result as an image whose config (ENV/CMD/ENTRYPOINT/EXPOSE/...) mimics the
# official image closely enough for an end-to-end compose test.
#
# Usage: docker/bases/build.sh [--force] [--refresh-base] [python|node|postgres|redis ...]
#   --force          rebuild images that already exist (default: skip them)
#   --refresh-base   re-run debootstrap even if the cached rootfs tarball exists
#   no image args    build all four, python first
# Env overrides: LOCAL_PYTHON_IMAGE LOCAL_NODE_IMAGE LOCAL_POSTGRES_IMAGE LOCAL_REDIS_IMAGE (image names;
#   not the *_IMAGE names docker-compose.yml reads, so exporting an official name there never retags a
#   local build as it),
#   DEBIAN_MIRROR, SUITE, BASES_STATUS_FILE (a line per image ready; default /tmp/bases_status),
#   BASES_HOST_CA=0 to NOT copy the host's /usr/local/share/ca-certificates/*.crt
#   into the images (see install_host_ca for why it is on by default).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
CACHE_DIR="$REPO_ROOT/.docker-cache"   # git-ignored; holds the debootstrap tarball

SUITE="${SUITE:-bookworm}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Security updates live on a sibling path of the same host.
DEBIAN_SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-${DEBIAN_MIRROR%/debian}/debian-security}"
BASE_TARBALL="$CACHE_DIR/$SUITE-minbase.tar"
STATUS_FILE="${BASES_STATUS_FILE:-/tmp/bases_status}"
BASES_HOST_CA="${BASES_HOST_CA:-1}"

LOCAL_PYTHON_IMAGE="${LOCAL_PYTHON_IMAGE:-sparsetune-local/python:3.11}"
LOCAL_NODE_IMAGE="${LOCAL_NODE_IMAGE:-sparsetune-local/node:bookworm}"
LOCAL_POSTGRES_IMAGE="${LOCAL_POSTGRES_IMAGE:-sparsetune-local/postgres:15}"
LOCAL_REDIS_IMAGE="${LOCAL_REDIS_IMAGE:-sparsetune-local/redis:7}"

# Same default PATH as the official images (docker import sets no ENV at all).
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

FORCE=0
REFRESH_BASE=0
WANTED=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --refresh-base) REFRESH_BASE=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    python|node|postgres|redis) WANTED+=("$arg") ;;
    *) echo "unknown argument: $arg (want --force, --refresh-base, python, node, postgres, redis)" >&2; exit 2 ;;
  esac
done
# Python always goes first: someone is waiting on it (see STATUS_FILE).
ORDER=()
for name in python node postgres redis; do
  if [ "${#WANTED[@]}" -eq 0 ] || [[ " ${WANTED[*]} " == *" $name "* ]]; then ORDER+=("$name"); fi
done

log() { printf '[bases %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { echo "must run as root (debootstrap/chroot)" >&2; exit 1; }
for tool in debootstrap docker tar chroot mount umount findmnt; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "docker daemon not reachable (start dockerd?)" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Cleanup: every rootfs we create is registered here. On exit (success or not)
# we unmount anything mounted inside it *before* deleting it; if something is
# still mounted we refuse to rm -rf (deleting through a live /proc or bind
# mount is how chroot scripts destroy hosts).
WORKDIRS=()
cleanup() {
  local d m
  for d in "${WORKDIRS[@]}"; do
    [ -d "$d" ] || continue
    # deepest mounts first
    while read -r m; do
      if [ -n "$m" ]; then umount -l "$m" 2>/dev/null || true; fi
    done < <(findmnt -rn -o TARGET | grep -F "$d/" | sort -r || true)
    if findmnt -rn -o TARGET | grep -qF "$d/"; then
      log "WARNING: mounts remain under $d; not deleting it"
    else
      rm -rf --one-file-system "$d"
    fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # exit -> EXIT trap -> cleanup

# Sets NEW_DIR to a fresh dir on the same disk as the cache. (Not printed and
# captured with $(...): that would run in a subshell and the WORKDIRS
# registration, i.e. the cleanup, would be lost.)
NEW_DIR=''
new_workdir() {
  mkdir -p "$CACHE_DIR/work"
  NEW_DIR="$(mktemp -d "$CACHE_DIR/work/$1.XXXXXX")"
  # mktemp makes it 0700; as the chroot's / that breaks apt's _apt sandbox user.
  chmod 0755 "$NEW_DIR"
  WORKDIRS+=("$NEW_DIR")
}

# Run a command inside the rootfs. Only /proc is mounted (some maintainer
# scripts read it); debootstrap already created the static /dev nodes apt needs.
in_chroot() {
  local root="$1"; shift
  chroot "$root" env -i PATH="$DEFAULT_PATH" HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}
mount_proc() { mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"; }
umount_proc() { ! mountpoint -q "$1/proc" || umount "$1/proc"; }

# ---------------------------------------------------------------------------
# Step 1: debootstrap once, cache as a tarball.
build_base_tarball() {
  if [ -f "$BASE_TARBALL" ] && [ "$REFRESH_BASE" -eq 0 ]; then
    log "using cached base rootfs $BASE_TARBALL"
    return
  fi
  local t0=$SECONDS root
  new_workdir base; root="$NEW_DIR"
  log "debootstrap --variant=minbase $SUITE -> $root"
  debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >&2

  # apt sources incl. updates + security (debootstrap only writes the main suite).
  cat > "$root/etc/apt/sources.list" <<SOURCES
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb $DEBIAN_SECURITY_MIRROR $SUITE-security main
SOURCES
  # Same apt tweaks the official debian images ship: no recommends, no
  # translations, and never keep downloaded .debs around (smaller layers for
  # anything that FROMs these images).
  cat > "$root/etc/apt/apt.conf.d/docker-local" <<'APTCONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APTCONF
  # Keep maintainer scripts (redis-server, postgresql) from trying to start
  # daemons inside the chroot / during later `docker build` apt-get installs.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"

  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount_proc "$root"
  in_chroot "$root" apt-get update -qq
  in_chroot "$root" apt-get -y -qq -o Dpkg::Use-Pty=0 dist-upgrade >&2
  in_chroot "$root" apt-get clean
  umount_proc "$root"

  mkdir -p "$CACHE_DIR"
  tar -C "$root" --numeric-owner -cf "$BASE_TARBALL.tmp" .
  mv "$BASE_TARBALL.tmp" "$BASE_TARBALL"   # atomic: never leave a half tarball
  log "base rootfs cached ($(du -h "$BASE_TARBALL" | cut -f1)) in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------------------
# Step 2 helpers used per image.
extract_base() {  # sets NEW_DIR to a fresh copy of the cached rootfs
  new_workdir "$1"
  tar -C "$NEW_DIR" --numeric-owner -xpf "$BASE_TARBALL"
  chmod 0755 "$NEW_DIR"
  cp /etc/resolv.conf "$NEW_DIR/etc/resolv.conf"
}

apt_install() {
  local root="$1"; shift
  in_chroot "$root" apt-get update -qq
  in_chroot "$root" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "$@" >&2
}

# WHY the host CA: HTTPS from this machine goes through an intercepting proxy.
# Without its CA, `pip install` / `npm ci` in Dockerfiles FROM these images fail
# with certificate errors. These images are local-only test stand-ins, so we
# trust the host's extra CAs by default (BASES_HOST_CA=0 turns it off).
install_host_ca() {
  local root="$1" crt n=0
  [ "$BASES_HOST_CA" = 1 ] || return 0
  [ -x "$root/usr/sbin/update-ca-certificates" ] || return 0
  for crt in /usr/local/share/ca-certificates/*.crt; do
    [ -f "$crt" ] || continue
    install -D -m 0644 "$crt" "$root/usr/local/share/ca-certificates/$(basename "$crt")"
    n=$((n + 1))
  done
  if [ "$n" -gt 0 ]; then
    in_chroot "$root" update-ca-certificates >/dev/null
    log "added $n host CA cert(s)"
  fi
}

clean_rootfs() {
  local root="$1"
  in_chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
         "$root"/usr/share/info/* "$root"/var/cache/debconf/*-old "$root"/var/log/apt/* \
         "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log "$root"/tmp/* "$root"/root/.cache
  # keep only the C locale (and non-directory files such as locale.alias)
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -type d ! -name 'C' ! -name 'C.*' \
       -exec rm -rf {} +
  # docker bind-mounts its own resolv.conf/hostname/hosts; don't ship ours
  : > "$root/etc/resolv.conf"
  printf 'localhost\n' > "$root/etc/hostname"
}

# import ROOT NAME --change... : stream the rootfs into docker.
import_rootfs() {
  local root="$1" name="$2"; shift 2
  umount_proc "$root"
  local changes=() extra=() c
  for c in "$@"; do
    case "$c" in
      # `docker import --change` (dockerd 20.10) rejects STOPSIGNAL; apply those
      # in a metadata-only docker build on top of the imported image.
      STOPSIGNAL\ *) extra+=("$c") ;;
      *) changes+=(--change "$c") ;;
    esac
  done
  local target="$name"
  if [ "${#extra[@]}" -gt 0 ]; then target="$name-import-tmp"; fi
  # /proc, /sys, /dev are provided by the container runtime; ship them empty.
  tar -C "$root" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . \
    | docker import "${changes[@]}" \
        --message "local stand-in built by docker/bases/build.sh from Debian $SUITE" \
        - "$target" >/dev/null
  if [ "${#extra[@]}" -gt 0 ]; then
    # Classic builder on purpose: BuildKit/buildx isn't installed, and the
    # classic builder uses the local FROM image without contacting a registry.
    # Build context is empty (Dockerfile from stdin).
    { printf 'FROM %s\n' "$target"; printf '%s\n' "${extra[@]}"; } \
      | DOCKER_BUILDKIT=0 docker build -q -t "$name" - >/dev/null
    docker rmi "$target" >/dev/null   # only untags; layers are shared with $name
  fi
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------
# Image recipes. Each prints nothing; build_one wraps timing/skip/status.
recipe_python() {
  local root="$1"
  apt_install "$root" python3 python3-venv ca-certificates
  install_host_ca "$root"
  clean_rootfs "$root"
  import_rootfs "$root" "$LOCAL_PYTHON_IMAGE" \
    "ENV PATH=$DEFAULT_PATH" "ENV LANG=C.UTF-8" 'CMD ["python3"]'
}

recipe_node() {
  local root="$1"
  apt_install "$root" nodejs npm ca-certificates
  install_host_ca "$root"
  clean_rootfs "$root"
  import_rootfs "$root" "$LOCAL_NODE_IMAGE" \
    "ENV PATH=$DEFAULT_PATH" "ENV LANG=C.UTF-8" 'CMD ["node"]'
}

recipe_postgres() {
  local root="$1"
  # postgresql-common's postinst would create and start a "main" cluster under
  # /var/lib/postgresql/15/main; we want an empty image and initdb at first
  # container start (like the official image), so install postgresql-common
  # first and switch that off before postgresql-15 is configured.
  apt_install "$root" postgresql-common ca-certificates
  sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' \
      "$root/etc/postgresql-common/createcluster.conf"
  apt_install "$root" postgresql-15 postgresql-client-15
  install -m 0755 "$SCRIPT_DIR/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$root/var/lib/postgresql/data" "$root/var/run/postgresql" "$root/docker-entrypoint-initdb.d"
  in_chroot "$root" chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
  chmod 0700 "$root/var/lib/postgresql/data"
  chmod 2777 "$root/var/run/postgresql"   # same as official: any uid can use the socket dir
  install_host_ca "$root"
  clean_rootfs "$root"
  # STOPSIGNAL SIGINT = postgres "fast shutdown" (what the official image uses);
  # SIGTERM would be "smart shutdown", which waits for all clients to go away.
  import_rootfs "$root" "$LOCAL_POSTGRES_IMAGE" \
    "ENV PATH=/usr/lib/postgresql/15/bin:$DEFAULT_PATH" "ENV LANG=C.UTF-8" \
    "ENV PG_MAJOR=15" "ENV PGDATA=/var/lib/postgresql/data" \
    'VOLUME /var/lib/postgresql/data' 'EXPOSE 5432' 'STOPSIGNAL SIGINT' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["postgres"]'
}

recipe_redis() {
  local root="$1"
  apt_install "$root" redis-server redis-tools ca-certificates
  install -m 0755 "$SCRIPT_DIR/redis-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$root/data"
  in_chroot "$root" chown redis:redis /data
  install_host_ca "$root"
  clean_rootfs "$root"
  import_rootfs "$root" "$LOCAL_REDIS_IMAGE" \
    "ENV PATH=$DEFAULT_PATH" "ENV LANG=C.UTF-8" \
    'VOLUME /data' 'WORKDIR /data' 'EXPOSE 6379' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' 'CMD ["redis-server"]'
}

image_var() {
  case "$1" in
    python) echo "$LOCAL_PYTHON_IMAGE" ;; node) echo "$LOCAL_NODE_IMAGE" ;;
    postgres) echo "$LOCAL_POSTGRES_IMAGE" ;; redis) echo "$LOCAL_REDIS_IMAGE" ;;
  esac
}

TIMINGS=()
build_one() {
  local name="$1" image t0=$SECONDS root
  image="$(image_var "$name")"
  if image_exists "$image" && [ "$FORCE" -eq 0 ]; then
    log "$image exists, skipping (use --force to rebuild)"
    TIMINGS+=("$name ($image): skipped, exists")
  else
    log "building $image"
    extract_base "$name"; root="$NEW_DIR"
    mount_proc "$root"
    "recipe_$name" "$root"
    umount_proc "$root"
    TIMINGS+=("$name ($image): $((SECONDS - t0))s")
    log "$image built in $((SECONDS - t0))s"
  fi
  # Someone is polling this file to know when an image can be used.
  echo "$name ready" >> "$STATUS_FILE"
  # Free disk early rather than waiting for the EXIT trap.
  cleanup; WORKDIRS=()
}

# ---------------------------------------------------------------------------
T_ALL=$SECONDS
need_base=0
for name in "${ORDER[@]}"; do
  if ! image_exists "$(image_var "$name")" || [ "$FORCE" -eq 1 ]; then need_base=1; fi
done
if [ "$need_base" -eq 1 ] || [ "$REFRESH_BASE" -eq 1 ]; then
  build_base_tarball
  cleanup; WORKDIRS=()
fi
for name in "${ORDER[@]}"; do build_one "$name"; done

echo
echo "== timings (total $((SECONDS - T_ALL))s) =="
printf '  %s\n' "${TIMINGS[@]}"
echo "== images =="
for name in "${ORDER[@]}"; do
  docker images --format '  {{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.ID}}' "$(image_var "$name")"
done

#!/bin/sh
# Entrypoint for the locally built sparsetune-local/redis image
# (docker/bases/build.sh), modelled on the official redis image's one.
# WHY --protected-mode no: Debian's redis-server defaults to protected mode,
# which refuses non-loopback clients when no password is set. The official image
# is built with protected mode off so other containers (the app, healthchecks
# via `redis-cli -h redis`) can connect; we add the flag at run time instead,
# unless a config file passed as the first argument sets protected-mode itself.
set -eu

# `docker run IMAGE --appendonly yes` / `IMAGE /path/redis.conf` mean redis-server ...
case "${1:-}" in
  -*|*.conf) set -- redis-server "$@" ;;
  '') set -- redis-server ;;
esac

# (--version/--help/--test-memory/--check-system must stay redis-server's first argument)
if [ "$1" = 'redis-server' ] && case "${2:-}" in -v|--version|-h|--help|--test-memory|--check-system) false ;; *) true ;; esac; then
  shift
  config=''
  if [ "$#" -gt 0 ] && [ -f "$1" ]; then config="$1"; shift; fi
  if [ -n "$config" ] && grep -qE '^[[:space:]]*protected-mode' "$config"; then
    :   # the config decides
  else
    set -- --protected-mode no "$@"
  fi
  if [ -n "$config" ]; then set -- "$config" "$@"; fi
  set -- redis-server "$@"

  # Same as official: data written by redis is private to it.
  if [ "$(umask)" = '0022' ]; then umask 0077; fi
  # Drop root: own /data (volume may be fresh) and exec as redis so that redis
  # is PID 1 and receives docker's SIGTERM directly (it saves and exits on it).
  if [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups -- "$@"
  fi
fi

exec "$@"

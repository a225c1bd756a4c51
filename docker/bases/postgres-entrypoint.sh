#!/usr/bin/env bash
# Entrypoint for the locally built sparsetune-local/postgres image
# (docker/bases/build.sh). A small re-implementation of the official postgres
# image's docker-entrypoint.sh, honouring the same variables:
#   POSTGRES_USER            superuser name (default: postgres)
#   POSTGRES_PASSWORD        its password; required unless POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_DB              database created on first start (default: $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba method for TCP connections (default: scram-sha-256)
#   POSTGRES_INITDB_ARGS     extra initdb arguments
#   PGDATA                   data directory (default: /var/lib/postgresql/data)
# plus /docker-entrypoint-initdb.d/*.sql|*.sql.gz|*.sh, run once after initdb.
# Anything other than `postgres ...` (e.g. `psql ...`, `bash`) is exec'd as-is.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${POSTGRES_INITDB_ARGS:=}"
export PGDATA POSTGRES_USER POSTGRES_DB

log() { echo "docker-entrypoint: $*" >&2; }

# `docker run IMAGE -c foo=bar` means `postgres -c foo=bar`, as in the official image.
if [ "$#" -eq 0 ] || [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != 'postgres' ]; then
  exec "$@"
fi

# --- as root: fix ownership/permissions, then re-exec this script as postgres.
# WHY re-exec rather than runuser for each step: everything below (initdb, the
# temporary server, psql) must run as the postgres OS user, and the final
# `exec postgres` must replace this process (PID 1) so docker's stop signal
# reaches the postmaster directly. setpriv (util-linux) execs without forking,
# unlike su/runuser which stay around as a parent process.
if [ "$(id -u)" = '0' ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  chown postgres:postgres /var/run/postgresql
  chmod 2777 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

# --- as postgres from here on.
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
    log "error: database is uninitialized and POSTGRES_PASSWORD is not set."
    log "       Set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password)."
    exit 1
  fi
  log "initializing database cluster in $PGDATA (superuser: $POSTGRES_USER)"
  # Local (unix socket) connections stay "trust" inside the container, like the
  # official image, so `pg_isready` / `psql -U …` in healthchecks need no password.
  run_initdb() {
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is intentionally word-split
    initdb --username="$POSTGRES_USER" --auth-local=trust --auth-host=trust \
           -D "$PGDATA" "$@" $POSTGRES_INITDB_ARGS >&2
  }
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    # Process substitution keeps the password out of argv and off disk. It must
    # be on the initdb command line itself: bash closes the /dev/fd/N as soon
    # as the command that created it finishes (so it can't be stored in a var).
    run_initdb --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
  else
    run_initdb
  fi

  # Remote (TCP) connections: password auth from anywhere.
  printf '\n# added by docker-entrypoint.sh\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
  # Debian's server defaults to listen_addresses=localhost; the official image
  # patches its sample config to '*'. We append the override to postgresql.conf.
  printf "\n# added by docker-entrypoint.sh\nlisten_addresses = '*'\n" >> "$PGDATA/postgresql.conf"

  # Temporary server on the unix socket only, to create the DB and run init scripts.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >&2
  psql_cmd=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER")
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    log "creating database $POSTGRES_DB"
    "${psql_cmd[@]}" --dbname postgres --set db="$POSTGRES_DB" <<-'SQL' >&2
	CREATE DATABASE :"db" ;
	SQL
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    # shellcheck disable=SC1090  # sourcing user-supplied init scripts
    case "$f" in
      *.sh)     log "running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql)    log "running $f"; "${psql_cmd[@]}" --dbname "$POSTGRES_DB" -f "$f" >&2 ;;
      *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql_cmd[@]}" --dbname "$POSTGRES_DB" >&2 ;;
      *)        log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >&2
  log "init complete; starting postgres"
else
  log "existing database in $PGDATA; skipping initialization"
fi

# Foreground postmaster as PID 1 (no fork), so `docker stop` shuts it down cleanly.
exec "$@"

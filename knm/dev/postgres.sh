#!/usr/bin/env bash
# PostgreSQL for knm's development and tests: Debian's packages, its own data directory,
# loopback only, a `knm` role and database. Idempotent: `up` installs what is missing,
# initialises what is not, starts what is not running.
#   postgres.sh up|down|status|env|url
set -euo pipefail
. "$(dirname "$0")/common.sh"

PORT="${KNM_DEV_PG_PORT:-55432}"
DIR="$KNM_DEV_HOME/postgres"
DATA="$DIR/data"
URL="postgresql+psycopg2://knm:knm@127.0.0.1:$PORT/knm"

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

# PostgreSQL refuses to run as root: as root, its own `postgres` user runs it.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install() {
  if [ -z "$(bin_dir)" ] || [ ! -x "$(bin_dir)/initdb" ]; then apt_install postgresql; fi
}

init() {
  mkdir -p "$DIR"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR"; chmod 755 "$KNM_DEV_HOME"; fi
  [ -f "$DATA/PG_VERSION" ] && return
  say "initialising a PostgreSQL cluster in $DATA"
  as_owner "$(bin_dir)/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  cat >>"$DATA/postgresql.conf" <<CONF
# knm development server
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 300
shared_buffers = 256MB
CONF
}

running() { as_owner "$(bin_dir)/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_admin() { "$(bin_dir)/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

up() {
  install
  init
  if ! running; then
    say "starting PostgreSQL on 127.0.0.1:$PORT"
    as_owner "$(bin_dir)/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 120 start >/dev/null
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'knm'")" != 1 ]; then
    psql_admin -c "CREATE ROLE knm LOGIN CREATEDB PASSWORD 'knm'"
  fi
  # The benchmarks settle what they filled before measuring (`CHECKPOINT`), which needs
  # this role (PostgreSQL 15 and later).
  if [ "$(psql_admin -c "SELECT pg_has_role('knm', 'pg_checkpoint', 'member')")" = f ]; then
    psql_admin -c "GRANT pg_checkpoint TO knm"
  fi
  if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'knm'")" != 1 ]; then
    psql_admin -c "CREATE DATABASE knm OWNER knm"
  fi
}

down() {
  if [ -n "$(bin_dir)" ] && [ -f "$DATA/PG_VERSION" ] && running; then
    say "stopping PostgreSQL"
    as_owner "$(bin_dir)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
  fi
}

status() {
  if [ -n "$(bin_dir)" ] && [ -f "$DATA/PG_VERSION" ] && running; then
    echo "postgres: running on 127.0.0.1:$PORT (data $DATA)"
  else
    echo "postgres: stopped"
    return 3
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart) down; up ;;
  env) echo "export KNM_DATABASE_URL=$URL" ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 up|down|status|restart|env|url" >&2; exit 2 ;;
esac

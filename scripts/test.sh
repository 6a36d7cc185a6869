#!/usr/bin/env bash
# Runs every test of the workspace against a throwaway redis-server and a
# throwaway PostgreSQL cluster.
#
# It installs redis-server when missing (apt-get, as root), starts it on a
# free port with nothing persisted, points the tests at it through
# CACHED_REDIS_TEST_URL, and stops it when the tests end, pass or fail.
# Likewise for PostgreSQL (package postgresql): a new cluster in a temporary
# directory, on a free port of 127.0.0.1, trust authentication, run as the
# `postgres` user when this script runs as root, given to the tests as
# CACHED_REDIS_TEST_PG. The machine's own PostgreSQL is never touched.
# It also starts the production topologies of scripts/topologies.sh (TLS,
# mutual TLS, a cluster, a sentinel), fresh each run, and passes their
# URLs in CACHED_REDIS_TEST_* variables.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test redis_basic`).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/throwaway-redis.sh
. scripts/throwaway-redis.sh
need_redis test.sh
# shellcheck source=scripts/topologies.sh
. scripts/topologies.sh
need_topologies test.sh

# initdb and pg_ctl: from PATH, else the newest /usr/lib/postgresql/*/bin.
pg_bin=""
find_postgres() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    pg_bin=$(dirname "$(readlink -f "$(command -v initdb)")")
    return 0
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      pg_bin=$dir
      return 0
    fi
  done
  return 1
}
need_postgres() {
  if ! find_postgres; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "test.sh: installing postgresql with apt-get" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      find_postgres || { echo "test.sh: postgresql installed but initdb/pg_ctl not found" >&2; exit 1; }
    else
      cat >&2 <<'MSG'
test.sh: PostgreSQL's initdb and pg_ctl are needed and not installed.
  Debian/Ubuntu: sudo apt-get install postgresql
  Fedora:        sudo dnf install postgresql-server
  macOS:         brew install postgresql
MSG
      exit 1
    fi
  fi
  # PostgreSQL refuses to run as root: then it runs as `postgres`.
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "test.sh: running as root, and there is no 'postgres' user to run PostgreSQL as" >&2
    exit 1
  fi
}
need_postgres
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

workdir=$(mktemp -d)
pg_dir=""
pg_started=""
cleanup() {
  stop_redis
  stop_topologies
  rm -rf "$workdir"
  if [ -n "$pg_dir" ]; then
    # Also a server whose start timed out yet came up.
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
      as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_dir"
  fi
}
trap cleanup EXIT

start_redis test.sh "$workdir"

export CACHED_REDIS_TEST_URL="redis://127.0.0.1:$redis_port/0"
mkdir -p "$workdir/topologies"
start_topologies test.sh "$workdir/topologies"

# PostgreSQL: its own directory (owned by the user it runs as), its sockets
# in there too, TCP on 127.0.0.1 only, nothing synced to disk.
pg_dir=$(mktemp -d)
if [ "$(id -u)" = 0 ]; then chown postgres: "$pg_dir"; fi
if ! as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
    --encoding=UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1; then
  echo "test.sh: initdb failed; its output:" >&2
  cat "$pg_dir/initdb.log" >&2 || true
  exit 1
fi
# A random high port; retried when taken.
for _ in $(seq 1 20); do
  pg_port=$((20000 + RANDOM % 30000))
  if as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 \
      -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null 2>&1; then
    pg_started=1
    break
  fi
done
if [ -z "$pg_started" ]; then
  echo "test.sh: could not start PostgreSQL; its log:" >&2
  cat "$pg_dir/postgres.log" >&2 || true
  exit 1
fi
echo "test.sh: throwaway PostgreSQL on 127.0.0.1:$pg_port" >&2
export CACHED_REDIS_TEST_PG="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"

# The library's own variables must not leak in from the caller's shell.
unset CACHED_REDIS_URL REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE
cargo test --workspace --all-features "$@"

#!/usr/bin/env bash
# Runs every test of the workspace against a throwaway redis-server.
#
# It installs redis-server when missing (apt-get, as root), starts it on a
# free port with nothing persisted, points the tests at it through
# CACHED_REDIS_TEST_URL, and stops it when the tests end, pass or fail.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test redis_basic`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing redis-server with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    return 0
  fi
  cat >&2 <<'MSG'
test.sh: redis-server and redis-cli are needed and not installed.
  Debian/Ubuntu: sudo apt-get install redis-server
  Fedora:        sudo dnf install redis
  macOS:         brew install redis
MSG
  exit 1
}
need_redis

workdir=$(mktemp -d)
redis_pid=""
cleanup() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

# A random high port; retried when taken.
for _ in $(seq 1 20); do
  port=$((20000 + RANDOM % 30000))
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$workdir" --logfile "$workdir/redis.log" --daemonize no &
  redis_pid=$!
  for _ in $(seq 1 50); do
    if redis-cli -p "$port" ping >/dev/null 2>&1; then break 2; fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
done
if [ -z "$redis_pid" ]; then
  echo "test.sh: could not start redis-server; its log:" >&2
  cat "$workdir/redis.log" >&2 || true
  exit 1
fi
echo "test.sh: throwaway redis-server on 127.0.0.1:$port" >&2

export CACHED_REDIS_TEST_URL="redis://127.0.0.1:$port/0"
# The library's own variables must not leak in from the caller's shell.
unset CACHED_REDIS_URL REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE
cargo test --workspace --all-features "$@"

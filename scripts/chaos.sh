#!/usr/bin/env bash
# The chaos run: regenerates RELIABILITY.md (its section on fuzzing, written
# by scripts/fuzz-long.sh, is kept as it is).
#
#   scripts/chaos.sh           # the full run: about 90 s after the build
#   scripts/chaos.sh --quick   # a smoke run: short phases
#
# 1. builds bench/ (its own cargo workspace) in release;
# 2. starts two throwaway redis-servers on free ports (nothing persisted;
#    never the shared one on 6379), installing redis-server with apt-get
#    when missing (as root): the one under test, and a second one that the
#    first is made a replica of during the REPLICAOF fault;
# 3. runs bench/target/release/chaos against them: 64 callers of cached
#    functions for about 90 s while it kills, hangs, cuts off, fills, demotes
#    and garbles the server under test; then stops every server.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

quick=""
for arg in "$@"; do
  case "$arg" in
    --quick) quick="--quick" ;;
    *) echo "chaos.sh: unknown argument $arg (only --quick)" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/throwaway-redis.sh
. scripts/throwaway-redis.sh
need_redis chaos.sh

# The library's own variables must not leak in from the caller's shell.
unset CACHED_REDIS_URL REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE \
  CACHED_REDIS_COMPRESSION CACHED_REDIS_ZLIB_LEVEL CACHED_REDIS_KEY_MEMO_MAX_BYTES \
  CACHED_REDIS_SENTINEL_PASSWORD CACHED_REDIS_SENTINEL_USERNAME

echo "chaos.sh: building bench/ (release)" >&2
(cd bench && cargo build --release --bin chaos) >&2

workdir=$(mktemp -d)
master_dir="$workdir/master"
mkdir -p "$master_dir"
master_pid=""
cleanup() {
  stop_redis
  if [ -n "$master_pid" ]; then
    redis_pid=$master_pid
    stop_redis
  fi
  # A server the chaos binary restarted after its kill -9, should it have
  # died before stopping it.
  if [ -f "$workdir/chaos-restarted.pid" ]; then
    kill "$(cat "$workdir/chaos-restarted.pid")" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

start_redis chaos.sh "$master_dir"
master_pid=$redis_pid
master_port=$redis_port
start_redis chaos.sh "$workdir"

bench/target/release/chaos $quick \
  --port "$redis_port" \
  --master-port "$master_port" \
  --dir "$workdir" \
  --out "$root/RELIABILITY.md"

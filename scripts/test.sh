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

# shellcheck source=scripts/throwaway-postgres.sh
. scripts/throwaway-postgres.sh
need_postgres test.sh

workdir=$(mktemp -d)
cleanup() {
  stop_redis
  stop_postgres
  stop_topologies
  rm -rf "$workdir"
}
trap cleanup EXIT

start_redis test.sh "$workdir"

export CACHED_REDIS_TEST_URL="redis://127.0.0.1:$redis_port/0"
mkdir -p "$workdir/topologies"
start_topologies test.sh "$workdir/topologies"

start_postgres test.sh
export CACHED_REDIS_TEST_PG="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"

# Property tests draw the same cases on every run of this command, so its
# result is reproducible; scripts/fuzz-long.sh draws new ones, a million per
# property. Set PROPTEST_RNG_SEED to explore other cases here.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261130}"

# The library's own variables must not leak in from the caller's shell.
unset CACHED_REDIS_URL REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE \
  CACHED_REDIS_COMPRESSION CACHED_REDIS_ZLIB_LEVEL CACHED_REDIS_KEY_MEMO_MAX_BYTES \
  CACHED_REDIS_SENTINEL_PASSWORD CACHED_REDIS_SENTINEL_USERNAME
# Built first, then run under a limit: a test that hangs fails the run
# (its process group killed, what it printed kept) instead of stalling it.
# CACHED_REDIS_TEST_LIMIT is the run's limit in seconds (the tests take a
# few minutes).
cargo test --workspace --all-features --no-run "$@"
timeout --kill-after=30 "${CACHED_REDIS_TEST_LIMIT:-2400}" \
  cargo test --workspace --all-features "$@"

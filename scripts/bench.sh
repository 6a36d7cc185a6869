#!/usr/bin/env bash
# Runs every benchmark of cached-redis and regenerates BENCHMARKS.md, its
# chart (docs/bench/load.svg) and bench/last-run.json.
#
#   scripts/bench.sh           # the full run (about 5 minutes after the first build)
#   scripts/bench.sh --quick   # a smoke run: short windows, one round
#
# 1. builds bench/ (its own cargo workspace) in release;
# 2. runs the criterion micro benchmarks (embedded store, no Redis);
# 3. starts a throwaway redis-server on a free port (nothing persisted;
#    never the shared one on 6379), installing it with apt-get when missing
#    (as root);
# 4. starts the topologies of scripts/topologies.sh (TLS, cluster, ...) for
#    the cost of each;
# 5. runs bench/target/release/load against them, which measures the load
#    scenarios and writes the report; then stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

quick=""
criterion_args=(--warm-up-time 0.5 --measurement-time 1.5)
for arg in "$@"; do
  case "$arg" in
    --quick)
      quick="--quick"
      criterion_args=(--warm-up-time 0.1 --measurement-time 0.3 --sample-size 10)
      ;;
    *) echo "bench.sh: unknown argument $arg (only --quick)" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/throwaway-redis.sh
. scripts/throwaway-redis.sh
need_redis bench.sh
# shellcheck source=scripts/topologies.sh
. scripts/topologies.sh
need_topologies bench.sh

# The library's own variables must not leak in from the caller's shell:
# every process of the benchmark configures itself.
unset CACHED_REDIS_URL REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE \
  CACHED_REDIS_COMPRESSION CACHED_REDIS_ZLIB_LEVEL CACHED_REDIS_KEY_MEMO_MAX_BYTES \
  CACHED_REDIS_SENTINEL_PASSWORD CACHED_REDIS_SENTINEL_USERNAME

echo "bench.sh: building bench/ (release)" >&2
(cd bench && cargo build --release --bins && cargo bench --bench micro --no-run) >&2

# From here on is what the report calls the command's duration.
started=$(now)
echo "bench.sh: micro benchmarks (criterion)" >&2
(cd bench && cargo bench --bench micro -- "${criterion_args[@]}") >&2
micro_seconds=$(since "$started")

workdir=$(mktemp -d)
cleanup() {
  stop_redis
  stop_topologies
  rm -rf "$workdir"
}
trap cleanup EXIT
start_redis bench.sh "$workdir"
mkdir -p "$workdir/topologies"
start_topologies bench.sh "$workdir/topologies"
export BENCH_TOPOLOGIES="tcp=redis://127.0.0.1:$redis_port/0;tls=$CACHED_REDIS_TEST_TLS_URL;cluster=$CACHED_REDIS_TEST_CLUSTER_URL"
export BENCH_TLS_CA="$CACHED_REDIS_TEST_TLS_CA"

bench/target/release/load $quick \
  --redis-url "redis://127.0.0.1:$redis_port/0" \
  --criterion "$root/bench/target/criterion" \
  --out "$root/BENCHMARKS.md" \
  --chart "$root/docs/bench/load.svg" \
  --json "$root/bench/last-run.json" \
  --started-at "$started" \
  --micro-seconds "$micro_seconds"
echo "bench.sh: done in $(since "$started") s after the build" >&2

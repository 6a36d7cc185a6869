#!/usr/bin/env bash
# The search service's load demo, in one command:
#
#   scripts/search-service-load.sh [--seconds 30] [--concurrency 16] [--products 100000]
#
# starts the service (release build, 100,000 products) against a throwaway
# redis-server and PostgreSQL, sends Zipf-distributed searches for the given
# time through the cache, then as long with the X-Skip-Redis-Cache header
# (every request reaches PostgreSQL), and prints hit ratio, requests/s, p50
# and p99 of both runs as a Markdown table. Then it stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
concurrency=16
products=100000
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --products) products=$2; shift 2 ;;
    *) echo "search-service-load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/throwaway-search-service.sh
. scripts/throwaway-search-service.sh
trap stop_search_service EXIT
start_search_service search-service-load.sh "$products"

target/release/search-load --addr "$service_addr" --seconds "$seconds" --concurrency "$concurrency"
echo "search-service-load.sh: machine load average: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown), $(nproc) CPUs" >&2

#!/usr/bin/env bash
# Saves docs/search_service_cache.png: the search service's /cache page,
# after a few seconds of load, as headless Chromium renders it.
#
#   scripts/search-service-screenshot.sh
#
# Installs Debian's `chromium` with apt-get when missing (as root), starts
# the service against a throwaway redis-server and PostgreSQL, sends 5 s of
# searches through the cache, 5 s with the skip header, some product
# reads, and takes the screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/search_service_cache.png

chromium_bin=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then chromium_bin=$candidate; break; fi
done
if [ -z "$chromium_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "search-service-screenshot.sh: installing chromium with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    chromium_bin=chromium
  else
    echo "search-service-screenshot.sh: chromium is needed (Debian/Ubuntu: sudo apt-get install chromium)" >&2
    exit 1
  fi
fi

# shellcheck source=scripts/throwaway-search-service.sh
. scripts/throwaway-search-service.sh
profile=""
cleanup() {
  stop_search_service
  [ -n "$profile" ] && rm -rf "$profile"
}
trap cleanup EXIT
start_search_service search-service-screenshot.sh 100000

target/release/search-load --addr "$service_addr" --seconds 5 --concurrency 8 >/dev/null
for id in $(seq 1 200); do
  curl -fsS -o /dev/null "http://$service_addr/products/$((id % 50 + 1))" || true
done
curl -fsS -o /dev/null "http://$service_addr/products/99999999" || true

profile=$(mktemp -d)
"$chromium_bin" --headless --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1000,820 \
  --screenshot="$PWD/$out" "http://$service_addr/cache" >/dev/null 2>&1
echo "search-service-screenshot.sh: wrote $out" >&2

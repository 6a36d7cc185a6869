# Sourced by scripts/search-service-load.sh and
# scripts/search-service-screenshot.sh: the search service (release build)
# against a throwaway redis-server and PostgreSQL of its own.
#
#   start_search_service NAME PRODUCTS   builds and starts everything; sets
#                                        service_addr (host:port)
#   stop_search_service                  stops everything (safe to call
#                                        when nothing was started); the
#                                        service gets SIGTERM and flushes
#                                        its stats

# shellcheck source=scripts/throwaway-redis.sh
. scripts/throwaway-redis.sh
# shellcheck source=scripts/throwaway-postgres.sh
. scripts/throwaway-postgres.sh

service_pid=""
service_addr=""
service_dir=""

start_search_service() {
  local name=$1 products=$2
  need_redis "$name"
  need_postgres "$name"
  echo "$name: building search-service (release)" >&2
  cargo build --release -q -p search-service --bins
  service_dir=$(mktemp -d)
  start_redis "$name" "$service_dir"
  start_postgres "$name"
  # The library's own variables must not leak in from the caller's shell.
  unset REDIS_URL CACHED_REDIS_NAMESPACE CACHED_REDIS_DISABLE \
    CACHED_REDIS_COMPRESSION CACHED_REDIS_ZLIB_LEVEL CACHED_REDIS_KEY_MEMO_MAX_BYTES \
    CACHED_REDIS_SENTINEL_PASSWORD CACHED_REDIS_SENTINEL_USERNAME
  DATABASE_URL="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" \
  CACHED_REDIS_URL="redis://127.0.0.1:$redis_port/0" \
  SEARCH_SERVICE_ADDR=127.0.0.1:0 \
  SEARCH_SERVICE_PRODUCTS=$products \
    target/release/search-service >"$service_dir/stdout" 2>"$service_dir/stderr" &
  service_pid=$!
  for _ in $(seq 1 600); do
    service_addr=$(sed -n 's|^search-service listening on http://||p' "$service_dir/stdout")
    [ -n "$service_addr" ] && break
    if ! kill -0 "$service_pid" 2>/dev/null; then
      echo "$name: search-service exited; its log:" >&2
      cat "$service_dir/stderr" >&2
      exit 1
    fi
    sleep 0.1
  done
  [ -n "$service_addr" ] || { echo "$name: search-service did not start" >&2; exit 1; }
  echo "$name: search-service on http://$service_addr ($(grep -o 'seconds=[0-9.]*' "$service_dir/stderr" | head -1) to seed $products products)" >&2
}

stop_search_service() {
  if [ -n "$service_pid" ]; then
    kill -TERM "$service_pid" 2>/dev/null || true
    wait "$service_pid" 2>/dev/null || true
  fi
  service_pid=""
  stop_redis
  stop_postgres
  [ -n "$service_dir" ] && rm -rf "$service_dir"
  service_dir=""
}

# Sourced by scripts/test.sh and scripts/bench.sh: a redis-server of their
# own, on a free port, with nothing persisted. Never the machine's own.
#
#   need_redis NAME          installs redis-server with apt-get when missing
#                            (as root), else says what to install and exits
#   start_redis NAME DIR     starts it with DIR as its directory; sets
#                            redis_pid and redis_port
#   stop_redis               stops it (safe to call when none was started)

redis_pid=""
redis_port=""

need_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$1: installing redis-server with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    return 0
  fi
  cat >&2 <<MSG
$1: redis-server and redis-cli are needed and not installed.
  Debian/Ubuntu: sudo apt-get install redis-server
  Fedora:        sudo dnf install redis
  macOS:         brew install redis
MSG
  exit 1
}

start_redis() {
  local name=$1 dir=$2 port
  # A random high port that nothing listens on; retried when taken.
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$dir" --logfile "$dir/redis.log" --daemonize no &
    redis_pid=$!
    for _ in $(seq 1 50); do
      # Ours only if it is our process that answers: a server another
      # user started on the port meanwhile must never be taken for it.
      kill -0 "$redis_pid" 2>/dev/null || break
      if redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' |
        grep -qx "process_id:$redis_pid"; then
        redis_port=$port
        echo "$name: throwaway redis-server on 127.0.0.1:$port" >&2
        return 0
      fi
      sleep 0.1
    done
    stop_redis
  done
  echo "$name: could not start redis-server; its log:" >&2
  cat "$dir/redis.log" >&2 || true
  exit 1
}

stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  redis_pid=""
}

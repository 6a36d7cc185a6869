# Sourced by scripts/test.sh and scripts/search-service-load.sh: a
# PostgreSQL cluster of their own, in a temporary directory, on a free port
# of 127.0.0.1, trust authentication, nothing synced to disk. Never the
# machine's own. When the script runs as root, the server runs as the
# `postgres` user (PostgreSQL refuses root).
#
#   need_postgres NAME     installs postgresql with apt-get when missing (as
#                          root), else says what to install and exits
#   start_postgres NAME    creates and starts the cluster; sets pg_dir and
#                          pg_port
#   stop_postgres          stops it and removes its directory (safe to call
#                          when none was started)

pg_bin=""
pg_dir=""
pg_port=""

# initdb and pg_ctl: from PATH, else the newest /usr/lib/postgresql/*/bin.
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
      echo "$1: installing postgresql with apt-get" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      find_postgres || { echo "$1: postgresql installed but initdb/pg_ctl not found" >&2; exit 1; }
    else
      cat >&2 <<MSG
$1: PostgreSQL's initdb and pg_ctl are needed and not installed.
  Debian/Ubuntu: sudo apt-get install postgresql
  Fedora:        sudo dnf install postgresql-server
  macOS:         brew install postgresql
MSG
      exit 1
    fi
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "$1: running as root, and there is no 'postgres' user to run PostgreSQL as" >&2
    exit 1
  fi
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local name=$1 started=""
  # Its own directory (owned by the user it runs as), its sockets in there
  # too, TCP on 127.0.0.1 only.
  pg_dir=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then chown postgres: "$pg_dir"; fi
  if ! as_postgres "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C --no-sync >"$pg_dir/initdb.log" 2>&1; then
    echo "$name: initdb failed; its output:" >&2
    cat "$pg_dir/initdb.log" >&2 || true
    exit 1
  fi
  # A random high port; retried when taken.
  for _ in $(seq 1 20); do
    pg_port=$((20000 + RANDOM % 30000))
    if as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1; then
      started=1
      break
    fi
  done
  if [ -z "$started" ]; then
    echo "$name: could not start PostgreSQL; its log:" >&2
    cat "$pg_dir/postgres.log" >&2 || true
    exit 1
  fi
  echo "$name: throwaway PostgreSQL on 127.0.0.1:$pg_port" >&2
}

stop_postgres() {
  if [ -n "$pg_dir" ]; then
    # Also a server whose start timed out yet came up.
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
      as_postgres "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$pg_dir"
  fi
  pg_dir=""
}

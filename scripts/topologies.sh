# Sourced by scripts/test.sh and scripts/bench.sh: the Redis topologies
# production runs, each started fresh on loopback with nothing persisted.
#
#   need_topologies NAME     installs redis-server, redis-tools and openssl
#                            with apt-get when missing (as root)
#   start_topologies NAME DIR
#       - a TLS redis-server (certificates made now with openssl) that is
#         hardened as managed services are: KEYS, FLUSHALL, FLUSHDB, CONFIG
#         and DEBUG renamed away;
#       - a TLS redis-server that requires a client certificate (mutual TLS);
#       - a Redis Cluster: 3 masters and 3 replicas;
#       - a Redis Cluster over TLS (clients and cluster bus) that asks
#         for a password: 3 masters;
#       - a master, its replica and a sentinel watching them (`mymaster`);
#       - the same over TLS (clients, replication, the sentinel's links),
#         its sentinel asking for a password of its own (requirepass).
#     Exports their URLs as CACHED_REDIS_TEST_TLS_URL,
#     CACHED_REDIS_TEST_MTLS_URL, CACHED_REDIS_TEST_CLUSTER_URL,
#     CACHED_REDIS_TEST_TLS_CLUSTER_URL, CACHED_REDIS_TEST_TLS_SENTINEL_URL,
#     CACHED_REDIS_TEST_SENTINEL_URL, the TLS sentinel's password as
#     CACHED_REDIS_TEST_TLS_SENTINEL_PASSWORD, the certificates as
#     CACHED_REDIS_TEST_TLS_CA / _CLIENT_CERT / _CLIENT_KEY, and the
#     directory of every server's pid file (redis-PORT.pid) as
#     CACHED_REDIS_TEST_PIDDIR, for the tests that kill one.
#   stop_topologies          stops them all (safe to call at any time)
#
# Short timeouts keep failovers quick: cluster-node-timeout 2000 ms,
# sentinel down-after-milliseconds 1000 ms.

topo_pids=()
topo_used=" "
TOPO_CLI=()

need_topologies() {
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "$1: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    return 0
  fi
  echo "$1: needs ${missing[*]} (Debian/Ubuntu: sudo apt-get install redis-server redis-tools openssl)" >&2
  exit 1
}

# Sets topo_next to a free TCP port in 20000-29999 whose +10000 (cluster
# bus) is free too, never one handed out before.
topo_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 10000))
    case "$topo_used" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
      ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
      topo_used="$topo_used$port "
      topo_next=$port
      return 0
    fi
  done
  echo "topologies: no free port" >&2
  return 1
}

# topo_server DIR ARGS...: a redis-server on a free port (@PORT@ in ARGS
# stands for it), in the foreground of a background job; its pid is
# remembered and written to DIR/redis-PORT.pid. A server that dies at
# start (a port taken meanwhile) is retried on another port. Sets
# topo_next to the port. TOPO_CLI holds extra redis-cli arguments for the
# readiness check (TLS, a password).
topo_server() {
  local dir=$1 port pid
  shift
  for _ in 1 2 3 4 5; do
    topo_port || return 1
    port=$topo_next
    redis-server --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --logfile "$dir/redis-$port.log" --daemonize no "${@//@PORT@/$port}" &
    pid=$!
    for _ in $(seq 1 200); do
      # Ours only if our process answers: a server someone else started
      # on the port meanwhile must never be taken for it.
      if timeout 5 redis-cli -p "$port" "${TOPO_CLI[@]}" info server 2>/dev/null |
        tr -d '\r' | grep -qx "process_id:$pid"; then
        # Disowned: a server a test kills on purpose is not reported.
        disown "$pid"
        topo_pids+=("$pid")
        echo "$pid" >"$dir/redis-$port.pid"
        topo_next=$port
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "topologies: a redis-server on $port did not start; its log:" >&2
    cat "$dir/redis-$port.log" >&2 2>/dev/null || true
  done
  return 1
}

# topo_make_cluster LABEL LOG REPLICAS NODE...: joins the nodes into a
# cluster with REPLICAS replicas per master and waits until every node
# reports cluster_state:ok (TOPO_CLI holds the TLS and password
# arguments, if any).
# redis-cli waits for the nodes to meet without a limit of its own, hence
# the timeout.
topo_make_cluster() {
  local label=$1 log=$2 replicas=$3 ok node
  shift 3
  timeout 60 redis-cli "${TOPO_CLI[@]}" --cluster create "$@" \
    --cluster-replicas "$replicas" --cluster-yes >"$log" 2>&1 ||
    { echo "topologies: $label create failed:" >&2; cat "$log" >&2; return 1; }
  for _ in $(seq 1 200); do
    ok=1
    for node in "$@"; do
      timeout 5 redis-cli "${TOPO_CLI[@]}" -p "${node#*:}" cluster info 2>/dev/null |
        grep -q 'cluster_state:ok' || ok=""
    done
    [ -n "$ok" ] && return 0
    sleep 0.1
  done
  echo "topologies: the $label did not become ready" >&2
  return 1
}

# topo_wait_sentinel LABEL SENTINEL MASTER [PASSWORD]: waits until the
# sentinel on port SENTINEL (asked with PASSWORD, if given) names MASTER
# for mymaster and the master has its replica.
topo_wait_sentinel() {
  local label=$1 sentinel=$2 master=$3 login=()
  [ -n "${4:-}" ] && login=(-a "$4" --no-auth-warning)
  for _ in $(seq 1 200); do
    timeout 5 redis-cli "${TOPO_CLI[@]}" "${login[@]}" -p "$sentinel" \
      sentinel get-master-addr-by-name mymaster 2>/dev/null | grep -q "$master" &&
      timeout 5 redis-cli "${TOPO_CLI[@]}" -p "$master" info replication 2>/dev/null |
      grep -q 'connected_slaves:1' &&
      return 0
    sleep 0.1
  done
  echo "topologies: the $label did not become ready" >&2
  return 1
}

topo_certs() {
  local dir=$1
  (
    cd "$dir" || exit 1
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 2 \
      -subj "/CN=cached-redis test CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out server.pem -days 2 -extfile server.ext 2>/dev/null
    openssl req "${ec[@]}" -keyout client.key -out client.csr -subj "/CN=cached-redis client" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out client.pem -days 2 -extfile client.ext 2>/dev/null
  ) || { echo "topologies: openssl could not make the certificates" >&2; return 1; }
}

start_topologies() {
  local name=$1 dir=$2 tls_port mtls_port
  topo_certs "$dir" || exit 1
  local tls=(--port 0 --tls-port @PORT@ --tls-cert-file "$dir/server.pem"
    --tls-key-file "$dir/server.key" --tls-ca-cert-file "$dir/ca.pem")

  # TLS, hardened like a managed service.
  TOPO_CLI=(--tls --cacert "$dir/ca.pem")
  topo_server "$dir" "${tls[@]}" --tls-auth-clients optional \
    --rename-command KEYS "" --rename-command FLUSHALL "" --rename-command FLUSHDB "" \
    --rename-command CONFIG "" --rename-command DEBUG "" || exit 1
  tls_port=$topo_next

  # Mutual TLS.
  TOPO_CLI=(--tls --cacert "$dir/ca.pem" --cert "$dir/client.pem" --key "$dir/client.key")
  topo_server "$dir" "${tls[@]}" --tls-auth-clients yes || exit 1
  mtls_port=$topo_next
  TOPO_CLI=()

  # Cluster: 3 masters, 3 replicas.
  local cluster=()
  mkdir -p "$dir/cluster"
  for _ in 1 2 3 4 5 6; do
    topo_server "$dir/cluster" --port @PORT@ --cluster-enabled yes \
      --cluster-config-file "nodes-@PORT@.conf" --cluster-node-timeout 2000 || exit 1
    cp "$dir/cluster/redis-$topo_next.pid" "$dir/"
    cluster+=("127.0.0.1:$topo_next")
  done
  topo_make_cluster cluster "$dir/cluster-create.log" 1 "${cluster[@]}" || exit 1

  # Cluster over TLS (client connections and the cluster bus) with a
  # password (an AUTH token): 3 masters, as managed services with
  # in-transit encryption run it.
  local tls_cluster=() tls_cluster_password="topo-cluster-pw"
  mkdir -p "$dir/tls-cluster"
  TOPO_CLI=(--tls --cacert "$dir/ca.pem" -a "$tls_cluster_password" --no-auth-warning)
  for _ in 1 2 3; do
    # The bus connections between nodes present the client certificate
    # (the server's is for serverAuth only) and are always verified.
    topo_server "$dir/tls-cluster" "${tls[@]}" --tls-auth-clients no --tls-cluster yes \
      --tls-client-cert-file "$dir/client.pem" --tls-client-key-file "$dir/client.key" \
      --cluster-enabled yes --cluster-config-file "nodes-@PORT@.conf" \
      --cluster-node-timeout 2000 --requirepass "$tls_cluster_password" || exit 1
    tls_cluster+=("127.0.0.1:$topo_next")
  done
  topo_make_cluster "TLS cluster" "$dir/tls-cluster-create.log" 0 "${tls_cluster[@]}" ||
    exit 1
  TOPO_CLI=()

  # Sentinel: a master, a replica, one sentinel (quorum 1).
  local master replica sentinel
  topo_server "$dir" --port @PORT@ || exit 1
  master=$topo_next
  topo_server "$dir" --port @PORT@ --replicaof 127.0.0.1 "$master" || exit 1
  replica=$topo_next
  topo_port || exit 1
  sentinel=$topo_next
  cat >"$dir/sentinel.conf" <<CONF
port $sentinel
bind 127.0.0.1
dir $dir
sentinel monitor mymaster 127.0.0.1 $master 1
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 4000
sentinel parallel-syncs mymaster 1
CONF
  redis-server "$dir/sentinel.conf" --sentinel --logfile "$dir/sentinel.log" --daemonize no &
  disown $!
  topo_pids+=($!)
  echo $! >"$dir/redis-$sentinel.pid"
  topo_wait_sentinel sentinel "$sentinel" "$master" || exit 1

  # The same over TLS: clients, replication and the sentinel's own links.
  local tls_master tls_sentinel tls_sentinel_password="topo-sentinel-pw"
  local tls_links=("${tls[@]}" --tls-auth-clients no --tls-replication yes
    --tls-client-cert-file "$dir/client.pem" --tls-client-key-file "$dir/client.key")
  mkdir -p "$dir/tls-sentinel"
  TOPO_CLI=(--tls --cacert "$dir/ca.pem")
  topo_server "$dir/tls-sentinel" "${tls_links[@]}" || exit 1
  tls_master=$topo_next
  topo_server "$dir/tls-sentinel" "${tls_links[@]}" --replicaof 127.0.0.1 "$tls_master" || exit 1
  topo_port || exit 1
  tls_sentinel=$topo_next
  cat >"$dir/tls-sentinel/sentinel.conf" <<CONF
port 0
tls-port $tls_sentinel
bind 127.0.0.1
dir $dir/tls-sentinel
tls-cert-file $dir/server.pem
tls-key-file $dir/server.key
tls-ca-cert-file $dir/ca.pem
tls-client-cert-file $dir/client.pem
tls-client-key-file $dir/client.key
tls-auth-clients no
tls-replication yes
requirepass $tls_sentinel_password
sentinel monitor mymaster 127.0.0.1 $tls_master 1
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 4000
CONF
  redis-server "$dir/tls-sentinel/sentinel.conf" --sentinel \
    --logfile "$dir/tls-sentinel/sentinel.log" --daemonize no &
  disown $!
  topo_pids+=($!)
  topo_wait_sentinel "TLS sentinel" "$tls_sentinel" "$tls_master" \
    "$tls_sentinel_password" || exit 1
  TOPO_CLI=()

  export CACHED_REDIS_TEST_TLS_URL="rediss://127.0.0.1:$tls_port/0"
  export CACHED_REDIS_TEST_MTLS_URL="rediss://127.0.0.1:$mtls_port/0"
  export CACHED_REDIS_TEST_TLS_CA="$dir/ca.pem"
  export CACHED_REDIS_TEST_TLS_CLIENT_CERT="$dir/client.pem"
  export CACHED_REDIS_TEST_TLS_CLIENT_KEY="$dir/client.key"
  export CACHED_REDIS_TEST_CLUSTER_URL="redis+cluster://${cluster[0]}"
  export CACHED_REDIS_TEST_TLS_CLUSTER_URL="rediss+cluster://:$tls_cluster_password@${tls_cluster[0]}"
  export CACHED_REDIS_TEST_SENTINEL_URL="redis+sentinel://127.0.0.1:$sentinel/mymaster"
  export CACHED_REDIS_TEST_TLS_SENTINEL_URL="rediss+sentinel://127.0.0.1:$tls_sentinel/mymaster"
  export CACHED_REDIS_TEST_TLS_SENTINEL_PASSWORD="$tls_sentinel_password"
  export CACHED_REDIS_TEST_PIDDIR="$dir"
  echo "$name: TLS redis on $tls_port, mutual TLS on $mtls_port, cluster ${cluster[*]}," \
    "TLS cluster ${tls_cluster[*]}, TLS sentinel $tls_sentinel," \
    "sentinel $sentinel (master $master, replica $replica)" >&2
}

stop_topologies() {
  local pid
  for pid in "${topo_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${topo_pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  topo_pids=()
topo_used=" "
TOPO_CLI=()
}

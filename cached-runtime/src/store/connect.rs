//! Opening connections to the Redis a [`Target`] names, with the Redis
//! client's own TLS, cluster and sentinel support.
//!
//! Whatever the topology, callers get an [`AsyncConn`] or a [`SyncConn`],
//! both plain `redis` connections (`query_async` / `query` work on them):
//! a cluster connection routes each command to the master of its key's
//! slot and follows `MOVED` by itself; a sentinel target resolves the
//! current master at every connect, which is how a failover is followed (a
//! connection to the old master breaks, the store drops it, the next
//! connect asks the sentinels again), and the sentinels' switches are
//! followed too, for an old master that nothing breaks
//! ([`super::sentinel_watch`]).
//!
//! The blocking path resolves a sentinel's master itself ([`SyncSentinel`])
//! rather than through the client's `SentinelClient::get_client`, whose
//! connections have neither a connect nor a read timeout: a frozen sentinel
//! or master would block a sync caller for good.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use super::sentinel_watch::{Switches, Watch};
use super::target::{Target, Topology};
use crate::config::{SentinelAuth, TlsOptions};

/// Retries of a cluster command by the client itself (redirections
/// included); its waits between tries of a cluster that is down are drawn
/// between `MIN` and a bound that doubles from twice `MIN` up to `MAX`
/// milliseconds: at most 200 ms in all.
const CLUSTER_RETRIES: u32 = 3;
const CLUSTER_RETRY_WAIT_MIN_MS: u64 = 10;
const CLUSTER_RETRY_WAIT_MAX_MS: u64 = 80;

/// How to reach the configured Redis.
pub(crate) enum Backend {
    Single(redis::Client),
    Cluster {
        client: ClusterClient,
        /// A client of each seed node, for the invalidation channel (a
        /// plain `PUBLISH` on a cluster reaches the subscribers of every
        /// node).
        nodes: Vec<redis::Client>,
        /// The same as `client`, without retries, for the channel's probes:
        /// a probe to a master the client cannot reach fails at once
        /// (the client's retries would each reconnect to every node).
        probes: Box<ClusterClient>,
        /// How to reach a node that `client`'s slot map leaves out (a
        /// master serving no slot yet).
        unmapped: Box<NodeClients>,
    },
    /// One sentinel client per calling style: the async one is locked
    /// across awaits, the invalidation channel's subscriber has its own,
    /// and the blocking path asks the sentinels itself, under timeouts
    /// (it must never wait on a runtime, nor without limit).
    /// The switches of master the sentinels announce are followed, so
    /// that connections to an old master that nothing broke are dropped
    /// too (see [`super::sentinel_watch`]).
    Sentinel {
        for_async: tokio::sync::Mutex<SentinelClient>,
        for_sync: SyncSentinel,
        for_pubsub: Arc<tokio::sync::Mutex<SentinelClient>>,
        watch: Watch,
    },
}

/// What the blocking path needs to find a sentinel's master: the clients
/// of the sentinels, and how to reach a master they name (TLS, credentials
/// and database as the async path's `SentinelClient` has them).
pub(crate) struct SyncSentinel {
    service: String,
    sentinels: Vec<redis::Client>,
    /// The sentinel asked first: the last one that answered, or the one
    /// after the last that failed, so that a dead sentinel early in the
    /// list does not cost every connect its wait.
    first: AtomicUsize,
    /// How to reach a master a sentinel names.
    masters: NodeClients,
}

/// How to reach a node of the configured Redis by its address: TLS,
/// certificates, credentials and database as the URL and options say.
pub(crate) struct NodeClients {
    /// `Some(insecure)` over TLS.
    tls: Option<bool>,
    settings: RedisConnectionInfo,
    certs: Option<TlsCertificates>,
}

impl NodeClients {
    /// A client of the node at `host`:`port`.
    pub(crate) fn client(&self, host: &str, port: u16) -> RedisResult<redis::Client> {
        node_client(
            node_info(node_addr(host, port, self.tls), &self.settings),
            &self.certs,
        )
    }
}

/// The address of the node at `host`:`port`, over TLS when `tls` is
/// `Some(insecure)`.
fn node_addr(host: &str, port: u16, tls: Option<bool>) -> ConnectionAddr {
    match tls {
        Some(insecure) => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host.to_owned(), port),
    }
}

impl SyncSentinel {
    /// A connection to the current master, with read and write timeouts
    /// of `timeout`. Each sentinel is asked in turn (`SENTINEL MASTER`);
    /// the master it names is accepted once it answers `ROLE` as a master,
    /// and that connection is the one returned.
    ///
    /// Every connect is given `connect_timeout` (the client bounds each
    /// reply of the connection's setup by it, so a frozen server costs a
    /// couple of them), every reply `timeout`, and no step starts past two
    /// of each from now (one hop to a sentinel, one to the master): a
    /// frozen sentinel or master costs a bounded wait, never a hang. No
    /// lock is held: concurrent callers each resolve on their own.
    fn connect(&self, connect_timeout: Duration, timeout: Duration) -> RedisResult<SyncConn> {
        // Saturating: a timeout of `Duration::MAX` means "no bound", not a panic.
        let budget = connect_timeout.saturating_add(timeout).saturating_mul(2);
        let now = Instant::now();
        let deadline = now
            .checked_add(budget)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600));
        let n = self.sentinels.len();
        let first = self.first.load(Relaxed);
        let mut master_err = None;
        let mut last_err = None;
        for i in (first..first + n).map(|i| i % n) {
            // Until it answers, the next call starts with the next one.
            self.first.store((i + 1) % n, Relaxed);
            let (host, port) =
                match self.ask(&self.sentinels[i], connect_timeout, timeout, deadline) {
                    Ok(address) => address,
                    Err(e) => {
                        last_err = Some(e);
                        continue;
                    }
                };
            self.first.store(i, Relaxed);
            match self.verify(&host, port, connect_timeout, timeout, deadline) {
                Ok(conn) => {
                    conn.set_read_timeout(Some(timeout))?;
                    conn.set_write_timeout(Some(timeout))?;
                    return Ok(SyncConn::Single(conn));
                }
                Err(e) => master_err = Some(e),
            }
        }
        // An error met on a master a sentinel named is the one to act on
        // (as the client's own lookup reports it).
        Err(master_err.or(last_err).unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::EmptySentinelList, "no sentinel"))
        }))
    }

    /// The address of the master `sentinel` knows for the service, if it
    /// holds it up (not flagged down).
    fn ask(
        &self,
        sentinel: &redis::Client,
        connect_timeout: Duration,
        timeout: Duration,
        deadline: Instant,
    ) -> RedisResult<(String, u16)> {
        let mut conn = open_bounded(sentinel, connect_timeout, timeout, deadline)?;
        let info: std::collections::HashMap<String, String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.service)
            .query(&mut conn)?;
        let flags = info.get("flags").map(String::as_str).unwrap_or("");
        let port = info.get("port").and_then(|p| p.parse::<u16>().ok());
        match (info.get("ip"), port) {
            (Some(ip), Some(port))
                if flags.contains("master")
                    && !flags.contains("s_down")
                    && !flags.contains("o_down") =>
            {
                Ok((ip.clone(), port))
            }
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::MasterNameNotFoundBySentinel,
                "the sentinel holds no master up for the service",
            ))),
        }
    }

    /// A connection to `host:port` once it answers `ROLE` as a master.
    fn verify(
        &self,
        host: &str,
        port: u16,
        connect_timeout: Duration,
        timeout: Duration,
        deadline: Instant,
    ) -> RedisResult<redis::Connection> {
        let client = self.masters.client(host, port)?;
        let mut conn = open_bounded(&client, connect_timeout, timeout, deadline)?;
        match redis::cmd("ROLE").query::<redis::Role>(&mut conn)? {
            redis::Role::Primary { .. } => Ok(conn),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::MasterNameNotFoundBySentinel,
                "the node a sentinel named is not a master",
            ))),
        }
    }
}

/// A blocking connection of `client` opened within `connect_timeout`, whose
/// reads and writes give up after `timeout`, neither past `deadline`.
fn open_bounded(
    client: &redis::Client,
    connect_timeout: Duration,
    timeout: Duration,
    deadline: Instant,
) -> RedisResult<redis::Connection> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no time left to find the master through the sentinels",
            )))
        } else {
            Ok(left)
        }
    };
    let conn = client.get_connection_with_timeout(connect_timeout.min(left()?))?;
    let io = timeout.min(left()?);
    conn.set_read_timeout(Some(io))?;
    conn.set_write_timeout(Some(io))?;
    Ok(conn)
}

/// Where the invalidation channel's subscriber connects: a node of the
/// configured Redis (the current master, behind a sentinel).
#[derive(Clone)]
pub(crate) enum PubSubSource {
    /// Tried in turn, one per attempt.
    Nodes(Vec<redis::Client>),
    /// A cluster's seed nodes, tried in turn, and its client: messages
    /// published on the other masters reach the subscriber's node over the
    /// cluster bus, which the subscriber checks through it (a client
    /// without retries).
    Cluster {
        nodes: Vec<redis::Client>,
        client: Box<ClusterClient>,
    },
    /// The master the sentinels name, and their switches: a subscriber
    /// on an old master must subscribe again.
    Sentinel {
        client: Arc<tokio::sync::Mutex<SentinelClient>>,
        switches: Arc<Switches>,
    },
}

impl PubSubSource {
    /// The client to subscribe through on the `attempt`-th connect.
    pub(crate) async fn client(&self, attempt: usize) -> RedisResult<redis::Client> {
        match self {
            PubSubSource::Nodes(nodes) | PubSubSource::Cluster { nodes, .. } => nodes
                .get(attempt % nodes.len().max(1))
                .cloned()
                .ok_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Client, "no node to subscribe to"))
                }),
            PubSubSource::Sentinel { client, .. } => client.lock().await.async_get_client().await,
        }
    }

    /// Behind a sentinel, the master switches seen so far.
    pub(crate) fn switches(&self) -> Option<&Arc<Switches>> {
        match self {
            PubSubSource::Sentinel { switches, .. } => Some(switches),
            _ => None,
        }
    }
}

impl Backend {
    /// The clients for `target`; behind sentinels, they log in to the
    /// sentinels with `sentinel_auth`. Reads the TLS files; errors name
    /// them and never carry a password.
    pub(crate) fn new(
        target: &Target,
        tls: &TlsOptions,
        sentinel_auth: &SentinelAuth,
    ) -> Result<Self, String> {
        let certs = if target.tls {
            ensure_crypto_provider();
            if tls.insecure {
                tracing::warn!(
                    "TLS certificate verification is OFF (insecure mode): \
                     for development only, never in production"
                );
            }
            tls_certificates(tls)?
        } else {
            if tls.is_set() {
                return Err(
                    "TLS options are set but the redis_url is not rediss://, rediss+cluster:// \
                     or rediss+sentinel://"
                        .into(),
                );
            }
            None
        };
        let tls_mode = target.tls.then_some(tls.insecure);
        let addr = |host: &str, port: u16| node_addr(host, port, tls_mode);
        // No `CLIENT SETINFO` on connect: the client waits out a whole
        // timeout per setup reply, so each one it sends stretches the
        // connect to a Redis that stopped answering.
        let mut settings = RedisConnectionInfo::default()
            .set_db(target.db)
            .set_skip_set_lib_name();
        if let Some(user) = &target.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &target.password {
            settings = settings.set_password(password);
        }
        // Messages of the client's own errors are not passed on here: they
        // are about the configuration, which is reported our way instead.
        let client_error = |what: &str| format!("the Redis client refused the {what}");
        match &target.topology {
            Topology::Unix => target
                .raw
                .as_str()
                .into_connection_info()
                .map(|info| {
                    // Its own database and password, and no `SETINFO`.
                    let settings = info.redis_settings().clone().set_skip_set_lib_name();
                    info.set_redis_settings(settings)
                })
                .and_then(redis::Client::open)
                .map(Backend::Single)
                .map_err(|_| client_error("Unix-socket URL")),
            Topology::Single => {
                let (host, port) = &target.nodes[0];
                node_client(node_info(addr(host, *port), &settings), &certs)
                    .map(Backend::Single)
                    .map_err(|_| client_error("TLS settings"))
            }
            Topology::Cluster => {
                let infos: Vec<ConnectionInfo> = target
                    .nodes
                    .iter()
                    .map(|(host, port)| node_info(addr(host, *port), &settings))
                    .collect();
                let nodes = infos
                    .iter()
                    .map(|info| node_client(info.clone(), &certs))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|_| client_error("TLS settings"))?;
                // The client's own retries are kept few and short: by
                // default it retries a command 16 times, sleeping from
                // 1.28 s up to 655 s between tries while the cluster is
                // down (`CLUSTERDOWN`, `TRYAGAIN`, `LOADING`), which a sync
                // call, with no timeout around the whole command, would
                // wait out. A few are needed: a redirection (`MOVED`,
                // `ASK`) is one.
                let build = |retries: u32| {
                    let mut builder = ClusterClientBuilder::new(infos.clone())
                        .retries(retries)
                        .min_retry_wait(CLUSTER_RETRY_WAIT_MIN_MS)
                        .max_retry_wait(CLUSTER_RETRY_WAIT_MAX_MS)
                        .retry_wait_formula(CLUSTER_RETRY_WAIT_MIN_MS * 2, 2);
                    if let Some(certs) = certs.clone() {
                        builder = builder.certs(certs);
                    }
                    builder.build()
                };
                build(CLUSTER_RETRIES)
                    .and_then(|client| Ok((client, build(0)?)))
                    .map(|(client, probes)| Backend::Cluster {
                        client,
                        nodes,
                        probes: Box::new(probes),
                        unmapped: Box::new(NodeClients {
                            tls: tls_mode,
                            settings: settings.clone(),
                            certs: certs.clone(),
                        }),
                    })
                    .map_err(|_| client_error("cluster settings"))
            }
            Topology::Sentinel { service } => {
                let build = || {
                    let sentinels = target.nodes.iter().map(|(h, p)| addr(h, *p));
                    let mut b =
                        SentinelClientBuilder::new(sentinels, service, SentinelServerType::Master)?
                            .set_client_to_redis_db(target.db);
                    if let Some(user) = &target.username {
                        b = b.set_client_to_redis_username(user);
                    }
                    if let Some(password) = &target.password {
                        b = b.set_client_to_redis_password(password);
                    }
                    if let Some(user) = &sentinel_auth.username {
                        b = b.set_client_to_sentinel_username(user);
                    }
                    if let Some(password) = &sentinel_auth.password {
                        b = b.set_client_to_sentinel_password(password);
                    }
                    if target.tls {
                        let mode = if tls.insecure {
                            TlsMode::Insecure
                        } else {
                            TlsMode::Secure
                        };
                        b = b
                            .set_client_to_redis_tls_mode(mode)
                            .set_client_to_sentinel_tls_mode(mode);
                        if let Some(certs) = &certs {
                            b = b
                                .set_client_to_redis_certificates(certs.clone())
                                .set_client_to_sentinel_certificates(certs.clone());
                        }
                    }
                    b.build()
                };
                let (a, p) = build()
                    .and_then(|a| Ok((a, build()?)))
                    .map_err(|_| client_error("sentinel settings"))?;
                // The sentinels are reached as the async path reaches them:
                // TLS as the URL says, with the configured certificates, and
                // their own credentials (the URL's are the master's).
                let mut login = RedisConnectionInfo::default().set_skip_set_lib_name();
                if let Some(user) = &sentinel_auth.username {
                    login = login.set_username(user);
                }
                if let Some(password) = &sentinel_auth.password {
                    login = login.set_password(password);
                }
                let sentinels = target
                    .nodes
                    .iter()
                    .map(|(h, p)| node_client(node_info(addr(h, *p), &login), &certs))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|_| client_error("TLS settings"))?;
                let watch = Watch::start(sentinels.clone(), service.clone());
                let for_sync = SyncSentinel {
                    service: service.clone(),
                    sentinels,
                    first: AtomicUsize::new(0),
                    masters: NodeClients {
                        tls: tls_mode,
                        settings,
                        certs,
                    },
                };
                Ok(Backend::Sentinel {
                    for_async: tokio::sync::Mutex::new(a),
                    for_sync,
                    for_pubsub: Arc::new(tokio::sync::Mutex::new(p)),
                    watch,
                })
            }
        }
    }

    /// Whether this is a cluster (several masters, slot routing).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster { .. })
    }

    /// A client of the cluster node at `host`:`port` of its own, for a
    /// node the cluster client's slot map leaves out; `None` elsewhere.
    pub(crate) fn unmapped_node(
        &self,
        host: &str,
        port: u16,
    ) -> Option<RedisResult<redis::Client>> {
        match self {
            Backend::Cluster { unmapped, .. } => Some(unmapped.client(host, port)),
            _ => None,
        }
    }

    /// Where the invalidation channel's subscriber connects.
    pub(crate) fn pubsub_source(&self) -> PubSubSource {
        match self {
            Backend::Single(client) => PubSubSource::Nodes(vec![client.clone()]),
            Backend::Cluster { nodes, probes, .. } => PubSubSource::Cluster {
                nodes: nodes.clone(),
                client: probes.clone(),
            },
            Backend::Sentinel {
                for_pubsub, watch, ..
            } => PubSubSource::Sentinel {
                client: Arc::clone(for_pubsub),
                switches: Arc::clone(watch.switches()),
            },
        }
    }

    /// Behind a sentinel, the master switches seen so far.
    pub(crate) fn switches(&self) -> Option<&Switches> {
        match self {
            Backend::Sentinel { watch, .. } => Some(watch.switches()),
            _ => None,
        }
    }

    /// A multiplexed connection opened on the current runtime (its driver
    /// task lives there).
    pub(crate) async fn connect(&self, connect_timeout: Duration) -> RedisResult<AsyncConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        match self {
            Backend::Single(client) => client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(AsyncConn::Single),
            Backend::Cluster { client, .. } => {
                // Responses are timed by the store; the cluster connection
                // must not give up on its own first.
                let config = ClusterConfig::new().set_connection_timeout(connect_timeout);
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(|c| AsyncConn::Cluster(Box::new(c)))
            }
            Backend::Sentinel { for_async, .. } => {
                let master = for_async.lock().await.async_get_client().await?;
                master
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(AsyncConn::Single)
            }
        }
    }

    /// A blocking connection whose every read and write gives up after
    /// `timeout`.
    pub(crate) fn connect_sync(
        &self,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> RedisResult<SyncConn> {
        let single = |client: &redis::Client| -> RedisResult<SyncConn> {
            let conn = client.get_connection_with_timeout(connect_timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            conn.set_write_timeout(Some(timeout))?;
            Ok(SyncConn::Single(conn))
        };
        match self {
            Backend::Single(client) => single(client),
            Backend::Cluster { client, .. } => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(timeout);
                let conn = client.get_connection_with_config(config)?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(SyncConn::Cluster(Box::new(conn)))
            }
            Backend::Sentinel { for_sync, .. } => for_sync.connect(connect_timeout, timeout),
        }
    }
}

/// A client of one node, over TLS when `certs` (or a `rediss` address)
/// says so.
fn node_client(
    info: ConnectionInfo,
    certs: &Option<TlsCertificates>,
) -> RedisResult<redis::Client> {
    match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
        None => redis::Client::open(info),
    }
}

fn node_info(addr: ConnectionAddr, settings: &RedisConnectionInfo) -> ConnectionInfo {
    addr.into_connection_info()
        .expect("an address is always a connection info")
        .set_redis_settings(settings.clone())
}

/// The CA and client certificate the options name, read now so that a
/// missing file is a configuration error at start-up.
fn tls_certificates(tls: &TlsOptions) -> Result<Option<TlsCertificates>, String> {
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
    };
    let root_cert = match &tls.ca_file {
        Some(path) => Some(read("CA file", path)?),
        None => None,
    };
    let client_tls = match &tls.client_cert {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read("client certificate", cert)?,
            client_key: read("client key", key)?,
        }),
        None => None,
    };
    if root_cert.is_none() && client_tls.is_none() {
        // The system's trust store, as the client does by default.
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// The Redis client builds its rustls configuration from the process-wide
/// default crypto provider and takes no other. When the service installed
/// one (ring, aws-lc-rs, anything), that one is used; when none is
/// installed, ring is installed, as rustls itself does when ring is its
/// only provider. Never panics: losing a race to another installer is
/// fine, the winner's provider serves.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An async connection to any topology.
#[derive(Clone)]
pub(crate) enum AsyncConn {
    Single(redis::aio::MultiplexedConnection),
    // Boxed: much larger than the multiplexed handle.
    Cluster(Box<redis::cluster_async::ClusterConnection>),
}

impl AsyncConn {
    /// Runs `cmd` on the node at `address` (a random one when `None`) of a
    /// cluster; elsewhere on the one server.
    pub(crate) async fn route_to(
        self,
        cmd: Cmd,
        address: Option<(String, u16)>,
    ) -> RedisResult<Value> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        match self {
            AsyncConn::Single(mut c) => cmd.query_async(&mut c).await,
            AsyncConn::Cluster(mut c) => {
                let route = match address {
                    Some((host, port)) => SingleNodeRoutingInfo::ByAddress { host, port },
                    None => SingleNodeRoutingInfo::Random,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(route)).await
            }
        }
    }
}

impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AsyncConn::Single(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AsyncConn::Single(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Single(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A blocking connection to any topology.
pub(crate) enum SyncConn {
    Single(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl SyncConn {
    fn inner(&mut self) -> &mut dyn redis::ConnectionLike {
        match self {
            SyncConn::Single(c) => c,
            SyncConn::Cluster(c) => &mut **c,
        }
    }
}

impl redis::ConnectionLike for SyncConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.inner().req_packed_command(cmd)
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.inner().req_packed_commands(cmd, offset, count)
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        self.inner().req_command(cmd)
    }

    fn get_db(&self) -> i64 {
        match self {
            SyncConn::Single(c) => c.get_db(),
            SyncConn::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            SyncConn::Single(c) => c.supports_pipelining(),
            SyncConn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        self.inner().check_connection()
    }

    fn is_open(&self) -> bool {
        match self {
            SyncConn::Single(c) => c.is_open(),
            SyncConn::Cluster(c) => c.is_open(),
        }
    }
}

//! Opening connections to the Redis a [`Target`] names, with the Redis
//! client's own TLS, cluster and sentinel support.
//!
//! Whatever the topology, callers get an [`AsyncConn`] or a [`SyncConn`],
//! both plain `redis` connections (`query_async` / `query` work on them):
//! a cluster connection routes each command to the master of its key's
//! slot and follows `MOVED` by itself; a sentinel target resolves the
//! current master at every connect, which is how a failover is followed (a
//! connection to the old master breaks, the store drops it, the next
//! connect asks the sentinels again).

use std::sync::Mutex;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisFuture, RedisResult, TlsCertificates, TlsMode, Value,
};

use super::target::{Target, Topology};
use crate::config::TlsOptions;

/// How to reach the configured Redis.
pub(crate) enum Backend {
    Single(redis::Client),
    Cluster(ClusterClient),
    /// One sentinel client per calling style: the async one is locked
    /// across awaits, the blocking one must never wait on a runtime.
    Sentinel {
        for_async: tokio::sync::Mutex<SentinelClient>,
        for_sync: Mutex<SentinelClient>,
    },
}

impl Backend {
    /// The clients for `target`. Reads the TLS files; errors name them and
    /// never carry a password.
    pub(crate) fn new(target: &Target, tls: &TlsOptions) -> Result<Self, String> {
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
        let addr = |host: &str, port: u16| {
            if target.tls {
                ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: tls.insecure,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.to_owned(), port)
            }
        };
        let mut settings = RedisConnectionInfo::default().set_db(target.db);
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
            Topology::Unix => redis::Client::open(target.raw.as_str())
                .map(Backend::Single)
                .map_err(|_| client_error("Unix-socket URL")),
            Topology::Single => {
                let (host, port) = &target.nodes[0];
                let info = node_info(addr(host, *port), &settings);
                let client = match certs {
                    Some(certs) => redis::Client::build_with_tls(info, certs),
                    None => redis::Client::open(info),
                };
                client
                    .map(Backend::Single)
                    .map_err(|_| client_error("TLS settings"))
            }
            Topology::Cluster => {
                let nodes: Vec<ConnectionInfo> = target
                    .nodes
                    .iter()
                    .map(|(host, port)| node_info(addr(host, *port), &settings))
                    .collect();
                let mut builder = ClusterClientBuilder::new(nodes);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                builder
                    .build()
                    .map(Backend::Cluster)
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
                let (a, s) = build()
                    .and_then(|a| Ok((a, build()?)))
                    .map_err(|_| client_error("sentinel settings"))?;
                Ok(Backend::Sentinel {
                    for_async: tokio::sync::Mutex::new(a),
                    for_sync: Mutex::new(s),
                })
            }
        }
    }

    /// Whether this is a cluster (several masters, slot routing).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Backend::Cluster(_))
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
            Backend::Cluster(client) => {
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
            Backend::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(timeout);
                let conn = client.get_connection_with_config(config)?;
                conn.set_read_timeout(Some(timeout))?;
                conn.set_write_timeout(Some(timeout))?;
                Ok(SyncConn::Cluster(Box::new(conn)))
            }
            Backend::Sentinel { for_sync, .. } => {
                let master = for_sync
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_client()?;
                single(&master)
            }
        }
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

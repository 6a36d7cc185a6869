//! The Redis store.
//!
//! Async calls share one multiplexed connection per tokio runtime, opened
//! on that runtime: its driver task runs beside the callers, so a request
//! costs no hop to another thread (measured: a dedicated I/O thread for
//! all connections cost ~20 µs per hit and capped throughput at what one
//! thread can parse). A runtime that shuts down takes its connection's
//! driver with it; the next runtime (each `#[tokio::test]` has one) has
//! another id and opens its own, so nothing is left silently broken. Sync
//! calls (cached `fn`s) use a small pool of blocking connections with
//! socket timeouts, and need no runtime at all.
//!
//! Every command runs under the configured timeout and behind a circuit
//! breaker; a connection that failed is dropped and reopened on demand.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, RedisResult};

use super::breaker::Breaker;
use crate::config::Config;
use crate::error::{StoreError, StoreErrorKind};

/// Idle blocking connections kept for sync calls.
const SYNC_POOL_MAX: usize = 16;

/// Connections kept for runtimes; older ones belong to runtimes that have
/// most likely shut down and are dropped first.
const RUNTIMES_MAX: usize = 8;

/// The multiplexed connection of each runtime that made calls, newest last.
type PerRuntime = Vec<(tokio::runtime::Id, MultiplexedConnection)>;

pub(crate) struct RedisStore {
    client: redis::Client,
    timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
    conns: RwLock<PerRuntime>,
    /// Serializes connection attempts: one task connects, the others wait.
    connect_gate: tokio::sync::Mutex<()>,
    /// Counts failed connection attempts, so that tasks which waited at the
    /// gate while one failed give up instead of retrying at once.
    connect_failures: AtomicU64,
    sync_pool: Mutex<Vec<redis::Connection>>,
}

/// Whether an error says the connection (not the command) is broken.
fn is_connection_fault(e: &RedisError) -> bool {
    !matches!(e.kind(), redis::ErrorKind::Server(_))
}

fn store_error(e: &RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        StoreErrorKind::Timeout
    } else if is_connection_fault(e) {
        StoreErrorKind::Connection
    } else {
        StoreErrorKind::Response
    };
    StoreError::new(kind, e.to_string())
}

fn cooling_down() -> StoreError {
    StoreError::new(
        StoreErrorKind::CoolingDown,
        "redis failed repeatedly; not tried during the cooldown",
    )
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("client", &self.client)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    pub(crate) fn new(url: &str, config: &Config) -> Result<Self, crate::Error> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::Error::Config(format!("redis_url {url:?}: {e}")))?;
        Ok(Self {
            client,
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            conns: RwLock::new(Vec::new()),
            connect_gate: tokio::sync::Mutex::new(()),
            connect_failures: AtomicU64::new(0),
            sync_pool: Mutex::new(Vec::new()),
        })
    }

    /// Runs one async command against Redis, under the timeout and breaker.
    pub(crate) async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allows() {
            return Err(cooling_down());
        }
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, command(conn)).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            Ok(Err(e)) => {
                if is_connection_fault(&e) {
                    self.drop_connection();
                    self.breaker.failure();
                } else {
                    // An error reply is still an answer: a probe that gets
                    // one must close the breaker, not leave it half-open.
                    self.breaker.success();
                }
                Err(store_error(&e))
            }
            Err(_) => {
                // A server that stops answering keeps the socket open; a new
                // connection is the only way to find out when it is back.
                self.drop_connection();
                self.breaker.failure();
                Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        }
    }

    /// The current runtime's id; the caller checked that there is one.
    fn runtime_id() -> Result<tokio::runtime::Id, StoreError> {
        tokio::runtime::Handle::try_current()
            .map(|h| h.id())
            .map_err(|_| StoreError::new(StoreErrorKind::Connection, "not inside a tokio runtime"))
    }

    fn current(&self, id: tokio::runtime::Id) -> Option<MultiplexedConnection> {
        let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
        conns
            .iter()
            .find(|(rt, _)| *rt == id)
            .map(|(_, c)| c.clone())
    }

    fn drop_connection(&self) {
        if let Ok(id) = Self::runtime_id() {
            let mut conns = self.conns.write().unwrap_or_else(|e| e.into_inner());
            conns.retain(|(rt, _)| *rt != id);
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let id = Self::runtime_id()?;
        if let Some(conn) = self.current(id) {
            return Ok(conn);
        }
        let seen = self.connect_failures.load(Relaxed);
        let trips = self.breaker.trips();
        let _gate = tokio::time::timeout(self.connect_timeout, self.connect_gate.lock())
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Timeout, "waiting for a connection"))?;
        if let Some(conn) = self.current(id) {
            return Ok(conn);
        }
        if self.connect_failures.load(Relaxed) != seen {
            return Err(StoreError::new(
                StoreErrorKind::Connection,
                "a connection attempt just failed",
            ));
        }
        // Not `allows()`: this call was admitted already (it may be the one
        // probe); it only gives up if the breaker opened while it waited.
        if self.breaker.trips() != trips {
            return Err(cooling_down());
        }
        match self.open_connection().await {
            Ok(conn) => {
                let mut conns = self.conns.write().unwrap_or_else(|e| e.into_inner());
                if conns.len() >= RUNTIMES_MAX {
                    conns.remove(0);
                }
                conns.push((id, conn.clone()));
                tracing::debug!(runtime = %id, "connected to redis");
                Ok(conn)
            }
            Err(e) => {
                self.connect_failures.fetch_add(1, Relaxed);
                self.breaker.failure();
                tracing::debug!(error = %e, "cannot connect to redis");
                Err(e)
            }
        }
    }

    /// Opens a connection on the current runtime, whose driver task then
    /// lives there.
    async fn open_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.connect_timeout + Duration::from_millis(50), connect).await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(store_error(&e)),
            Err(_) => Err(StoreError::new(
                StoreErrorKind::Timeout,
                format!("connecting took over {:?}", self.connect_timeout),
            )),
        }
    }

    /// Runs one blocking command, on a pooled connection with socket
    /// timeouts, behind the breaker.
    pub(crate) fn run_sync<T>(
        &self,
        command: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        if !self.breaker.allows() {
            return Err(cooling_down());
        }
        let pooled = self
            .sync_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match self.open_sync() {
                Ok(conn) => conn,
                Err(e) => {
                    self.breaker.failure();
                    return Err(store_error(&e));
                }
            },
        };
        match command(&mut conn) {
            Ok(value) => {
                self.breaker.success();
                let mut pool = self.sync_pool.lock().unwrap_or_else(|e| e.into_inner());
                if pool.len() < SYNC_POOL_MAX {
                    pool.push(conn);
                }
                Ok(value)
            }
            Err(e) => {
                if is_connection_fault(&e) {
                    self.breaker.failure();
                } else {
                    self.breaker.success();
                    self.sync_pool
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(conn);
                }
                Err(store_error(&e))
            }
        }
    }

    fn open_sync(&self) -> RedisResult<redis::Connection> {
        let conn = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        Ok(conn)
    }
}

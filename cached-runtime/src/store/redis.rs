//! The Redis store.
//!
//! Async calls share one multiplexed connection. It is opened on the
//! crate's own I/O runtime ([`crate::io`]), so its driver task outlives any
//! caller's runtime: a `#[tokio::test]` runtime shutting down does not break
//! the cache for the next one. Sync calls (cached `fn`s) use a small pool of
//! blocking connections with socket timeouts, and need no runtime at all.
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

pub(crate) struct RedisStore {
    client: redis::Client,
    timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
    conn: RwLock<Option<MultiplexedConnection>>,
    /// Serializes connection attempts: one task connects, the others wait.
    connect_gate: tokio::sync::Mutex<()>,
    /// Counts finished connection attempts, so that tasks which waited at
    /// the gate for an attempt that failed give up instead of retrying.
    connect_attempts: AtomicU64,
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
            conn: RwLock::new(None),
            connect_gate: tokio::sync::Mutex::new(()),
            connect_attempts: AtomicU64::new(0),
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

    fn drop_connection(&self) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(conn) = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(conn);
        }
        let seen = self.connect_attempts.load(Relaxed);
        let _gate = tokio::time::timeout(self.connect_timeout, self.connect_gate.lock())
            .await
            .map_err(|_| StoreError::new(StoreErrorKind::Timeout, "waiting for a connection"))?;
        if let Some(conn) = self.conn.read().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(conn);
        }
        if self.connect_attempts.load(Relaxed) != seen {
            return Err(StoreError::new(
                StoreErrorKind::Connection,
                "a connection attempt just failed",
            ));
        }
        if !self.breaker.allows() {
            return Err(cooling_down());
        }
        let result = self.open_connection().await;
        self.connect_attempts.fetch_add(1, Relaxed);
        match result {
            Ok(conn) => {
                *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                tracing::debug!("connected to redis");
                Ok(conn)
            }
            Err(e) => {
                self.breaker.failure();
                tracing::debug!(error = %e, "cannot connect to redis");
                Err(e)
            }
        }
    }

    async fn open_connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let client = self.client.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        // Opened on the crate's runtime: the connection's driver task lives
        // there, not on the caller's runtime which may shut down.
        let task = crate::io::handle().spawn(async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        });
        match tokio::time::timeout(self.connect_timeout + Duration::from_millis(50), task).await {
            Ok(Ok(Ok(conn))) => Ok(conn),
            Ok(Ok(Err(e))) => Err(store_error(&e)),
            Ok(Err(join)) => Err(StoreError::new(
                StoreErrorKind::Connection,
                join.to_string(),
            )),
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

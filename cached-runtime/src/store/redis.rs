//! The Redis store.
//!
//! Async calls share one multiplexed connection per tokio runtime, opened
//! on that runtime: its driver task runs beside the callers, so a request
//! costs no hop to another thread (measured: a dedicated I/O thread for
//! all connections cost ~20 µs per hit and capped throughput at what one
//! thread can parse). A runtime that shuts down takes its connection's
//! driver with it; the next runtime (each `#[tokio::test]` has one) has
//! another id and opens its own, so nothing is left silently broken; the
//! connections of runtimes that are gone are dropped when another is
//! opened, and live ones are kept (a server may run one per core). Sync
//! calls (cached `fn`s) use a small pool of blocking connections with
//! socket timeouts, and need no runtime at all.
//!
//! Every command runs under the configured timeout and behind a circuit
//! breaker; a connection that failed is dropped and reopened on demand
//! (a sync one with the whole idle pool: what closed it closed them too),
//! and the probe after a cooldown runs on a new connection.
//! The topology (one server, TLS, cluster, sentinel) is [`connect`]'s
//! business: the connections it hands out take the same commands.
//!
//! [`connect`]: super::connect

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult};

use super::breaker::{Admission, Breaker};
use super::connect::{AsyncConn, Backend, SyncConn};
use super::target::{self, Target};
use crate::config::Config;
use crate::error::{StoreError, StoreErrorKind};

/// Idle blocking connections kept for sync calls.
const SYNC_POOL_MAX: usize = 16;

/// Connections kept for live runtimes. A runtime that shut down loses its
/// connection at the next connect (see [`RuntimeConn::is_gone`]), so this
/// bounds only runtimes that are all alive and calling: servers run one
/// per worker thread (actix-web: one per core), so the bound must exceed
/// the cores of the largest common machines, or each call past it evicts
/// another worker's connection and reconnects (measured: 8 kept, 12
/// workers: a new connection for 9 calls in 10). Past 256 a process holds
/// that many sockets on Redis, whose default `maxclients` (10,000) is
/// shared by all its clients; a process with more live runtimes than that
/// pays reconnects for the least recently used ones.
const RUNTIMES_MAX: usize = 256;

/// One runtime's connection.
struct RuntimeConn {
    runtime: tokio::runtime::Id,
    conn: AsyncConn,
    opened: Instant,
    /// The [`PerRuntime::epoch`] of its last use: the least recently used
    /// is evicted when [`RUNTIMES_MAX`] binds. Written only when the epoch
    /// moved (a connection was opened), so a hit normally only reads it.
    used: AtomicU64,
    /// Closed once the runtime is gone: the receiver waits in a task on
    /// that runtime, which drops it when it shuts down. Dropping this ends
    /// the task.
    alive: tokio::sync::oneshot::Sender<()>,
}

impl RuntimeConn {
    /// A connection opened on the current runtime, with the task that
    /// tells when that runtime is gone.
    fn new(runtime: tokio::runtime::Id, conn: AsyncConn, epoch: u64) -> Self {
        let (alive, watched) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = watched.await;
        });
        Self {
            runtime,
            conn,
            opened: Instant::now(),
            used: AtomicU64::new(epoch),
            alive,
        }
    }

    /// Whether its runtime shut down (its driver task went with it).
    fn is_gone(&self) -> bool {
        self.alive.is_closed()
    }

    /// Marks it used in `epoch`; a store only when that changes anything,
    /// so that runtimes hitting their own connections do not write to a
    /// shared cache line on every call.
    fn touch(&self, epoch: u64) {
        if self.used.load(Relaxed) != epoch {
            self.used.store(epoch, Relaxed);
        }
    }
}

/// The connection of each runtime that made calls.
#[derive(Default)]
struct PerRuntime {
    conns: Vec<RuntimeConn>,
    /// Counts connections opened: the clock of [`RuntimeConn::used`]. A
    /// coarse one (uses between two connects are not ordered) that costs a
    /// hit no clock read and no write.
    epoch: u64,
}

impl PerRuntime {
    /// The connection of `runtime`, marked used.
    fn get(&self, runtime: tokio::runtime::Id) -> Option<AsyncConn> {
        let entry = self.conns.iter().find(|c| c.runtime == runtime)?;
        entry.touch(self.epoch);
        Some(entry.conn.clone())
    }

    /// Keeps `conn` for the current runtime `runtime`, first dropping the
    /// connections of runtimes that are gone and, if [`RUNTIMES_MAX`] still
    /// binds, the least recently used one (the oldest of a tie).
    fn insert(&mut self, runtime: tokio::runtime::Id, conn: AsyncConn) {
        self.conns.retain(|c| !c.is_gone());
        if self.conns.len() >= RUNTIMES_MAX {
            let lru = self
                .conns
                .iter()
                .enumerate()
                .min_by_key(|(_, c)| c.used.load(Relaxed))
                .map(|(i, _)| i);
            if let Some(i) = lru {
                self.conns.remove(i);
            }
        }
        self.epoch += 1;
        self.conns.push(RuntimeConn::new(runtime, conn, self.epoch));
    }
}

/// A cluster connection that fails is replaced at most this often.
const CLUSTER_RENEW_MIN: Duration = Duration::from_secs(1);

/// A connection to the Redis a [`Config`] names, whatever its topology,
/// with the cache's timeout and circuit breaker. Each cache (the default
/// one, each named cache, each [`crate::Cache`]) uses one; tools (such as a stats reader) open their own with
/// [`RedisStore::open`].
pub struct RedisStore {
    backend: Backend,
    target: Target,
    /// Kept out of error messages, as the URL's password is.
    sentinel_password: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    breaker: Breaker,
    conns: RwLock<PerRuntime>,
    /// Serializes each runtime's connection attempts: one of its tasks
    /// connects, the others wait. Per runtime, because a connection is:
    /// a runtime that stops being driven mid-connect (a `Runtime` kept for
    /// an occasional `block_on`) must not hold the others up.
    connect_gates: Mutex<Vec<(tokio::runtime::Id, Arc<tokio::sync::Mutex<()>>)>>,
    /// Counts failed connection attempts, so that tasks which waited at the
    /// gate while one failed give up instead of retrying at once.
    connect_failures: AtomicU64,
    /// Idle blocking connections, each with the count of master switches
    /// under which it was opened (see [`RedisStore::return_sync`]).
    sync_pool: Mutex<Vec<(SyncConn, u64)>>,
    /// Behind a sentinel, the master switches whose connections were
    /// dropped (see [`RedisStore::follow_switches`]).
    switches_seen: AtomicU64,
}

/// Whether an error says the connection (not the command) is broken. A
/// `READONLY` answer counts: the server was a master and has been demoted
/// (a sentinel failover), so a new connection must find the new master.
/// Redis before 7 reports a write refused inside a script as an `ERR`
/// that quotes the `READONLY` reply: that counts too. So do the answers of
/// a server or cluster that cannot serve now (`LOADING`, `CLUSTERDOWN`,
/// `MASTERDOWN`, `TRYAGAIN` once the client's own retries are spent):
/// calls then skip Redis while the breaker is open, instead of each
/// waiting for the same refusal.
fn is_connection_fault(e: &RedisError) -> bool {
    use redis::ServerErrorKind::{BusyLoading, ClusterDown, MasterDown, ReadOnly, TryAgain};
    match e.kind() {
        redis::ErrorKind::Server(ReadOnly | BusyLoading | ClusterDown | MasterDown | TryAgain) => {
            true
        }
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            e.detail().is_some_and(|detail| detail.contains("READONLY"))
        }
        redis::ErrorKind::Server(_) => false,
        // An error reply whose code the client has no name for (`OOM`
        // under `maxmemory`, a module's own): Redis answered, so reads may
        // still work; it is not a reason to open the breaker.
        redis::ErrorKind::Extension => false,
        _ => true,
    }
}

/// Whose connections a failed command drops.
#[derive(Clone, Copy)]
enum Runtimes {
    /// Every runtime's (a connection fault).
    All,
    /// The calling runtime's (no answer in time).
    Current,
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
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Opens (lazily: connections are made on first use; behind sentinels,
    /// following their master switches starts at once) the Redis that
    /// `config` names.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when the configuration names no Redis (the
    /// embedded store) or the TLS files cannot be read.
    pub fn open(config: &Config) -> Result<Self, crate::Error> {
        let url = config.redis_url.as_deref().ok_or_else(|| {
            crate::Error::Config("no redis_url: the embedded store is configured".into())
        })?;
        Self::new(url, config)
    }

    pub(crate) fn new(url: &str, config: &Config) -> Result<Self, crate::Error> {
        let target = target::parse(url).map_err(crate::Error::Config)?;
        let backend = Backend::new(&target, &config.tls, &config.sentinel_auth).map_err(|e| {
            crate::Error::Config(format!("redis_url {:?}: {e}", target::redact(url)))
        })?;
        Ok(Self {
            backend,
            target,
            sentinel_password: config.sentinel_auth.password.clone(),
            timeout: config.timeout,
            connect_timeout: config.connect_timeout,
            breaker: Breaker::new(config.breaker_threshold, config.breaker_cooldown),
            conns: RwLock::new(PerRuntime::default()),
            connect_gates: Mutex::new(Vec::new()),
            connect_failures: AtomicU64::new(0),
            sync_pool: Mutex::new(Vec::new()),
            switches_seen: AtomicU64::new(0),
        })
    }

    /// A [`StoreError`] for `e`, its message cleared of the password
    /// (defence in depth: the client's messages are not known to carry it).
    fn store_error(&self, e: &RedisError) -> StoreError {
        let kind = if e.is_timeout() {
            StoreErrorKind::Timeout
        } else if is_connection_fault(e) {
            StoreErrorKind::Connection
        } else {
            StoreErrorKind::Response
        };
        let mut message = e.to_string();
        for password in [&self.target.password, &self.sentinel_password] {
            if let Some(password) = password.as_deref().filter(|p| !p.is_empty()) {
                message = message.replace(password, "***");
            }
        }
        let error = StoreError::new(kind, message);
        // A refusal (`READONLY`, `CLUSTERDOWN`...) is an answer: the
        // command did not run, even if it counts as a connection fault.
        if matches!(
            e.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            error.not_run()
        } else {
            error
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.backend.is_cluster()
    }

    /// Where the invalidation channel's subscriber connects (a node of
    /// this Redis, whatever its topology).
    pub(crate) fn pubsub_source(&self) -> super::connect::PubSubSource {
        self.backend.pubsub_source()
    }

    /// Runs one async command against Redis, under the timeout and breaker.
    pub(crate) async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(AsyncConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.admit()?;
        // Nothing was sent when there is no connection: a write that fails
        // here cannot run later (see `StoreError::may_have_run`).
        let conn = self.connection().await.map_err(StoreError::not_run)?;
        let sent = Instant::now();
        match tokio::time::timeout(self.timeout, command(conn)).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                Ok(value)
            }
            Ok(Err(e)) => {
                if is_connection_fault(&e) {
                    self.drop_connection(sent, Runtimes::All);
                    self.breaker.failure();
                } else {
                    // An error reply is still an answer: a probe that gets
                    // one must close the breaker, not leave it half-open.
                    self.breaker.success();
                }
                Err(self.store_error(&e))
            }
            Err(_) => {
                // A server that stops answering keeps the socket open; a new
                // connection is the only way to find out when it is back.
                // Only this runtime's: a slow command (a large value, a
                // long script) breaks nothing for the others, and reopening
                // every connection would load a Redis that is slow already.
                self.drop_connection(sent, Runtimes::Current);
                self.breaker.failure();
                Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
        }
    }

    /// Starts the release `command` (a compare-and-delete, harmless when
    /// sent twice) without waiting for it, within the timeout: for a
    /// holder going away (a drop). It goes from the crate's own runtime,
    /// which always runs: the current one may not run it, or not to its
    /// end (a current-thread runtime runs its tasks only inside `block_on`,
    /// which may have returned for good; a runtime dropped next cancels
    /// it, and its connection's driver with it). Where the process may exit
    /// before that runtime gets to it, `blocking` runs here instead, within
    /// the timeout too: outside any runtime, and in a runtime shutting down
    /// (which cancels what is spawned on it at once, as a probe task
    /// tells).
    ///
    /// `command` is sent twice when the current runtime has a connection:
    /// on it as well as on the crate's own. A lock command the holder sent
    /// just before it was dropped, whose answer it never waited for, may
    /// still be on its way on that connection, and only a command queued
    /// behind it there is sure to reach Redis after it; the crate's own
    /// connection may overtake it, but still gets there if the caller's
    /// runtime stops driving its connection. (A lock command that timed
    /// out went on a connection given up since: nothing can be queued
    /// behind it any more, and its lock may stay for its lease.)
    pub(crate) fn release_soon<F, Fut>(self: &Arc<Self>, command: F, blocking: impl FnOnce(&Self))
    where
        F: Fn(AsyncConn) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<i64>> + Send + 'static,
    {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return blocking(self);
        };
        let started = Arc::new(AtomicBool::new(false));
        let probe = handle.spawn({
            let started = Arc::clone(&started);
            async move { started.store(true, Relaxed) }
        });
        // Finished without having started: cancelled as it was spawned.
        if probe.is_finished() && !started.load(Relaxed) {
            return blocking(self);
        }
        let callers_conn = self.current(handle.id());
        let store = Arc::clone(self);
        crate::io::handle().spawn(async move {
            let timeout = store.timeout;
            // Straight on the connection, past the breaker: a clean-up that
            // must go behind what the caller sent, even while the breaker
            // refuses new commands. Its outcome is not counted either.
            let sent_on_callers = callers_conn.map(&command);
            let on_callers_conn = async move {
                if let Some(sent) = sent_on_callers {
                    let _ = tokio::time::timeout(timeout, sent).await;
                }
            };
            // Side by side: neither waits for the other's timeout (the
            // caller's connection may not be driven any more).
            let ((), _) = tokio::join!(on_callers_conn, store.run(command));
        });
    }

    /// Asks the breaker whether a command may run now. The probe after a
    /// cooldown first forgets every connection kept from before: Redis may
    /// have closed them meanwhile (a restart, `CLIENT KILL`, a failover),
    /// and a probe that failed on one of them would cost another whole
    /// cooldown although Redis answers again.
    fn admit(&self) -> Result<(), StoreError> {
        match self.breaker.admit() {
            Admission::Closed => Ok(()),
            Admission::Probe => {
                self.forget_connections();
                Ok(())
            }
            Admission::Refused => Err(cooling_down()),
        }
    }

    /// Drops every kept connection, async and blocking: the next calls
    /// connect afresh.
    fn forget_connections(&self) {
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .clear();
        self.clear_sync_pool();
    }

    /// Behind a sentinel that switched master since the connections were
    /// kept: drops them, once per switch (whichever call sees it first),
    /// as they may be to the old master, which nothing else tells (see
    /// [`super::sentinel_watch`]). Elsewhere nothing: no atomic is read.
    fn follow_switches(&self) {
        let Some(switches) = self.backend.switches() else {
            return;
        };
        let (now, seen) = (switches.count(), self.switches_seen.load(Relaxed));
        if now != seen
            && self
                .switches_seen
                .compare_exchange(seen, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.forget_connections();
        }
    }

    /// Behind a sentinel, the master switches seen so far (0 elsewhere).
    fn switch_count(&self) -> u64 {
        self.backend.switches().map_or(0, |s| s.count())
    }

    /// Drops the idle blocking connections.
    fn clear_sync_pool(&self) {
        // Dropped outside the lock: closing a socket is a system call.
        let idle = std::mem::take(&mut *self.sync_pool.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
    }

    /// The current runtime's id; the caller checked that there is one.
    fn runtime_id() -> Result<tokio::runtime::Id, StoreError> {
        tokio::runtime::Handle::try_current()
            .map(|h| h.id())
            .map_err(|_| StoreError::new(StoreErrorKind::Connection, "not inside a tokio runtime"))
    }

    /// The connection kept for runtime `id`.
    fn current(&self, id: tokio::runtime::Id) -> Option<AsyncConn> {
        self.conns.read().unwrap_or_else(|e| e.into_inner()).get(id)
    }

    /// Drops the connections, of `runtimes`, opened before a command sent
    /// at `sent` found its connection broken or unanswered.
    fn drop_connection(&self, sent: Instant, runtimes: Runtimes) {
        // A cluster connection reconnects to failed nodes by itself, but it
        // learns the new slot map after a failover only from an error its
        // caller waits for, and callers here give up at `timeout` first.
        // A new connection reads the map from the seed nodes; under
        // repeated failures it is made at most every CLUSTER_RENEW_MIN.
        let keep = |opened: &Instant| self.is_cluster() && opened.elapsed() < CLUSTER_RENEW_MIN;
        // On a fault, every runtime's connection opened before the failed
        // command was sent goes, not only this runtime's: what broke this
        // one (a restart, a failover) broke them too, and each would
        // otherwise fail its runtime's next command, one failure per
        // runtime for the breaker to count, enough to open it although
        // Redis answers again. One opened since (another runtime's, after
        // a failure of its own) is newer than whatever broke this.
        let current = match runtimes {
            Runtimes::All => None,
            Runtimes::Current => match Self::runtime_id() {
                Ok(id) => Some(id),
                Err(_) => return,
            },
        };
        let mut per_runtime = self.conns.write().unwrap_or_else(|e| e.into_inner());
        per_runtime.conns.retain(|c| {
            c.opened > sent || keep(&c.opened) || current.is_some_and(|id| c.runtime != id)
        });
    }

    async fn connection(&self) -> Result<AsyncConn, StoreError> {
        let id = Self::runtime_id()?;
        self.follow_switches();
        if let Some(conn) = self.current(id) {
            return Ok(conn);
        }
        let seen = self.connect_failures.load(Relaxed);
        let trips = self.breaker.trips();
        let gate = self.connect_gate(id);
        let _gate = tokio::time::timeout(self.connect_timeout, gate.lock())
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
        // Not `admit()`: this call was admitted already (it may be the one
        // probe); it only gives up if the breaker opened while it waited.
        if self.breaker.trips() != trips {
            return Err(cooling_down());
        }
        let switches = self.switch_count();
        match self.open_connection().await {
            Ok(conn) => {
                let mut per_runtime = self.conns.write().unwrap_or_else(|e| e.into_inner());
                // Not kept if the sentinels switched master meanwhile: it
                // may be to the old one (used for this call only). Read
                // under the lock that emptying the connections after a
                // switch takes, so that one or the other sees it.
                if self.switch_count() == switches {
                    per_runtime.insert(id, conn.clone());
                }
                drop(per_runtime);
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

    /// The gate of runtime `id`'s connection attempts. Gates no task holds
    /// or waits at are dropped on the way (one is made again when needed),
    /// so only those in use are kept.
    fn connect_gate(&self, id: tokio::runtime::Id) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.connect_gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.retain(|(_, gate)| Arc::strong_count(gate) > 1);
        if let Some((_, gate)) = gates.iter().find(|(runtime, _)| *runtime == id) {
            return Arc::clone(gate);
        }
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        gates.push((id, Arc::clone(&gate)));
        gate
    }

    /// Opens a connection on the current runtime, whose driver task then
    /// lives there.
    async fn open_connection(&self) -> Result<AsyncConn, StoreError> {
        let connect = self.backend.connect(self.connect_timeout);
        // A sentinel target asks a sentinel first: two connects' worth.
        let limit = self
            .connect_timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_millis(50));
        match tokio::time::timeout(limit, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(self.store_error(&e)),
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
        command: impl FnOnce(&mut SyncConn) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.admit()?;
        // Idle connections carry the switch count they were opened under:
        // one from before a switch is dropped when taken, no emptying needed.
        let switches = self.switch_count();
        let started = Instant::now();
        let pooled = self.pooled_sync(switches);
        let (mut conn, allowed) = match pooled {
            Some(conn) => (conn, self.timeout),
            None => match self
                .backend
                .connect_sync(self.connect_timeout, self.timeout)
            {
                // A sentinel target connects twice (the sentinel, then
                // the master it names), as on the async side.
                Ok(conn) => (
                    conn,
                    self.timeout
                        .saturating_add(self.connect_timeout.saturating_mul(2)),
                ),
                Err(e) => {
                    self.breaker.failure();
                    return Err(self.store_error(&e).not_run());
                }
            },
        };
        match command(&mut conn) {
            // The socket's timeouts bound each read, not the command: a
            // server that answers a byte at a time holds the caller for as
            // long as it likes without one read timing out. Such an answer
            // is used, but counts against the breaker, which then spares
            // the next callers the wait. The connection is kept: it works,
            // and opening another costs a slow server's handshake too.
            Ok(value) if started.elapsed() > allowed => {
                tracing::debug!(
                    took = ?started.elapsed(),
                    "redis answered a blocking command past the timeout"
                );
                self.breaker.failure();
                self.return_sync(conn, switches);
                Ok(value)
            }
            Ok(value) => {
                self.breaker.success();
                self.return_sync(conn, switches);
                Ok(value)
            }
            Err(e) => {
                if is_connection_fault(&e) {
                    // Whatever closed this connection (a restart,
                    // `CLIENT KILL`, a failover) most likely closed the idle
                    // ones too: each would cost its caller a failure, and
                    // three in a row would open the breaker although Redis
                    // answers. The next calls connect afresh.
                    self.clear_sync_pool();
                    self.breaker.failure();
                } else {
                    self.breaker.success();
                    self.return_sync(conn, switches);
                }
                Err(self.store_error(&e))
            }
        }
    }

    /// Keeps a blocking connection that answered for the next sync call,
    /// up to [`SYNC_POOL_MAX`] idle ones.
    /// Kept with `switches`, the count of master switches read before the
    /// call took it, and only if no switch came since: it may be to the old
    /// master, and the emptying of the pool after a switch may have run
    /// while it was out.
    fn return_sync(&self, conn: SyncConn, switches: u64) {
        let mut pool = self.sync_pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < SYNC_POOL_MAX && self.switch_count() == switches {
            pool.push((conn, switches));
        }
    }

    /// An idle blocking connection opened under `switches` master switches
    /// (the count now); older ones are dropped on the way.
    fn pooled_sync(&self, switches: u64) -> Option<SyncConn> {
        let mut stale = Vec::new();
        let mut pool = self.sync_pool.lock().unwrap_or_else(|e| e.into_inner());
        let found = loop {
            match pool.pop() {
                Some((conn, opened)) if opened == switches => break Some(conn),
                Some(old) => stale.push(old),
                None => break None,
            }
        };
        drop(pool);
        // Closed outside the lock: closing a socket is a system call.
        drop(stale);
        found
    }
}

/// Where a walk over the keys of a Redis is ([`RedisStore::scan`]): on a
/// cluster, which master and its cursor; elsewhere, the one cursor.
#[derive(Debug, Default)]
pub struct ScanCursor {
    /// The masters of a cluster and its layout, learnt at the first step.
    masters: Option<(Vec<(String, u16)>, Layout)>,
    node: usize,
    cursor: u64,
    done: bool,
    /// Walks started over because the cluster's layout changed under one.
    restarts: u8,
}

/// A cluster's layout as a walk over its keys must find it unchanged at
/// its end: its masters, each with its own word (`CLUSTER NODES`, its
/// `myself` line) on its config epoch, role, slots and the slots it is
/// moving in or out. Each master is asked about itself, which it knows at
/// once, where another node learns it by gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// Sorted by address (older Redis lists them in no fixed order).
    masters: Vec<((String, u16), Vec<String>)>,
    /// Whether the slots the masters say they serve add up to those
    /// `CLUSTER SLOTS` gave them: the node that answered it may have an
    /// out-of-date view (a master missing from it is never walked).
    agreed: bool,
    /// Masters that serve no slot but import one: `CLUSTER SLOTS` leaves
    /// them out, and the client has no connection to them.
    unmapped: Vec<(String, u16)>,
}

impl Layout {
    /// The slots each master is moving in or out.
    fn moving(&self) -> impl Iterator<Item = (&(String, u16), u16)> {
        self.masters.iter().flat_map(|(master, own)| {
            moving_slots(own.iter().map(String::as_str))
                .into_iter()
                .map(move |slot| (master, slot))
        })
    }
}

/// How many times a walk over a cluster starts over when its layout
/// changed under it, before failing (a reshard in progress moves keys all
/// along).
const SCAN_RESTARTS: u8 = 2;

impl ScanCursor {
    /// A walk from the start.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether every key has been visited.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

impl RedisStore {
    /// One step of a walk over the keys matching the glob `pattern` with
    /// `SCAN` (never `KEYS`: Redis keeps serving other clients between
    /// steps); call until [`ScanCursor::is_done`]. `count` is the hint
    /// given to `SCAN`. On a cluster every master is walked in turn (a
    /// replica holds the same keys as its master). As with `SCAN`, a key
    /// present for the whole walk is returned at least once; keys written
    /// meanwhile may or may not be. On a cluster whose slots move during
    /// the walk (a reshard, a failover), the walk starts over (its keys may
    /// then come twice), at most twice; then the step fails. The keys of a
    /// slot being moved all along are listed again at the end, where they
    /// are then.
    ///
    /// ```no_run
    /// # async fn demo(config: &cached_runtime::Config) -> Result<(), cached_runtime::Error> {
    /// let store = cached_runtime::RedisStore::open(config)?;
    /// let mut cursor = cached_runtime::ScanCursor::new();
    /// while !cursor.is_done() {
    ///     for key in store.scan(&mut cursor, "cached:*:stats", 1000).await? {
    ///         println!("{key}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis fails; the cursor is left where it was, so
    /// the step can be retried. When the cluster's slots kept moving, the
    /// error says so and the cursor is back at the start.
    pub async fn scan(
        &self,
        cursor: &mut ScanCursor,
        pattern: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Keys that are not UTF-8 are nobody's this crate writes.
        let keys = self.scan_raw(cursor, pattern, count).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| String::from_utf8(k).ok())
            .collect())
    }

    /// [`RedisStore::scan`] with the keys as Redis sent them (a foreign key
    /// need not be UTF-8).
    async fn scan_raw(
        &self,
        cursor: &mut ScanCursor,
        pattern: &str,
        count: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if cursor.done {
            return Ok(Vec::new());
        }
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor.cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        if !self.is_cluster() {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .run(|mut c| async move { scan.query_async(&mut c).await })
                .await?;
            cursor.cursor = next;
            cursor.done = next == 0;
            return Ok(keys);
        }
        let (masters, layout) = match cursor.masters.take() {
            Some(known) => known,
            None => self.cluster_layout().await?,
        };
        let Some((host, port)) = masters.get(cursor.node).cloned() else {
            cursor.done = true;
            return Ok(Vec::new());
        };
        let nodes = masters.len();
        let unmapped = layout
            .unmapped
            .iter()
            .any(|(h, p)| *h == host && *p == port);
        cursor.masters = Some((masters, layout));
        let value = self.on_node(scan, (host, port), unmapped).await?;
        let (next, mut keys): (u64, Vec<Vec<u8>>) = redis::FromRedisValue::from_redis_value(value)
            .map_err(|e| StoreError::new(StoreErrorKind::Response, format!("SCAN: {e}")))?;
        if next == 0 && cursor.node + 1 >= nodes {
            // The last master is walked: the walk holds only if the
            // layout it started from held all along.
            let (_, now) = self.cluster_layout().await?;
            let held = cursor
                .masters
                .as_ref()
                .is_some_and(|(_, started)| *started == now);
            if !held || !now.agreed {
                if cursor.restarts >= SCAN_RESTARTS {
                    *cursor = ScanCursor::new();
                    return Err(StoreError::new(
                        StoreErrorKind::Moving,
                        "its slots kept moving during a walk over its keys (a reshard \
                         or a failover); try again once they are settled",
                    ));
                }
                tracing::debug!(
                    "the cluster's slots moved during a walk over its keys; walking again"
                );
                let restarts = cursor.restarts + 1;
                *cursor = ScanCursor::new();
                cursor.restarts = restarts;
                return Ok(keys);
            }
            // A slot being moved all along (a reshard in progress, or one
            // that stopped part-way) changes no layout, but its keys may
            // have gone from a master not walked yet to one walked already:
            // they are listed again where they are now.
            keys.extend(self.keys_of_moving_slots(&now, pattern).await?);
        }
        cursor.cursor = next;
        if next == 0 {
            cursor.node += 1;
            cursor.done = cursor.node >= nodes;
        }
        Ok(keys)
    }

    /// The masters of the cluster (`CLUSTER SLOTS`, in its order) and its
    /// [`Layout`].
    async fn cluster_layout(&self) -> Result<(Vec<(String, u16)>, Layout), StoreError> {
        let (mut masters, slots_given) = self.cluster_masters().await?;
        let mut own_lines = Vec::with_capacity(masters.len());
        // A master that serves no slot yet but imports one (a reshard onto
        // a new node) holds keys of it already, and `CLUSTER SLOTS` leaves
        // it out: found through the master moving the slot to it, which
        // knows it. Named as `CLUSTER SLOTS` names the others (a hostname
        // where it gives hostnames, else the address).
        let by_hostname = masters
            .iter()
            .any(|(host, _)| host.parse::<std::net::IpAddr>().is_err());
        let mut unmapped = Vec::new();
        let mut all_importers_found = true;
        for master in &masters {
            let nodes = self.cluster_nodes(master, false).await?;
            let own = own_line(&nodes);
            let importers = migration_targets(own.iter().copied());
            // One it cannot place (not met yet, failing) leaves the walk
            // unsure.
            match slotless_importers(&nodes, &importers, by_hostname) {
                Some(found) => unmapped.extend(found),
                None => all_importers_found = false,
            }
            own_lines.push((master.clone(), own.into_iter().map(str::to_owned).collect()));
        }
        unmapped.retain(|master| !masters.contains(master));
        unmapped.sort();
        unmapped.dedup();
        for master in &unmapped {
            let nodes = self.cluster_nodes(master, true).await?;
            let own: Vec<String> = own_line(&nodes).into_iter().map(str::to_owned).collect();
            own_lines.push((master.clone(), own));
        }
        masters.extend(unmapped.iter().cloned());
        let slots_said: u32 = own_lines
            .iter()
            .map(|(_, own)| served_slots(own.iter().map(String::as_str)))
            .sum();
        own_lines.sort();
        let layout = Layout {
            masters: own_lines,
            agreed: slots_said == slots_given && all_importers_found,
            unmapped,
        };
        Ok((masters, layout))
    }

    /// `CLUSTER NODES` as `master` answers it (`unmapped`: see
    /// [`RedisStore::on_node`]).
    async fn cluster_nodes(
        &self,
        master: &(String, u16),
        unmapped: bool,
    ) -> Result<String, StoreError> {
        let nodes = self
            .on_node(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                master.clone(),
                unmapped,
            )
            .await?;
        redis::FromRedisValue::from_redis_value(nodes)
            .map_err(|e| StoreError::new(StoreErrorKind::Response, format!("CLUSTER NODES: {e}")))
    }

    /// The keys matching `pattern` in the slots that `layout` shows moving,
    /// on the masters moving them (either side may hold some).
    async fn keys_of_moving_slots(
        &self,
        layout: &Layout,
        pattern: &str,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut found = Vec::new();
        for (master, slot) in layout.moving() {
            let unmapped = layout.unmapped.contains(master);
            let in_slot = |command: redis::Cmd| self.on_node(command, master.clone(), unmapped);
            let count = in_slot(
                redis::cmd("CLUSTER")
                    .arg("COUNTKEYSINSLOT")
                    .arg(slot)
                    .clone(),
            )
            .await?;
            let count: u64 = redis::FromRedisValue::from_redis_value(count).map_err(|e| {
                StoreError::new(StoreErrorKind::Response, format!("COUNTKEYSINSLOT: {e}"))
            })?;
            if count == 0 {
                continue;
            }
            // Some slack for keys written meanwhile.
            let keys = in_slot(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(count + 1000)
                    .clone(),
            )
            .await?;
            let keys: Vec<Vec<u8>> =
                redis::FromRedisValue::from_redis_value(keys).map_err(|e| {
                    StoreError::new(StoreErrorKind::Response, format!("GETKEYSINSLOT: {e}"))
                })?;
            found.extend(
                keys.into_iter()
                    .filter(|key| glob_matches(pattern.as_bytes(), key)),
            );
        }
        Ok(found)
    }

    /// Runs `cmd` on the cluster node at `address`, under the timeout. An
    /// `unmapped` master (one the client's slot map leaves out) gets a
    /// connection of its own for it, outside the breaker: asking the
    /// client for it would have it relearn the whole cluster, and a node
    /// being added that does not answer yet says nothing about the others.
    async fn on_node(
        &self,
        cmd: redis::Cmd,
        address: (String, u16),
        unmapped: bool,
    ) -> Result<redis::Value, StoreError> {
        if !unmapped {
            return self
                .run(|c| async move { c.route_to(cmd, Some(address)).await })
                .await;
        }
        let Some(client) = self.backend.unmapped_node(&address.0, address.1) else {
            return Err(StoreError::new(
                StoreErrorKind::Connection,
                "not a cluster: no node to reach by its address",
            ));
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let answer =
            tokio::time::timeout(self.connect_timeout.saturating_add(self.timeout), async {
                let mut conn = client?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                cmd.query_async::<redis::Value>(&mut conn).await
            })
            .await;
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.store_error(&e)),
            Err(_) => Err(StoreError::new(
                StoreErrorKind::Timeout,
                format!(
                    "no answer within {:?} from {}:{}, a master importing its first slot",
                    self.connect_timeout.saturating_add(self.timeout),
                    address.0,
                    address.1
                ),
            )),
        }
    }

    /// The address of every master of the cluster, from `CLUSTER SLOTS`,
    /// and how many slots it gave them.
    async fn cluster_masters(&self) -> Result<(Vec<(String, u16)>, u32), StoreError> {
        let slots = self
            .run(|c| async move {
                c.route_to(redis::cmd("CLUSTER").arg("SLOTS").clone(), None)
                    .await
            })
            .await?;
        let seed = self.target.nodes.first().map(|(host, _)| host.as_str());
        masters_in(slots, seed).map_err(|(kind, message)| StoreError::new(kind, message))
    }

    /// Runs `command` and returns its answer, under the cache's timeout and
    /// breaker; on a cluster it goes to the master of its key's slot.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when Redis fails or the answer is not a `T`.
    pub async fn query<T: redis::FromRedisValue + Send>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let command = command.clone();
        self.run(|mut c| async move { command.query_async(&mut c).await })
            .await
    }
}

/// Keys asked of `SCAN` per step (a hint to Redis, not a limit).
const SCAN_COUNT: usize = 1_000;

/// `text` with the glob metacharacters of `SCAN MATCH` escaped, so it
/// matches itself only. Redis' matcher treats `*`, `?`, `[` and `\`
/// specially (and `]` closes a class); `^` and `-` mean something only
/// inside a class, which an escaped `[` never opens.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A walk over the keys matching a `SCAN MATCH` pattern, batch by batch:
/// never `KEYS`, never one long blocking command, so Redis keeps serving
/// other clients meanwhile. Every key-enumerating feature (prefix
/// invalidation, the stats reader) goes through here. A key may come twice
/// (`SCAN` guarantees only that a key present throughout is seen).
pub(crate) struct KeyScan<'a> {
    store: &'a RedisStore,
    pattern: String,
    cursor: ScanCursor,
}

/// Masters of a cluster by address (host, port).
pub(crate) type Masters = Vec<(String, u16)>;

/// The address of every master in a `CLUSTER SLOTS` answer, in the
/// order of their first slot. An empty host is "the node that answered"
/// (one that has never met another: a one-node cluster, whose only node is
/// the seed, `seed`). `?` (an unknown name) is kept: reaching it fails
/// loudly rather than reaching the wrong node.
pub(crate) fn masters_in(
    slots: redis::Value,
    seed: Option<&str>,
) -> Result<(Masters, u32), (StoreErrorKind, &'static str)> {
    let redis::Value::Array(ranges) = slots else {
        return Err((StoreErrorKind::Response, "CLUSTER SLOTS: unexpected answer"));
    };
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut slots_given = 0;
    for range in ranges {
        // [start, end, [host, port, id, ...], replicas...]
        let redis::Value::Array(fields) = range else {
            continue;
        };
        let Some(redis::Value::Array(master)) = fields.get(2) else {
            continue;
        };
        let slot = |i: usize| -> Option<u32> {
            fields
                .get(i)
                .and_then(|v| redis::FromRedisValue::from_redis_value_ref(v).ok())
        };
        if let (Some(first), Some(last)) = (slot(0), slot(1)) {
            slots_given += last.saturating_sub(first) + 1;
        }
        let host: Option<String> = master
            .first()
            .and_then(|v| redis::FromRedisValue::from_redis_value_ref(v).ok());
        let port: Option<u16> = master
            .get(1)
            .and_then(|v| redis::FromRedisValue::from_redis_value_ref(v).ok());
        if let (Some(host), Some(port)) = (host, port) {
            let host = match (host.is_empty(), seed) {
                (true, Some(seed)) => seed.to_owned(),
                _ => host,
            };
            if !masters.contains(&(host.clone(), port)) {
                masters.push((host, port));
            }
        }
    }
    if masters.is_empty() {
        // No slot is served: the cluster is down, not empty.
        return Err((
            StoreErrorKind::Connection,
            "CLUSTER SLOTS: the cluster serves no slot",
        ));
    }
    Ok((masters, slots_given))
}

/// What the node answering `CLUSTER NODES` says of itself: its flags
/// (role), its config epoch (raised when it takes slots) and the slots it
/// serves or is moving, from its `myself` line (the other fields are its
/// id, address, master, ping times and link state).
fn own_line(cluster_nodes: &str) -> Vec<&str> {
    let Some(own) = cluster_nodes.lines().find(|line| {
        line.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
    }) else {
        return Vec::new();
    };
    let fields: Vec<&str> = own.split(' ').collect();
    [fields.get(2), fields.get(6)]
        .into_iter()
        .flatten()
        .chain(fields.iter().skip(8))
        .copied()
        .collect()
}

/// The ids of the nodes a master's [`own_line`] moves slots to
/// (`[slot->-id]`).
fn migration_targets<'a>(own: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    own.into_iter()
        .filter_map(|field| field.strip_prefix('[')?.strip_suffix(']'))
        .filter_map(|field| field.split_once("->-").map(|(_, id)| id))
        .collect()
}

/// Where the masters of `ids` stand in a `CLUSTER NODES` answer: the
/// address of each that serves no slot (its announced hostname if
/// `by_hostname` and it has one), while one that serves slots needs none
/// (`CLUSTER SLOTS` lists it); `None` if one of them is missing, failing,
/// disconnected or not a master.
fn slotless_importers(
    cluster_nodes: &str,
    ids: &[&str],
    by_hostname: bool,
) -> Option<Vec<(String, u16)>> {
    let mut found = Vec::new();
    for id in ids {
        let fields: Vec<&str> = cluster_nodes
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|fields| fields.first() == Some(id))?;
        if serves_slots(&fields) {
            continue;
        }
        let flags: Vec<&str> = fields.get(2)?.split(',').collect();
        let usable = flags.contains(&"master")
            && !flags
                .iter()
                .any(|f| f.starts_with("fail") || matches!(*f, "handshake" | "noaddr"))
            && fields.get(7) == Some(&"connected");
        if !usable {
            return None;
        }
        // `host:port@bus[,hostname]`
        let (address, hostname) = match fields.get(1)?.split_once(',') {
            Some((address, hostname)) => (address, Some(hostname)),
            None => (*fields.get(1)?, None),
        };
        let (host, port) = address.split('@').next()?.rsplit_once(':')?;
        let port = port.parse().ok().filter(|port| *port != 0)?;
        let host = match hostname {
            Some(hostname) if by_hostname && !hostname.is_empty() => hostname,
            _ => host,
        };
        if host.is_empty() {
            return None;
        }
        found.push((host.to_owned(), port));
    }
    Some(found)
}

/// Whether a `CLUSTER NODES` line lists slots (not only slots moving).
fn serves_slots(fields: &[&str]) -> bool {
    fields.iter().skip(8).any(|f| !f.starts_with('['))
}

/// The slots a node's [`own_line`] moves out (`[slot->-id]`) or in
/// (`[slot-<-id]`).
fn moving_slots<'a>(own: impl IntoIterator<Item = &'a str>) -> Vec<u16> {
    own.into_iter()
        .filter_map(|field| field.strip_prefix('['))
        .filter_map(|field| field.split('-').next()?.parse().ok())
        .collect()
}

/// How many slots a node's [`own_line`] serves (`first-last` or `slot`).
fn served_slots<'a>(own: impl IntoIterator<Item = &'a str>) -> u32 {
    own.into_iter()
        .skip(2)
        .filter(|field| !field.starts_with('['))
        .filter_map(|field| match field.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?);
                // A range no cluster has (reversed, past the last slot)
                // counts nothing rather than overflowing.
                (first <= last && last < 16_384).then(|| last + 1 - first)
            }
            None => field.parse::<u32>().ok().map(|_| 1),
        })
        .sum()
}

/// Whether `key` matches the glob `pattern` as `SCAN MATCH` does: `*`,
/// `?`, classes (`[abc]`, `[^a-z]`) and `\` escapes.
fn glob_matches(pattern: &[u8], key: &[u8]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((b'*', rest)) => (0..=key.len()).any(|skip| glob_matches(rest, &key[skip..])),
        Some((b'?', rest)) => !key.is_empty() && glob_matches(rest, &key[1..]),
        Some((b'[', rest)) => {
            let Some((&c, key_rest)) = key.split_first() else {
                return false;
            };
            let (negated, mut class) = match rest.split_first() {
                Some((b'^', class)) => (true, class),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    [] => return false,
                    [b']', after @ ..] => {
                        return matched != negated && glob_matches(after, key_rest);
                    }
                    [b'\\', x, after @ ..] => {
                        matched |= *x == c;
                        class = after;
                    }
                    [low, b'-', high, after @ ..] if *high != b']' => {
                        let (low, high) = if low <= high {
                            (*low, *high)
                        } else {
                            (*high, *low)
                        };
                        matched |= (low..=high).contains(&c);
                        class = after;
                    }
                    [x, after @ ..] => {
                        matched |= *x == c;
                        class = after;
                    }
                }
            }
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            key.first() == rest.first() && glob_matches(&rest[1..], &key[1..])
        }
        Some((c, rest)) => key.first() == Some(c) && glob_matches(rest, &key[1..]),
    }
}

impl RedisStore {
    /// Starts a walk over the keys matching `pattern` (a glob: escape
    /// literal parts with [`glob_escape`]); on a cluster, over every master.
    pub(crate) fn scan_keys(&self, pattern: String) -> KeyScan<'_> {
        KeyScan {
            store: self,
            pattern,
            cursor: ScanCursor::new(),
        }
    }
}

impl KeyScan<'_> {
    /// The next batch of keys (possibly empty), or `None` once the walk is
    /// over. Keys are bytes: a foreign key need not be UTF-8.
    pub(crate) async fn next_batch(&mut self) -> Result<Option<Vec<Vec<u8>>>, StoreError> {
        if self.cursor.is_done() {
            return Ok(None);
        }
        let keys = self
            .store
            .scan_raw(&mut self.cursor, &self.pattern, SCAN_COUNT)
            .await?;
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::{
        glob_escape, glob_matches, is_connection_fault, migration_targets, moving_slots, own_line,
        served_slots, slotless_importers, RedisStore,
    };

    /// The client-side matcher agrees with `SCAN MATCH` on the patterns
    /// the library sends and on classes.
    #[test]
    fn glob_matches_as_scan_match_does() {
        let cases: &[(&str, &str, bool)] = &[
            ("ns:*:stats", "ns:user:stats", true),
            ("ns:*:stats", "ns:user:stats:x", false),
            ("ns:user*", "ns:user", true),
            ("ns:user*", "ns:use", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a\\*c", "a*c", true),
            ("a\\*c", "abc", false),
            ("[abc]x", "bx", true),
            ("[^abc]x", "bx", false),
            ("[a-c]x", "cx", true),
            ("[a-c]x", "dx", false),
            ("k[\\]]", "k]", true),
        ];
        for &(pattern, key, expected) in cases {
            assert_eq!(
                glob_matches(pattern.as_bytes(), key.as_bytes()),
                expected,
                "{pattern} against {key}"
            );
        }
        let escaped = glob_escape("we*ird[ns]?\\");
        assert!(glob_matches(
            format!("{escaped}:*").as_bytes(),
            b"we*ird[ns]?\\:k"
        ));
        assert!(!glob_matches(
            format!("{escaped}:*").as_bytes(),
            b"weXird[ns]?\\:k"
        ));
    }

    /// Only the answering node's own line says what it moves, and a slot
    /// moving in counts as much as one moving out.
    #[test]
    fn moving_slots_come_from_the_nodes_own_line() {
        let nodes = "\
07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922 [11->-e7d1]
e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 [93->-292f] [77-<-67ed] 5462
";
        assert_eq!(
            own_line(nodes),
            [
                "myself,master",
                "1",
                "0-5460",
                "[93->-292f]",
                "[77-<-67ed]",
                "5462"
            ]
        );
        assert_eq!(moving_slots(own_line(nodes)), [93, 77]);
        assert_eq!(served_slots(own_line(nodes)), 5462);
        let all = "a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191 [93->-c3]\n\
                   b2 10.0.0.2:7000@17000 master - 0 0 2 connected 8192-16383\n\
                   c3 10.0.0.3:7000@17000,c.example master - 0 0 0 connected\n\
                   c4 10.0.0.4:7000@17000 master - 0 0 0 connected\n\
                   d4 10.0.0.4:7000@17000 master,fail - 0 0 0 disconnected\n\
                   d5 10.0.0.5:7000@17000 master - 0 0 0 disconnected\n\
                   e5 :0@0 master,noaddr - 0 0 0 disconnected\n\
                   f6 10.0.0.6:7000@17000 slave a1 0 0 1 connected\n";
        let own = own_line(all);
        assert_eq!(migration_targets(own.iter().copied()), ["c3"]);
        // b2 serves slots: placed, with no address needed.
        assert_eq!(
            slotless_importers(all, &["b2", "c3", "c4"], true),
            Some(vec![
                ("c.example".to_owned(), 7000),
                ("10.0.0.4".to_owned(), 7000)
            ])
        );
        assert_eq!(
            slotless_importers(all, &["c3"], false),
            Some(vec![("10.0.0.3".to_owned(), 7000)])
        );
        for unplaced in ["d4", "d5", "e5", "f6", "zz"] {
            assert_eq!(
                slotless_importers(all, &["c3", unplaced], true),
                None,
                "{unplaced}"
            );
        }
        let garbled = ["id", "host:1@2", "10-3", "0-4294967295", "5"];
        assert_eq!(served_slots(garbled), 1);
        let settled = "e7d1 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460\n";
        assert!(moving_slots(own_line(settled)).is_empty());
        assert!(own_line("").is_empty());
    }

    /// A command that failed while connecting was never sent: it cannot
    /// run later, so no one waits for its effects (or its message).
    #[tokio::test]
    async fn a_failed_connect_sends_nothing() {
        // A port nothing listens on: the connect is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let config = crate::Config::builder()
            .redis_url(format!("redis://127.0.0.1:{port}/0"))
            .build()
            .unwrap();
        let store = RedisStore::open(&config).unwrap();
        let async_error = store
            .run(|mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await })
            .await
            .unwrap_err();
        assert!(!async_error.may_have_run(), "{async_error}");
        let sync_error = store
            .run_sync(|c| redis::cmd("PING").query::<String>(c))
            .unwrap_err();
        assert!(!sync_error.may_have_run(), "{sync_error}");
    }

    #[test]
    fn error_replies_are_answers_not_connection_faults() {
        let oom = redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'".into()),
        );
        assert!(
            !is_connection_fault(&oom),
            "a write refused under maxmemory"
        );
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_connection_fault(&io));
        let wrong_type = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "Error running script (call to f_0): @user_script:2: WRONGTYPE Operation against a key holding the wrong kind of value".to_owned(),
        ));
        assert!(!is_connection_fault(&wrong_type), "an answer");
        for (kind, reply) in [
            (redis::ServerErrorKind::ClusterDown, "The cluster is down"),
            (
                redis::ServerErrorKind::TryAgain,
                "Multiple keys request during rehashing of slot",
            ),
            (
                redis::ServerErrorKind::MasterDown,
                "Link with MASTER is down",
            ),
            (
                redis::ServerErrorKind::BusyLoading,
                "Redis is loading the dataset in memory",
            ),
        ] {
            let unavailable =
                redis::RedisError::from((redis::ErrorKind::Server(kind), "", reply.to_owned()));
            assert!(
                is_connection_fault(&unavailable),
                "{kind:?} cannot serve now"
            );
        }
    }

    #[test]
    fn a_demoted_master_is_a_connection_fault_inside_a_script_too() {
        let plain = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(is_connection_fault(&plain));
        // Redis 5 and 6 wrap the refusal of a script's write in an `ERR`.
        let in_script = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "Error running script (call to f_0): @user_script:2: @user_script: 2: -READONLY You can't write against a read only replica.".to_owned(),
        ));
        assert!(is_connection_fault(&in_script));
    }

    #[test]
    fn glob_metacharacters_are_escaped_and_nothing_else() {
        assert_eq!(glob_escape("a*b?c[d]e\\f"), "a\\*b\\?c\\[d\\]e\\\\f");
        // Special only inside a class, which is never opened.
        assert_eq!(glob_escape("a^b-c:d"), "a^b-c:d");
        assert_eq!(glob_escape("ключ"), "ключ");
    }
}

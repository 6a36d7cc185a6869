//! Invalidation driven by PostgreSQL `LISTEN`/`NOTIFY` (feature `postgres`).
//!
//! A trigger on the tables behind your cached functions sends a
//! notification when a row changes; [`listen`] keeps one connection
//! listening on that channel and removes the matching entries from Redis.
//!
//! # Setting it up
//!
//! 1. Install the trigger function shipped in the repository,
//!    `sql/cached_redis_notify.sql` (`psql -f sql/cached_redis_notify.sql`,
//!    or as a migration), and attach it to each table:
//!
//!    ```sql
//!    CREATE TRIGGER users_cache AFTER INSERT OR UPDATE OR DELETE ON users
//!        FOR EACH ROW EXECUTE FUNCTION cached_redis_notify('cache_invalidation', 'user', 'id');
//!    ```
//!
//!    The trigger arguments are the channel, the prefix of the cached
//!    function, then the columns whose values are the function's key
//!    arguments, in parameter order. Changing the row with `id = 42` sends
//!    `{"prefix":"user","args":[42]}` on `cache_invalidation`.
//!
//! 2. Start a listener once per process, after [`crate::init`], and keep
//!    its handle (dropping it stops the listener):
//!
//!    ```rust,ignore
//!    use cached_redis::cached;
//!
//!    #[cached(prefix = "user", skip = "db")]
//!    async fn user(db: &tokio_postgres::Client, id: i64) -> Option<User> { ... }
//!
//!    cached_redis::init(cached_redis::Config::from_env()?)?;
//!    // Optional: makes `user` known to this process now, so that an event
//!    // removes exactly one entry even before the first call (see below).
//!    let _ = user_cache_key(0);
//!    let listener = cached_redis::postgres::listen(
//!        "host=db.internal user=app dbname=app application_name=cache-listener",
//!        "cache_invalidation",
//!    )?;
//!    listener.wait_listening().await; // optional: LISTEN is active from here on
//!    ```
//!
//! # Payloads
//!
//! | payload | does |
//! | --- | --- |
//! | `{"prefix":"user","args":[42]}` | [`crate::invalidate_args`]`("user", [42])`: the one entry of `user(…, 42)` |
//! | `{"prefix":"user"}` (or `"args"` absent / `null`) | [`crate::invalidate_prefix`]`("user")`: every entry of the prefix |
//! | `user` (plain text: anything not starting with `{`, `"` or `[`, even `42` or `null`) | the same as `{"prefix":"user"}` |
//! | anything else (bad JSON, no `prefix`, a prefix with `:` or whitespace) | logged at `warn` and ignored |
//!
//! `args` is a JSON array of the key arguments in parameter order, each
//! written the way `serde_json` serializes the Rust argument (`42` for an
//! `i64`, `"alice"` for a `&str`/`String`, `null` for `None`, an object for
//! a struct): the key is the hash of that JSON. Extra fields are ignored.
//!
//! When `args` cannot be mapped to keys in this process (no function with
//! that prefix has been called or keyed here yet, or `args` is not an
//! array), the whole prefix is invalidated instead (logged at `debug`): a
//! little more recomputation, never a stale entry. Calling each function's
//! `*_cache_key` companion once at start-up avoids those prefix-wide
//! removals.
//!
//! # Guarantees and limits
//!
//! - An entry is gone within about one Redis round trip after the
//!   notification reaches this process, which PostgreSQL does when the
//!   changing transaction commits (notifications of a rolled-back
//!   transaction are never sent).
//! - Invalidating runs beside listening: a slow or failing Redis never
//!   holds up reading notifications or reconnecting to PostgreSQL.
//! - An invalidation that Redis refuses or leaves unanswered (Redis down,
//!   the store's circuit breaker cooling down, an error reply, a cluster
//!   walk that could not finish) is kept and tried again (after 100 ms, the
//!   pause doubling to 5 s) until Redis takes it. A notification whose
//!   prefix owes one already joins it; the others are applied at once (a
//!   Redis that is down refuses them at once, through its breaker), and a
//!   prefix that keeps failing does not hold up the others. What is owed
//!   is merged by prefix (a call that cannot be keyed here owes the whole
//!   prefix): up to 1024 calls' entries per prefix, past which the whole
//!   prefix is owed, and up to 1024 prefixes (past that, a new prefix's
//!   invalidation is logged at `error` and dropped). A prefix's first
//!   failure is logged at `warn`, then about once a minute while anything
//!   is owed, and the settling of everything owed at `info`;
//!   [`ListenerHandle::owed_prefixes`] tells how many prefixes wait (a
//!   figure to alert on). What is still owed when the handle is dropped is
//!   given up, logged at `warn`: those entries stay until their TTL.
//! - A call that read the old row *before* the commit and stores its result
//!   *after* the invalidation puts the old value back (the classic
//!   cache-aside race); the entry's TTL bounds how long it can stay.
//! - Notifications sent while the listener is disconnected are lost:
//!   PostgreSQL delivers a notification only to sessions listening at
//!   commit time and keeps no backlog. The listener reconnects by itself
//!   (backoff from 100 ms doubling to 5 s, back to 100 ms only after a
//!   session that listened for 5 s) and listens again, but it
//!   invalidates nothing on reconnect: it cannot know what changed, and
//!   dropping whole prefixes on every network blip would stampede the
//!   database. Entries changed during the gap stay until their TTL. If that
//!   is not acceptable, invalidate the prefixes you care about on each
//!   reconnect yourself, with [`ListenerHandle::wait_sessions`]:
//!
//!   ```rust,ignore
//!   let mut seen = listener.sessions();
//!   loop {
//!       listener.wait_sessions(seen + 1).await;
//!       seen = listener.sessions();
//!       // Redis may be away too (the same network blip): try until it
//!       // takes it, rather than end the loop at the first error.
//!       while let Err(e) = cached_redis::invalidate_prefix("user").await {
//!           tracing::warn!(error = %e, "flush after a reconnect failed; retrying");
//!           tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//!       }
//!   }
//!   ```
//!
//! - Notifications are acted upon one at a time, in commit order (those
//!   of a prefix that owes an invalidation later, with it), each costing
//!   a Redis round trip: a statement changing 100 000 rows sends
//!   100 000 of them. For tables changed in bulk, a `FOR EACH STATEMENT`
//!   trigger (which sends the prefix only) is the better fit.
//! - A connection that silently stops answering (a dead network path) is
//!   detected by a health check every 30 seconds and replaced. Connecting
//!   (login and TLS included) gets `connect_timeout` per address tried plus
//!   10 seconds, and `LISTEN` 10 seconds: a server that accepts and then
//!   says nothing is retried like one that refuses.
//! - The listener needs a session of its own on the server: connect to
//!   PostgreSQL directly or through a pooler in session mode. In
//!   transaction mode (PgBouncer's `pool_mode = transaction`) `LISTEN` is
//!   accepted, but the server session behind it is handed to other clients
//!   after the statement, and no notification ever reaches the listener.
//! - `listen` connects without TLS ([`tokio_postgres::NoTls`]; `sslmode=require`
//!   fails); use [`listen_with_tls`] with a TLS connector (e.g.
//!   `postgres-native-tls`, `tokio-postgres-rustls`) otherwise.
//! - One listener per channel per process is enough; each process needs its
//!   own only if it has its own in-process state to drop (Redis entries are
//!   shared, so one listener anywhere removes them for everyone). Generic
//!   functions are the exception: a listener removes the instantiations
//!   its own process has called (see [`crate::invalidate_args`]), so run
//!   one in every process that calls instantiations others do not.
//!
//! # Other databases
//!
//! The same two functions serve any change feed. A MongoDB change stream
//! consumer:
//!
//! ```rust,ignore
//! let mut stream = users.watch().await?; // mongodb crate
//! while let Some(event) = stream.next().await.transpose()? {
//!     // The document key of a change is `{ "_id": ... }`.
//!     if let Some(key) = event.document_key {
//!         let id = key.get_i64("_id")?;
//!         cached_redis::invalidate_args("user", &serde_json::json!([id])).await?;
//!     }
//! }
//! ```
//!
//! A DynamoDB Streams consumer (a Lambda function, or a KCL worker's record
//! processor), with the table's stream view including the keys:
//!
//! ```rust,ignore
//! async fn handler(event: LambdaEvent<aws_lambda_events::dynamodb::Event>) -> Result<(), Error> {
//!     for record in event.payload.records {
//!         match record.change.keys.get("id") {
//!             Some(AttributeValue::N(id)) => {
//!                 let id: i64 = id.parse()?;
//!                 cached_redis::invalidate_args("user", &serde_json::json!([id])).await?;
//!             }
//!             _ => {
//!                 cached_redis::invalidate_prefix("user").await?;
//!             }
//!         }
//!     }
//!     Ok(())
//! }
//! ```
//!
//! As here, such a consumer should fall back to `invalidate_prefix` when it
//! cannot map an event to arguments, and when `invalidate_args` returns
//! [`Error::Key`] (the function is not known in that process).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::poll_fn;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant, MissedTickBehavior};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Config as PgConfig, NoTls, Socket};

use crate::error::Error;

/// The `tokio-postgres` this module is built with, for naming its types
/// (TLS connectors, [`tokio_postgres::Config`]) at the same version.
pub use tokio_postgres;

/// First pause before reconnecting.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A session that listened at least this long worked: the next attempt
/// starts again from [`BACKOFF_START`]. A shorter one (a pooler or a job
/// ending sessions as soon as they start) lets the pause go on growing,
/// so that the listener does not reconnect ten times a second.
const SESSION_WORKED: Duration = BACKOFF_MAX;
/// `connect_timeout` when the connection string sets none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `application_name` when the connection string sets none.
const DEFAULT_APPLICATION_NAME: &str = "cached-redis-listener";
/// How often an idle connection is checked.
const HEALTH_INTERVAL: Duration = Duration::from_secs(30);
/// How long the check may take before the connection counts as dead.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls whose invalidation a prefix may owe before the whole prefix is
/// owed instead.
const OWED_CALLS_MAX: usize = 1024;
/// Prefixes that may owe an invalidation at once.
const OWED_PREFIXES_MAX: usize = 1024;
/// Longest channel name PostgreSQL accepts (`NAMEDATALEN - 1`).
const MAX_CHANNEL_BYTES: usize = 63;
/// Characters of a payload quoted in a log line.
const LOG_PAYLOAD_CHARS: usize = 200;
/// A failing reconnection is logged at `warn` on the first attempt and
/// every this many attempts after (about once a minute), `debug` between.
const WARN_EVERY_ATTEMPTS: u32 = 12;

/// Starts listening on `channel` of the PostgreSQL described by `config`
/// (a [`tokio_postgres::Config`] string: `host=... port=... user=...
/// password=... dbname=...` or a `postgresql://` URL) and invalidating
/// what its notifications name (see the [module docs](self) for the
/// payloads).
///
/// The listener runs on the crate's own I/O runtime, so this needs no
/// runtime of the caller's and may be called from sync code. It connects in
/// the background and keeps going until the handle is dropped or
/// [`ListenerHandle::stop`]ped: a failed connection or a dropped one is
/// retried with backoff (100 ms doubling to 5 s, back to 100 ms only after
/// a session that listened for 5 s), then `LISTEN` runs again.
///
/// `channel` is used exactly as given (quoted), so it must equal the first
/// argument of `pg_notify` (or the trigger's first argument), case included.
/// Without `application_name` in `config` the session is named
/// `cached-redis-listener`; without `connect_timeout`, 5 seconds.
///
/// Call [`crate::init`] first: the first notification otherwise initializes
/// the cache from the environment. Called inside [`crate::Cache::scope`] or
/// [`crate::Cache::in_scope`], the listener invalidates in that cache
/// instead (and keeps it alive while it runs), as the calls of that scope
/// would.
///
/// ```no_run
/// # fn main() -> Result<(), cached_runtime::Error> {
/// let listener = cached_runtime::postgres::listen(
///     "host=127.0.0.1 user=app dbname=app",
///     "cache_invalidation",
/// )?;
/// // ... serve; the listener stops when `listener` is dropped.
/// # let _ = listener; Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Config`] when `config` does not parse or `channel` is empty,
/// longer than 63 bytes or contains a NUL character. Connection failures
/// are not errors: they are logged and retried.
pub fn listen(config: &str, channel: &str) -> Result<ListenerHandle, Error> {
    listen_with_tls(config, channel, NoTls)
}

/// [`listen`] over TLS: `tls` is a `tokio-postgres` TLS connector, such as
/// `postgres_native_tls::MakeTlsConnector` or
/// `tokio_postgres_rustls::MakeRustlsConnect`. It is cloned for every
/// connection.
///
/// # Errors
///
/// As [`listen`].
pub fn listen_with_tls<T>(config: &str, channel: &str, tls: T) -> Result<ListenerHandle, Error>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut pg: PgConfig = config
        .parse()
        .map_err(|e| Error::Config(format!("invalid PostgreSQL connection string: {e}")))?;
    validate_channel(channel)?;
    if pg.get_application_name().is_none() {
        pg.application_name(DEFAULT_APPLICATION_NAME);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let (state_tx, state_rx) = watch::channel(State::default());
    let listener = Listener {
        pg,
        channel: channel.to_owned(),
        listen_sql: format!("LISTEN {}", quote_ident(channel)),
        tls,
        state: state_tx,
    };
    // Started inside `Cache::scope`/`in_scope`, it invalidates in that
    // cache, which it keeps alive while it runs.
    let task = match crate::cache::current() {
        Some(cache) => crate::io::handle().spawn(async move { cache.scope(listener.run()).await }),
        None => crate::io::handle().spawn(listener.run()),
    };
    Ok(ListenerHandle {
        task: Some(task),
        state: state_rx,
        channel: channel.to_owned(),
    })
}

/// A running listener (see [`listen`]). Dropping it stops the listener and
/// closes its connection; [`ListenerHandle::detach`] lets it run for the
/// rest of the process instead.
#[must_use = "dropping the handle stops the listener"]
pub struct ListenerHandle {
    /// `None` once detached.
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<State>,
    channel: String,
}

impl ListenerHandle {
    /// The channel listened on.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Whether `LISTEN` is active right now (false while connecting or
    /// reconnecting, and once the listener task has ended).
    pub fn is_listening(&self) -> bool {
        self.state.borrow().listening
    }

    /// How many prefixes owe an invalidation that Redis refused or left
    /// unanswered, kept to be tried again (see the [module docs](self)): 0
    /// when every notification received so far has been applied. Above 0
    /// for long, Redis keeps failing this listener; those entries may be
    /// served stale meanwhile.
    pub fn owed_prefixes(&self) -> usize {
        self.state.borrow().owed_prefixes
    }

    /// How many times `LISTEN` has become active: 1 after the first
    /// connection, 2 after the first reconnection, and so on.
    pub fn sessions(&self) -> u64 {
        self.state.borrow().sessions
    }

    /// Resolves once `LISTEN` is active: every notification committed from
    /// then on (while the connection lasts) is acted upon. Immediately when
    /// it already is. Returns `false` only if the listener task has ended
    /// (it never does by itself), `true` otherwise.
    pub async fn wait_listening(&self) -> bool {
        self.wait_sessions(1).await
    }

    /// Resolves once `LISTEN` has become active at least `n` times and is
    /// active now: after noting [`ListenerHandle::sessions`] as `s`,
    /// `wait_sessions(s + 1)` waits for the next reconnection. Returns
    /// `false` only if the listener task has ended, `true` otherwise.
    pub async fn wait_sessions(&self, n: u64) -> bool {
        let mut state = self.state.clone();
        let reached = state.wait_for(|s| s.listening && s.sessions >= n).await;
        reached.is_ok()
    }

    /// Stops the listener and closes its connection (as dropping the handle
    /// does).
    pub fn stop(self) {
        drop(self);
    }

    /// Lets the listener run for the rest of the process, without a handle.
    pub fn detach(mut self) {
        self.task = None;
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let owed = self.state.borrow().owed_prefixes;
            if owed > 0 {
                tracing::warn!(
                    channel = %self.channel, prefixes = owed,
                    "cached-redis listener stopped with invalidations Redis has not taken yet; \
                     they are given up and those entries stay until their TTL"
                );
            } else {
                tracing::debug!(channel = %self.channel, "cached-redis listener stopped");
            }
        }
    }
}

impl fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = *self.state.borrow();
        f.debug_struct("ListenerHandle")
            .field("channel", &self.channel)
            .field("listening", &state.listening)
            .field("sessions", &state.sessions)
            .field("owed_prefixes", &state.owed_prefixes)
            .finish()
    }
}

/// What the handle can see of the listener.
#[derive(Debug, Clone, Copy, Default)]
struct State {
    listening: bool,
    sessions: u64,
    owed_prefixes: usize,
}

/// The background task's settings.
struct Listener<T> {
    pg: PgConfig,
    channel: String,
    listen_sql: String,
    tls: T,
    state: watch::Sender<State>,
}

impl<T> Drop for Listener<T> {
    /// The task ends only when it is aborted (the handle dropped) or, were
    /// it ever to, by a panic: either way nothing listens any more, which
    /// the handle must not keep reporting.
    fn drop(&mut self) {
        self.state.send_modify(|s| s.listening = false);
    }
}

/// Why a session ended.
enum Ended {
    Connect(tokio_postgres::Error),
    Listen(tokio_postgres::Error),
    Lost(Option<tokio_postgres::Error>),
    Unhealthy(Option<tokio_postgres::Error>),
    /// A step that got no answer within this time: connecting (which
    /// `connect_timeout` bounds only up to the TCP connect) or `LISTEN`.
    Unanswered(&'static str, Duration),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Connect(e) => write!(f, "cannot connect: {e}"),
            Ended::Listen(e) => write!(f, "LISTEN failed: {e}"),
            Ended::Lost(Some(e)) => write!(f, "connection lost: {e}"),
            Ended::Lost(None) => write!(f, "connection closed by the server"),
            Ended::Unhealthy(Some(e)) => write!(f, "health check failed: {e}"),
            Ended::Unhealthy(None) => {
                write!(f, "health check unanswered for {HEALTH_TIMEOUT:?}")
            }
            Ended::Unanswered(what, limit) => write!(f, "{what} unanswered for {limit:?}"),
        }
    }
}

impl<T> Listener<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// Sessions one after the other, forever.
    /// Listens and invalidates side by side, in this one task (so in the
    /// scope it was started in): a slow or failing Redis never holds up
    /// reading notifications or reconnecting to PostgreSQL, which keeps no
    /// backlog for a session that is not listening.
    async fn run(self) {
        let (payloads, received) = mpsc::unbounded_channel();
        tokio::join!(
            self.listen_forever(payloads),
            invalidate_forever(received, &self.state)
        );
    }

    /// Sessions one after the other, forever, each passing the payloads of
    /// its notifications on to `payloads`.
    async fn listen_forever(&self, payloads: mpsc::UnboundedSender<String>) {
        let mut backoff = BACKOFF_START;
        let mut failures = 0u32;
        loop {
            let mut listened = None;
            let Err(ended) = self.session(&mut listened, &payloads).await;
            self.state.send_modify(|s| s.listening = false);
            if listened.is_some_and(|at| at.elapsed() >= SESSION_WORKED) {
                // A session that worked: the next try comes quickly.
                backoff = BACKOFF_START;
                failures = 0;
            }
            failures += 1;
            let retry_ms = backoff.as_millis() as u64;
            if listened.is_some() || failures % WARN_EVERY_ATTEMPTS == 1 {
                tracing::warn!(
                    channel = %self.channel, error = %ended, retry_ms, attempt = failures,
                    "cached-redis listener disconnected; notifications sent until it listens again are lost"
                );
            } else {
                tracing::debug!(
                    channel = %self.channel, error = %ended, retry_ms, attempt = failures,
                    "cached-redis listener still disconnected"
                );
            }
            sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// How many addresses a connection may try, each for up to
    /// `connect_timeout`: a host name counts each address it resolves to
    /// (a lookup that fails or takes longer than `per_address` counts 1).
    async fn addresses(&self, per_address: Duration) -> u32 {
        let pg = &self.pg;
        let mut count = 0u32;
        for (i, host) in pg.get_hosts().iter().enumerate() {
            let port = pg
                .get_ports()
                .get(i)
                .or(pg.get_ports().first())
                .copied()
                .unwrap_or(5432);
            count = count.saturating_add(match host {
                tokio_postgres::config::Host::Tcp(name) if pg.get_hostaddrs().get(i).is_none() => {
                    let lookup = tokio::net::lookup_host((name.as_str(), port));
                    match timeout(per_address, lookup).await {
                        Ok(Ok(found)) => u32::try_from(found.count()).unwrap_or(u32::MAX).max(1),
                        _ => 1,
                    }
                }
                _ => 1,
            });
        }
        count.max(1)
    }

    /// One connection: connect, `LISTEN`, act on notifications until it
    /// fails. Sets `listened` to when `LISTEN` became active.
    async fn session(
        &self,
        listened: &mut Option<Instant>,
        payloads: &mpsc::UnboundedSender<String>,
    ) -> Result<Infallible, Ended> {
        // `connect_timeout` bounds each address's TCP connect, not the
        // startup and login (nor a TLS handshake) after it: a server or
        // proxy that accepts and then says nothing would hold the listener
        // for good. So the whole is bounded too, by as many connect
        // timeouts as addresses may be tried, plus time to log in.
        let per_address = self
            .pg
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let connecting = per_address
            .saturating_mul(self.addresses(per_address).await)
            .saturating_add(HEALTH_TIMEOUT);
        let (client, mut connection) = timeout(connecting, self.pg.connect(self.tls.clone()))
            .await
            .map_err(|_| Ended::Unanswered("connecting", connecting))?
            .map_err(Ended::Connect)?;
        // The connection is driven by its own task, so that the client's
        // requests (LISTEN, health checks) progress while notifications
        // are being acted upon here.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _driver = AbortOnDrop(tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if tx.send(Ok(n)).is_err() {
                            return;
                        }
                    }
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        tracing::debug!(
                            severity = notice.severity(),
                            message = notice.message(),
                            "PostgreSQL notice on the cached-redis listener"
                        );
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                    None => return,
                }
            }
        }));
        timeout(HEALTH_TIMEOUT, client.batch_execute(&self.listen_sql))
            .await
            .map_err(|_| Ended::Unanswered("LISTEN", HEALTH_TIMEOUT))?
            .map_err(Ended::Listen)?;
        *listened = Some(Instant::now());
        self.state.send_modify(|s| {
            s.listening = true;
            s.sessions += 1;
        });
        tracing::info!(channel = %self.channel, "cached-redis listener listening");

        let mut health =
            tokio::time::interval_at(Instant::now() + HEALTH_INTERVAL, HEALTH_INTERVAL);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Notifications first: those already received are applied
                // before a health check can end the session (`select!`
                // would otherwise pick among ready branches at random and
                // drop what is queued).
                biased;
                message = rx.recv() => match message {
                    Some(Ok(notification)) => {
                        let _ = payloads.send(notification.payload().to_owned());
                    }
                    Some(Err(e)) => return Err(Ended::Lost(Some(e))),
                    None => return Err(Ended::Lost(None)),
                },
                _ = health.tick() => {
                    let unhealthy = match timeout(HEALTH_TIMEOUT, client.check_connection()).await {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => Ended::Unhealthy(Some(e)),
                        Err(_) => Ended::Unhealthy(None),
                    };
                    // What arrived during the check is applied too.
                    while let Ok(Ok(notification)) = rx.try_recv() {
                        let _ = payloads.send(notification.payload().to_owned());
                    }
                    return Err(unhealthy);
                }
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a payload asks for.
#[derive(Debug, PartialEq)]
struct Event {
    prefix: String,
    args: Args,
}

/// The `args` of a payload.
#[derive(Debug, PartialEq)]
enum Args {
    /// Absent or `null`: the whole prefix.
    None,
    /// An array: one call's entry.
    List(serde_json::Value),
    /// Present but not an array: the whole prefix, with a warning.
    Malformed,
}

/// Reads a notification payload; `Err` says why it is ignored.
fn parse_payload(payload: &str) -> Result<Event, String> {
    let text = payload.trim();
    if text.is_empty() {
        return Err("empty payload".into());
    }
    if !text.starts_with(['{', '"', '[']) {
        // Plain text: a prefix.
        check_prefix(text)?;
        return Ok(Event {
            prefix: text.to_owned(),
            args: Args::None,
        });
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let (prefix, args) = match value {
        serde_json::Value::String(prefix) => (prefix, Args::None),
        serde_json::Value::Object(mut object) => {
            let prefix = match object.remove("prefix") {
                Some(serde_json::Value::String(prefix)) => prefix,
                Some(_) => return Err("`prefix` is not a string".into()),
                None => return Err("no `prefix` field".into()),
            };
            let args = match object.remove("args") {
                None | Some(serde_json::Value::Null) => Args::None,
                Some(list @ serde_json::Value::Array(_)) => Args::List(list),
                Some(_) => Args::Malformed,
            };
            (prefix, args)
        }
        _ => return Err("JSON that is neither an object nor a string".into()),
    };
    check_prefix(&prefix)?;
    Ok(Event { prefix, args })
}

/// The rules of the attribute's `prefix` option.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        Err("empty prefix".into())
    } else if prefix.contains(':') {
        Err(format!("prefix {prefix:?} contains `:`"))
    } else if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!(
            "prefix {prefix:?} contains whitespace or control characters"
        ))
    } else {
        Ok(())
    }
}

/// What a notification asks to remove.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    /// Every entry of the prefix.
    Whole,
    /// The entry of one call (its key arguments, a JSON array).
    Call(serde_json::Value),
}

/// Reads a notification payload into a prefix and what to remove of it;
/// `None` (logged) for one it cannot read.
fn target_of(payload: &str) -> Option<(String, Target)> {
    let event = match parse_payload(payload) {
        Ok(event) => event,
        Err(reason) => {
            tracing::warn!(
                payload = %shorten(payload), reason,
                "cached-redis listener: ignoring a notification it cannot read"
            );
            return None;
        }
    };
    let target = match event.args {
        Args::List(args) => Target::Call(args),
        Args::None => Target::Whole,
        Args::Malformed => {
            tracing::warn!(
                payload = %shorten(payload),
                "cached-redis listener: `args` is not a JSON array; invalidating the whole prefix"
            );
            Target::Whole
        }
    };
    Some((event.prefix, target))
}

/// What [`apply`] removed.
#[derive(Debug, PartialEq)]
enum Removed {
    /// The entry of the call.
    Call,
    /// Every entry of the prefix (asked for, or for want of a key).
    Whole,
}

/// A removal Redis refused or left unanswered.
struct Failed {
    /// What is still to remove: the whole prefix when a call could not be
    /// keyed here.
    owed: Target,
    error: crate::error::StoreError,
}

/// Removes `target`'s entries of `prefix`. `Err` when Redis refused or did
/// not answer (to be tried again); any other failure is logged and done
/// with.
async fn apply(prefix: &str, target: &Target) -> Result<Removed, Failed> {
    if let Target::Call(args) = target {
        match crate::invalidate::invalidate_args(prefix, args).await {
            Ok(removed) => {
                tracing::debug!(prefix, %args, removed, "invalidated by notification");
                return Ok(Removed::Call);
            }
            Err(Error::Key(reason)) => tracing::debug!(
                prefix, %args, reason,
                "arguments not mappable to a key in this process; invalidating the whole prefix"
            ),
            Err(Error::Store(error)) => {
                return Err(Failed {
                    owed: target.clone(),
                    error,
                })
            }
            Err(e) => {
                tracing::error!(
                    prefix, %args, error = %e,
                    "cached-redis listener: invalidation failed; the entry stays until its TTL"
                );
                return Ok(Removed::Call);
            }
        }
    }
    match crate::invalidate::invalidate_prefix(prefix).await {
        Ok(removed) => tracing::debug!(prefix, removed, "prefix invalidated by notification"),
        Err(Error::Store(error)) => {
            return Err(Failed {
                owed: Target::Whole,
                error,
            })
        }
        Err(e) => tracing::error!(
            prefix, error = %e,
            "cached-redis listener: prefix invalidation failed; entries stay until their TTL"
        ),
    }
    Ok(Removed::Whole)
}

/// Applies the payloads of `received` as they come, keeping what Redis
/// fails and trying it again when due, until the listener stops; `state`
/// tells the handle how many prefixes owe.
async fn invalidate_forever(
    mut received: mpsc::UnboundedReceiver<String>,
    state: &watch::Sender<State>,
) {
    let mut owed = Owed::default();
    loop {
        tokio::select! {
            // Retries first: a flood of notifications does not keep what
            // is owed waiting (each round moves the next try on by 100 ms
            // at least, so this cannot spin).
            biased;
            () = owed.due(), if owed.is_owing() => owed.settle().await,
            payload = received.recv() => match payload {
                Some(payload) => owed.take_in(&payload).await,
                None => return,
            },
        }
        let owed_prefixes = owed.prefixes.len();
        state.send_if_modified(|s| {
            let changed = s.owed_prefixes != owed_prefixes;
            s.owed_prefixes = owed_prefixes;
            changed
        });
    }
}

/// Invalidations that Redis refused or left unanswered, kept until it
/// takes them, merged by prefix so that an outage costs memory by prefix,
/// not by notification (see the module docs for the bounds).
struct Owed {
    prefixes: BTreeMap<String, Owing>,
    /// The pause before the next try, doubling while tries fail.
    pause: Duration,
    /// When to try again; `None` when nothing is owed.
    next: Option<Instant>,
    /// Rounds of tries in a row that left something owed.
    rounds_failed: u32,
}

/// What one prefix owes.
#[derive(Debug, PartialEq)]
enum Owing {
    Whole,
    /// At most [`OWED_CALLS_MAX`] calls' entries.
    Calls(Vec<serde_json::Value>),
}

impl Default for Owed {
    fn default() -> Self {
        Self {
            prefixes: BTreeMap::new(),
            pause: BACKOFF_START,
            next: None,
            rounds_failed: 0,
        }
    }
}

impl Owed {
    fn is_owing(&self) -> bool {
        self.next.is_some()
    }

    /// Ready when the next try is due (never when nothing is owed).
    async fn due(&self) {
        match self.next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Acts on a notification: at once, unless its prefix owes an
    /// invalidation already, in which case it joins it. (Another prefix's
    /// failure says nothing of this one's: it may live in another cache,
    /// on another Redis; and a Redis that is down is refused at once by
    /// its breaker.)
    async fn take_in(&mut self, payload: &str) {
        let Some((prefix, target)) = target_of(payload) else {
            return;
        };
        if self.prefixes.contains_key(&prefix) {
            self.owe(prefix, target);
            return;
        }
        if let Err(failed) = apply(&prefix, &target).await {
            tracing::warn!(
                prefix, error = %failed.error,
                "cached-redis listener: Redis failed an invalidation; it is kept and tried \
                 again until Redis takes it"
            );
            self.owe(prefix, failed.owed);
        }
    }

    /// Adds `target` of `prefix` to what is owed.
    fn owe(&mut self, prefix: String, target: Target) {
        if !self.prefixes.contains_key(&prefix) && self.prefixes.len() >= OWED_PREFIXES_MAX {
            tracing::error!(
                prefix,
                "cached-redis listener: too many prefixes owe an invalidation; this one is \
                 dropped and its entries stay until their TTL"
            );
            return;
        }
        let owing = self
            .prefixes
            .entry(prefix)
            .or_insert_with(|| Owing::Calls(Vec::new()));
        let whole = match (&mut *owing, target) {
            (Owing::Whole, _) | (_, Target::Whole) => true,
            (Owing::Calls(calls), Target::Call(args)) => {
                if !calls.contains(&args) {
                    calls.push(args);
                }
                calls.len() > OWED_CALLS_MAX
            }
        };
        if whole {
            *owing = Owing::Whole;
        }
        self.next
            .get_or_insert_with(|| Instant::now() + BACKOFF_START);
    }

    /// Tries everything owed, prefix by prefix: a prefix that fails keeps
    /// what it has left, and the others go on. What is left is tried again
    /// after a longer pause.
    async fn settle(&mut self) {
        for (prefix, owing) in std::mem::take(&mut self.prefixes) {
            let targets: Vec<Target> = match owing {
                Owing::Whole => vec![Target::Whole],
                Owing::Calls(calls) => calls.into_iter().map(Target::Call).collect(),
            };
            let mut targets = targets.into_iter();
            while let Some(target) = targets.next() {
                match apply(&prefix, &target).await {
                    // Every entry of the prefix is gone: its calls' too.
                    Ok(Removed::Whole) => break,
                    Ok(Removed::Call) => {}
                    Err(failed) => {
                        tracing::debug!(
                            prefix, error = %failed.error,
                            "an owed invalidation failed again"
                        );
                        self.owe(prefix.clone(), failed.owed);
                        for target in targets {
                            self.owe(prefix.clone(), target);
                        }
                        break;
                    }
                }
            }
        }
        if self.prefixes.is_empty() {
            tracing::info!("cached-redis listener: every owed invalidation is done");
            self.pause = BACKOFF_START;
            self.next = None;
            self.rounds_failed = 0;
        } else {
            self.next = Some(Instant::now() + self.pause);
            self.pause = (self.pause * 2).min(BACKOFF_MAX);
            self.rounds_failed += 1;
            // Said again now and then (about once a minute at the longest
            // pause): an invalidation Redis keeps refusing (an ACL, a
            // renamed command) is retried for good.
            if self.rounds_failed % WARN_EVERY_ATTEMPTS == 0 {
                tracing::warn!(
                    prefixes = self.prefixes.len(),
                    rounds = self.rounds_failed,
                    "cached-redis listener: invalidations still owed; Redis keeps failing them"
                );
            }
        }
    }
}

/// `payload` cut for a log line.
fn shorten(payload: &str) -> String {
    match payload.char_indices().nth(LOG_PAYLOAD_CHARS) {
        Some((end, _)) => format!("{}…", &payload[..end]),
        None => payload.to_owned(),
    }
}

/// Checks what PostgreSQL accepts as a channel name.
fn validate_channel(channel: &str) -> Result<(), Error> {
    if channel.is_empty() {
        return Err(Error::Config("the channel name is empty".into()));
    }
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(Error::Config(format!(
            "the channel name {channel:?} is longer than {MAX_CHANNEL_BYTES} bytes"
        )));
    }
    if channel.contains('\0') {
        return Err(Error::Config(
            "the channel name contains a NUL character".into(),
        ));
    }
    Ok(())
}

/// `ident` as a quoted SQL identifier: inside double quotes, with each
/// double quote doubled, so that nothing in it is read as SQL and its case
/// is kept.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(prefix: &str, args: Args) -> Result<Event, String> {
        Ok(Event {
            prefix: prefix.into(),
            args,
        })
    }

    /// A task that ends while it listens (aborted, its runtime gone, or a
    /// panic) leaves a handle that no longer says it listens.
    #[test]
    fn a_listener_whose_task_ended_is_not_listening() {
        let listening = State {
            listening: true,
            sessions: 1,
            owed_prefixes: 0,
        };
        let (state, seen) = watch::channel(listening);
        let listener = Listener {
            pg: "host=127.0.0.1 port=1".parse().unwrap(),
            channel: "c".into(),
            listen_sql: "LISTEN c".into(),
            tls: NoTls,
            state,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Never polled: the task ends while the state says it listens.
        drop(runtime.spawn(listener.run()));
        drop(runtime);
        let handle = ListenerHandle {
            task: None,
            state: seen,
            channel: "c".into(),
        };
        assert!(!handle.is_listening());
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!waiter.block_on(handle.wait_listening()));
    }

    #[test]
    fn payloads() {
        assert_eq!(
            parse_payload(r#"{"prefix":"user","args":[42]}"#),
            event("user", Args::List(json!([42])))
        );
        assert_eq!(
            parse_payload(r#" {"args": [1, "a"], "prefix": "user", "table": "t"} "#),
            event("user", Args::List(json!([1, "a"])))
        );
        assert_eq!(
            parse_payload(r#"{"prefix":"user"}"#),
            event("user", Args::None)
        );
        assert_eq!(
            parse_payload(r#"{"prefix":"user","args":null}"#),
            event("user", Args::None)
        );
        assert_eq!(
            parse_payload(r#"{"prefix":"user","args":42}"#),
            event("user", Args::Malformed)
        );
        assert_eq!(parse_payload("user"), event("user", Args::None));
        assert_eq!(
            parse_payload("my_app.db.user\n"),
            event("my_app.db.user", Args::None)
        );
        assert_eq!(parse_payload(r#""user""#), event("user", Args::None));
        // Plain text is a prefix even where it reads as JSON: `prefix =
        // "42"` is a prefix the attribute accepts.
        assert_eq!(parse_payload("42"), event("42", Args::None));
        assert_eq!(parse_payload("null"), event("null", Args::None));
    }

    #[test]
    fn garbage_is_refused() {
        for payload in [
            "",
            "  ",
            "{",
            r#"{"prefix":"#,
            r#"{"args":[1]}"#,
            r#"{"prefix":3}"#,
            r#"{"prefix":""}"#,
            r#"{"prefix":"a:b"}"#,
            "a:b",
            "two words",
            "\"unterminated",
            "[1, 2]",
        ] {
            assert!(parse_payload(payload).is_err(), "{payload:?} accepted");
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("cache"), "\"cache\"");
        assert_eq!(quote_ident("Mixed Case"), "\"Mixed Case\"");
        assert_eq!(
            quote_ident("x\"; DROP TABLE users; --"),
            "\"x\"\"; DROP TABLE users; --\""
        );
    }

    #[test]
    fn channel_names_are_checked() {
        assert!(validate_channel("cache_invalidation").is_ok());
        assert!(validate_channel(&"c".repeat(63)).is_ok());
        assert!(validate_channel(&"c".repeat(64)).is_err());
        assert!(validate_channel("").is_err());
        assert!(validate_channel("a\0b").is_err());
    }

    #[test]
    fn bad_connection_strings_are_config_errors() {
        assert!(matches!(
            listen("host=localhost port=notaport", "c"),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            listen("host=localhost", ""),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn long_payloads_are_shortened_for_logs() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(500);
        assert_eq!(shorten(&long).chars().count(), LOG_PAYLOAD_CHARS + 1);
    }

    #[test]
    fn owed_invalidations_merge_by_prefix() {
        let mut owed = Owed::default();
        assert!(!owed.is_owing());
        owed.owe("user".into(), Target::Call(json!([1])));
        owed.owe("user".into(), Target::Call(json!([2])));
        owed.owe("user".into(), Target::Call(json!([1])));
        owed.owe("page".into(), Target::Whole);
        owed.owe("page".into(), Target::Call(json!([3])));
        assert!(owed.is_owing());
        assert_eq!(
            owed.prefixes["user"],
            Owing::Calls(vec![json!([1]), json!([2])])
        );
        assert_eq!(
            owed.prefixes["page"],
            Owing::Whole,
            "the whole prefix covers its calls"
        );
        owed.owe("user".into(), Target::Whole);
        assert_eq!(owed.prefixes["user"], Owing::Whole);
    }

    #[test]
    fn owed_invalidations_are_bounded() {
        let mut owed = Owed::default();
        for i in 0..OWED_CALLS_MAX {
            owed.owe("user".into(), Target::Call(json!([i])));
        }
        assert!(matches!(&owed.prefixes["user"], Owing::Calls(c) if c.len() == OWED_CALLS_MAX));
        owed.owe("user".into(), Target::Call(json!([-1])));
        assert_eq!(
            owed.prefixes["user"],
            Owing::Whole,
            "too many calls: the whole prefix"
        );

        for i in 1..OWED_PREFIXES_MAX {
            owed.owe(format!("p{i}"), Target::Whole);
        }
        assert_eq!(owed.prefixes.len(), OWED_PREFIXES_MAX);
        owed.owe("one_too_many".into(), Target::Whole);
        assert_eq!(owed.prefixes.len(), OWED_PREFIXES_MAX, "dropped, logged");
        assert!(!owed.prefixes.contains_key("one_too_many"));
        owed.owe("p1".into(), Target::Call(json!([1])));
        assert_eq!(
            owed.prefixes["p1"],
            Owing::Whole,
            "a prefix owing already still merges"
        );
    }
}

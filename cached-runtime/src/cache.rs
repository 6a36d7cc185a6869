//! A cache as a value ([`Cache`]): built from a [`Config`] without
//! installing anything, used for a scope of code in place of the default
//! cache, dropped with its background work. The scope is a thread-local
//! set around each poll (or closure), as `tracing`'s
//! `dispatcher::with_default` and `Instrument::with_subscriber` do; a
//! global flag keeps the hit path of a program that never enters a scope
//! at one relaxed load more.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::Value;

use crate::config::Config;
use crate::engine::Engine;
use crate::error::Error;
use crate::stats::StatsSnapshot;

/// Whether any thread ever entered a scope: until then no call looks at
/// the thread-local.
static ENTERED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The cache of the innermost scope this thread is in.
    static CURRENT: RefCell<Option<Arc<Engine>>> = const { RefCell::new(None) };
}

/// The cache of the scope the current call runs in, if any.
#[inline]
pub(crate) fn scoped() -> Option<Arc<Engine>> {
    if !ENTERED.load(Relaxed) {
        return None;
    }
    CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// The cache of the scope the caller is in, as a value: for work the
/// crate starts on a caller's behalf and runs elsewhere (a listener task).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn current() -> Option<Cache> {
    scoped().map(Cache)
}

/// A cache as a value: its own store, namespace, counters and invalidation
/// channel, like a named cache, but installed nowhere. Code run under
/// [`Cache::scope`] (async) or [`Cache::in_scope`] (sync) uses it wherever
/// it would use the default cache; the process-wide operations have
/// methods acting on it alone. Cheap to clone (one reference count).
///
/// When the last clone is dropped, the cache goes with its background
/// work: its interval flusher and its invalidation subscriber stop, its
/// connections close, its functions' derived settings and `local` levels
/// are freed, and the counts not written yet are sent in one last flush
/// on the crate's background thread (call [`Cache::flush_stats`] first to
/// know they went through). The flush at process exit covers installed
/// caches only: flush a `Cache` that lives until the end yourself.
///
/// Useful for tests that need several configurations in one process, or
/// a component with its own store. The README's "Scoped caches" shows it
/// with `#[cached]` functions.
///
/// ```
/// use cached_runtime::{Cache, Config};
///
/// let cache = Cache::new(Config::builder().embedded().build().unwrap()).unwrap();
/// let other = cache.clone();
/// // Cached functions called in the closure use `cache`.
/// assert_eq!(other.in_scope(|| 2 + 2), 4);
/// ```
#[derive(Clone, Debug)]
pub struct Cache(Arc<Engine>);

impl Cache {
    /// A cache for `config`. Nothing is installed and no connection is
    /// made yet (the first call opens them); with Redis, its interval
    /// stats flusher starts.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL the Redis client rejects.
    ///
    /// ```
    /// let cache = cached_runtime::Cache::new(cached_runtime::Config::builder().build().unwrap());
    /// assert!(cache.is_ok());
    /// ```
    pub fn new(config: Config) -> Result<Cache, Error> {
        let engine = Arc::new(Engine::new(None, config)?);
        engine.start();
        Ok(Cache(engine))
    }

    /// Runs `future` with this cache in place of the default one: each
    /// time it is polled, the cached functions without `cache = "..."`
    /// that it calls, their companions (`_invalidate`, `_refresh`, ...)
    /// and the process-wide operations (`invalidate_args`,
    /// `invalidate_prefix`, `flush_stats`, `local_stats`) use this cache.
    ///
    /// Scopes nest: the innermost wins. Functions with `cache = "name"`
    /// keep their named cache: the name is part of what they declare.
    /// Tasks spawned inside do not inherit the scope (as with `tracing`'s
    /// dispatchers): wrap their futures in `scope` too. The scope belongs
    /// to the thread while the future is polled, so a task that a nested
    /// executor polls right there (`in_scope(|| rt.block_on(..))` on a
    /// current-thread runtime, a `LocalSet` run inside the future) does
    /// see it.
    ///
    /// ```
    /// # use cached_runtime::{Cache, Config};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = Cache::new(Config::builder().embedded().build().unwrap()).unwrap();
    /// // Cached functions called by the future use `cache`.
    /// let answer = cache.scope(async { 42 }).await;
    /// assert_eq!(answer, 42);
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, future: F) -> Scoped<F> {
        Scoped {
            cache: self.clone(),
            future,
        }
    }

    /// Runs `f` with this cache in place of the default one on this
    /// thread: [`Cache::scope`] for sync code.
    ///
    /// ```
    /// # use cached_runtime::{Cache, Config};
    /// let cache = Cache::new(Config::builder().embedded().build().unwrap()).unwrap();
    /// // Cached functions called in the closure use `cache`.
    /// assert_eq!(cache.in_scope(|| 42), 42);
    /// ```
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        if !ENTERED.load(Relaxed) {
            ENTERED.store(true, Relaxed);
        }
        let Ok(previous) = CURRENT.try_with(|c| c.replace(Some(Arc::clone(&self.0)))) else {
            // This thread's locals are being torn down (a destructor at
            // thread exit): no scope can be set, and the call must not
            // panic; the functions use the default cache.
            return f();
        };
        // Restored on the way out, a panic's included.
        let _restore = Restore(previous);
        f()
    }

    /// Writes this cache's stats gathered in this process to its Redis
    /// now ([`crate::flush_stats`] for this cache alone). Without Redis
    /// there is nothing to write.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when Redis cannot be reached; the counts are kept
    /// for the next flush.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cached_runtime::Cache::new(cached_runtime::Config::builder().embedded().build().unwrap()).unwrap();
    /// cache.flush_stats().await.unwrap();
    /// # }
    /// ```
    pub async fn flush_stats(&self) -> Result<(), Error> {
        crate::flush::flush_detached(Arc::clone(&self.0)).await
    }

    /// This cache's totals for `prefix` in this process, or `None` when no
    /// cached function with that prefix has run in it.
    ///
    /// ```
    /// let cache = cached_runtime::Cache::new(cached_runtime::Config::builder().embedded().build().unwrap()).unwrap();
    /// assert!(cache.local_stats("user").is_none());
    /// ```
    pub fn local_stats(&self, prefix: &str) -> Option<StatsSnapshot> {
        self.0.stats.snapshot(prefix)
    }

    /// Removes every entry of `prefix` from this cache
    /// ([`crate::invalidate_prefix`] for this cache alone); returns how many
    /// were removed.
    ///
    /// # Errors
    ///
    /// As [`crate::invalidate_prefix`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = cached_runtime::Cache::new(cached_runtime::Config::builder().embedded().build().unwrap()).unwrap();
    /// assert_eq!(cache.invalidate_prefix("user").await.unwrap(), 0);
    /// # }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64, Error> {
        crate::invalidate::invalidate_prefix_in(&self.0, prefix).await
    }

    /// Removes the entry of one call from this cache: [`crate::invalidate_args`]
    /// run under [`Cache::scope`]. A function of that prefix declared with
    /// `cache = "name"` keeps its named cache in a scope, so its entry goes
    /// from that cache.
    ///
    /// # Errors
    ///
    /// As [`crate::invalidate_args`].
    ///
    /// ```no_run
    /// # async fn demo(cache: cached_runtime::Cache) -> Result<(), cached_runtime::Error> {
    /// cache.invalidate_args("user", &serde_json::json!([42])).await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_args(&self, prefix: &str, args: &Value) -> Result<bool, Error> {
        self.scope(crate::invalidate::invalidate_args(prefix, args))
            .await
    }
}

/// Puts the previous scope's cache back.
struct Restore(Option<Arc<Engine>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        // Swapped out first, dropped after: dropping the last clone of a
        // cache must not run while the thread-local is borrowed.
        let left = CURRENT.try_with(|c| c.replace(previous));
        drop(left);
    }
}

pin_project_lite::pin_project! {
    /// A future run under a [`Cache`]: see [`Cache::scope`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        cache: Cache,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.cache.in_scope(|| this.future.poll(cx))
    }
}

impl<F> std::fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoped")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

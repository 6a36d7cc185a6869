//! The process-wide engine (configuration and store) and the entry points
//! generated code calls. A cached call, async or sync:
//!
//! 1. Off (disabled, or under the skip flag): run the body, count a skip.
//! 2. The key could not be built: run the body, count an error.
//! 3. Otherwise [`crate::flow`] takes over: lookup, freshness, coalescing,
//!    locking, compute, store. Store failures are counted and logged,
//!    never returned.

use std::future::Future;
use std::sync::OnceLock;

use serde::Serialize;

use crate::__private::ReturnShape;
use crate::codec::CodecLimits;
use crate::config::Config;
use crate::error::Error;
use crate::flow::{self, Call};
use crate::key::{self, CacheKey};
use crate::ops::{block_on_ready, AsyncIo, BlockingIo};
use crate::site::{CallSite, ResolvedSite};
use crate::skip;
use crate::store::{MemoryStore, RedisStore, Store};

/// The active configuration and store.
#[derive(Debug)]
pub(crate) struct Engine {
    pub(crate) config: Config,
    /// `None` when caching is disabled.
    store: Option<Store>,
    pub(crate) limits: CodecLimits,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

impl Engine {
    fn new(config: Config) -> Result<Engine, Error> {
        let store = if config.disabled {
            None
        } else {
            Some(match &config.redis_url {
                Some(url) => Store::Redis(Box::new(RedisStore::new(url, &config)?)),
                None => Store::Memory(MemoryStore::new(config.memory_max_entries)),
            })
        };
        let limits = CodecLimits {
            compress_min_bytes: config.compress_min_bytes,
            max_value_bytes: config.max_value_bytes,
        };
        Ok(Engine {
            config,
            store,
            limits,
        })
    }

    /// The store, unless caching is disabled.
    pub(crate) fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The Redis store, when Redis is configured and caching is on.
    pub(crate) fn redis(&self) -> Option<&RedisStore> {
        self.store.as_ref().and_then(Store::redis)
    }

    fn start(&self) {
        if self.redis().is_some() {
            crate::flush::start_interval_flusher(self.config.stats_flush_interval);
            crate::flush::flush_at_exit();
        }
        let backend = match &self.store {
            None => "disabled",
            Some(Store::Memory(_)) => "embedded in-process store",
            Some(Store::Redis(_)) => "redis",
        };
        tracing::debug!(backend, namespace = %self.config.namespace, "cached-redis initialized");
    }
}

/// Installs `config` for the whole process. Call it once, before the first
/// cached call; without it the first cached call initializes from the
/// environment ([`Config::from_env`]).
///
/// # Errors
///
/// [`Error::AlreadyInitialized`] on a second call (or after a cached call),
/// [`Error::Config`] for a URL the Redis client rejects.
///
/// ```
/// cached_runtime::init(cached_runtime::Config::builder().build().unwrap()).unwrap();
/// assert!(cached_runtime::init(cached_runtime::Config::builder().build().unwrap()).is_err());
/// ```
pub fn init(config: Config) -> Result<(), Error> {
    let engine = Engine::new(config)?;
    ENGINE.set(engine).map_err(|_| Error::AlreadyInitialized)?;
    ENGINE.get().expect("just set").start();
    Ok(())
}

/// The engine, initialized from the environment on first use.
pub(crate) fn engine() -> &'static Engine {
    if let Some(engine) = ENGINE.get() {
        return engine;
    }
    let engine = Config::from_env()
        .and_then(Engine::new)
        .unwrap_or_else(|e| {
            // A bad environment must not take the service down: the
            // functions still run, uncached, and the log says why.
            tracing::error!(error = %e, "cached-redis configuration invalid; caching disabled");
            Engine::new(
                Config::builder()
                    .disabled(true)
                    .build()
                    .expect("defaults are valid"),
            )
            .expect("a disabled engine needs no connection")
        });
    let mut installed = false;
    let engine = ENGINE.get_or_init(|| {
        installed = true;
        engine
    });
    if installed {
        engine.start();
    }
    engine
}

/// Writes the stats gathered in this process to Redis now (they are also
/// written every `stats_flush_interval`). Without Redis this does nothing.
///
/// # Errors
///
/// [`Error::Store`] when Redis cannot be reached; the counts are kept and
/// sent with the next flush.
pub async fn flush_stats() -> Result<(), Error> {
    let engine = engine();
    match engine.redis() {
        Some(store) => crate::flush::flush(store, &engine.config.namespace).await,
        None => Ok(()),
    }
}

/// The key of a call of `site` with key arguments `args` (a tuple) and, for
/// generic functions, the concrete type names.
pub fn build_key<A: Serialize + ?Sized>(
    site: &'static CallSite,
    args: &A,
    type_names: &[&str],
) -> Result<CacheKey, Error> {
    let engine = engine();
    let resolved = site.resolve(&engine.config);
    if !type_names.is_empty() {
        site.mark_typed();
    }
    let salt_digest = key::with_type_names(&resolved.salt_digest, type_names);
    let hash = key::hash_segment(&salt_digest, args).map_err(|e| Error::Key(e.to_string()))?;
    Ok(CacheKey::new(&resolved.key_head, &hash))
}

/// Steps 1–2: the store and key to use, if any, and whether this call
/// must recompute whatever the cache holds.
fn prepare<'a>(
    engine: &'a Engine,
    resolved: &ResolvedSite,
    key: Result<CacheKey, Error>,
) -> Option<(&'a Store, CacheKey, bool)> {
    let force = skip::take_force_refresh();
    let store = match &engine.store {
        Some(store) if !skip::is_cache_skipped() => store,
        _ => {
            resolved.stats.skip();
            crate::entry_info::skipped();
            return None;
        }
    };
    if resolved.is_unreadable() {
        // Logged once when found out; counted on every call.
        resolved.stats.error();
        crate::entry_info::uncached();
        return None;
    }
    match key {
        Ok(key) => Some((store, key, force)),
        Err(e) => {
            resolved.stats.error();
            crate::entry_info::uncached();
            tracing::debug!(
                prefix = %resolved.prefix, error = %e,
                "cache error: key not buildable; running uncached"
            );
            None
        }
    }
}

/// A cached call of an async function.
pub async fn call_async<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    _shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    F: Future<Output = R>,
{
    let engine = engine();
    let resolved = site.resolve(&engine.config);
    let Some((store, key, force)) = prepare(engine, resolved, key) else {
        return body.await;
    };
    if matches!(store, Store::Redis(_)) && tokio::runtime::Handle::try_current().is_err() {
        // Redis I/O needs tokio's timers; under another executor the
        // function still runs, uncached, instead of panicking.
        resolved.stats.error();
        crate::entry_info::uncached();
        tracing::warn!(
            prefix = %resolved.prefix,
            "cache error: cached async fn polled outside a tokio runtime; running uncached"
        );
        return body.await;
    }
    let call = Call {
        engine,
        site: resolved,
        key,
    };
    flow::run::<_, S, R, F>(&AsyncIo(store), &call, force, body).await
}

/// A cached call of a sync function.
pub fn call_sync<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    _shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    F: FnOnce() -> R,
{
    let engine = engine();
    let resolved = site.resolve(&engine.config);
    let Some((store, key, force)) = prepare(engine, resolved, key) else {
        return body();
    };
    let call = Call {
        engine,
        site: resolved,
        key,
    };
    let body = async move { body() };
    block_on_ready(flow::run::<_, S, R, _>(
        &BlockingIo(store),
        &call,
        force,
        body,
    ))
}

/// Removes the entry of a call; true if one was there.
pub async fn invalidate_async(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
) -> Result<bool, Error> {
    let key = key?;
    let _ = site;
    match &engine().store {
        Some(store) => Ok(store.del(key.as_str()).await?),
        None => Ok(false),
    }
}

/// [`invalidate_async`] for sync functions.
pub fn invalidate_sync(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
) -> Result<bool, Error> {
    let key = key?;
    let _ = site;
    match &engine().store {
        Some(store) => Ok(store.del_sync(key.as_str())?),
        None => Ok(false),
    }
}

/// Runs `future` (a call of a cached async function) so that it recomputes
/// and stores its result whatever the cache holds.
pub async fn force_refresh_async<F: Future>(future: F) -> F::Output {
    skip::force_refresh(future).await
}

/// Runs `f` (a call of a cached sync function) so that it recomputes and
/// stores its result whatever the cache holds.
pub fn force_refresh_sync<R>(f: impl FnOnce() -> R) -> R {
    skip::force_refresh_sync(f)
}

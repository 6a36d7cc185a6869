//! One cache as the runtime sees it (configuration, store, counters), the
//! installed ones (default and named), binding a call site to its cache,
//! and the entry points generated code calls. A cached call, async or sync:
//!
//! 1. Off (disabled, or under the skip flag): run the body, count a skip.
//! 2. The key could not be built: run the body, count an error.
//! 3. Otherwise [`crate::flow`] takes over: lookup, freshness, coalescing,
//!    locking, compute, store. Store failures are counted and logged,
//!    never returned.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;

use crate::call_site::CallSite;
use crate::codec::CodecLimits;
use crate::config::Config;
use crate::error::Error;
use crate::flow::{self, Call};
use crate::flush::Flushed;
use crate::key::{self, CacheKey, KeyMemo};
use crate::local::channel::{Change, Channel, PendingChange};
use crate::local::{Near, Off, On};
use crate::ops::{block_on_ready, AsyncIo, BlockingIo};
use crate::shape::{CacheValue, LocalValue, ReturnShape};
use crate::site::ResolvedSite;
use crate::skip;
use crate::stats::{StatsRegistry, StatsSnapshot};
use crate::store::Announcement;
use crate::store::{MemoryStore, RedisStore, Store};

/// One cache: a configuration, the store it talks to, and what belongs to
/// it alone (its counters, what its flush last sent, its invalidation
/// channel). The default cache and each named cache are one `Engine`
/// each, alive for the rest of the process once installed; a
/// [`crate::Cache`] value is one too, dropped with its last clone.
#[derive(Debug)]
pub(crate) struct Engine {
    /// `None` for the default cache.
    pub(crate) name: Option<&'static str>,
    pub(crate) config: Config,
    /// `None` when caching is disabled.
    store: Option<Store>,
    pub(crate) limits: CodecLimits,
    /// The counters of its functions, by prefix.
    pub(crate) stats: StatsRegistry,
    /// What its flush last wrote.
    pub(crate) flushed: Flushed,
    /// Its invalidation channel (Redis only, started on first use).
    channel: Channel,
    /// Its interval flusher, stopped when the engine goes.
    flusher: OnceLock<tokio::task::AbortHandle>,
    /// What call sites derive from its config, by the site's address: for
    /// the calls made under [`crate::Cache::scope`] (an installed cache
    /// keeps its sites' bindings in the sites themselves).
    sites: RwLock<HashMap<usize, Arc<ResolvedSite>, foldhash::fast::RandomState>>,
    /// The keys of arguments its functions saw lately, unless
    /// `key_memo_max_bytes` is under [`KeyMemo::MIN_BYTES`].
    pub(crate) key_memo: Option<Arc<KeyMemo>>,
}

/// The default cache.
static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();

/// The named caches, in the order they were installed.
static NAMED: RwLock<Vec<&'static Arc<Engine>>> = RwLock::new(Vec::new());

impl Engine {
    pub(crate) fn new(name: Option<&'static str>, config: Config) -> Result<Engine, Error> {
        let store = if config.disabled {
            None
        } else {
            Some(match &config.redis_url {
                Some(url) => Store::Redis(Arc::new(RedisStore::new(url, &config)?)),
                None => Store::Memory(Arc::new(MemoryStore::new(
                    config.memory_max_entries,
                    config.memory_max_bytes,
                    config.max_value_bytes as u64,
                ))),
            })
        };
        let limits = CodecLimits {
            compress_min_bytes: config.compress_min_bytes,
            compression: config.compression,
            zlib_level: config.zlib_level,
            max_value_bytes: config.max_value_bytes,
        };
        let stats = StatsRegistry::new(&config.namespace);
        let key_memo = (config.key_memo_max_bytes >= KeyMemo::MIN_BYTES)
            .then(|| Arc::new(KeyMemo::new(config.key_memo_max_bytes)));
        Ok(Engine {
            name,
            config,
            store,
            limits,
            stats,
            flushed: Flushed::default(),
            channel: Channel::default(),
            flusher: OnceLock::new(),
            sites: RwLock::default(),
            key_memo,
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

    /// Whether `local` levels may serve now: always with the embedded
    /// store (one process); with Redis, while this process receives the
    /// other processes' invalidations (the subscriber starts on first use).
    pub(crate) fn local_live(&self) -> bool {
        match &self.store {
            Some(Store::Redis(r)) => {
                self.channel
                    .ensure_subscriber(|| r.pubsub_source(), &self.config.namespace);
                self.channel.is_live()
            }
            Some(Store::Memory(_)) => true,
            None => false,
        }
    }

    /// Starts its background work: the interval flusher, which stops when
    /// the engine is dropped.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.redis().is_some() {
            let flusher = crate::flush::start_interval_flusher(
                Arc::downgrade(self),
                self.config.stats_flush_interval,
            );
            let _ = self.flusher.set(flusher);
        }
        let backend = match &self.store {
            None => "disabled",
            Some(Store::Memory(_)) => "embedded in-process store",
            Some(Store::Redis(_)) => "redis",
        };
        tracing::debug!(
            cache = self.name.unwrap_or("default"),
            backend,
            namespace = %self.config.namespace,
            "cached-redis initialized"
        );
    }

    /// What `site` derives from this cache's config, for a call under a
    /// scope: computed on the first such call, then kept with the engine.
    fn resolve(&self, site: &'static CallSite) -> Arc<ResolvedSite> {
        let addr = std::ptr::from_ref(site) as usize;
        let found = self
            .sites
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .cloned();
        found.unwrap_or_else(|| {
            let mut sites = self.sites.write().unwrap_or_else(|e| e.into_inner());
            sites
                .entry(addr)
                .or_insert_with(|| {
                    crate::invalidate::register(site);
                    Arc::new(site.resolve(self))
                })
                .clone()
        })
    }
}

impl Drop for Engine {
    /// A [`crate::Cache`] value's last clone, or an engine that lost the
    /// race to be installed (an `init` after the first): its flusher stops,
    /// the counts not written yet go in one last flush on the crate's own
    /// runtime (which then closes the connections), and the subscriber of
    /// its invalidation channel stops with the channel.
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.get() {
            flusher.abort();
        }
        if let Some(Store::Redis(store)) = self.store.take() {
            let namespace = std::mem::take(&mut self.config.namespace);
            let stats = std::mem::replace(&mut self.stats, StatsRegistry::new(&namespace));
            let flushed = std::mem::take(&mut self.flushed);
            crate::io::handle().spawn(async move {
                if let Err(e) = crate::flush::flush_to(&store, &namespace, &stats, &flushed).await {
                    tracing::debug!(error = %e, "last stats flush of a dropped cache failed");
                }
            });
        }
    }
}

/// Installs `config` as the default cache, the one every function without
/// `cache = "..."` uses. Call it once, before the first cached call;
/// without it the first cached call initializes from the environment
/// ([`Config::from_env`]). The process-wide operations called before it
/// ([`crate::invalidate_prefix`], [`flush_stats`], the stats readers of
/// [`crate::report`]) act on the cache the environment configures without
/// installing it, so they do not stand in the way of `init`.
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
    let engine = Arc::new(Engine::new(None, config)?);
    ENGINE.set(engine).map_err(|_| Error::AlreadyInitialized)?;
    installed(ENGINE.get().expect("just set"));
    Ok(())
}

/// Starts an installed cache: its flusher and the flush at exit.
fn installed(engine: &Arc<Engine>) {
    engine.start();
    if engine.redis().is_some() {
        crate::flush::flush_at_exit();
    }
}

/// Installs `config` as the cache named `name`, the one functions with
/// `#[cached(cache = "name")]` use: for example the embedded store for
/// configuration lookups beside a Redis for search results, or a second
/// Redis. Each named cache has its own store, namespace, counters (flushed
/// to its own Redis) and invalidation channel.
///
/// Install named caches at start-up, before their functions are called: a
/// call of a function whose cache is not installed yet runs its body,
/// uncached, and logs a warning once.
///
/// # Errors
///
/// [`Error::Config`] for an empty name, a name already installed, or a URL
/// the Redis client rejects.
///
/// ```
/// use cached_runtime::{init_named, Config};
/// init_named("config_lookups", Config::builder().build().unwrap()).unwrap();
/// assert!(init_named("config_lookups", Config::builder().build().unwrap()).is_err());
/// ```
pub fn init_named(name: &str, config: Config) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::Config("a cache name must not be empty".into()));
    }
    let mut named = NAMED.write().unwrap_or_else(|e| e.into_inner());
    if named.iter().any(|e| e.name == Some(name)) {
        return Err(Error::Config(format!(
            "a cache named {name:?} is installed already"
        )));
    }
    // Installed for the rest of the process, like the default cache: its
    // functions' call sites keep a reference to it.
    let name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let engine: &'static Arc<Engine> =
        Box::leak(Box::new(Arc::new(Engine::new(Some(name), config)?)));
    named.push(engine);
    drop(named);
    installed(engine);
    Ok(())
}

/// The default cache as the environment configures it (disabled, and
/// logged, for an environment it refuses: a bad environment must not take
/// the service down; the functions still run, uncached).
fn from_env() -> Engine {
    Config::from_env()
        .and_then(|config| Engine::new(None, config))
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cached-redis configuration invalid; caching disabled");
            Engine::new(
                None,
                Config::builder()
                    .disabled(true)
                    .build()
                    .expect("defaults are valid"),
            )
            .expect("a disabled engine needs no connection")
        })
}

/// The default cache, initialized from the environment on first use.
pub(crate) fn engine() -> &'static Arc<Engine> {
    if let Some(engine) = ENGINE.get() {
        return engine;
    }
    let engine = from_env();
    let mut first = false;
    let engine = ENGINE.get_or_init(|| {
        first = true;
        Arc::new(engine)
    });
    if first {
        installed(engine);
    }
    engine
}

/// The cache standing for the default one here, for the process-wide
/// operations (stats, invalidation): the cache of the current scope
/// ([`crate::Cache::scope`]), else the default cache. Before anything
/// started the default cache, it stands as the environment configures it,
/// for this operation only and not installed: the entries and stats it
/// names are reached, and a later `init` may still install another
/// configuration.
pub(crate) fn current() -> Arc<Engine> {
    crate::cache::scoped()
        .or_else(|| ENGINE.get().cloned())
        .unwrap_or_else(|| Arc::new(from_env()))
}

/// The named cache `name`, if installed.
fn named(name: &str) -> Option<&'static Engine> {
    let named = NAMED.read().unwrap_or_else(|e| e.into_inner());
    named.iter().find(|e| e.name == Some(name)).map(|e| &***e)
}

/// Every cache the process-wide operations (`flush_stats`,
/// `invalidate_prefix`) act on: the default one (see [`current`]) or,
/// inside a scope, the scope's cache in its stead; then the named ones.
pub(crate) fn every_cache() -> Vec<Arc<Engine>> {
    std::iter::once(current()).chain(named_caches()).collect()
}

/// The named caches, in the order they were installed.
fn named_caches() -> Vec<Arc<Engine>> {
    let named = NAMED.read().unwrap_or_else(|e| e.into_inner());
    named.iter().map(|e| Arc::clone(e)).collect()
}

/// Every cache installed so far: the default one (if it started) first,
/// then the named ones.
pub(crate) fn started() -> Vec<Arc<Engine>> {
    ENGINE
        .get()
        .cloned()
        .into_iter()
        .chain(named_caches())
        .collect()
}

/// The cache `site` uses and what the site derives from its config:
/// for a function of the default cache, `scoped` (the cache of the current
/// scope, [`crate::cache::scoped`]) if any, its derived settings kept alive
/// in `hold` for the call; otherwise the installed cache, bound on the
/// first call (and registered for invalidation by arguments). `None`
/// while its named cache is not installed.
#[inline]
pub(crate) fn bind<'s, 'h>(
    site: &'static CallSite,
    scoped: &'s Option<Arc<Engine>>,
    hold: &'h mut Option<Arc<ResolvedSite>>,
) -> Option<(&'s Engine, &'h ResolvedSite)> {
    if let (None, Some(engine)) = (site.options.cache, scoped) {
        let resolved = hold.insert(engine.resolve(site));
        return Some((engine, resolved));
    }
    if let Some((engine, resolved)) = site.bound.get() {
        return Some((engine, resolved));
    }
    bind_installed(site)
}

/// [`bind`]'s first call for `site` outside a scope.
#[cold]
fn bind_installed(site: &'static CallSite) -> Option<(&'static Engine, &'static ResolvedSite)> {
    let engine: &'static Engine = match site.options.cache {
        None => engine(),
        Some(name) => match named(name) {
            Some(engine) => engine,
            None => {
                if !site.unbound_reported.swap(true, Relaxed) {
                    tracing::warn!(
                        cache = name,
                        function = site.ident.fn_name,
                        "no cache named {name:?} is installed (init_named); running uncached"
                    );
                }
                return None;
            }
        },
    };
    let (engine, resolved) = site.bound.get_or_init(|| {
        crate::invalidate::register(site);
        (engine, Arc::new(site.resolve(engine)))
    });
    Some((engine, resolved))
}

/// Why `site` cannot be served: its named cache is not installed.
fn not_installed(site: &CallSite) -> Error {
    Error::Config(format!(
        "no cache named {:?} is installed (init_named)",
        site.options.cache.unwrap_or_default()
    ))
}

/// Writes the stats gathered in this process to Redis now, for every
/// cache (they are also written every `stats_flush_interval`). Caches
/// without Redis have nothing to write. Inside [`crate::Cache::scope`], the
/// scope's cache is flushed instead of the default one; a [`crate::Cache`]
/// is flushed by its own [`crate::Cache::flush_stats`] otherwise.
///
/// # Errors
///
/// [`Error::Store`] when a Redis cannot be reached (the first such error;
/// every cache is still tried); the counts are kept and sent with the next
/// flush.
pub async fn flush_stats() -> Result<(), Error> {
    let mut first_error = None;
    for engine in every_cache() {
        if let Err(e) = crate::flush::flush_detached(engine).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// This process's totals for `prefix` since it started, or `None` when no
/// cached function with that prefix has run. With named caches, the totals
/// of the first cache (the default one first) where such a function ran.
/// Inside [`crate::Cache::scope`], the scope's cache stands for the default
/// one.
pub fn local_stats(prefix: &str) -> Option<StatsSnapshot> {
    let first = crate::cache::scoped().or_else(|| ENGINE.get().cloned());
    first
        .into_iter()
        .chain(named_caches())
        .find_map(|engine| engine.stats.snapshot(prefix))
}

/// The key of a call of `site` with key arguments `args` (a tuple) and, for
/// methods and generic functions, the concrete type names (`Self` first).
pub fn build_key<A: Serialize + ?Sized>(
    site: &'static CallSite,
    args: &A,
    type_names: &[&'static str],
) -> Result<CacheKey, Error> {
    if let Some(name) = type_names.iter().find(|name| key::names_a_closure(name)) {
        return Err(Error::Key(format!(
            "a type parameter is a closure (`{name}`), whose name is that of every \
             closure of its function: calls with it have no key of their own, so they run \
             uncached and have no entry to invalidate"
        )));
    }
    // Before `bind`, which registers the site for `invalidate_args` on its
    // first call: a site is never seen there without this call's types.
    site.record_types(type_names);
    let (scoped, mut hold) = (crate::cache::scoped(), None);
    let Some((_, resolved)) = bind(site, &scoped, &mut hold) else {
        return Err(not_installed(site));
    };
    let salt_digest = key::with_type_names(&resolved.salt_digest, type_names);
    key::cache_key(
        &resolved.key_head,
        &salt_digest,
        args,
        resolved
            .key_memo
            .as_deref()
            .map(|memo| (memo, &resolved.key_memo_gate)),
    )
    .map_err(|e| Error::Key(e.to_string()))
}

/// Steps 1–2: the store and key to use, and whether this call must
/// recompute whatever the cache holds; or, when the call runs uncached,
/// what `with_entry_info` reports of it once its body has run.
fn prepare<'a>(
    engine: &'a Engine,
    resolved: &ResolvedSite,
    key: Result<CacheKey, Error>,
) -> Result<(&'a Store, CacheKey, bool), Uncached> {
    let force = skip::take_force_refresh();
    let store = match &engine.store {
        Some(store) if !skip::is_cache_skipped() => store,
        _ => {
            resolved.stats.skip();
            return Err(Uncached::Skipped);
        }
    };
    match key {
        Ok(key) => Ok((store, key, force)),
        Err(e) => {
            resolved.stats.error();
            tracing::debug!(
                prefix = %resolved.prefix, error = %e,
                "cache error: key not buildable; running uncached"
            );
            Err(Uncached::Unkeyed)
        }
    }
}

/// Why a call runs uncached, as `with_entry_info` reports it. Recorded
/// after the body: the cached calls the body makes record their own
/// entries, and the outermost call's record must be the last.
#[derive(Clone, Copy)]
enum Uncached {
    /// The skip flag, or caching off.
    Skipped,
    /// No key, no cache bound, or no runtime to reach Redis from.
    Unkeyed,
}

impl Uncached {
    fn record(self) {
        match self {
            Uncached::Skipped => crate::entry_info::skipped(),
            Uncached::Unkeyed => crate::entry_info::uncached(),
        }
    }
}

/// A cached call of an async function.
pub async fn call_async<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    F: Future<Output = R>,
{
    call_async_with::<_, _, _, NoLevel>(site, key, shape, body).await
}

/// A cached call of an async function with `local = N`: its values are
/// held in this process and returned by clone.
pub async fn call_async_local<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    S::Value: LocalValue,
    F: Future<Output = R>,
{
    call_async_with::<_, _, _, Level>(site, key, shape, body).await
}

/// How a call reaches its `local` level: [`NoLevel`] for functions without
/// `local` (no bounds on their value type), [`Level`] for the others.
trait Reach<V> {
    type Near<'a>: Near<V>;
    fn near<'a>(engine: &'a Engine, resolved: &'a ResolvedSite) -> Self::Near<'a>;
}

struct NoLevel;

impl<V> Reach<V> for NoLevel {
    type Near<'a> = Off;
    #[inline]
    fn near<'a>(_: &'a Engine, _: &'a ResolvedSite) -> Off {
        Off
    }
}

struct Level;

impl<V: LocalValue> Reach<V> for Level {
    type Near<'a> = Either<On<'a>>;
    /// The `local` level of `resolved`; [`Either::Off`] when the function
    /// has none.
    fn near<'a>(engine: &'a Engine, resolved: &'a ResolvedSite) -> Either<On<'a>> {
        match &resolved.local {
            Some(level) => Either::On(On {
                level,
                live: engine.local_live(),
            }),
            None => Either::Off,
        }
    }
}

async fn call_async_with<R, S, F, L>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    _shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    F: Future<Output = R>,
    L: Reach<S::Value>,
{
    let (scoped, mut hold) = (crate::cache::scoped(), None);
    let Some((engine, resolved)) = bind(site, &scoped, &mut hold) else {
        // This is the call a forced refresh was for, though it cannot
        // refresh: the calls its body makes must not take the flag.
        skip::take_force_refresh();
        let ret = body.await;
        Uncached::Unkeyed.record();
        return ret;
    };
    let (store, key, force) = match prepare(engine, resolved, key) {
        Ok(prepared) => prepared,
        Err(uncached) => {
            let ret = body.await;
            uncached.record();
            return ret;
        }
    };
    // Inside a task there is a runtime (and no handle to clone to know).
    if matches!(store, Store::Redis(_))
        && tokio::task::try_id().is_none()
        && tokio::runtime::Handle::try_current().is_err()
    {
        // Redis I/O needs tokio's timers; under another executor the
        // function still runs, uncached, instead of panicking.
        resolved.stats.error();
        tracing::warn!(
            prefix = %resolved.prefix,
            "cache error: cached async fn polled outside a tokio runtime; running uncached"
        );
        let ret = body.await;
        Uncached::Unkeyed.record();
        return ret;
    }
    let near = L::near(engine, resolved);
    let call = Call {
        config: &engine.config,
        limits: engine.limits,
        site: resolved,
        key,
    };
    if !force {
        if let Some(ret) = flow::held::<S, R, _>(&call, &near) {
            return ret;
        }
    }
    flow::run::<_, S, R, F, _>(&AsyncIo(store), &call, force, body, &near).await
}

/// A cached call of a sync function.
pub fn call_sync<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    F: FnOnce() -> R,
{
    call_sync_with::<_, _, _, NoLevel>(site, key, shape, body)
}

/// A cached call of a sync function with `local = N`.
pub fn call_sync_local<R, S, F>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    S::Value: LocalValue,
    F: FnOnce() -> R,
{
    call_sync_with::<_, _, _, Level>(site, key, shape, body)
}

fn call_sync_with<R, S, F, L>(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
    _shape: S,
    body: F,
) -> R
where
    S: ReturnShape<R>,
    S::Value: CacheValue,
    F: FnOnce() -> R,
    L: Reach<S::Value>,
{
    let (scoped, mut hold) = (crate::cache::scoped(), None);
    let Some((engine, resolved)) = bind(site, &scoped, &mut hold) else {
        // This is the call a forced refresh was for, though it cannot
        // refresh: the calls its body makes must not take the flag.
        skip::take_force_refresh();
        let ret = body();
        Uncached::Unkeyed.record();
        return ret;
    };
    let (store, key, force) = match prepare(engine, resolved, key) {
        Ok(prepared) => prepared,
        Err(uncached) => {
            let ret = body();
            uncached.record();
            return ret;
        }
    };
    let near = L::near(engine, resolved);
    let call = Call {
        config: &engine.config,
        limits: engine.limits,
        site: resolved,
        key,
    };
    if !force {
        if let Some(ret) = flow::held::<S, R, _>(&call, &near) {
            return ret;
        }
    }
    let body = async move { body() };
    block_on_ready(flow::run::<_, S, R, _, _>(
        &BlockingIo(store),
        &call,
        force,
        body,
        &near,
    ))
}

/// Removes the entry of a call; true if one was there. The `local`
/// levels of every process drop it too.
pub async fn invalidate_async(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
) -> Result<bool, Error> {
    let key = key?;
    let (scoped, mut hold) = (crate::cache::scoped(), None);
    let Some((engine, _)) = bind(site, &scoped, &mut hold) else {
        return Err(not_installed(site));
    };
    let Some(store) = &engine.store else {
        return Ok(false);
    };
    // Removed from the store first: a read racing this one then either
    // sees nothing or is older than the change and is not held. With
    // `local`, the message to the other processes goes in the same step.
    // Dropped here even when the store failed: a local copy is never worth
    // more than the caller's wish to drop it.
    let removed = match site.options.local {
        Some(_) => remove_announced(store, &engine.config.namespace, key.as_str()).await,
        None => {
            let removed = store.del(key.as_str()).await;
            Change::Key(key.as_str()).apply_here();
            removed
        }
    };
    Ok(removed?)
}

/// Removes `key` and tells the other processes of `namespace` in the same
/// step ([`Store::del_announced`]), then drops it from this process's
/// levels, even if the removal failed or this call is dropped on the way
/// (the removal may still run: see [`Change::failed`]).
pub(crate) async fn remove_announced(
    store: &Store,
    namespace: &str,
    key: &str,
) -> Result<bool, crate::error::StoreError> {
    let change = Change::Key(key);
    let news = change.announcement(namespace);
    let pending = PendingChange::new(change, &news);
    let removed = store.del_announced(key, &news).await;
    pending.settle();
    settle(change, Some(&news), &removed);
    removed
}

/// Applies `change` to this process's levels after the removal that made
/// it, announced by `news` if it was, returned `outcome`; a removal that
/// failed may still run later (see [`Change::failed`]).
pub(crate) fn settle<T>(
    change: Change<'_>,
    news: Option<&Announcement>,
    outcome: &Result<T, crate::error::StoreError>,
) {
    match outcome {
        Ok(_) => change.apply_here(),
        Err(e) => change.failed(news, e),
    }
}

/// [`invalidate_async`] for sync functions.
pub fn invalidate_sync(
    site: &'static CallSite,
    key: Result<CacheKey, Error>,
) -> Result<bool, Error> {
    let key = key?;
    let (scoped, mut hold) = (crate::cache::scoped(), None);
    let Some((engine, _)) = bind(site, &scoped, &mut hold) else {
        return Err(not_installed(site));
    };
    let Some(store) = &engine.store else {
        return Ok(false);
    };
    let change = Change::Key(key.as_str());
    let (news, removed) = match site.options.local {
        Some(_) => {
            let news = change.announcement(&engine.config.namespace);
            let removed = store.del_announced_sync(key.as_str(), &news);
            (Some(news), removed)
        }
        None => (None, store.del_sync(key.as_str())),
    };
    settle(change, news.as_ref(), &removed);
    Ok(removed?)
}

/// Runs `future` (a call of a cached async function) so that it recomputes
/// and stores its result whatever the cache holds.
///
/// Not an `async fn`, which would hold a second copy of `future` (a cached
/// function's whole call) in its state.
pub fn force_refresh_async<F: Future>(future: F) -> impl Future<Output = F::Output> {
    skip::force_refresh(future)
}

/// Runs `f` (a call of a cached sync function) so that it recomputes and
/// stores its result whatever the cache holds.
pub fn force_refresh_sync<R>(f: impl FnOnce() -> R) -> R {
    skip::force_refresh_sync(f)
}

/// [`Off`] or [`On`], chosen per call site at run time.
enum Either<T> {
    Off,
    On(T),
}

impl<V: LocalValue> Near<V> for Either<On<'_>> {
    #[inline]
    fn get(&self, key: &str) -> Option<V> {
        match self {
            Either::On(on) => on.get(key),
            Either::Off => None,
        }
    }
    #[inline]
    fn ticket(&self) -> Option<crate::local::Ticket> {
        match self {
            Either::On(on) => Near::<V>::ticket(on),
            Either::Off => None,
        }
    }
    fn hold(
        &self,
        ticket: Option<crate::local::Ticket>,
        key: &str,
        value: &V,
        bytes: usize,
        lifetime: std::time::Duration,
    ) {
        if let Either::On(on) = self {
            on.hold(ticket, key, value, bytes, lifetime);
        }
    }
    fn replace(
        &self,
        ticket: Option<crate::local::Ticket>,
        key: &str,
        value: &V,
        bytes: usize,
        lifetime: std::time::Duration,
    ) {
        if let Either::On(on) = self {
            on.replace(ticket, key, value, bytes, lifetime);
        }
    }
    #[inline]
    fn publishes(&self) -> bool {
        matches!(self, Either::On(_))
    }
}

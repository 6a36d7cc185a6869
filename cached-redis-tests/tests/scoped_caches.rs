//! Scoped caches: one process, the default cache on Redis and `Cache`
//! values (one on Redis in a namespace of its own, one embedded) standing
//! in for it in scopes. The same function lands its entries in the cache
//! of the scope it is called in; companions, process-wide operations and
//! stats follow the scope; `local` levels of scoped caches stay coherent.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cached_redis::{cached, Cache, Config};
use redis::Commands;

const QUIET: Duration = Duration::from_secs(3600);

#[cached(prefix = "sc_plain")]
async fn plain(x: u32) -> u32 {
    x + 1
}

#[cached(prefix = "sc_sync")]
fn plain_sync(x: u32) -> u32 {
    x + 2
}

#[cached(prefix = "sc_spawned")]
async fn spawned(x: u32) -> u32 {
    x + 3
}

#[cached(prefix = "sc_named", cache = "sc_named_cache")]
async fn in_named(x: u32) -> u32 {
    x + 4
}

static LOCAL_RUNS: AtomicU64 = AtomicU64::new(0);

/// Answers differently on each run, so that a held copy is told apart
/// from a new one.
#[cached(prefix = "sc_local", local = 10, ttl = 600)]
fn held(x: u64) -> u64 {
    x * 1000 + LOCAL_RUNS.fetch_add(1, SeqCst)
}

static SLOW_RUNS: AtomicU64 = AtomicU64::new(0);

/// Slow enough that two concurrent calls overlap.
#[cached(prefix = "sc_slow")]
async fn slow(x: u32) -> u32 {
    SLOW_RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    x + 5
}

/// The default cache's namespace; installed once for the process.
fn default_namespace() -> &'static str {
    static NS: OnceLock<String> = OnceLock::new();
    NS.get_or_init(|| {
        let ns = common::namespace("scoped-default");
        cached_redis::init(redis_config(&ns)).unwrap();
        cached_redis::init_named(
            "sc_named_cache",
            Config::builder().embedded().build().unwrap(),
        )
        .unwrap();
        ns
    })
}

fn redis_config(namespace: &str) -> Config {
    Config::builder()
        .redis_url(common::redis_url())
        .namespace(namespace)
        .stats_flush_interval(QUIET)
        .build()
        .unwrap()
}

/// Hits and misses of `prefix` in `cache`.
fn counts(cache: &Cache, prefix: &str) -> (u64, u64) {
    let s = cache.local_stats(prefix).unwrap_or_default();
    (s.hits, s.misses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_uses_its_own_cache() {
    let ns_default = default_namespace();
    let ns_a = common::namespace("scoped-a");
    let a = Cache::new(redis_config(&ns_a)).unwrap();
    let b = Cache::new(Config::builder().embedded().build().unwrap()).unwrap();

    // The same function, miss then hit, in each cache.
    assert_eq!(plain(1).await, 2);
    assert_eq!(a.scope(plain(1)).await, 2);
    assert_eq!(a.scope(plain(1)).await, 2);
    assert_eq!(
        b.scope(async { (plain(1).await, plain(1).await) }).await,
        (2, 2)
    );
    assert_eq!(common::entry_keys(ns_default, "sc_plain").len(), 1);
    assert_eq!(common::entry_keys(&ns_a, "sc_plain").len(), 1);
    assert_eq!(counts(&a, "sc_plain"), (1, 1));
    assert_eq!(counts(&b, "sc_plain"), (1, 1));
    // Outside any scope, the default cache: its one miss.
    let default = cached_redis::local_stats("sc_plain").unwrap();
    assert_eq!((default.hits, default.misses), (0, 1));
    // Inside a scope, the free function reads the scope's cache.
    let in_a = a
        .in_scope(|| cached_redis::local_stats("sc_plain"))
        .unwrap();
    assert_eq!((in_a.hits, in_a.misses), (1, 1));

    // Keys are built in the scope's namespace.
    let key = plain_cache_key(1).unwrap();
    assert!(key.starts_with(&format!("{ns_default}:sc_plain:")), "{key}");
    let key = a.in_scope(|| plain_cache_key(1)).unwrap();
    assert!(key.starts_with(&format!("{ns_a}:sc_plain:")), "{key}");

    // Stats per scope: a cache's flush writes its counts into its own
    // namespace, and nothing into the default one's.
    a.flush_stats().await.unwrap();
    let written = common::stats_hash(&ns_a, "sc_plain");
    assert_eq!(written.get("hits").map(String::as_str), Some("1"));
    assert_eq!(written.get("misses").map(String::as_str), Some("1"));
    // (The default cache's own flusher may have written its one miss.)
    let default_hits = common::stats_hash(ns_default, "sc_plain").remove("hits");
    assert!(
        matches!(default_hits.as_deref(), None | Some("0")),
        "{default_hits:?}"
    );

    // Companions act on the scope's cache only.
    assert!(a.scope(plain_invalidate(1)).await.unwrap());
    assert!(common::entry_keys(&ns_a, "sc_plain").is_empty());
    assert_eq!(common::entry_keys(ns_default, "sc_plain").len(), 1);
    assert_eq!(a.scope(plain_refresh(1)).await, 2);
    assert_eq!(counts(&a, "sc_plain"), (1, 2));
    assert_eq!(common::entry_keys(&ns_a, "sc_plain").len(), 1);

    // So does invalidation by arguments, free or as a method.
    assert!(a
        .scope(cached_redis::invalidate_args(
            "sc_plain",
            &serde_json::json!([1])
        ))
        .await
        .unwrap());
    assert!(common::entry_keys(&ns_a, "sc_plain").is_empty());
    assert_eq!(common::entry_keys(ns_default, "sc_plain").len(), 1);
    assert!(b
        .invalidate_args("sc_plain", &serde_json::json!([1]))
        .await
        .unwrap());
    assert_eq!(b.scope(plain(1)).await, 2);
    assert_eq!(counts(&b, "sc_plain"), (1, 2));

    // Prefix invalidation: the free function inside a scope, or the
    // method, leaves the default cache alone.
    a.scope(plain(1)).await;
    a.scope(plain(2)).await;
    assert_eq!(
        a.scope(cached_redis::invalidate_prefix("sc_plain"))
            .await
            .unwrap(),
        2
    );
    a.scope(plain(3)).await;
    assert_eq!(a.invalidate_prefix("sc_plain").await.unwrap(), 1);
    assert_eq!(common::entry_keys(ns_default, "sc_plain").len(), 1);

    // Nested scopes: the innermost wins, the outer one is back after it.
    a.scope(async {
        assert_eq!(b.scope(plain(5)).await, 6);
        assert_eq!(plain(6).await, 7);
    })
    .await;
    assert_eq!(b.local_stats("sc_plain").unwrap().misses, 3);
    assert!(
        common::entry_keys(&ns_a, "sc_plain").contains(&a.in_scope(|| plain_cache_key(6)).unwrap())
    );
    assert!(!common::entry_keys(&ns_a, "sc_plain")
        .contains(&a.in_scope(|| plain_cache_key(5)).unwrap()));

    // A function with `cache = "..."` keeps its named cache in a scope.
    assert_eq!(a.scope(in_named(1)).await, 5);
    assert!(a.local_stats("sc_named").is_none());
    assert_eq!(cached_redis::local_stats("sc_named").unwrap().misses, 1);

    // A task spawned in a scope does not inherit it.
    a.scope(async { tokio::spawn(spawned(1)).await.unwrap() })
        .await;
    assert!(a.local_stats("sc_spawned").is_none());
    assert_eq!(common::entry_keys(ns_default, "sc_spawned").len(), 1);
}

#[test]
fn sync_scopes_nest() {
    let ns_default = default_namespace();
    let ns_a = common::namespace("scoped-sync-a");
    let a = Cache::new(redis_config(&ns_a)).unwrap();
    let b = Cache::new(Config::builder().embedded().build().unwrap()).unwrap();

    let inner = a.in_scope(|| {
        let inner = b.in_scope(|| (plain_sync(1), plain_sync(1)));
        // Back in `a` once the inner scope ends.
        assert_eq!(plain_sync(1), 3);
        inner
    });
    assert_eq!(inner, (3, 3));
    assert_eq!(counts(&b, "sc_sync"), (1, 1));
    assert_eq!(counts(&a, "sc_sync"), (0, 1));
    assert_eq!(common::entry_keys(&ns_a, "sc_sync").len(), 1);
    assert!(common::entry_keys(ns_default, "sc_sync").is_empty());
    // A panic inside a scope does not leave it entered.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.in_scope(|| panic!("inside"))
    }));
    assert!(caught.is_err());
    assert_eq!(plain_sync(1), 3);
    assert_eq!(common::entry_keys(ns_default, "sc_sync").len(), 1);
    assert_eq!(counts(&a, "sc_sync"), (0, 1));
}

/// Waits until `cache`'s level holds the entry of `held(x)`: a call served
/// after the store entry was removed behind its back runs no body.
fn until_held(cache: &Cache, x: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let value = cache.in_scope(|| held(x));
        let key = cache.in_scope(|| held_cache_key(x)).unwrap();
        let _: () = common::raw().del(&key).unwrap();
        if cache.in_scope(|| held(x)) == value {
            return value;
        }
        assert!(Instant::now() < deadline, "the level never held the value");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn local_levels_of_scoped_caches_stay_coherent() {
    default_namespace();
    let ns = common::namespace("scoped-local");
    let one = Cache::new(redis_config(&ns)).unwrap();
    let two = Cache::new(redis_config(&ns)).unwrap();

    // Another cache value on the namespace writes a new value: the copy
    // held by the first one is dropped.
    let old = until_held(&one, 1);
    let new = two.in_scope(|| held_refresh(1));
    assert_ne!(new, old);
    assert_eq!(one.in_scope(|| held(1)), new);

    // It invalidates the entry: the held copy goes too (the store entry
    // was removed already, by `until_held`).
    let old = until_held(&one, 1);
    two.in_scope(|| held_invalidate(1)).unwrap();
    assert_ne!(one.in_scope(|| held(1)), old);

    // Another process invalidates it on the channel: the first cache's
    // subscriber applies it to its level.
    let old = until_held(&one, 1);
    let key = one.in_scope(|| held_cache_key(1)).unwrap();
    let _: () = common::raw().del(&key).unwrap();
    let _: i64 = common::raw()
        .publish(
            format!("{ns}:__invalidate"),
            format!("0000000000000000 k {key}"),
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while one.in_scope(|| held(1)) == old {
        assert!(
            Instant::now() < deadline,
            "the message never reached the level"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two caches on one namespace over different stores: concurrent misses of
/// the same key are coalesced per cache, never across them, so each cache
/// stores the value in its own store and hits it next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_sharing_a_namespace_do_not_coalesce_each_other() {
    default_namespace();
    let ns = common::namespace("scoped-shared");
    let on_redis = Cache::new(redis_config(&ns)).unwrap();
    let embedded =
        Cache::new(Config::builder().embedded().namespace(&ns).build().unwrap()).unwrap();
    let runs = SLOW_RUNS.load(SeqCst);
    let (a, b) = tokio::join!(
        tokio::spawn(on_redis.scope(slow(7))),
        tokio::spawn(embedded.scope(slow(7))),
    );
    assert_eq!((a.unwrap(), b.unwrap()), (12, 12));
    assert_eq!(SLOW_RUNS.load(SeqCst) - runs, 2, "each cache ran the body");
    assert_eq!(counts(&on_redis, "sc_slow"), (0, 1));
    assert_eq!(counts(&embedded, "sc_slow"), (0, 1));
    // Each stored its own entry: the next calls hit.
    assert_eq!(on_redis.scope(slow(7)).await, 12);
    assert_eq!(embedded.scope(slow(7)).await, 12);
    assert_eq!(SLOW_RUNS.load(SeqCst) - runs, 2);
    assert_eq!(counts(&on_redis, "sc_slow"), (1, 1));
    assert_eq!(counts(&embedded, "sc_slow"), (1, 1));
    on_redis.invalidate_prefix("sc_slow").await.unwrap();
}

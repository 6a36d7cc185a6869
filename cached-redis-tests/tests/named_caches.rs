//! Named caches: one process, three differently configured caches (the
//! default one on Redis, a named embedded store, a named Redis cache with
//! its own namespace), each function in the one its attribute names.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use cached_redis::{cached, Config};

static DEFAULT_RUNS: AtomicUsize = AtomicUsize::new(0);
static EMBEDDED_RUNS: AtomicUsize = AtomicUsize::new(0);
static SECOND_RUNS: AtomicUsize = AtomicUsize::new(0);
static SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);
static MISSING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "nc_default")]
async fn in_default(x: u32) -> u32 {
    DEFAULT_RUNS.fetch_add(1, SeqCst);
    x + 1
}

#[cached(prefix = "nc_embedded", cache = "embedded")]
async fn in_embedded(x: u32) -> u32 {
    EMBEDDED_RUNS.fetch_add(1, SeqCst);
    x + 2
}

#[cached(prefix = "nc_second", cache = "second", local = 10)]
fn in_second(x: u32) -> String {
    SECOND_RUNS.fetch_add(1, SeqCst);
    format!("second {x}")
}

#[cached(prefix = "nc_shared")]
async fn shared_in_default(x: u32) -> u32 {
    SHARED_RUNS.fetch_add(1, SeqCst);
    x
}

#[cached(prefix = "nc_shared", cache = "second")]
async fn shared_in_second(x: u32) -> u64 {
    SHARED_RUNS.fetch_add(1, SeqCst);
    u64::from(x)
}

#[cached(prefix = "nc_missing", cache = "never_installed")]
fn in_missing(x: u32) -> u32 {
    MISSING_RUNS.fetch_add(1, SeqCst);
    x
}

static NESTED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(prefix = "nc_nested")]
fn nested_in_default(x: u32) -> u32 {
    NESTED_RUNS.fetch_add(1, SeqCst);
    x
}

#[cached(prefix = "nc_missing_outer", cache = "never_installed")]
fn missing_outer(x: u32) -> u32 {
    nested_in_default(x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_uses_the_cache_its_attribute_names() {
    let ns_default = common::namespace("named-default");
    let ns_second = common::namespace("named-second");
    let quiet = Duration::from_secs(3600);
    cached_redis::init(
        Config::builder()
            .redis_url(common::redis_url())
            .namespace(ns_default.clone())
            .stats_flush_interval(quiet)
            .build()
            .unwrap(),
    )
    .unwrap();
    cached_redis::init_named("embedded", Config::builder().embedded().build().unwrap()).unwrap();
    cached_redis::init_named(
        "second",
        Config::builder()
            .redis_url(common::redis_url())
            .namespace(ns_second.clone())
            .stats_flush_interval(quiet)
            .build()
            .unwrap(),
    )
    .unwrap();

    // A name is installed once; an empty one never.
    let again = cached_redis::init_named("second", Config::builder().embedded().build().unwrap());
    assert!(
        matches!(again, Err(cached_redis::Error::Config(_))),
        "{again:?}"
    );
    assert!(cached_redis::init_named("", Config::builder().embedded().build().unwrap()).is_err());

    // Miss then hit in each cache.
    assert_eq!((in_default(1).await, in_default(1).await), (2, 2));
    assert_eq!((in_embedded(1).await, in_embedded(1).await), (3, 3));
    let second = tokio::task::spawn_blocking(|| (in_second(1), in_second(1)))
        .await
        .unwrap();
    assert_eq!(second, ("second 1".to_owned(), "second 1".to_owned()));
    assert_eq!(DEFAULT_RUNS.load(SeqCst), 1);
    assert_eq!(EMBEDDED_RUNS.load(SeqCst), 1);
    assert_eq!(SECOND_RUNS.load(SeqCst), 1);

    // Each entry is where its cache keeps it, and nowhere else.
    assert_eq!(common::entry_keys(&ns_default, "nc_default").len(), 1);
    assert_eq!(common::entry_keys(&ns_second, "nc_second").len(), 1);
    assert!(common::entry_keys(&ns_default, "nc_second").is_empty());
    assert!(common::entry_keys(&ns_second, "nc_default").is_empty());
    assert!(common::entry_keys(&ns_default, "nc_embedded").is_empty());
    assert!(common::entry_keys(&ns_second, "nc_embedded").is_empty());
    let key = in_second_cache_key(1).unwrap();
    assert!(key.starts_with(&format!("{ns_second}:nc_second:")), "{key}");

    // Each cache counts its own functions; the flush writes every Redis
    // cache's counts into its own namespace.
    cached_redis::flush_stats().await.unwrap();
    let default_stats = common::stats_hash(&ns_default, "nc_default");
    assert_eq!(default_stats.get("hits").map(String::as_str), Some("1"));
    assert_eq!(default_stats.get("misses").map(String::as_str), Some("1"));
    let second_stats = common::stats_hash(&ns_second, "nc_second");
    assert_eq!(second_stats.get("misses").map(String::as_str), Some("1"));
    assert_eq!(second_stats.get("hits").map(String::as_str), Some("1"));
    assert!(common::stats_hash(&ns_default, "nc_second").is_empty());
    assert!(common::stats_hash(&ns_second, "nc_default").is_empty());
    let embedded = cached_redis::local_stats("nc_embedded").unwrap();
    assert_eq!((embedded.hits, embedded.misses), (1, 1));

    // One prefix in two caches: invalidating the prefix empties both.
    shared_in_default(7).await;
    shared_in_second(7).await;
    shared_in_default(7).await;
    shared_in_second(7).await;
    assert_eq!(SHARED_RUNS.load(SeqCst), 2);
    assert_eq!(
        cached_redis::invalidate_prefix("nc_shared").await.unwrap(),
        2
    );
    shared_in_default(7).await;
    shared_in_second(7).await;
    assert_eq!(SHARED_RUNS.load(SeqCst), 4);

    // Invalidation by arguments reaches the function's own cache (and its
    // local level).
    assert!(
        cached_redis::invalidate_args("nc_second", &serde_json::json!([1]))
            .await
            .unwrap()
    );
    assert!(common::entry_keys(&ns_second, "nc_second").is_empty());
    tokio::task::spawn_blocking(|| in_second(1)).await.unwrap();
    assert_eq!(SECOND_RUNS.load(SeqCst), 2);
    // Companions too.
    assert!(in_embedded_invalidate(1).await.unwrap());
    in_embedded(1).await;
    assert_eq!(EMBEDDED_RUNS.load(SeqCst), 2);

    // A function whose cache is not installed still runs, every time, and
    // its companions say why they cannot act.
    let missing = tokio::task::spawn_blocking(|| (in_missing(5), in_missing(5)))
        .await
        .unwrap();
    assert_eq!(missing, (5, 5));
    assert_eq!(MISSING_RUNS.load(SeqCst), 2);
    let err = in_missing_cache_key(5).unwrap_err();
    assert!(err.to_string().contains("never_installed"), "{err}");
    assert!(tokio::task::spawn_blocking(|| in_missing_invalidate(5))
        .await
        .unwrap()
        .is_err());

    // A forced refresh of such a function is spent on it (it cannot
    // refresh): the cached calls its body makes are not forced.
    let runs = tokio::task::spawn_blocking(|| {
        nested_in_default(7);
        nested_in_default(7);
        missing_outer_refresh(7);
        NESTED_RUNS.load(SeqCst)
    })
    .await
    .unwrap();
    assert_eq!(runs, 1, "the nested call was forced to recompute");
}
